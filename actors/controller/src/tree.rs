//! The controller's supervision tree:
//!
//! - `health`: `/healthz`, `/readyz` (ready once every cache has synced,
//!   leader or standby: a readiness that followed the Lease would stall
//!   every rolling update, since a new standby would never become Ready),
//!   `/metrics`;
//! - `leader`: holds the Lease and flips the `leading` flag;
//! - `recompute` and one informer per kind: watch the API, compute desired
//!   state (only while leading) into the stream server's `Desired` store;
//! - behind a gate, a supervisor of what only the leader runs:
//!   - `stream-server`: listens for daemons only while this replica leads,
//!     so a daemon the Service sends to the standby is refused at once and
//!     retries (with backoff) until it reaches the leader; losing the Lease
//!     closes every stream, and the daemons reconnect;
//!   - `status-writer`: daemons' Hello/Ack/Observed become VpbluNode status
//!     (the published key feeds the next recompute);
//!   - `policy-status`: the engine's findings become policy conditions;
//!   - `rotation-scheduler`: runs RotationPolicies, one node's key rotation
//!     at a time, from the daemons' RotationReports (the same stream events
//!     the status writer gets), recorded in VpbluNode status.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::{broadcast, watch};
use vpblu_messages::{NodeDesiredState, NodeName};
use vpblu_runtime::{
    ChildSpec, Gate, Health, HealthServer, RestartPolicy, RootExit, Supervisor, SupervisorArgs,
    SupervisorMsg, run_root_observed,
};

use crate::Args;
use crate::informers::Caches;
use crate::leader::{Leader, LeaderArgs, LeaderConfig};
use crate::metrics::ControllerMetrics;
use crate::policy_status::{PolicyStatus, PolicyStatusArgs};
use crate::recompute::{Recompute, RecomputeArgs, RecomputeConfig, RecomputeHandle};
use crate::rotation::{KeyHandoff, ReportBook, RotationScheduler, RotationSchedulerArgs, SchedulerConfig};
use crate::status_writer::{StatusWriter, StatusWriterArgs};
use crate::stream::{
    Desired, RefusalEvents, StreamConfig, StreamSecurity, StreamServer, StreamServerArgs,
    controller_reference,
};
use vpblu_engine::Finding;

/// Hello, Observed and RotationReport messages waiting for the status
/// writer and the rotation scheduler.
const EVENT_BUFFER: usize = 4096;

/// Runs the controller until SIGTERM/SIGINT (→ [`RootExit::Stopped`]) or
/// until the tree gives up (→ [`RootExit::Failed`]).
pub async fn run(args: Args) -> RootExit {
    run_until(args, None, vpblu_runtime::shutdown_signal(), |_| {}).await
}

