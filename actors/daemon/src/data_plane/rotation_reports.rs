//! The data plane's rotation report: how this node did with its part of
//! the rotation phase in force, once it is done. A watch channel, so each
//! stream client (a restarted one too) sees the latest report and sends it
//! once per stream; see `StreamClient`.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use vpblu_messages::{RotationPhase, RotationReport};

/// The report board. Clones share it.
#[derive(Clone, Debug)]
pub struct RotationReports {
    board: watch::Sender<Option<RotationReport>>,
    /// The (rotation, phase) in force; a report for another one is stale
    /// (a waiting task that finished just as the phase moved on).
    current: Arc<Mutex<Option<(u64, RotationPhase)>>>,
}

impl Default for RotationReports {
    fn default() -> Self {
        RotationReports { board: watch::channel(None).0, current: Arc::new(Mutex::new(None)) }
    }
}

impl RotationReports {
    /// What stream clients watch.
    pub fn subscribe(&self) -> watch::Receiver<Option<RotationReport>> {
        self.board.subscribe()
    }

    /// A new (rotation, phase) is in force (`None`: no rotation): nothing
    /// is reported for it yet.
    pub fn begin(&self, step: Option<(u64, RotationPhase)>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        *current = step;
        self.board.send_replace(None);
    }

    /// Publishes `report` if its (rotation, phase) is still the one in
    /// force; returns whether it was.
    pub fn publish(&self, report: RotationReport) -> bool {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != Some((report.rotation_id, report.phase)) {
            return false;
        }
        match &report.result {
            Ok(()) => {
                tracing::info!(rotation = report.rotation_id, phase = %report.phase, "rotation phase done")
            }
            Err(e) => {
                tracing::warn!(rotation = report.rotation_id, phase = %report.phase, error = %e, "rotation phase failed")
            }
        }
        self.board.send_replace(Some(report));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u64, phase: RotationPhase) -> RotationReport {
        RotationReport { rotation_id: id, phase, result: Ok(()), staged_public_key: None }
    }

    #[test]
    fn only_the_phase_in_force_is_reported() {
        let reports = RotationReports::default();
        let watcher = reports.subscribe();
        assert!(!reports.publish(report(1, RotationPhase::Prepare)), "nothing in force");
        reports.begin(Some((1, RotationPhase::Prepare)));
        assert!(reports.publish(report(1, RotationPhase::Prepare)));
        assert_eq!(*watcher.borrow(), Some(report(1, RotationPhase::Prepare)));
        reports.begin(Some((1, RotationPhase::Distribute)));
        assert_eq!(*watcher.borrow(), None, "a new phase starts unreported");
        assert!(!reports.publish(report(1, RotationPhase::Prepare)), "stale");
        assert!(!reports.publish(report(2, RotationPhase::Distribute)), "another rotation");
        assert_eq!(*watcher.borrow(), None);
    }
}
