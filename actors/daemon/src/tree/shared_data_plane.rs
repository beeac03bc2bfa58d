//! [`SharedDataPlane`]: the one [`NodeDataPlane`] of the process, handed to
//! every incarnation of the stream client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;
use vpblu_messages::{Command, Generation, NodeName, PublicKey, RotationReport};

use super::metrics::{CommandKind, DaemonMetrics};
use super::readiness::Readiness;
use crate::data_plane::{DataPlaneError, DataPlaneReader, NodeDataPlane};
use crate::stream::{DataPlane, HelloFacts};

/// What the Hello and the observer need without waiting for an apply in
/// progress; refreshed after every apply.
#[derive(Clone, Debug)]
struct View {
    facts: HelloFacts,
    applied: Generation,
    /// The desired peers by key, and the rotation's lane peers (a rotating
    /// node under its new key), to name device peers by node.
    peers: BTreeMap<PublicKey, NodeName>,
}

impl View {
    fn of(data_plane: &NodeDataPlane) -> View {
        let peers = data_plane
            .state()
            .map(|state| {
                let lane = state.rotation.iter().flat_map(|rotation| rotation.lane.values());
                state.peers.values().chain(lane).map(|peer| (peer.public_key, peer.node.clone())).collect()
            })
            .unwrap_or_default();
        View { facts: data_plane.hello_facts(), applied: data_plane.applied_generation(), peers }
    }
}

/// The node's data plane behind an async lock, cloneable: the supervisor
/// restarts the stream client with a clone and the data plane, its device
/// and its maps stay exactly as they were. Applies are timed and counted,
/// and the first success makes the daemon ready.
#[derive(Clone, Debug)]
pub struct SharedDataPlane {
    data_plane: Arc<tokio::sync::Mutex<NodeDataPlane>>,
    reader: DataPlaneReader,
    view: Arc<Mutex<View>>,
    /// Read without the lock, like the view.
    reports: Option<watch::Receiver<Option<RotationReport>>>,
    metrics: DaemonMetrics,
    readiness: Readiness,
}

impl SharedDataPlane {
    /// Shares `data_plane`.
    pub fn new(data_plane: NodeDataPlane, metrics: DaemonMetrics, readiness: Readiness) -> Self {
        let view = View::of(&data_plane);
        metrics.set_applied_generation(view.applied);
        SharedDataPlane {
            reader: data_plane.reader(),
            reports: data_plane.rotation_reports(),
            data_plane: Arc::new(tokio::sync::Mutex::new(data_plane)),
            view: Arc::new(Mutex::new(view)),
            metrics,
            readiness,
        }
    }

    /// Reads the device and counters without waiting for an apply.
    pub fn reader(&self) -> &DataPlaneReader {
        &self.reader
    }

    /// The node that owns the peer with `key` in the state in force.
    pub fn peer_node(&self, key: &PublicKey) -> Option<NodeName> {
        self.view().peers.get(key).cloned()
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DataPlane for SharedDataPlane {
    type Error = DataPlaneError;

    async fn apply(&mut self, generation: Generation, command: &Command) -> Result<(), DataPlaneError> {
        let kind = CommandKind::from(command);
        let mut data_plane = self.data_plane.lock().await;
        let started = Instant::now();
        let result = data_plane.apply(generation, command).await;
        self.metrics.applied(kind, started.elapsed(), result.is_ok());
        let view = View::of(&data_plane);
        drop(data_plane);
        self.metrics.set_applied_generation(view.applied);
        *self.view() = view;
        if result.is_ok() {
            self.readiness.applied();
        }
        result
    }

    fn applied_generation(&self) -> Generation {
        self.view().applied
    }

    fn hello_facts(&self) -> HelloFacts {
        self.view().facts.clone()
    }

    fn rotation_reports(&self) -> Option<watch::Receiver<Option<RotationReport>>> {
        self.reports.clone()
    }
}