/// [`run`] as a library, for tests and benchmarks that embed the
/// controller: `client` (`None`: from the environment, as `run` does),
/// stopped in order when `shutdown` resolves, and `started` is handed the
/// root supervisor (its children are named as in this module's docs; the
/// leader-only ones run under `leader-gate`).
pub async fn run_until(
    args: Args,
    client: Option<kube::Client>,
    shutdown: impl Future<Output = &'static str>,
    started: impl FnOnce(ActorRef<SupervisorMsg>),
) -> RootExit {
    // Every flag is named (no `..`): one added to `Args` must be wired
    // somewhere or this does not compile. A `_` is read from `args` by the
    // function named beside it.
    let Args {
        grpc_addr,
        metrics_addr,
        dashboard_addr: _, // Dashboard::child
        lease_name,
        lease_namespace,
        identity,
        lease_duration,
        lease_renew,
        lease_outage_grace,
        resync_interval,
        tls_cert_file: _, // StreamSecurity::from_args, as the five below
        tls_key_file: _,
        token_audience: _,
        daemon_service_account: _,
        daemon_daemonset: _,
        insecure_dev: _,
        fault_injection: _, // main.rs, before the tree, as log_format
        log_format: _,
        service_cidrs,
        job: _, // main.rs: a job runs instead of the tree
    } = &args;
    let leader_config = LeaderConfig {
        namespace: lease_namespace.clone(),
        name: lease_name.clone(),
        identity: identity.clone(),
        lease_duration: *lease_duration,
        renew: *lease_renew,
        outage_grace: *lease_outage_grace,
    };
    if let Err(e) = leader_config.check() {
        return RootExit::Failed(e.to_string());
    }
    let client = match kube_client(client).await {
        Ok(client) => client,
        Err(e) => return RootExit::Failed(e),
    };
    // Before anything starts: a missing or bad certificate stops the
    // controller here, naming the file.
    let security = match StreamSecurity::from_args(&args, &client) {
        Ok(security) => security,
        Err(e) => return RootExit::Failed(e),
    };
    let refusals = RefusalEvents::start(client.clone(), controller_reference(&args));
    let health = Health::new();
    let metrics = ControllerMetrics::register(&health);
    let (leading_tx, leading) = watch::channel(false);
    let caches = Caches::new();
    let recompute = RecomputeHandle::new();
    let desired = Desired::new();
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let (findings_tx, findings) = watch::channel(Vec::new());

    let mut children = vec![
        HealthServer::child(*metrics_addr, &health),
        Leader::child(LeaderArgs {
            client: client.clone(),
            config: leader_config,
            leading: leading_tx,
            metrics: metrics.leader,
        }),
        Recompute::child(RecomputeArgs {
            caches: caches.clone(),
            sink: Arc::new(Published { desired: desired.clone(), findings: findings_tx }),
            client: client.clone(),
            leading: leading.clone(),
            handle: recompute.clone(),
            config: RecomputeConfig { service_cidrs: service_cidrs.clone(), ..RecomputeConfig::default() },
            metrics: metrics.recompute,
            health: health.clone(),
        }),
    ];
    children.extend(caches.informers(&client, lease_namespace, &recompute, &metrics.informers));
    children.push(crate::dashboard::Dashboard::child(&args, &client, &caches, &events, &desired, &leading));
    let stream_config = StreamConfig { resync_interval: *resync_interval, ..StreamConfig::default() };
    let stream_metrics = metrics.stream;
    let grpc_addr = *grpc_addr;
    let handoff = KeyHandoff::new();
    let status_writer = StatusWriter::child(StatusWriterArgs {
        client: client.clone(),
        events: events.clone(),
        vpblu_nodes: caches.vpblu_nodes.clone(),
        handoff: handoff.clone(),
        metrics: metrics.status,
        connection_grace: *lease_duration,
    });
    // Recorded for the life of the process, not of one scheduler.
    let reports = ReportBook::new();
    let _recorder = reports.record_from(&events);
    let rotation_scheduler = RotationScheduler::child(RotationSchedulerArgs {
        client: client.clone(),
        caches: caches.clone(),
        desired: desired.clone(),
        reports,
        handoff,
        metrics: metrics.rotation,
        config: SchedulerConfig::default(),
    });
    let policy_status = PolicyStatus::child(PolicyStatusArgs { client, caches, findings });
    let stream_server = ChildSpec::new("stream-server", move || {
        let args = StreamServerArgs {
            addr: grpc_addr,
            desired: desired.clone(),
            config: stream_config.clone(),
            metrics: stream_metrics.clone(),
            events: events.clone(),
            transport: security.transport.clone(),
            auth: security.auth.clone(),
            refusals: refusals.clone(),
        };
        (StreamServer, args)
    });
    let leader_only = vec![stream_server, status_writer, policy_status, rotation_scheduler];
    let leader_tree = ChildSpec::new("leader-only", move || {
        let args =
            SupervisorArgs { children: leader_only.clone(), policy: RestartPolicy::default(), on_exit: None };
        (Supervisor, args)
    });
    children.push(Gate::child("leader-gate", leading, leader_tree));
    run_root_observed(children, RestartPolicy::default(), shutdown, started).await
}

/// The client given, or one from the environment (in a pod, its service
/// account; elsewhere KUBECONFIG).
async fn kube_client(client: Option<kube::Client>) -> Result<kube::Client, String> {
    match client {
        Some(client) => Ok(client),
        None => kube::Client::try_default().await.map_err(|e| {
            format!(
                "cannot build a Kubernetes client: {e} (in a pod the service account is used; elsewhere set \
                 KUBECONFIG)"
            )
        }),
    }
}

/// Where Recompute's results go: states to the daemons' streams, findings
/// to the policy status writer.
#[derive(Debug)]
struct Published {
    desired: Desired,
    findings: watch::Sender<Vec<Finding>>,
}

impl crate::recompute::DesiredSink for Published {
    fn publish(&self, states: BTreeMap<NodeName, Arc<NodeDesiredState>>, findings: Vec<Finding>) {
        self.desired.publish_shared(states);
        self.findings.send_replace(findings);
    }
}
