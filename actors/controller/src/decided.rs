//! Conditions as the controller decides them (type, status, reason,
//! message), and how they land in an object's status: unchanged ones keep
//! their transition time, and a bad one that newly holds is worth a
//! Warning Event. Shared by the policy status writer and the rotation
//! scheduler.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as decided, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// Condition type.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: Cow<'static, str>,
    /// For people.
    pub message: String,
}

/// Longest condition message written: the API allows 32 KiB, but the same
/// text goes into an Event's note, which takes at most 1 kB.
pub const MAX_MESSAGE: usize = 1000;

/// `text` cut to [`MAX_MESSAGE`] bytes (plus `…`) on a character boundary.
pub fn fit_message(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// `True` or `False`, as a Condition spells it.
pub fn as_status(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Whether `current` already says everything in `decided` for `generation`.
pub fn all_in_place(decided: &[Decided], current: &[Condition], generation: Option<i64>) -> bool {
    decided.iter().all(|d| {
        current.iter().any(|c| {
            c.type_ == d.type_
                && c.status == as_status(d.status)
                && c.reason == d.reason
                && c.message == d.message
                && c.observed_generation == generation
        })
    })
}

/// `decided` as Conditions; one whose type and status did not change keeps
/// its transition time, the others get now.
pub fn to_conditions(decided: &[Decided], current: &[Condition], generation: Option<i64>) -> Vec<Condition> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    decided
        .iter()
        .map(|d| {
            let kept = current
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == as_status(d.status))
                .map(|c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.into(),
                status: as_status(d.status).into(),
                reason: d.reason.clone().into_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: kept.unwrap_or_else(|| now.clone()),
            }
        })
        .collect()
}

/// Whether `d` is news against `current`: it did not already hold with
/// the same status and reason.
pub fn is_news(d: &Decided, current: &[Condition]) -> bool {
    let was = current.iter().find(|c| c.type_ == d.type_);
    !was.is_some_and(|c| c.status == as_status(d.status) && c.reason == d.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(status: bool, reason: &'static str) -> Decided {
        Decided { type_: "Ready", status, reason: reason.into(), message: "m".into() }
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = to_conditions(&[decided(true, "Applied")], &[], Some(1));
        let mut old = first.clone();
        old[0].last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        assert!(all_in_place(&[decided(true, "Applied")], &old, Some(1)));
        assert!(!all_in_place(&[decided(true, "Applied")], &old, Some(2)));
        let again = to_conditions(&[decided(true, "Other")], &old, Some(2));
        assert_eq!(again[0].last_transition_time, old[0].last_transition_time, "same status: time kept");
        let flipped = to_conditions(&[decided(false, "Other")], &old, Some(2));
        assert_ne!(flipped[0].last_transition_time, old[0].last_transition_time);
        assert!(!is_news(&decided(true, "Applied"), &old));
        assert!(is_news(&decided(true, "Other"), &old));
        assert!(is_news(&decided(false, "Applied"), &old));
    }
}
