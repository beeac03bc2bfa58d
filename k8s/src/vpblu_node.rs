//! `VpbluNode`: one per Kubernetes Node, same name. The controller creates it
//! and writes its status: the node's WireGuard identity as the daemon
//! published it over the stream, and whether the node's mesh is working.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Nothing to configure per node yet: the daemon publishes its key through
/// the controller, and everything else comes from the Node and the policies.
// kube's `printcolumn(...)` lists repeat keys such as `type_`, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vpblu.dev",
    version = "v1alpha1",
    kind = "VpbluNode",
    plural = "vpblunodes",
    shortname = "vn",
    category = "vpblu",
    status = "VpbluNodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A node in the vpblu mesh: its WireGuard identity and whether its tunnels are working. \
           The controller creates one per Kubernetes Node, with the same name, and keeps its status current.",
    printcolumn(
        name = "Key",
        type_ = "string",
        json_path = ".status.shortKey",
        description = "Start of the node's WireGuard public key"
    ),
    printcolumn(
        name = "Peers",
        type_ = "integer",
        json_path = ".status.peers",
        description = "Peers configured on the node"
    ),
    printcolumn(
        name = "Peers Up",
        type_ = "integer",
        json_path = ".status.peersUp",
        description = "Peers with a recent handshake"
    ),
    printcolumn(
        name = "Applied Gen",
        type_ = "integer",
        json_path = ".status.appliedGeneration",
        description = "Last desired-state generation the daemon applied"
    ),
    printcolumn(
        name = "Desired Gen",
        type_ = "integer",
        json_path = ".status.desiredGeneration",
        priority = 1,
        description = "Latest desired-state generation sent to the daemon"
    ),
    printcolumn(
        name = "Backend",
        type_ = "string",
        json_path = ".status.backend",
        description = "WireGuard implementation: kernel or userspace"
    ),
    printcolumn(
        name = "MTU",
        type_ = "integer",
        json_path = ".status.mtu",
        description = "MTU of the wg-mesh device"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        priority = 1,
        description = "Where peers reach this node (ip:port)"
    ),
    printcolumn(
        name = "Rotation",
        type_ = "string",
        json_path = ".status.rotation.phase",
        priority = 1,
        description = "Key rotation phase, if one is running"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Desired state applied and peers up"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct VpbluNodeSpec {
    /// Free-form note for operators (for example why a node is special). vpblu
    /// does not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// What the controller last learned about the node. Written only by the
/// controller (server-side apply, field manager `vpblu-controller`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpbluNodeStatus {
    /// The node's active WireGuard public key (base64, 44 characters), as its
    /// daemon published it. The private key never leaves the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,

    /// The first 8 characters of `publicKey`, for the Key column of
    /// `kubectl get vpblunodes`; the same prefix `wg show` users compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_key: Option<String>,

    /// The next public key while a rotation runs (from the end of Prepare
    /// until it finishes); absent otherwise. Written by the rotation
    /// scheduler from the rotating daemon's Prepare report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_public_key: Option<String>,

    /// Where peers reach this node's WireGuard device: `ip:port`, or
    /// `[ip]:port` for IPv6 (the Node's internal IP and the listen port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The Node's pod CIDRs (one per IP family), routed to this node through
    /// the mesh.
    #[serde(default, rename = "podCIDRs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub pod_cidrs: Vec<String>,

    /// Which WireGuard implementation the daemon drives: `kernel` (the kernel
    /// module, over netlink) or `userspace` (over its UAPI socket).
    // The schema takes its description from `WireGuardBackend` (kube hoists
    // `Option<enum>`), so keep the two doc comments saying the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<WireGuardBackend>,

    /// MTU of the node's `wg-mesh` device (underlay MTU minus the
    /// encapsulation overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub mtu: Option<i32>,

    /// Generation of the latest desired state the controller sent to this
    /// node. Generations only grow; a periodic resync that only confirms
    /// the state the node holds (KeepState) is not counted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub desired_generation: Option<i64>,

    /// Generation of the latest desired state the daemon acknowledged as
    /// applied. Equal to `desiredGeneration` when the node is in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub applied_generation: Option<i64>,

    /// Number of peers configured on the node's WireGuard device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub peers: Option<i32>,

    /// Number of those peers with a recent handshake (within WireGuard's
    /// rekey window), i.e. tunnels that are working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub peers_up: Option<i32>,

    /// Age in seconds of the oldest latest-handshake among the peers that
    /// have ever completed one; absent when no peer has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub last_handshake_seconds: Option<i64>,

    /// Key rotation progress for this node; absent until its first rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,

    /// Standard conditions; `Ready` answers "is this node's mesh working".
    /// See `vpblu_k8s::conditions` for types and reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Which WireGuard implementation the daemon drives: `kernel` (the kernel
/// module, over netlink) or `userspace` (over its UAPI socket).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WireGuardBackend {
    /// The kernel module, configured over netlink.
    Kernel,
    /// A userspace WireGuard, configured over its UAPI socket.
    Userspace,
}

/// One node's key rotation progress. Written by the controller's rotation
/// scheduler alone (JSON merge patches under field manager
/// [`ROTATION_FIELD_MANAGER`](crate::ROTATION_FIELD_MANAGER)), together with
/// `stagedPublicKey`; a new leader resumes a running rotation from here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Current phase: `Prepare`, `Distribute`, `Activate`, `Retire`,
    /// `Settle` or `RollingBack`; `Idle` when no rotation is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// Identifies the running (or last) rotation of this node across its
    /// phases; daemons report progress under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub id: Option<i64>,

    /// The RotationPolicy that started the running (or last) rotation;
    /// absent when it was started by this VpbluNode's own
    /// `vpblu.dev/rotate-now` annotation and no policy selects the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,

    /// When the running (or last) rotation started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,

    /// When the current phase started (RFC 3339); the phase timeout counts
    /// from here (from a new leader's takeover at the earliest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<String>,

    /// What the current phase is waiting for, when it waits longer than it
    /// should (for example a node that reported an error after Retire,
    /// when rolling back is no longer possible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// While `RollingBack`: why the rotation is being rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,

    /// Outcome of the last finished rotation: `Succeeded`, `RolledBack:`
    /// followed by why, or `Skipped:` followed by why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,

    /// When the node's key last changed successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<String>,

    /// The last `vpblu.dev/rotate-now` annotation value the controller acted
    /// on for this node; a different value triggers another rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate_now: Option<String>,
}

/// [`RotationStatus::phase`] when no rotation is running.
pub const IDLE_PHASE: &str = "Idle";

/// Length of [`VpbluNodeStatus::short_key`].
pub const SHORT_KEY_LEN: usize = 8;

/// The display prefix of a public key, as stored in
/// [`VpbluNodeStatus::short_key`].
pub fn short_key(public_key: &str) -> String {
    public_key.chars().take(SHORT_KEY_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_key_is_the_first_eight_characters() {
        assert_eq!(short_key("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="), "xTIBA5rb");
        assert_eq!(short_key("abc"), "abc");
    }

    #[test]
    fn status_uses_the_kubernetes_field_names() {
        let status = VpbluNodeStatus {
            pod_cidrs: vec!["10.244.1.0/24".into()],
            backend: Some(WireGuardBackend::Userspace),
            peers_up: Some(2),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("status serializes");
        assert_eq!(
            json,
            serde_json::json!({"podCIDRs": ["10.244.1.0/24"], "backend": "userspace", "peersUp": 2})
        );
    }
}
