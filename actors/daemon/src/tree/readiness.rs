//! When the daemon reports ready (`/readyz`); the rule is in
//! [`crate::tree`]'s module docs and [`is_ready`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vpblu_messages::Generation;
use vpblu_runtime::Health;

/// The readiness rule. `restored` is the generation the state directory
/// held when the data plane started (what a previous daemon applied);
/// `applied_here` whether this process applied a state; `connected`
/// whether a stream to the controller has been open.
pub fn is_ready(restored: Generation, applied_here: bool, connected: bool) -> bool {
    applied_here || (restored > Generation(0) && connected)
}

/// The facts the rule reads, shared by the stream adaptor (applies) and
/// the observer (stream status). Readiness only ever turns on: once the
/// data plane carries a state, a lost controller does not make it carry
/// less, and a DaemonSet rollout must not stall on a controller outage.
#[derive(Clone, Debug)]
pub struct Readiness {
    health: Health,
    restored: Generation,
    applied_here: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
}

impl Readiness {
    /// Not ready; the data plane started with `restored` in force.
    pub fn new(health: Health, restored: Generation) -> Self {
        health.set_ready(false);
        Readiness { health, restored, applied_here: Arc::default(), connected: Arc::default() }
    }

    /// This process applied a command.
    pub fn applied(&self) {
        self.applied_here.store(true, Ordering::Relaxed);
        self.update();
    }

    /// A stream to the controller is (or was) open.
    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.update();
    }

    /// What the rule says now.
    pub fn ready(&self) -> bool {
        is_ready(
            self.restored,
            self.applied_here.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
        )
    }

    fn update(&self) {
        if self.ready() {
            self.health.set_ready(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let (none, some) = (Generation(0), Generation(3));
        // (restored, applied here, connected) -> ready
        let table = [
            (none, false, false, false),
            (none, false, true, false), // connected, nothing in force yet
            (none, true, false, true),
            (none, true, true, true),
            (some, false, false, false), // a restart, controller not reached yet
            (some, false, true, true),   // a restart, the previous state in force and the controller reached
            (some, true, false, true),
            (some, true, true, true),
        ];
        for (restored, applied, connected, want) in table {
            assert_eq!(is_ready(restored, applied, connected), want, "{restored} {applied} {connected}");
        }
    }

    #[test]
    fn readiness_turns_on_and_stays_on() {
        let fresh = Readiness::new(Health::new(), Generation(0));
        fresh.connected();
        assert!(!fresh.ready());
        fresh.applied();
        assert!(fresh.ready());

        let restarted = Readiness::new(Health::new(), Generation(5));
        assert!(!restarted.ready());
        restarted.connected();
        assert!(restarted.ready());
    }
}
