//! One rotation's progress (pure): given what the nodes reported for the
//! current phase, what the scheduler does next.
//!
//! A phase is done when every node whose published desired state holds the
//! rotation in that phase reported it Ok (the rotating node always does;
//! until its state shows the phase, nothing counts). Before Retire, an
//! error or the phase timeout rolls back. From Retire on there is no way
//! back (peers may already hold only the new key): errors and timeouts are
//! reported and the phase keeps waiting. A rollback ends when every node
//! reported it, or at its timeout (the rotation is then removed from the
//! desired states, which empties the lanes anyway).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use vpblu_messages::{NodeName, PublicKey, RotationPhase, RotationReport};

/// The rotation as its status records it, with its policy's timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The rotating node.
    pub node: NodeName,
    /// The rotation id.
    pub id: u64,
    /// The current phase.
    pub phase: RotationPhase,
    /// How long traffic rides the lanes before Retire.
    pub overlap: TimeDelta,
    /// The phase timeout.
    pub timeout: TimeDelta,
}

/// What is known now about the current phase.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// When the phase times out: its timeout after it started, or after
    /// this scheduler took it over, whichever is later.
    pub deadline: DateTime<Utc>,
    /// Nodes whose published desired state holds this rotation in this phase.
    pub holders: &'a BTreeSet<NodeName>,
    /// Their reports for this rotation and phase.
    pub reports: &'a BTreeMap<NodeName, RotationReport>,
    /// Activate only: when every node had reported it Ok (the overlap
    /// dwell counts from there).
    pub all_ok_since: Option<DateTime<Utc>>,
}

/// How a rotation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new key is in use everywhere.
    Succeeded,
    /// The old key is still in use (why is in the status, recorded when
    /// the rollback started).
    RolledBack,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep waiting; `Some` says for what, when it is taking too long.
    Wait(Option<String>),
    /// Every node did its part of Activate: traffic rides the lanes until
    /// the overlap is over (`since` is when the dwell started).
    Dwell {
        /// When every node had reported Activate Ok.
        since: DateTime<Utc>,
    },
    /// Go on to this phase (with the staged key, after Prepare).
    Advance {
        /// The next phase.
        to: RotationPhase,
        /// The key the rotating node staged (leaving Prepare only).
        staged: Option<PublicKey>,
    },
    /// Roll back, for this reason.
    RollBack(String),
    /// The rotation is over.
    Finish(Outcome),
}

