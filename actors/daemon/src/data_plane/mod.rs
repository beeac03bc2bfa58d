//! The node's data plane: the key store, the WireGuard device, routing and
//! the BPF programs, converged together to each desired state the
//! controller sends, as the stream client's [`DataPlane`](crate::stream::DataPlane).
//!
//! Applying a command:
//!
//! 1. Replay it onto a copy of the state in force; refuse a result that
//!    fails `validate()` or [`plan::check`] (an unusable key, a route over
//!    this node's own pods). A refusal touches nothing: the old state stays
//!    in force and traffic keeps flowing.
//! 2. Turn the state into one [`Plan`] per component (routes, classify
//!    destinations, blocks, endpoints).
//! 3. Converge in an order that never lets pod traffic out in clear: listen
//!    port, the mesh device's address and rp_filter (so decrypted traffic
//!    passes reverse-path filtering), WireGuard peers, MTU and MSS clamp (when the endpoints change),
//!    new routes, blocks, destinations, then removal of old routes. Every
//!    writer diffs against what the kernel or device holds and writes only
//!    the difference; a targeted command skips the components it does not
//!    change, a SyncState redoes all of them.
//!    The lane device (see [`rotation`]) is converged before routes move
//!    into it and after they left it; a route moving between the mesh and
//!    the lane is repointed in place.
//! 4. A key rotation phase coming in force is this node's part done once
//!    (stage, promote or check the key; [`rotation`]); its report goes on
//!    a watch channel once done, after a handshake wait in a task where the
//!    phase needs one, so later commands are not held up.
//! 5. Record the generation (atomically, in the state directory) so a
//!    restarted daemon's Hello says what is really in force.
//!
//! The components are owned by three actors ([`actors`]: WireGuard,
//! Routing, BPF maps), each restarted by its supervisor on failure and
//! re-adopting what the kernel holds; [`NodeDataPlane`] keeps the state in
//! force and the plan, and sends them the steps above as typed messages.
//!
//! Blocking calls (UAPI, bpf(2), files) run on `spawn_blocking` threads.
//! Everything that touches interfaces runs in the network namespace of the
//! runtime [`NodeDataPlane::open`] is called on (the actors run on it too): its blocking threads are
//! spawned from it and inherit it.

mod actors;
mod applied_generation;
mod config;
mod device_lost;
mod error;
mod handshake_wait;
mod lane;
mod mesh_link;
mod node_data_plane;
pub mod plan;
pub mod rotation;
mod rotation_reports;

pub use actors::{KeyFacts, Processes};
pub use applied_generation::{FILE as GENERATION_FILE, GenerationFile};
pub use config::Config;
pub use device_lost::DeviceLost;
pub use error::DataPlaneError;
pub use node_data_plane::{DataPlaneReader, NodeDataPlane};
pub use plan::{Plan, Refused};
pub use rotation_reports::RotationReports;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`; a panic elsewhere while holding it does not poison the
/// data plane (every step re-reads what it needs).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a blocking step (UAPI, bpf(2), files) off the runtime's threads,
/// in the caller's tracing span (its lines name the node and the actor).
async fn blocking<T: Send + 'static>(
    component: &'static str,
    f: impl FnOnce() -> Result<T, DataPlaneError> + Send + 'static,
) -> Result<T, DataPlaneError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|source| DataPlaneError::Task { component, source })?
}
