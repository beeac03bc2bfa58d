//! vpblu's Kubernetes API surface.
//!
//! Five cluster-scoped custom resources in `vpblu.dev/v1alpha1`, all listed by
//! `kubectl get vpblu`:
//!
//! | kind | short | who writes the spec | what it says |
//! |---|---|---|---|
//! | [`VpbluNode`] | `vn` | the controller (one per Node) | a node's mesh identity and health, in `status` |
//! | [`TunnelPolicy`] | `tp` | the operator | full mesh or explicit peering, listen port, keepalive |
//! | [`RoutePolicy`] | `rp` | the operator | extra CIDRs reachable through a named node's tunnel |
//! | [`BlockPolicy`] | `bp` | the operator | CIDR → CIDR drops, node isolation and drain |
//! | [`RotationPolicy`] | `rtp` | the operator | when and how WireGuard keys rotate |
//!
//! Precedence when policies disagree: BlockPolicy > RoutePolicy >
//! TunnelPolicy > what is derived from the Node objects. Losers get a
//! [`conditions::CONFLICT`] condition; they are never silently ignored.
//!
//! `k8s/crds/*.yaml`, and the same CRDs in the Helm chart's
//! `chart/vpblu/crds/`, are generated from these types by
//! `cargo run -p vpblu-k8s --bin crdgen` (see [`render_all`]); a test fails when
//! the committed files are stale.

pub mod block_policy;
pub mod conditions;
mod crd_render;
mod generated_dir;
pub mod rotation_policy;
pub mod route_policy;
mod schema_rules;
pub mod tunnel_policy;
pub mod vpblu_node;

pub use block_policy::{
    BlockPolicy, BlockPolicySpec, BlockPolicyStatus, BlockRule, NodeAction, NodeActionKind,
};
pub use crd_render::{CRDGEN_COMMAND, all_crds, chart_crds_dir, crds_dir, render_all, render_crd_dir};
pub use generated_dir::{generated_dir_problems, write_generated_dir};
pub use rotation_policy::{RotationPolicy, RotationPolicySpec, RotationPolicyStatus};
pub use route_policy::{Route, RoutePolicy, RoutePolicySpec, RoutePolicyStatus};
pub use tunnel_policy::{PeerPair, TunnelMode, TunnelPolicy, TunnelPolicySpec, TunnelPolicyStatus};
pub use vpblu_node::{
    IDLE_PHASE, RotationStatus, VpbluNode, VpbluNodeSpec, VpbluNodeStatus, WireGuardBackend,
};

/// API group of every vpblu custom resource.
pub const GROUP: &str = "vpblu.dev";

/// API version of every vpblu custom resource.
pub const VERSION: &str = "v1alpha1";

/// Category shared by all vpblu kinds: `kubectl get vpblu` lists them together.
pub const CATEGORY: &str = "vpblu";

/// Field manager for the controller's server-side-apply writes (status and
/// the VpbluNode objects it creates), so ownership shows one name.
pub const FIELD_MANAGER: &str = "vpblu-controller";

/// Field manager of the rotation scheduler's VpbluNode status patches
/// (`status.rotation`, `status.stagedPublicKey`, and `status.publicKey` at
/// the end of a rotation): JSON merge patches, so the status writer's
/// server-side apply under [`FIELD_MANAGER`] never takes these fields away.
pub const ROTATION_FIELD_MANAGER: &str = "vpblu-controller-rotation";

/// Manual rotation trigger, an annotation whose value is any timestamp (for
/// example `kubectl annotate rtp weekly vpblu.dev/rotate-now="$(date -Is)" --overwrite`).
///
/// - On a [`RotationPolicy`]: run that policy once now, as if its schedule had
///   fired (its selected nodes, one at a time), even when `paused` is set.
/// - On a [`VpbluNode`]: rotate that one node's key now.
///
/// The controller never writes the annotation (it has no write access to
/// policy specs or metadata): it records the value it has acted on in the
/// object's status (`handledRotateNow`), so setting a new value triggers
/// again and an old value is not acted on twice, even across failovers.
pub const ROTATE_NOW_ANNOTATION: &str = "vpblu.dev/rotate-now";
