//! The status writer: what daemons report over their streams becomes the
//! status of their VpbluNode, so `kubectl get vpblunodes` shows each node's
//! public key, backend, MTU, applied generation and peer health, and the
//! published key feeds the next recompute (that is how a new node's key
//! reaches every peer).
//!
//! It also keeps the `Connected` condition: `True` (`StreamOpen`) from a
//! daemon's Hello, `False` (`StreamClosed`, with the time) when the stream
//! server says the node's stream closed and no newer one replaced it.
//!
//! It runs only on the leader (behind a gate), writes with server-side
//! apply under [`vpblu_k8s::FIELD_MANAGER`] to the status subresource, and
//! skips a write when nothing it owns would change. An apply replaces
//! every field the manager applied before, so a node's report starts from
//! its VpbluNode's current status (in the informer's cache): a restarted
//! writer's first Observed must not erase the key the previous one wrote.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::broadcast;
use vpblu_k8s::conditions::{CONNECTED, reasons};
use vpblu_k8s::vpblu_node::short_key;
use vpblu_k8s::{FIELD_MANAGER, VpbluNode, VpbluNodeStatus, WireGuardBackend};
use vpblu_messages::{Backend, NodeName, PeerObservation, Upstream};
use vpblu_runtime::{Forward, broadcast_messages, forward};

use crate::informers::Cache;
use crate::stream::StreamEvent;

/// A peer counts as up when its last handshake is at most this old
/// (WireGuard re-handshakes every 2 minutes on an active session).
const PEER_UP_WITHIN: Duration = Duration::from_secs(180);

/// How long one status write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a write failed (e.g. the VpbluNode is not created yet), try again
/// after this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the status writer starts with.
#[derive(Clone)]
pub struct StatusWriterArgs {
    /// The API client.
    pub client: kube::Client,
    /// The stream server's events (Hello, Observed, RotationReport, and
    /// closed streams).
    pub events: broadcast::Sender<StreamEvent>,
    /// The VpbluNode informer's cache: where a node's report starts from.
    pub vpblu_nodes: Cache<VpbluNode>,
}

impl std::fmt::Debug for StatusWriterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriterArgs").finish_non_exhaustive()
    }
}

/// Messages the status writer takes.
#[derive(Debug)]
pub enum StatusWriterMsg {
    /// A daemon said something on its stream, or its stream closed (sent
    /// by the event task).
    Event(StreamEvent),
    /// Events were lost because the writer fell behind; the next message of
    /// every node rewrites its status in full.
    Lagged(u64),
    /// Write this node's status again after a failed write (sent to itself).
    Retry(NodeName),
}

/// Writes VpbluNode status. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct StatusWriter;

/// Whether a node's daemon has its stream open, and since when.
#[derive(Clone, Debug, PartialEq)]
struct Connection {
    open: bool,
    since: Time,
}

impl Connection {
    fn condition(&self) -> serde_json::Value {
        let (status, reason, message) = if self.open {
            ("True", reasons::STREAM_OPEN, "the daemon's stream to the controller is open".to_owned())
        } else {
            (
                "False",
                reasons::STREAM_CLOSED,
                format!(
                    "the daemon's stream closed at {}; the node keeps its last applied state until it \
                     reconnects",
                    self.since.0
                ),
            )
        };
        json!({
            "type": CONNECTED,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": self.since,
        })
    }

    /// Moves to `open` now, or stays (keeping its time) when already there.
    fn set(connection: &mut Option<Connection>, open: bool) {
        if connection.as_ref().is_none_or(|c| c.open != open) {
            // Whole seconds, as the API server stores it: a writer that
            // reads it back then sees exactly what it would write.
            let now =
                Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
            *connection = Some(Connection { open, since: Time(now) });
        }
    }
}

/// What one node has reported, in the shape its status takes.
#[derive(Clone, Debug, Default, PartialEq)]
struct NodeReport {
    public_key: Option<String>,
    staged_public_key: Option<String>,
    backend: Option<&'static str>,
    mtu: Option<u32>,
    applied_generation: Option<u64>,
    peers: Option<usize>,
    peers_up: Option<usize>,
    oldest_handshake_seconds: Option<u64>,
    connection: Option<Connection>,
}

impl NodeReport {
    /// The fields this writer owns, as `status` holds them now.
    fn from_status(status: &VpbluNodeStatus) -> Self {
        let count = |n: Option<i32>| n.and_then(|n| usize::try_from(n).ok());
        NodeReport {
            public_key: status.public_key.clone(),
            staged_public_key: status.staged_public_key.clone(),
            backend: status.backend.map(|b| match b {
                WireGuardBackend::Kernel => "kernel",
                WireGuardBackend::Userspace => "userspace",
            }),
            mtu: status.mtu.and_then(|m| u32::try_from(m).ok()),
            applied_generation: status.applied_generation.and_then(|g| u64::try_from(g).ok()),
            peers: count(status.peers),
            peers_up: count(status.peers_up),
            oldest_handshake_seconds: status.last_handshake_seconds.and_then(|s| u64::try_from(s).ok()),
            connection: status
                .conditions
                .iter()
                .find(|c| c.type_ == CONNECTED)
                .map(|c| Connection { open: c.status == "True", since: c.last_transition_time.clone() }),
        }
    }

