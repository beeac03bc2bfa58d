//! The daemons' RotationReports, kept where a restarted rotation scheduler
//! finds them.
//!
//! A daemon reports a phase done once (it repeats itself only when its
//! stream reconnects). Were the reports the scheduler's own state, a
//! scheduler that restarted mid-phase (a panic, a supervisor restart) would
//! start with none and wait for the phase timeout, then roll back a
//! rotation every node had finished. So a task that lives as long as the
//! streams' event channel records them here, and every scheduler
//! incarnation reads them from here.
//!
//! The same task keeps which nodes have a stream open to this replica (a
//! Hello opened it, a close without a newer stream ended it): a rotation
//! waits for its node's daemon to be there to take part.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use vpblu_messages::{NodeName, RotationPhase, RotationReport, Upstream};

use crate::stream::StreamEvent;

/// Reports by (rotation id, phase), then by node.
type Reports = BTreeMap<(u64, RotationPhase), BTreeMap<NodeName, RotationReport>>;

/// The reports of the rotations under way. Clones share one book.
#[derive(Clone, Debug, Default)]
pub struct ReportBook {
    reports: Arc<Mutex<Reports>>,
    streams: Arc<Mutex<BTreeSet<NodeName>>>,
}

impl ReportBook {
    /// An empty book.
    pub fn new() -> Self {
        ReportBook::default()
    }

    /// Records every RotationReport carried by `events` from now on, in a
    /// task that ends when the channel closes (every sender dropped).
    pub fn record_from(&self, events: &broadcast::Sender<StreamEvent>) -> JoinHandle<()> {
        let mut receiver = events.subscribe();
        let book = self.clone();
        vpblu_runtime::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(StreamEvent::Message(node, Upstream::RotationReport(report))) => {
                        tracing::debug!(
                            %node,
                            rotation = report.rotation_id,
                            phase = %report.phase,
                            ok = report.result.is_ok(),
                            "rotation report"
                        );
                        book.record(node, report);
                    }
                    Ok(StreamEvent::Message(node, Upstream::Hello(_))) => {
                        book.streams().insert(node);
                    }
                    Ok(StreamEvent::Closed(node)) => {
                        book.streams().remove(&node);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(lost)) => tracing::warn!(
                        lost,
                        "rotation reports fell behind the streams; a lost report makes its phase wait for the \
                         node to report again (on reconnect) or for the timeout"
                    ),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// Records `node`'s report (a later one for the same phase replaces it).
    pub fn record(&self, node: NodeName, report: RotationReport) {
        self.lock().entry((report.rotation_id, report.phase)).or_default().insert(node, report);
    }

    /// The reports on rotation `id`'s `phase`, by node.
    pub fn of(&self, id: u64, phase: RotationPhase) -> BTreeMap<NodeName, RotationReport> {
        self.lock().get(&(id, phase)).cloned().unwrap_or_default()
    }

    /// Forgets every rotation but `id` (the one under way).
    pub fn keep_only(&self, id: u64) {
        self.lock().retain(|(kept, _), _| *kept == id);
    }

    /// Forgets everything (no rotation under way).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Whether `node`'s daemon has a stream open to this replica.
    pub fn has_stream(&self, node: &NodeName) -> bool {
        self.streams().contains(node)
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeName>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(id: u64, phase: RotationPhase) -> RotationReport {
        RotationReport { rotation_id: id, phase, result: Ok(()), staged_public_key: None }
    }

    fn node(n: &str) -> NodeName {
        NodeName::new(n).expect("a valid name")
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn reports_outlive_the_reader_and_only_the_rotation_under_way_is_kept() {
        let (events, _) = broadcast::channel(16);
        let book = ReportBook::new();
        let recorder = book.record_from(&events);
        events
            .send(StreamEvent::Message(
                node("node-1"),
                Upstream::RotationReport(report(7, RotationPhase::Activate)),
            ))
            .expect("the recorder listens");
        events.send(StreamEvent::Closed(node("node-2"))).expect("the recorder listens");
        events
            .send(StreamEvent::Message(
                node("node-2"),
                Upstream::RotationReport(report(6, RotationPhase::Retire)),
            ))
            .expect("the recorder listens");
        eventually("both reports recorded", || book.of(6, RotationPhase::Retire).len() == 1).await;

        // What a scheduler started afresh sees: a clone of the same book.
        let restarted = book.clone();
        let activate = restarted.of(7, RotationPhase::Activate);
        assert_eq!(activate.keys().collect::<Vec<_>>(), [&node("node-1")]);
        assert!(restarted.of(7, RotationPhase::Retire).is_empty());

        restarted.keep_only(7);
        assert!(book.of(6, RotationPhase::Retire).is_empty(), "another rotation's reports are dropped");
        assert_eq!(book.of(7, RotationPhase::Activate).len(), 1);
        restarted.clear();
        assert!(book.of(7, RotationPhase::Activate).is_empty());

        drop(events);
        tokio::time::timeout(Duration::from_secs(5), recorder)
            .await
            .expect("the recorder ends with the channel")
            .expect("the recorder did not panic");
    }

    #[tokio::test]
    async fn a_hello_opens_a_nodes_stream_and_a_close_ends_it() {
        let (events, _) = broadcast::channel(16);
        let book = ReportBook::new();
        let _recorder = book.record_from(&events);
        let hello = vpblu_messages::Hello {
            node: node("node-1"),
            public_key: vpblu_messages::PublicKey::from_bytes([7; 32]),
            staged_public_key: None,
            applied_generation: vpblu_messages::Generation(0),
            backend: vpblu_messages::Backend::Userspace,
            mtu: 1420,
            version: "test".into(),
            digest_key: None,
            held: None,
        };
        assert!(!book.has_stream(&node("node-1")), "no Hello yet");
        events
            .send(StreamEvent::Message(node("node-1"), Upstream::Hello(hello)))
            .expect("the recorder listens");
        eventually("node-1's stream open", || book.has_stream(&node("node-1"))).await;
        book.clear();
        assert!(book.has_stream(&node("node-1")), "clearing reports keeps the streams");
        events.send(StreamEvent::Closed(node("node-1"))).expect("the recorder listens");
        eventually("node-1's stream closed", || !book.has_stream(&node("node-1"))).await;
    }
}
