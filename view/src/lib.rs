//! The mesh at a glance: one read model, three views.
//!
//! [`MeshView`] is what `vpblu status`, the controller's web dashboard and
//! `meshtop` show: nodes with their keys' fingerprints and ages, the
//! node×node peer matrix, applied vs desired generations, policies with
//! their conditions, rotations, the leader, recent Events, and a verdict
//! (healthy, or what is wrong).
//!
//! [`build`] makes it from Kubernetes objects alone (pure: the caller
//! passes the objects and the clock), which is all `vpblu status` has; the
//! controller adds what only it sees (per-peer handshakes and counters from
//! the daemons' Observed messages, daemon versions, which replica serves).
//!
//! Nothing secret is in here: VpbluNode status holds public keys only, and
//! the model keeps only their first 8 characters.

mod build;
mod model;
mod policies;
mod verdict;

pub use build::{Inputs, build};
pub use model::{
    ConditionView, DaemonSeen, EventView, LeaderView, LeaseState, LinkState, LinkView, MeshView, NodeView,
    PolicyView, RotationStep, RotationView, Served,
};
pub use verdict::{PEER_UP_WITHIN_SECONDS, Verdict};

/// Path of the JSON API the dashboard serves [`MeshView`] on.
pub const API_PATH: &str = "/api/v1/mesh";

/// Path of the server-sent event stream: one `mesh` event carrying a
/// [`MeshView`] each time it changes.
pub const STREAM_PATH: &str = "/api/v1/stream";