    fn status(&self) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        if let Some(key) = &self.public_key {
            status.insert("publicKey".into(), json!(key));
            status.insert("shortKey".into(), json!(short_key(key)));
        }
        if let Some(key) = &self.staged_public_key {
            status.insert("stagedPublicKey".into(), json!(key));
        }
        if let Some(backend) = self.backend {
            status.insert("backend".into(), json!(backend));
        }
        if let Some(mtu) = self.mtu {
            status.insert("mtu".into(), json!(mtu));
        }
        if let Some(generation) = self.applied_generation {
            status.insert("appliedGeneration".into(), json!(generation));
        }
        if let Some(peers) = self.peers {
            status.insert("peers".into(), json!(peers));
        }
        if let Some(up) = self.peers_up {
            status.insert("peersUp".into(), json!(up));
        }
        if let Some(age) = self.oldest_handshake_seconds {
            status.insert("lastHandshakeSeconds".into(), json!(age));
        }
        if let Some(connection) = &self.connection {
            status.insert("conditions".into(), json!([connection.condition()]));
        }
        serde_json::Value::Object(status)
    }

    fn observe(&mut self, peers: &[PeerObservation]) {
        self.peers = Some(peers.len());
        self.peers_up = Some(
            peers.iter().filter(|p| p.last_handshake_age.is_some_and(|age| age <= PEER_UP_WITHIN)).count(),
        );
        self.oldest_handshake_seconds =
            peers.iter().filter_map(|p| p.last_handshake_age).max().map(|d| d.as_secs());
    }
}

/// The status writer's state.
#[derive(Debug)]
pub struct StatusWriterState {
    api: Api<VpbluNode>,
    vpblu_nodes: Cache<VpbluNode>,
    reports: BTreeMap<NodeName, NodeReport>,
    written: BTreeMap<NodeName, NodeReport>,
    _events: Forward,
}

impl StatusWriterState {
    /// `node`'s report, started from its VpbluNode's current status.
    fn report(&mut self, node: &NodeName) -> &mut NodeReport {
        let cache = &self.vpblu_nodes;
        self.reports.entry(node.clone()).or_insert_with(|| {
            let current = cache.store().get(&ObjectRef::new(node.as_str()));
            let status = current.as_ref().and_then(|v| v.status.as_ref());
            status.map(NodeReport::from_status).unwrap_or_default()
        })
    }
}

impl StatusWriter {
    /// The supervised child `status-writer` that runs with `args`.
    pub fn child(args: StatusWriterArgs) -> vpblu_runtime::ChildSpec {
        vpblu_runtime::ChildSpec::new("status-writer", move || (StatusWriter, args.clone()))
    }
}

impl Actor for StatusWriter {
    type Msg = StatusWriterMsg;
    type State = StatusWriterState;
    type Arguments = StatusWriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StatusWriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let events = broadcast_messages(args.events.subscribe()).map(|event| match event {
            Ok(event) => StatusWriterMsg::Event(event),
            Err(lost) => StatusWriterMsg::Lagged(lost),
        });
        Ok(StatusWriterState {
            api: Api::all(args.client),
            vpblu_nodes: args.vpblu_nodes,
            reports: BTreeMap::new(),
            written: BTreeMap::new(),
            _events: forward(events, myself),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let node = match msg {
            StatusWriterMsg::Retry(node) => node,
            StatusWriterMsg::Lagged(lost) => {
                tracing::warn!(
                    lost,
                    "status writer fell behind; rewriting every node's status on its next report"
                );
                state.written.clear();
                return Ok(());
            }
            StatusWriterMsg::Event(StreamEvent::Closed(node)) => {
                Connection::set(&mut state.report(&node).connection, false);
                node
            }
            StatusWriterMsg::Event(StreamEvent::Message(node, upstream)) => {
                let report = state.report(&node);
                match upstream {
                    Upstream::Hello(hello) => {
                        Connection::set(&mut report.connection, true);
                        report.public_key = Some(hello.public_key.to_base64());
                        report.staged_public_key = hello.staged_public_key.map(|k| k.to_base64());
                        report.backend = Some(match hello.backend {
                            Backend::Kernel => "kernel",
                            Backend::Userspace => "userspace",
                        });
                        report.mtu = Some(hello.mtu);
                        report.applied_generation = Some(hello.applied_generation.0);
                    }
                    Upstream::Ack { generation, result: Ok(()) } => {
                        report.applied_generation = Some(generation.0);
                    }
                    // A failed apply changes nothing the daemon runs; the
                    // stream's ack tracking keeps the error.
                    Upstream::Ack { result: Err(_), .. } => return Ok(()),
                    Upstream::Observed(peers) => report.observe(&peers),
                    // Rotation progress is written by the rotation scheduler.
                    Upstream::RotationReport(_) => return Ok(()),
                }
                node
            }
        };
        if !write(state, &node).await {
            myself.send_after(RETRY_AFTER, move || StatusWriterMsg::Retry(node));
        }
        Ok(())
    }
}

/// Applies `node`'s report when it differs from what was last written;
/// false when the write failed (logged; the caller retries). A status is a
/// view, not a command: nothing breaks while it lags.
async fn write(state: &mut StatusWriterState, node: &NodeName) -> bool {
    let Some(report) = state.reports.get(node) else { return true };
    if state.written.get(node) == Some(report) {
        return true;
    }
    let patch = json!({
        "apiVersion": "vpblu.dev/v1alpha1",
        "kind": "VpbluNode",
        "status": report.status(),
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = tokio::time::timeout(
        WRITE_TIMEOUT,
        state.api.patch_status(node.as_str(), &params, &Patch::Apply(&patch)),
    )
    .await;
    match result {
        Ok(Ok(_)) => {
            state.written.insert(node.clone(), report.clone());
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(node = %node, error = %e, "could not write VpbluNode status; will retry");
            false
        }
        Err(_) => {
            tracing::warn!(node = %node, "VpbluNode status write timed out; will retry");
            false
        }
    }
}
