//! The read model's types: plain, serializable, no secrets (a key is only
//! ever its 8-character prefix).

use serde::{Deserialize, Serialize};

use crate::Verdict;

/// Everything the three views show, at one instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshView {
    /// When this view was made (RFC 3339).
    pub generated_at: String,
    /// Who made it: a controller replica, or a client reading the API.
    pub served: Served,
    /// The leader Lease.
    pub leader: LeaderView,
    /// One per VpbluNode, by name.
    pub nodes: Vec<NodeView>,
    /// The node×node peer matrix: one entry per (node, peer) a daemon
    /// reported; empty when read from the API alone (VpbluNode status
    /// holds per-node counts only).
    pub links: Vec<LinkView>,
    /// Every policy of the four kinds, by kind then name.
    pub policies: Vec<PolicyView>,
    /// Per node, its running or last rotation.
    pub rotations: Vec<RotationView>,
    /// Rotation phase changes this controller saw, oldest first.
    pub rotation_history: Vec<RotationStep>,
    /// Recent Kubernetes Events about vpblu objects, newest first.
    pub events: Vec<EventView>,
    /// What could not be read (for example Events under RBAC), said plainly
    /// rather than shown as empty.
    pub notes: Vec<String>,
    /// Healthy, or what is wrong.
    pub verdict: Verdict,
}

/// Who made a [`MeshView`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The controller replica's Lease identity; `None` for a client that
    /// read the API server itself.
    pub by: Option<String>,
    /// Whether that replica leads now. A standby has no streams, so it has
    /// no peer matrix: its view says so instead of showing an empty one.
    pub leading: bool,
}

/// The `coordination.k8s.io` Lease that elects the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// `namespace/name` of the Lease.
    pub lease: String,
    /// Held, expired, released, or missing.
    pub state: LeaseState,
    /// Its holder (the leader while the state is `Held`).
    pub holder: Option<String>,
    /// Seconds since its last renewal.
    pub renewed_seconds_ago: Option<i64>,
    /// How long it holds without renewal, in seconds.
    pub duration_seconds: Option<i64>,
    /// Replicas known to be standing by (the serving replica when it does
    /// not lead; the Lease itself does not list candidates).
    pub standby: Vec<String>,
}

/// Whether somebody leads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// A holder renewed it within its duration.
    Held,
    /// Its holder stopped renewing: no leader until a standby takes it.
    Expired,
    /// No holder (released on a clean stop).
    Released,
    /// No Lease object: no controller ever led here.
    #[default]
    Missing,
}

/// One node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// First 8 characters of its active public key.
    pub short_key: Option<String>,
    /// Seconds since that key became active (its last rotation, else the
    /// VpbluNode's creation).
    pub key_age_seconds: Option<i64>,
    /// First 8 characters of the key staged by a running rotation.
    pub staged_short_key: Option<String>,
    /// Where peers reach it (`ip:port`).
    pub endpoint: Option<String>,
    /// `kernel` or `userspace`.
    pub backend: Option<String>,
    /// MTU of its mesh device.
    pub mtu: Option<i32>,
    /// The daemon's version, from its Hello (controller only).
    pub version: Option<String>,
    /// Latest generation sent to it.
    pub desired_generation: Option<i64>,
    /// Latest generation it applied.
    pub applied_generation: Option<i64>,
    /// Peers configured on its device.
    pub peers: Option<i32>,
    /// Of those, peers with a recent handshake.
    pub peers_up: Option<i32>,
    /// Age of the oldest latest-handshake among its peers, in seconds.
    pub last_handshake_seconds: Option<i64>,
    /// Its `Ready` condition (the message names peers that are down).
    pub ready: Option<ConditionView>,
    /// Its `Connected` condition (stream to the leader).
    pub connected: Option<ConditionView>,
    /// Rotation phase, when one runs.
    pub rotation_phase: Option<String>,
}

/// One cell of the peer matrix: what `from`'s daemon reports about `to`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// The reporting node.
    pub from: String,
    /// The peer.
    pub to: String,
    /// Up, down, or never shook hands.
    pub state: LinkState,
    /// Seconds since the last handshake, as of now.
    pub last_handshake_seconds: Option<u64>,
    /// The peer's endpoint (its VpbluNode status).
    pub endpoint: Option<String>,
    /// First 8 characters of the key `from` holds for `to`.
    pub short_key: Option<String>,
    /// Bytes `from` received from `to`.
    pub rx_bytes: u64,
    /// Bytes `from` sent to `to`.
    pub tx_bytes: u64,
    /// Receive rate over the last two reports, bytes per second.
    pub rx_bytes_per_second: Option<f64>,
    /// Send rate over the last two reports, bytes per second.
    pub tx_bytes_per_second: Option<f64>,
    /// Seconds since `from` last reported.
    pub reported_seconds_ago: u64,
    /// The report is too old to trust (the daemon's stream is gone or
    /// silent); shown as stale, never as current.
    pub stale: bool,
}

/// State of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkState {
    /// A handshake within WireGuard's rekey window.
    Up,
    /// The last handshake is older than that.
    Down,
    /// No handshake ever.
    #[default]
    NoHandshake,
}

/// A standard condition, as the views show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// Its type (`Ready`, `Conflict`, …).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// The details.
    pub message: String,
    /// Seconds since its status last changed.
    pub since_seconds: Option<i64>,
}

/// One policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// `TunnelPolicy`, `RoutePolicy`, `BlockPolicy` or `RotationPolicy`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// What it asks for, in a few words.
    pub summary: String,
    /// `Ready` (`Active` for a TunnelPolicy) condition, if written yet.
    pub state: Option<ConditionView>,
    /// Every condition.
    pub conditions: Vec<ConditionView>,
    /// The controller has not caught up with the latest spec yet.
    pub outdated: bool,
    /// What is wrong with it, when something is (a conflict, an invalid
    /// spec, not Ready).
    pub problem: Option<String>,
}

/// One node's running or last rotation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationView {
    /// The node.
    pub node: String,
    /// Current phase (`Idle` when none runs).
    pub phase: String,
    /// A rotation runs now.
    pub running: bool,
    /// The RotationPolicy that started it.
    pub policy: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// Seconds in the current phase.
    pub phase_seconds: Option<i64>,
    /// What the phase waits for, or why it rolls back.
    pub message: Option<String>,
    /// Outcome of the last finished rotation.
    pub last_result: Option<String>,
    /// When the key last changed (RFC 3339).
    pub last_rotated_at: Option<String>,
}

/// A rotation phase change, as a controller saw it happen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationStep {
    /// When it was seen (RFC 3339).
    pub at: String,
    /// The node.
    pub node: String,
    /// The new phase.
    pub phase: String,
    /// The result, when the phase is `Idle` again.
    pub result: Option<String>,
}

/// A Kubernetes Event about a vpblu object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Seconds since it last happened.
    pub age_seconds: Option<i64>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// One CamelCase word.
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    /// What happened.
    pub message: String,
    /// How many times.
    pub count: i32,
}

/// What a daemon said about itself on its stream (controller only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSeen {
    /// Its version, from its Hello.
    pub version: String,
}
