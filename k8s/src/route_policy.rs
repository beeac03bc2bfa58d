//! `RoutePolicy`: extra CIDRs reachable through a named node's tunnel.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema_rules::{CIDR_MAX_LEN, NODE_NAME_MAX_LEN, NODE_NAME_PATTERN, cidr_rules};

/// Most routes one policy may list.
pub const MAX_ROUTES: u32 = 4096;

/// Routes that send traffic for a CIDR through the tunnel to a named node
/// (for example a subnet behind that node). Overrides what is derived from
/// the Nodes' pod CIDRs; a BlockPolicy overrides it.
// kube's `printcolumn(...)` lists repeat keys such as `type_`, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vpblu.dev",
    version = "v1alpha1",
    kind = "RoutePolicy",
    plural = "routepolicies",
    shortname = "rp",
    category = "vpblu",
    status = "RoutePolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "CIDRs reachable through a named node's WireGuard tunnel. Overrides routes derived from \
           Node pod CIDRs; BlockPolicy overrides it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Every route is in effect"
    ),
    printcolumn(
        name = "Conflict",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Conflict\")].status",
        description = "Some route lost to another policy"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RoutePolicySpec {
    /// The routes: each CIDR is sent through the tunnel to its `via` node.
    #[schemars(length(min = 1, max = MAX_ROUTES))]
    pub routes: Vec<Route>,

    /// Opt in to routes vpblu otherwise refuses: a default route
    /// (`0.0.0.0/0`, `::/0`), or a CIDR covering a node's own address or a
    /// Service CIDR. Such a route sends pod traffic leaving the cluster
    /// ("egress via a node") through the `via` node's tunnel, Service VIPs
    /// included (pod traffic is steered before kube-proxy translates it),
    /// so set it only when that node is meant to be the pods' way out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_egress_via_node: bool,
}

/// One route: `cidr` is reachable via node `via`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination network, e.g. `192.168.100.0/24` or `fd00:100::/64`
    /// (network address, no host bits).
    #[schemars(length(min = 1, max = CIDR_MAX_LEN), extend("x-kubernetes-validations" = cidr_rules()))]
    pub cidr: String,

    /// Name of the node (its Kubernetes Node name) whose tunnel carries the
    /// traffic for `cidr`. Its WireGuard peer entry on every other node gets
    /// `cidr` as an allowed IP.
    #[schemars(length(min = 1, max = NODE_NAME_MAX_LEN), regex(pattern = NODE_NAME_PATTERN))]
    pub via: String,
}

/// What the controller made of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutePolicyStatus {
    /// `metadata.generation` of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions: `Ready` (every route is in effect), `Conflict`
    /// (a route overlaps another policy or a pod CIDR, or is overridden by a
    /// BlockPolicy; the message says which), `Invalid` (unknown `via` node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
