//! What the status writer knows of one node, in the shape its VpbluNode
//! status takes: the fields it owns, and the `Connected` and `Ready`
//! conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use vpblu_k8s::conditions::{CONNECTED, READY, reasons};
use vpblu_k8s::vpblu_node::short_key;
use vpblu_k8s::{VpbluNodeStatus, WireGuardBackend};
use vpblu_messages::PeerObservation;

use super::readiness::Verdict;
use super::watch::PEER_UP_WITHIN;

/// Whether a node's daemon has its stream to this leader open, and since
/// when.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Connection {
    pub(super) open: bool,
    /// `StreamOpen`, `StreamClosed` (it closed), or `NoStream` (this
    /// leader never had one from it).
    pub(super) reason: &'static str,
    pub(super) since: Time,
}

/// Now, in whole seconds as the API server stores it: a writer that reads
/// a time back then sees exactly what it would write.
fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

impl Connection {
    fn condition(&self) -> serde_json::Value {
        let (status, message) = match (self.open, self.reason) {
            (true, _) => ("True", "the daemon's stream to the controller is open".to_owned()),
            (false, reasons::NO_STREAM) => (
                "False",
                format!(
                    "the leading controller has had no stream from the daemon (looked at {}); the node \
                     keeps its last applied state until it connects",
                    self.since.0
                ),
            ),
            (false, _) => (
                "False",
                format!(
                    "the daemon's stream closed at {}; the node keeps its last applied state until it \
                     reconnects",
                    self.since.0
                ),
            ),
        };
        json!({
            "type": CONNECTED,
            "status": status,
            "reason": self.reason,
            "message": message,
            "lastTransitionTime": self.since,
        })
    }

    /// Moves to open (`StreamOpen`) or closed (`StreamClosed`) now, or
    /// stays (keeping its time) when already there.
    pub(super) fn set(connection: &mut Option<Connection>, open: bool) {
        if connection.as_ref().is_none_or(|c| c.open != open) {
            let reason = if open { reasons::STREAM_OPEN } else { reasons::STREAM_CLOSED };
            *connection = Some(Connection { open, reason, since: now() });
        }
    }

    /// Marks a node whose daemon has no stream to this leader: unless
    /// already closed, it becomes `NoStream` now. True when that changed it.
    pub(super) fn absent(connection: &mut Option<Connection>) -> bool {
        if connection.as_ref().is_some_and(|c| !c.open) {
            return false;
        }
        *connection = Some(Connection { open: false, reason: reasons::NO_STREAM, since: now() });
        true
    }

    fn from_condition(condition: &Condition) -> Self {
        let open = condition.status == "True";
        let reason = match condition.reason.as_str() {
            _ if open => reasons::STREAM_OPEN,
            reasons::NO_STREAM => reasons::NO_STREAM,
            _ => reasons::STREAM_CLOSED,
        };
        Connection { open, reason, since: condition.last_transition_time.clone() }
    }
}

/// The `Ready` condition as written: the verdict and since when its status
/// holds.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ready {
    pub(super) verdict: Verdict,
    pub(super) since: Time,
}

impl Ready {
    /// Takes `verdict`, keeping the transition time while the status stays.
    pub(super) fn update(ready: &mut Option<Ready>, verdict: Verdict) {
        let since = match ready {
            Some(current) if current.verdict.ready == verdict.ready => current.since.clone(),
            _ => now(),
        };
        *ready = Some(Ready { verdict, since });
    }

    fn condition(&self) -> serde_json::Value {
        json!({
            "type": READY,
            "status": if self.verdict.ready { "True" } else { "False" },
            "reason": self.verdict.reason,
            "message": self.verdict.message,
            "lastTransitionTime": self.since,
        })
    }

