//! What `compute` reads: nodes and policies as plain domain values. A later
//! layer turns the Kubernetes objects into these; nothing here knows kube.

use std::net::IpAddr;

use vpblu_messages::{Cidr, NodeName, PublicKey, RotationPhase};

/// Everything desired state is computed from. Order inside every vector is
/// irrelevant: `compute` sorts before it decides anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The cluster's nodes, including ones being deleted.
    pub nodes: Vec<NodeInput>,
    /// TunnelPolicies; the oldest one is in effect.
    pub tunnel_policies: Vec<TunnelPolicyInput>,
    /// RoutePolicies; all are in effect, identical CIDRs resolved by age.
    pub route_policies: Vec<RoutePolicyInput>,
    /// BlockPolicies; all are in effect.
    pub block_policies: Vec<BlockPolicyInput>,
    /// Key rotations in progress, from the VpbluNodes' status. At most one
    /// should run; of several, the first by node name is in effect and the
    /// others are reported.
    pub rotations: Vec<RotationInput>,
    /// The cluster's Service CIDRs: a route into them is refused unless
    /// its policy opts in to egress via a node.
    pub service_cidrs: Vec<Cidr>,
}

/// One node as the controller knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInput {
    /// The Kubernetes node name.
    pub name: NodeName,
    /// The underlay address its WireGuard listens on.
    pub internal_ip: Option<IpAddr>,
    /// Its pod CIDRs (one per family, usually).
    pub pod_cidrs: Vec<Cidr>,
    /// The kubelet reports Ready.
    pub ready: bool,
    /// The Node has a deletion timestamp: it is gone for the mesh.
    pub deleting: bool,
    /// The public key its daemon published, if any yet.
    pub public_key: Option<PublicKey>,
    /// Creation time, unix seconds: the older node wins a conflict.
    pub created: i64,
}

/// Which node pairs get a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peering {
    /// Every eligible node peers every other one.
    FullMesh,
    /// Only the listed pairs; `(a, b)` peers both directions.
    Explicit(Vec<(NodeName, NodeName)>),
}

/// A TunnelPolicy: peering, listen port, keepalive.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelPolicyInput {
    /// Object name.
    pub name: String,
    /// Creation time, unix seconds: the oldest policy is in effect.
    pub created: i64,
    /// Which pairs peer.
    pub peering: Peering,
    /// WireGuard listen port on every node.
    pub listen_port: u16,
    /// Persistent keepalive in seconds, `None` for off.
    pub persistent_keepalive: Option<u16>,
}

/// A RoutePolicy: CIDRs reachable through a node's tunnel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoutePolicyInput {
    /// Object name.
    pub name: String,
    /// Creation time, unix seconds: the older policy wins an identical CIDR.
    pub created: i64,
    /// Its routes.
    pub routes: Vec<RouteInput>,
    /// The policy opts in to routes that would otherwise be refused: a
    /// default route, or one covering node addresses or a Service CIDR
    /// (egress of pod traffic through a node).
    pub allow_egress_via_node: bool,
}

/// `cidr` is reached through the tunnel to `via`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInput {
    /// Destination block.
    pub cidr: Cidr,
    /// The node whose tunnel carries it.
    pub via: NodeName,
}

/// A BlockPolicy: CIDR-to-CIDR drops and node isolation or draining.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockPolicyInput {
    /// Object name.
    pub name: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Drops.
    pub blocks: Vec<BlockInput>,
    /// Nodes to isolate or drain.
    pub nodes: Vec<(NodeName, NodeAction)>,
}

/// Drop packets from `from` to `to` (and back, when bidirectional).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockInput {
    /// Source block.
    pub from: Cidr,
    /// Destination block.
    pub to: Cidr,
    /// Also drop `to` → `from`.
    pub bidirectional: bool,
}

/// What a BlockPolicy does to a whole node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeAction {
    /// Cut from every peer set; all its remote traffic dropped.
    Isolate,
    /// Keeps its own pods reachable but is no longer a route target.
    Drain,
}

/// A node's key rotation in progress, as its VpbluNode status records it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RotationInput {
    /// The node whose key rotates.
    pub node: NodeName,
    /// Identifies this rotation across its phases.
    pub id: u64,
    /// Where it stands.
    pub phase: RotationPhase,
    /// The new public key, once the node's Prepare report gave it.
    pub new_public_key: Option<PublicKey>,
}
