//! The controller's supervision tree:
//!
//! - `health`: `/healthz`, `/readyz` (ready once every cache has synced,
//!   leader or standby: a readiness that followed the Lease would stall
//!   every rolling update, since a new standby would never become Ready),
//!   `/metrics`;
//! - `leader`: holds the Lease and flips the `leading` flag;
//! - `recompute` and one informer per kind: watch the API, compute desired
//!   state (only while leading) into the stream server's `Desired` store;
//! - `stream-server`, behind a gate: listens for daemons only while this
//!   replica leads, so a daemon the Service sends to the standby is refused
//!   at once and retries (with backoff) until it reaches the leader; losing
//!   the Lease closes every stream, and the daemons reconnect;
//! - `status-writer`, behind a gate too: daemons' Hello/Ack/Observed become
//!   VpbluNode status (the published key feeds the next recompute).

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use vpblu_runtime::{ChildSpec, Gate, Health, HealthServer, RestartPolicy, RootExit, run_root};

use crate::Args;
use crate::informers::{Caches, InformerMetrics};
use crate::leader::{Leader, LeaderArgs, LeaderConfig, LeaderMetrics};
use crate::recompute::{Recompute, RecomputeArgs, RecomputeConfig, RecomputeHandle, RecomputeMetrics};
use crate::status_writer::{StatusWriter, StatusWriterArgs};
use crate::stream::{Desired, StreamConfig, StreamMetrics, StreamServer, StreamServerArgs};

/// Hello, Observed and RotationReport messages waiting for the status writer.
const EVENT_BUFFER: usize = 4096;

/// Runs the controller until SIGTERM/SIGINT (→ [`RootExit::Stopped`]) or
/// until the tree gives up (→ [`RootExit::Failed`]).
pub async fn run(args: Args) -> RootExit {
    let leader_config = LeaderConfig::from_args(&args);
    if let Err(e) = leader_config.check() {
        return RootExit::Failed(e.to_string());
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            return RootExit::Failed(format!(
                "cannot build a Kubernetes client: {e} (in a pod the service account is used; elsewhere set \
                 KUBECONFIG)"
            ));
        }
    };
    let health = Health::new();
    let (leading_tx, leading) = watch::channel(false);
    let caches = Caches::new();
    let recompute = RecomputeHandle::new();
    let desired = Desired::new();
    let (events, _) = broadcast::channel(EVENT_BUFFER);

    let mut children = vec![
        HealthServer::child(args.metrics_addr, &health),
        Leader::child(LeaderArgs {
            client: client.clone(),
            config: leader_config,
            leading: leading_tx,
            metrics: LeaderMetrics::register(&health),
        }),
        Recompute::child(RecomputeArgs {
            caches: caches.clone(),
            sink: Arc::new(desired.clone()),
            client: client.clone(),
            leading: leading.clone(),
            handle: recompute.clone(),
            config: RecomputeConfig::default(),
            metrics: RecomputeMetrics::register(&health),
            health: health.clone(),
        }),
    ];
    children.extend(caches.informers(&client, &recompute, &InformerMetrics::register(&health)));
    let stream_config = StreamConfig { resync_interval: args.resync_interval, ..StreamConfig::default() };
    let stream_metrics = StreamMetrics::register(&health);
    let grpc_addr = args.grpc_addr;
    let status_writer = StatusWriter::child(StatusWriterArgs { client, events: events.clone() });
    let stream_server = ChildSpec::new("stream-server", move || {
        let args = StreamServerArgs {
            addr: grpc_addr,
            desired: desired.clone(),
            config: stream_config.clone(),
            metrics: stream_metrics.clone(),
            events: events.clone(),
        };
        (StreamServer, args)
    });
    children.push(Gate::child("stream-gate", leading.clone(), stream_server));
    children.push(Gate::child("status-gate", leading, status_writer));
    run_root(children, RestartPolicy::default(), vpblu_runtime::shutdown_signal()).await
}