    fn from_condition(condition: &Condition) -> Option<Self> {
        // Only reasons this writer writes: anything else is judged anew.
        let reason = [reasons::APPLIED, reasons::DISCONNECTED, reasons::LAGGING, reasons::PEERS_DOWN]
            .into_iter()
            .find(|r| *r == condition.reason)?;
        Some(Ready {
            verdict: Verdict {
                ready: condition.status == "True",
                reason,
                message: condition.message.clone(),
            },
            since: condition.last_transition_time.clone(),
        })
    }
}

/// What one node has reported, in the shape its status takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NodeReport {
    pub(super) public_key: Option<String>,
    pub(super) backend: Option<&'static str>,
    pub(super) mtu: Option<u32>,
    pub(super) desired_generation: Option<u64>,
    pub(super) applied_generation: Option<u64>,
    pub(super) peers: Option<usize>,
    pub(super) peers_up: Option<usize>,
    pub(super) oldest_handshake_seconds: Option<u64>,
    pub(super) connection: Option<Connection>,
    pub(super) ready: Option<Ready>,
}

impl NodeReport {
    /// The fields this writer owns, as `status` holds them now.
    pub(super) fn from_status(status: &VpbluNodeStatus) -> Self {
        let count = |n: Option<i32>| n.and_then(|n| usize::try_from(n).ok());
        let generation = |g: Option<i64>| g.and_then(|g| u64::try_from(g).ok());
        let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
        NodeReport {
            public_key: status.public_key.clone(),
            backend: status.backend.map(|b| match b {
                WireGuardBackend::Kernel => "kernel",
                WireGuardBackend::Userspace => "userspace",
            }),
            mtu: status.mtu.and_then(|m| u32::try_from(m).ok()),
            desired_generation: generation(status.desired_generation),
            applied_generation: generation(status.applied_generation),
            peers: count(status.peers),
            peers_up: count(status.peers_up),
            oldest_handshake_seconds: status.last_handshake_seconds.and_then(|s| u64::try_from(s).ok()),
            connection: condition(CONNECTED).map(Connection::from_condition),
            ready: condition(READY).and_then(Ready::from_condition),
        }
    }

    /// The report with only what may wait for a lazy write taken from
    /// `self`, everything else from `current`: equal to `self` when only
    /// such fields changed.
    pub(super) fn lazy_part_over(&self, current: &NodeReport) -> NodeReport {
        NodeReport {
            desired_generation: self.desired_generation,
            applied_generation: self.applied_generation,
            peers: self.peers,
            peers_up: self.peers_up,
            oldest_handshake_seconds: self.oldest_handshake_seconds,
            ready: self.ready.clone(),
            ..current.clone()
        }
    }

    /// Takes the peer counts of a newest observation.
    pub(super) fn observe(&mut self, peers: &[PeerObservation]) {
        self.peers = Some(peers.len());
        self.peers_up = Some(
            peers.iter().filter(|p| p.last_handshake_age.is_some_and(|age| age <= PEER_UP_WITHIN)).count(),
        );
        self.oldest_handshake_seconds =
            peers.iter().filter_map(|p| p.last_handshake_age).max().map(|d| d.as_secs());
    }

    pub(super) fn status(&self) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        if let Some(key) = &self.public_key {
            status.insert("publicKey".into(), json!(key));
            status.insert("shortKey".into(), json!(short_key(key)));
        }
        if let Some(backend) = self.backend {
            status.insert("backend".into(), json!(backend));
        }
        if let Some(mtu) = self.mtu {
            status.insert("mtu".into(), json!(mtu));
        }
        if let Some(generation) = self.desired_generation {
            status.insert("desiredGeneration".into(), json!(generation));
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
        let conditions: Vec<serde_json::Value> =
            [self.connection.as_ref().map(Connection::condition), self.ready.as_ref().map(Ready::condition)]
                .into_iter()
                .flatten()
                .collect();
        if !conditions.is_empty() {
            status.insert("conditions".into(), json!(conditions));
        }
        serde_json::Value::Object(status)
    }
}
