//! RotationPolicy schedules: a cron expression with seconds, in UTC, and
//! when a run is due.
//!
//! A run is due when the schedule fired after the last run started (or,
//! before any run, after the policy was created). The last start is in the
//! policy's status (`lastScheduleTime`), so a new leader neither repeats a
//! run the old one started nor skips one it missed; several fire times
//! missed while no controller ran make one run, not several.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// The form a schedule must take, for error messages.
pub const EXPECTED_FORM: &str = "6 or 7 space-separated fields `sec min hour day-of-month month day-of-week \
                                 [year]` in UTC, e.g. \"0 0 3 * * Sun\", or a shorthand such as @weekly";

/// A schedule that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("schedule {expression:?} is not a valid cron expression ({reason}); expected {EXPECTED_FORM}")]
pub struct ScheduleError {
    /// The expression as written.
    pub expression: String,
    /// What the parser said.
    pub reason: String,
}

/// A parsed RotationPolicy schedule.
#[derive(Clone, Debug)]
pub struct Schedule(cron::Schedule);

impl Schedule {
    /// Parses `expression` (surrounding blanks ignored).
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        cron::Schedule::from_str(expression.trim())
            .map(Schedule)
            .map_err(|e| ScheduleError { expression: expression.to_owned(), reason: e.to_string() })
    }

    /// The first fire time strictly after `after`; `None` when the
    /// schedule never fires again (a past year).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.after(&after).next()
    }

    /// Whether a run is due at `now`, the last one having started at
    /// `since` (or the policy created then).
    pub fn due(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.next_after(since).is_some_and(|next| next <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a valid time").with_timezone(&Utc)
    }

    #[test]
    fn sundays_at_three() {
        let schedule = Schedule::parse("0 0 3 * * Sun").expect("parses");
        // 2026-11-26 is a Thursday.
        assert_eq!(schedule.next_after(at("2026-11-26T12:00:00Z")), Some(at("2026-11-29T03:00:00Z")));
        assert_eq!(schedule.next_after(at("2026-11-29T03:00:00Z")), Some(at("2026-12-06T03:00:00Z")));
    }

    #[test]
    fn due_once_the_next_fire_time_after_the_last_run_has_passed() {
        let schedule = Schedule::parse("0 */5 * * * *").expect("parses");
        let last = at("2026-11-26T12:00:00Z");
        assert!(!schedule.due(last, at("2026-11-26T12:04:59Z")));
        assert!(schedule.due(last, at("2026-11-26T12:05:00Z")));
        // Many fire times missed: still just due (one run), and once it
        // starts (lastScheduleTime = now) it is not due again until the next.
        let now = at("2026-11-26T15:02:00Z");
        assert!(schedule.due(last, now));
        assert!(!schedule.due(now, at("2026-11-26T15:04:59Z")));
    }

    #[test]
    fn shorthands_and_years_parse() {
        assert!(Schedule::parse("@weekly").is_ok());
        assert!(Schedule::parse("  0 0 3 * * Sun 2030  ").is_ok());
        let past = Schedule::parse("0 0 3 1 1 * 2001").expect("parses");
        assert_eq!(past.next_after(at("2026-01-01T00:00:00Z")), None, "never fires again");
        assert!(!past.due(at("2002-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")));
        assert!(
            past.due(at("2000-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")),
            "its one fire time was missed"
        );
    }

    #[test]
    fn a_bad_expression_names_itself_and_the_expected_form() {
        for bad in ["0 3 * * Sun", "every sunday", "61 * * * * *"] {
            let error = Schedule::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
            assert!(error.contains("sec min hour day-of-month month day-of-week"), "{error}");
        }
    }
}
