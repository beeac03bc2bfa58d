//! The controller's supervision tree. The root supervises the health and
//! metrics server; the Leader, Informer, Recompute, Stream server and Status
//! writer children join as they are built.

use vpblu_runtime::{Health, HealthServer, RestartPolicy, RootExit, run_root};

use crate::Args;

/// Runs the controller until SIGTERM/SIGINT (→ [`RootExit::Stopped`]) or
/// until the tree gives up (→ [`RootExit::Failed`]).
pub async fn run(args: Args) -> RootExit {
    let health = Health::new();
    let children = vec![HealthServer::child(args.metrics_addr, &health)];
    // Nothing yet gates readiness: the leader and informer children will.
    health.set_ready(true);
    run_root(children, RestartPolicy::default(), vpblu_runtime::shutdown_signal()).await
}