/// The next step of `running`.
pub fn next_step(running: &Running, seen: &Seen<'_>) -> Step {
    let phase = running.phase;
    let late = seen.now >= seen.deadline;
    let timeout = running.timeout.num_seconds();
    if !seen.holders.contains(&running.node) {
        return not_yet_desired(running, late);
    }
    let failed: Vec<(&NodeName, &str)> = seen
        .holders
        .iter()
        .filter_map(|n| match seen.reports.get(n).map(|r| &r.result) {
            Some(Err(e)) => Some((n, e.as_str())),
            _ => None,
        })
        .collect();
    let missing: Vec<&str> =
        seen.holders.iter().filter(|n| !seen.reports.contains_key(*n)).map(NodeName::as_str).collect();
    let failures = || {
        failed
            .iter()
            .map(|(n, e)| format!("node {n} reported {phase} failed: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let waiting = || format!("no {phase} report from node(s) {} after {timeout}s", missing.join(", "));

    if phase == RotationPhase::Rollback {
        return if missing.is_empty() || late { Step::Finish(Outcome::RolledBack) } else { Step::Wait(None) };
    }
    if phase.can_roll_back() {
        if !failed.is_empty() {
            return Step::RollBack(failures());
        }
        if !missing.is_empty() {
            return if late { Step::RollBack(waiting()) } else { Step::Wait(None) };
        }
        return reversible_done(running, seen);
    }
    // Retire and Settle: no way back.
    if !failed.is_empty() {
        return Step::Wait(Some(format!(
            "{}; waiting for it to succeed (past Retire a rotation cannot roll back)",
            failures()
        )));
    }
    if !missing.is_empty() {
        return Step::Wait(
            late.then(|| format!("{}; still waiting (past Retire a rotation cannot roll back)", waiting())),
        );
    }
    match phase {
        RotationPhase::Retire => Step::Advance { to: RotationPhase::Settle, staged: None },
        _ => Step::Finish(Outcome::Succeeded),
    }
}

/// The rotating node's desired state has not caught up with its status.
fn not_yet_desired(running: &Running, late: bool) -> Step {
    let (phase, timeout) = (running.phase, running.timeout.num_seconds());
    match (late, phase) {
        (true, RotationPhase::Rollback) => Step::Finish(Outcome::RolledBack),
        (true, p) if p.can_roll_back() => Step::RollBack(format!(
            "the desired state of node {} did not reach phase {phase} within {timeout}s (is the controller \
             computing desired state?)",
            running.node
        )),
        (true, _) => Step::Wait(Some(format!(
            "the desired state of node {} has not reached phase {phase} after {timeout}s",
            running.node
        ))),
        (false, _) => Step::Wait(None),
    }
}

/// Every node reported a phase that can still roll back (Prepare,
/// Distribute, Activate) done.
fn reversible_done(running: &Running, seen: &Seen<'_>) -> Step {
    match running.phase {
        RotationPhase::Prepare => match seen.reports.get(&running.node).and_then(|r| r.staged_public_key) {
            Some(key) => Step::Advance { to: RotationPhase::Distribute, staged: Some(key) },
            None => Step::RollBack(format!(
                "node {} reported Prepare done without the public key it staged",
                running.node
            )),
        },
        RotationPhase::Distribute => Step::Advance { to: RotationPhase::Activate, staged: None },
        _ => match seen.all_ok_since {
            Some(since) if seen.now >= since + running.overlap => {
                Step::Advance { to: RotationPhase::Retire, staged: None }
            }
            Some(since) => Step::Dwell { since },
            None => Step::Dwell { since: seen.now },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).expect("valid")
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    fn running(phase: RotationPhase) -> Running {
        Running {
            node: name("r"),
            id: 1,
            phase,
            overlap: TimeDelta::seconds(5),
            timeout: TimeDelta::seconds(30),
        }
    }

    fn report(phase: RotationPhase, result: Result<(), String>, staged: Option<u8>) -> RotationReport {
        RotationReport {
            rotation_id: 1,
            phase,
            result,
            staged_public_key: staged.map(|k| PublicKey::from_bytes([k; 32])),
        }
    }

    struct World {
        holders: BTreeSet<NodeName>,
        reports: BTreeMap<NodeName, RotationReport>,
    }

    impl World {
        fn new(nodes: &[&str]) -> World {
            World { holders: nodes.iter().map(|n| name(n)).collect(), reports: BTreeMap::new() }
        }

        fn report(mut self, node: &str, report: RotationReport) -> World {
            self.reports.insert(name(node), report);
            self
        }

        fn step(&self, running: &Running, now: i64, all_ok_since: Option<i64>) -> Step {
            next_step(
                running,
                &Seen {
                    now: at(now),
                    deadline: at(30),
                    holders: &self.holders,
                    reports: &self.reports,
                    all_ok_since: all_ok_since.map(at),
                },
            )
        }
    }

    #[test]
    fn nothing_counts_until_the_rotating_node_holds_the_phase() {
        let p = RotationPhase::Distribute;
        let world = World::new(&["a"]).report("a", report(p, Ok(()), None));
        assert_eq!(world.step(&running(p), 1, None), Step::Wait(None));
        assert!(
            matches!(world.step(&running(p), 31, None), Step::RollBack(why) if why.contains("did not reach"))
        );
    }

    #[test]
    fn prepare_advances_with_the_staged_key_once_everyone_reported() {
        let p = RotationPhase::Prepare;
        let world = World::new(&["a", "r"]).report("r", report(p, Ok(()), Some(9)));
        assert_eq!(world.step(&running(p), 1, None), Step::Wait(None));
        let world = world.report("a", report(p, Ok(()), None));
        assert_eq!(
            world.step(&running(p), 1, None),
            Step::Advance { to: RotationPhase::Distribute, staged: Some(PublicKey::from_bytes([9; 32])) }
        );
        let keyless = World::new(&["r"]).report("r", report(p, Ok(()), None));
        assert!(
            matches!(keyless.step(&running(p), 1, None), Step::RollBack(why) if why.contains("without the public key"))
        );
    }

    #[test]
    fn an_error_or_a_timeout_before_retire_rolls_back_naming_the_node() {
        let p = RotationPhase::Activate;
        let world =
            World::new(&["a", "r"]).report("a", report(p, Err("lane handshake missing".into()), None));
        assert_eq!(
            world.step(&running(p), 1, None),
            Step::RollBack("node a reported Activate failed: lane handshake missing".into())
        );
        let silent = World::new(&["a", "r"]).report("r", report(p, Ok(()), None));
        assert_eq!(silent.step(&running(p), 29, None), Step::Wait(None));
        assert_eq!(
            silent.step(&running(p), 30, None),
            Step::RollBack("no Activate report from node(s) a after 30s".into())
        );
    }

    #[test]
    fn activate_dwells_for_the_overlap_then_retires() {
        let p = RotationPhase::Activate;
        let world =
            World::new(&["a", "r"]).report("a", report(p, Ok(()), None)).report("r", report(p, Ok(()), None));
        assert_eq!(world.step(&running(p), 10, None), Step::Dwell { since: at(10) });
        assert_eq!(world.step(&running(p), 14, Some(10)), Step::Dwell { since: at(10) });
        assert_eq!(
            world.step(&running(p), 15, Some(10)),
            Step::Advance { to: RotationPhase::Retire, staged: None }
        );
    }

    #[test]
    fn after_retire_failures_wait_and_say_so_never_roll_back() {
        let p = RotationPhase::Retire;
        let world = World::new(&["a", "r"]).report("a", report(p, Err("EBUSY".into()), None));
        match world.step(&running(p), 100, None) {
            Step::Wait(Some(message)) => {
                assert!(message.contains("node a") && message.contains("EBUSY"), "{message}")
            }
            other => panic!("expected a reported wait, got {other:?}"),
        }
        let silent = World::new(&["a", "r"]).report("r", report(p, Ok(()), None));
        assert_eq!(silent.step(&running(p), 1, None), Step::Wait(None));
        assert!(matches!(silent.step(&running(p), 31, None), Step::Wait(Some(m)) if m.contains("node(s) a")));
        let done = silent.report("a", report(p, Ok(()), None));
        assert_eq!(
            done.step(&running(p), 31, None),
            Step::Advance { to: RotationPhase::Settle, staged: None }
        );
        let settled = World::new(&["r"]).report("r", report(RotationPhase::Settle, Ok(()), None));
        assert_eq!(settled.step(&running(RotationPhase::Settle), 1, None), Step::Finish(Outcome::Succeeded));
    }

    #[test]
    fn a_rollback_ends_when_everyone_reported_or_at_its_timeout() {
        let p = RotationPhase::Rollback;
        let world = World::new(&["a", "r"]).report("r", report(p, Ok(()), None));
        assert_eq!(world.step(&running(p), 1, None), Step::Wait(None));
        assert!(matches!(world.step(&running(p), 30, None), Step::Finish(Outcome::RolledBack)));
        let all = world.report("a", report(p, Err("already gone".into()), None));
        assert!(matches!(all.step(&running(p), 1, None), Step::Finish(Outcome::RolledBack)));
    }
}
