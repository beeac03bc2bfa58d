//! Runs of a RotationPolicy (pure): when one starts, and which node it
//! rotates next.
//!
//! A run starts when `vpblu.dev/rotate-now` holds a value the status has
//! not handled (even while paused; it restarts a run under way), or when
//! the schedule fired since the last run started (not while paused, and
//! not while a run still has nodes to go). Its start time becomes
//! `status.lastScheduleTime`. A node is pending in the run when it existed
//! before the run started and its last rotation started before that; the
//! nodes rotate one at a time, in name order.

use chrono::{DateTime, Utc};
use vpblu_messages::NodeName;

use super::schedule::Schedule;

/// A node a policy owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub node: NodeName,
    /// When its VpbluNode was created.
    pub created: Option<DateTime<Utc>>,
    /// When its last rotation started.
    pub started_at: Option<DateTime<Utc>>,
}

/// What a policy's run facts are.
#[derive(Clone, Debug)]
pub struct RunFacts<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// When the policy was created (the schedule counts from there).
    pub created: DateTime<Utc>,
    /// `spec.paused`.
    pub paused: bool,
    /// The schedule.
    pub schedule: &'a Schedule,
    /// `status.lastScheduleTime`.
    pub last_schedule: Option<DateTime<Utc>>,
    /// The `vpblu.dev/rotate-now` annotation.
    pub rotate_now: Option<&'a str>,
    /// `status.handledRotateNow`.
    pub handled_rotate_now: Option<&'a str>,
    /// The nodes it owns, in name order.
    pub members: &'a [Member],
}

/// Why a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The annotation holds this new value.
    RotateNow(String),
    /// The schedule fired.
    Schedule,
}

/// What a policy does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStep {
    /// Record a new run starting now.
    Start(Trigger),
    /// Rotate this node, the next pending one of the current run.
    Rotate(NodeName),
    /// Nothing to do until the schedule fires or the annotation changes.
    Idle,
}

/// The next step of one policy.
pub fn next_step(facts: &RunFacts<'_>) -> RunStep {
    if let Some(value) = facts.rotate_now
        && facts.handled_rotate_now != Some(value)
    {
        return RunStep::Start(Trigger::RotateNow(value.to_owned()));
    }
    if let Some(run_start) = facts.last_schedule
        && let Some(member) = facts.members.iter().find(|m| pending(m, run_start))
    {
        return RunStep::Rotate(member.node.clone());
    }
    if !facts.paused && facts.schedule.due(facts.last_schedule.unwrap_or(facts.created), facts.now) {
        return RunStep::Start(Trigger::Schedule);
    }
    RunStep::Idle
}

/// Whether `member` still has to rotate in the run that started at `run_start`.
fn pending(member: &Member, run_start: DateTime<Utc>) -> bool {
    let existed = member.created.is_none_or(|created| created <= run_start);
    existed && member.started_at.is_none_or(|started| started < run_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a valid time").with_timezone(&Utc)
    }

    fn member(node: &str, created: &str, started: Option<&str>) -> Member {
        Member {
            node: NodeName::new(node).expect("valid"),
            created: Some(at(created)),
            started_at: started.map(at),
        }
    }

    struct Case {
        schedule: Schedule,
        members: Vec<Member>,
        last: Option<&'static str>,
        rotate_now: Option<&'static str>,
        handled: Option<&'static str>,
        paused: bool,
    }

    impl Case {
        fn new() -> Case {
            Case {
                schedule: Schedule::parse("0 0 3 * * *").expect("daily at 03:00"),
                members: vec![
                    member("n1", "2026-01-01T00:00:00Z", None),
                    member("n2", "2026-01-01T00:00:00Z", None),
                ],
                last: None,
                rotate_now: None,
                handled: None,
                paused: false,
            }
        }

        fn at(&self, now: &str) -> RunStep {
            next_step(&RunFacts {
                now: at(now),
                created: at("2026-01-01T00:00:00Z"),
                paused: self.paused,
                schedule: &self.schedule,
                last_schedule: self.last.map(at),
                rotate_now: self.rotate_now,
                handled_rotate_now: self.handled,
                members: &self.members,
            })
        }
    }

    #[test]
    fn a_new_policy_waits_for_its_first_fire_time() {
        let case = Case::new();
        assert_eq!(case.at("2026-01-01T02:59:59Z"), RunStep::Idle);
        assert_eq!(case.at("2026-01-01T03:00:00Z"), RunStep::Start(Trigger::Schedule));
    }

    #[test]
    fn a_run_rotates_its_nodes_one_by_one_then_waits_for_the_next_fire() {
        let mut case = Case::new();
        case.last = Some("2026-01-02T03:00:00Z");
        assert_eq!(case.at("2026-01-02T03:00:01Z"), RunStep::Rotate(NodeName::new("n1").expect("valid")));
        case.members[0].started_at = Some(at("2026-01-02T03:00:01Z"));
        assert_eq!(case.at("2026-01-02T03:01:00Z"), RunStep::Rotate(NodeName::new("n2").expect("valid")));
        case.members[1].started_at = Some(at("2026-01-02T03:01:00Z"));
        assert_eq!(case.at("2026-01-02T04:00:00Z"), RunStep::Idle);
        assert_eq!(case.at("2026-01-03T03:00:00Z"), RunStep::Start(Trigger::Schedule));
    }

    #[test]
    fn a_node_that_joined_after_the_run_started_waits_for_the_next_run() {
        let mut case = Case::new();
        case.last = Some("2026-01-02T03:00:00Z");
        case.members = vec![member("n9", "2026-01-02T05:00:00Z", None)];
        assert_eq!(case.at("2026-01-02T06:00:00Z"), RunStep::Idle);
    }

    #[test]
    fn rotate_now_starts_a_run_even_when_paused_and_only_once_per_value() {
        let mut case = Case::new();
        case.paused = true;
        assert_eq!(
            case.at("2026-01-05T03:00:00Z"),
            RunStep::Idle,
            "paused: the schedule does not start runs"
        );
        case.rotate_now = Some("t1");
        assert_eq!(case.at("2026-01-05T03:00:00Z"), RunStep::Start(Trigger::RotateNow("t1".into())));
        case.handled = Some("t1");
        case.last = Some("2026-01-05T03:00:00Z");
        assert_eq!(case.at("2026-01-05T03:00:01Z"), RunStep::Rotate(NodeName::new("n1").expect("valid")));
        for m in &mut case.members {
            m.started_at = Some(at("2026-01-05T03:00:02Z"));
        }
        assert_eq!(case.at("2026-01-09T03:00:00Z"), RunStep::Idle);
    }
}
