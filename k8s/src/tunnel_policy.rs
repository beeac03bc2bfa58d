//! `TunnelPolicy`: who peers with whom, and how the tunnels are set up.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema_rules::{NODE_NAME_MAX_LEN, NODE_NAME_PATTERN};

/// Default WireGuard listen port.
pub const DEFAULT_LISTEN_PORT: i32 = 51820;

/// Most explicit peer pairs one policy may list (a full mesh of 140 nodes).
pub const MAX_PEER_PAIRS: u32 = 10_000;

/// How nodes peer. Without any TunnelPolicy, vpblu behaves as `FullMesh` on
/// port 51820 with no keepalive. When several exist, the oldest one is in
/// effect (`Active`) and the others report a conflict.
// kube's `printcolumn(...)` lists repeat keys such as `type_`, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vpblu.dev",
    version = "v1alpha1",
    kind = "TunnelPolicy",
    plural = "tunnelpolicies",
    shortname = "tp",
    category = "vpblu",
    status = "TunnelPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "How vpblu nodes peer: a full mesh or an explicit list of node pairs, plus the WireGuard \
           listen port and keepalive. The oldest TunnelPolicy is the one in effect.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "FullMesh or Explicit"
    ),
    printcolumn(
        name = "Port",
        type_ = "integer",
        json_path = ".spec.listenPort",
        description = "WireGuard listen port"
    ),
    printcolumn(
        name = "Keepalive",
        type_ = "integer",
        json_path = ".spec.persistentKeepaliveSeconds",
        priority = 1,
        description = "Persistent keepalive in seconds"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status",
        description = "Whether this policy is the one in effect"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.mode) || self.mode != 'Explicit' || (has(self.peers) && size(self.peers) > 0)",
        "message": "mode Explicit needs at least one entry in peers",
        "fieldPath": ".peers",
        "reason": "FieldValueRequired",
    },
    {
        "rule": "!has(self.mode) || self.mode != 'FullMesh' || !has(self.peers) || size(self.peers) == 0",
        "message": "peers must be empty when mode is FullMesh (every node peers every other node); use mode Explicit to list pairs",
        "fieldPath": ".peers",
        "reason": "FieldValueForbidden",
    },
]))]
pub struct TunnelPolicySpec {
    /// `FullMesh`: every node peers every other node. `Explicit`: only the
    /// pairs listed in `peers` peer.
    #[serde(default)]
    pub mode: TunnelMode,

    /// UDP port every node's WireGuard device listens on.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: i32,

    /// WireGuard persistent keepalive interval in seconds (0 or absent: off).
    /// Set it when nodes sit behind NAT or stateful firewalls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub persistent_keepalive_seconds: Option<i32>,

    /// The node pairs that peer, for mode `Explicit` (at least one). Must be
    /// empty for `FullMesh`. Each pair is symmetric: `a` peers `b` and `b`
    /// peers `a`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PEER_PAIRS))]
    pub peers: Vec<PeerPair>,
}

fn default_listen_port() -> i32 {
    DEFAULT_LISTEN_PORT
}

/// The same values the API server fills in for an empty spec.
impl Default for TunnelPolicySpec {
    fn default() -> Self {
        Self {
            mode: TunnelMode::default(),
            listen_port: DEFAULT_LISTEN_PORT,
            persistent_keepalive_seconds: None,
            peers: Vec::new(),
        }
    }
}

/// How nodes peer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TunnelMode {
    /// Every node peers every other node.
    #[default]
    FullMesh,
    /// Only the pairs listed in `peers` peer.
    Explicit,
}

/// Two nodes that peer with each other.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.a != self.b",
        "message": "a node cannot peer with itself: a and b must name different nodes",
    },
]))]
pub struct PeerPair {
    /// Name of one node (its Kubernetes Node name).
    #[schemars(length(min = 1, max = NODE_NAME_MAX_LEN), regex(pattern = NODE_NAME_PATTERN))]
    pub a: String,

    /// Name of the other node (its Kubernetes Node name).
    #[schemars(length(min = 1, max = NODE_NAME_MAX_LEN), regex(pattern = NODE_NAME_PATTERN))]
    pub b: String,
}

/// What the controller made of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelPolicyStatus {
    /// `metadata.generation` of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions: `Active` (this policy is in effect), `Conflict`,
    /// `Invalid` (for example a listed node does not exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_spec_means_full_mesh_on_51820() {
        let spec: TunnelPolicySpec = serde_json::from_str("{}").expect("empty spec parses");
        assert_eq!(spec.mode, TunnelMode::FullMesh);
        assert_eq!(spec.listen_port, 51820);
        assert!(spec.peers.is_empty());
        assert_eq!(spec.persistent_keepalive_seconds, None);
        assert_eq!(spec, TunnelPolicySpec::default());
    }
}
