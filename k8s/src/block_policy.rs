//! `BlockPolicy`: traffic vpblu must drop, and nodes taken out of the mesh.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema_rules::{CIDR_MAX_LEN, MAX_NODES, NODE_NAME_MAX_LEN, NODE_NAME_PATTERN, cidr_rules};

/// Most CIDR pairs one policy may list.
pub const MAX_BLOCKS: u32 = 10_000;

/// Drops between CIDRs and node isolation or drain. The highest-precedence
/// policy: it overrides RoutePolicy, TunnelPolicy and what is derived from
/// the Nodes.
// kube's `printcolumn(...)` lists repeat keys such as `type_`, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vpblu.dev",
    version = "v1alpha1",
    kind = "BlockPolicy",
    plural = "blockpolicies",
    shortname = "bp",
    category = "vpblu",
    status = "BlockPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Traffic vpblu drops (CIDR to CIDR, enforced by eBPF on both the sending and the \
           receiving node) and nodes isolated from or drained out of the mesh. Overrides every other policy.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Enforced on every node"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.blocks) && size(self.blocks) > 0) || (has(self.nodes) && size(self.nodes) > 0)",
        "message": "set at least one of blocks (CIDR pairs to drop) or nodes (nodes to isolate or drain)",
    },
]))]
pub struct BlockPolicySpec {
    /// CIDR pairs whose traffic is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_BLOCKS))]
    pub blocks: Vec<BlockRule>,

    /// Nodes to isolate or drain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NODES))]
    pub nodes: Vec<NodeAction>,
}

/// Drop packets from one CIDR to another.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockRule {
    /// Source network, e.g. `10.244.1.0/24` (network address, no host bits).
    #[schemars(length(min = 1, max = CIDR_MAX_LEN), extend("x-kubernetes-validations" = cidr_rules()))]
    pub from: String,

    /// Destination network, e.g. `10.244.2.0/24` (network address, no host
    /// bits).
    #[schemars(length(min = 1, max = CIDR_MAX_LEN), extend("x-kubernetes-validations" = cidr_rules()))]
    pub to: String,

    /// Also drop packets from `to` to `from`. Default false: only packets
    /// travelling `from` → `to` are dropped (matching is per packet, so that
    /// includes replies to connections opened from `to`).
    #[serde(default)]
    pub bidirectional: bool,
}

/// An action on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAction {
    /// Name of the node (its Kubernetes Node name).
    #[schemars(length(min = 1, max = NODE_NAME_MAX_LEN), regex(pattern = NODE_NAME_PATTERN))]
    pub node: String,

    /// `Isolate`: the node leaves every peer set and mesh traffic to and
    /// from it is dropped. `Drain`: the node keeps its peers and its own pod
    /// traffic, but is no longer a route target for RoutePolicy CIDRs.
    pub action: NodeActionKind,
}

/// What to do with a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NodeActionKind {
    /// Cut the node from every peer set; drop mesh traffic to and from it.
    #[default]
    Isolate,
    /// Stop routing RoutePolicy CIDRs through the node.
    Drain,
}

/// What the controller made of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockPolicyStatus {
    /// `metadata.generation` of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions: `Ready` (enforced on every node), `Conflict`,
    /// `Invalid` (for example an unknown node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
