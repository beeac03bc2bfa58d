//! Recompute: turns the informers' caches into every node's desired state
//! and hands it to a [`DesiredSink`] (the stream server's `Desired` store).
//!
//! - **Coalescing.** A change waits [`RecomputeConfig::debounce`] for more;
//!   a pass runs once the changes pause for that long, or at the latest
//!   [`RecomputeConfig::max_delay`] after the first of them, so sustained
//!   churn still publishes regularly.
//! - **A pass** takes the caches' objects (shared, not copied), converts
//!   them (`from_k8s`) and computes (`desired_state::compute`) on a
//!   blocking thread (5000 nodes take about half a second), and publishes
//!   only when the states or the findings differ from the last published
//!   ones. Its log line says how long each step took.
//! - **Leadership.** Only the leader publishes and writes. A standby's
//!   informers keep its caches warm and it computes as the leader would,
//!   holding the result; when it is elected it publishes that at once (or
//!   computes first if something changed since), and when it loses the
//!   Lease it stops publishing.
//! - **VpbluNodes.** The leader makes sure every Node has its VpbluNode
//!   (`vpblu_nodes`) as soon as it hears of the Node, and again after
//!   every pass.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, future, stream};
use kube::{Api, Client};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use vpblu_engine::Previous;
use vpblu_messages::{Cidr, NodeDesiredState, NodeName};
use vpblu_runtime::{ChildSpec, Forward, Health, forward, watch_changes};

use crate::from_k8s::inputs_from;
use crate::informers::{Caches, Kind};
use vpblu_engine::Finding;

use self::metrics::Phases;
pub use self::metrics::RecomputeMetrics;
pub use self::vpblu_nodes::ApplyError;
use self::vpblu_nodes::VpbluNodeCreator;

mod metrics;
mod vpblu_nodes;

/// Where computed desired state goes. The stream server's `Desired` store
/// implements it; tests record what they are given.
pub trait DesiredSink: fmt::Debug + Send + Sync {
    /// The newest desired state of every node (keyed by node, each key
    /// equal to its state's `node`) and every finding, sorted. Called from
    /// a blocking thread, only when the states or the findings changed. A
    /// node whose state did not change keeps the very `Arc` it had in the
    /// previous publish.
    fn publish(&self, states: BTreeMap<NodeName, Arc<NodeDesiredState>>, findings: Vec<Finding>);
}

/// How long changes are gathered before a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecomputeConfig {
    /// A pass runs once no change has come for this long...
    pub debounce: Duration,
    /// ...or this long after the first change it covers, whichever is first.
    pub max_delay: Duration,
    /// The cluster's Service CIDRs (`--service-cidr`): routes into them
    /// are refused unless their policy opts in.
    pub service_cidrs: Vec<Cidr>,
}

impl Default for RecomputeConfig {
    fn default() -> Self {
        RecomputeConfig {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            service_cidrs: Vec::new(),
        }
    }
}

/// How the informers reach the running Recompute actor, across its
/// restarts: Recompute registers itself here when it starts. A change sent
/// while it is restarting is not lost: a fresh Recompute reads every cache.
#[derive(Clone, Debug, Default)]
pub struct RecomputeHandle(Arc<Mutex<Option<ActorRef<RecomputeMsg>>>>);

impl RecomputeHandle {
    /// A handle no Recompute has registered with yet.
    pub fn new() -> Self {
        RecomputeHandle::default()
    }

    /// The running Recompute, if one has started.
    pub fn actor(&self) -> Option<ActorRef<RecomputeMsg>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Tells Recompute that objects of `kind` changed.
    pub fn changed(&self, kind: Kind) {
        if let Some(actor) = self.actor() {
            // A Recompute that just stopped re-reads every cache when it restarts.
            let _stopped = actor.cast(RecomputeMsg::Changed { kind });
        }
    }

    fn register(&self, actor: ActorRef<RecomputeMsg>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(actor);
    }
}

/// What Recompute starts with. Cheap to clone: a restart gets a copy.
#[derive(Clone)]
pub struct RecomputeArgs {
    /// The informers' caches.
    pub caches: Caches,
    /// Where desired state goes.
    pub sink: Arc<dyn DesiredSink>,
    /// For creating VpbluNodes.
    pub client: Client,
    /// True while this replica leads (from the Leader).
    pub leading: watch::Receiver<bool>,
    /// Where Recompute registers itself for the informers.
    pub handle: RecomputeHandle,
    /// Coalescing delays.
    pub config: RecomputeConfig,
    /// Metrics, registered once by the caller.
    pub metrics: RecomputeMetrics,
    /// Readiness is set once every cache has synced.
    pub health: Health,
}

impl fmt::Debug for RecomputeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecomputeArgs")
            .field("caches", &self.caches)
            .field("sink", &self.sink)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Messages Recompute takes.
#[derive(Debug)]
pub enum RecomputeMsg {
    /// Objects of `kind` changed; the informer's cache already shows it.
    Changed {
        /// The kind that changed.
        kind: Kind,
    },
    /// The coalescing timer fired: run a pass if the burst is over or has
    /// lasted `max_delay` (sent to itself).
    Flush,
    /// Run a pass now (sent to itself on start).
    Now,
    /// This replica became the leader (`true`) or stopped being it.
    Leading(bool),
    /// A VpbluNode apply finished; `Err` says why it failed.
    Applied {
        /// The node (and VpbluNode) name.
        node: String,
        /// The outcome.
        result: Result<(), ApplyError>,
    },
    /// Create the VpbluNodes still missing (sent to itself to retry).
    EnsureVpbluNodes,
    /// What Recompute has done so far.
    Status(RpcReplyPort<RecomputeStatus>),
}

/// Recompute's progress, for tests and the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecomputeStatus {
    /// Whether it acts as the leader.
    pub leading: bool,
    /// Whether every cache has synced.
    pub synced: bool,
    /// Passes run since it started.
    pub passes: u64,
    /// Passes whose result was published.
    pub publishes: u64,
    /// Nodes in the last published result.
    pub nodes: usize,
    /// Findings in the last published result.
    pub findings: usize,
}

/// Computes desired state. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct Recompute;

impl Recompute {
    /// The supervised child `recompute` that runs with `args`.
    pub fn child(args: RecomputeArgs) -> ChildSpec {
        ChildSpec::new("recompute", move || (Recompute, args.clone()))
    }
}

/// Changes not yet covered by a pass.
#[derive(Clone, Copy, Debug)]
struct Burst {
    first: Instant,
    last: Instant,
}

/// A running Recompute.
pub struct RecomputeState {
    caches: Caches,
    sink: Arc<dyn DesiredSink>,
    vpblu_nodes: VpbluNodeCreator,
    config: RecomputeConfig,
    metrics: RecomputeMetrics,
    health: Health,
    leading: bool,
    burst: Option<Burst>,
    flush_scheduled: bool,
    // The last published output; `None` forces the next pass to publish.
    last: Option<Arc<Published>>,
    // A standby's last computed output, published at once when it leads.
    prepared: Option<Arc<Published>>,
    status: RecomputeStatus,
    _leadership: Forward,
}

impl fmt::Debug for RecomputeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecomputeState").field("status", &self.status).finish_non_exhaustive()
    }
}

impl Actor for Recompute {
    type Msg = RecomputeMsg;
    type State = RecomputeState;
    type Arguments = RecomputeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RecomputeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut leading = args.leading;
        let is_leading = *leading.borrow_and_update();
        // When the Leader is gone for good, act as a standby.
        let gone = stream::once(future::ready(RecomputeMsg::Leading(false)));
        let leadership =
            forward(watch_changes(leading).map(RecomputeMsg::Leading).chain(gone), myself.clone());
        args.handle.register(myself.clone());
        args.health.set_ready(args.caches.synced());
        // Changes made while no Recompute ran are in the caches already.
        myself.cast(RecomputeMsg::Now)?;
        Ok(RecomputeState {
            caches: args.caches,
            sink: args.sink,
            vpblu_nodes: VpbluNodeCreator::new(Api::all(args.client)),
            config: args.config,
            metrics: args.metrics,
            health: args.health,
            leading: is_leading,
            burst: None,
            flush_scheduled: false,
            last: None,
            prepared: None,
            status: RecomputeStatus { leading: is_leading, ..RecomputeStatus::default() },
            _leadership: leadership,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RecomputeMsg::Changed { kind } => {
                tracing::trace!(%kind, "changed");
                state.health.set_ready(state.caches.synced());
                let now = Instant::now();
                match &mut state.burst {
                    Some(burst) => burst.last = now,
                    None => state.burst = Some(Burst { first: now, last: now }),
                }
                if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_after(state.config.debounce, || RecomputeMsg::Flush);
                }
                // A new Node's VpbluNode is created now, not after the pass:
                // its daemon's key can land only once it exists.
                if kind == Kind::Node && state.leading && state.caches.inputs_synced() {
                    let snapshot = state.caches.snapshot();
                    state.vpblu_nodes.ensure(&myself, &snapshot);
                }
            }
            RecomputeMsg::Flush => {
                state.flush_scheduled = false;
                let Some(burst) = state.burst else { return Ok(()) };
                let due = (burst.last + state.config.debounce).min(burst.first + state.config.max_delay);
                let now = Instant::now();
                if now >= due {
                    state.burst = None;
                    pass(&myself, state).await?;
                } else {
                    state.flush_scheduled = true;
                    myself.send_after(due - now, || RecomputeMsg::Flush);
                }
            }
            RecomputeMsg::Now => {
                state.burst = None;
                pass(&myself, state).await?;
            }
            RecomputeMsg::Leading(leading) => {
                if leading != state.leading {
                    tracing::info!(leading, "leadership changed");
                    state.leading = leading;
                    state.status.leading = leading;
                    // A new term publishes in full; a standby forgets
                    // what it published and computes for a takeover.
                    state.last = None;
                    if leading {
                        take_over(&myself, state).await?;
                    } else {
                        state.burst = None;
                        pass(&myself, state).await?;
                    }
                }
            }
            RecomputeMsg::Applied { node, result } => {
                if state.vpblu_nodes.applied(&myself, &node, result) {
                    state.metrics.apply_errors.inc();
                }
            }
            RecomputeMsg::EnsureVpbluNodes => {
                if state.leading && state.caches.inputs_synced() {
                    let snapshot = state.caches.snapshot();
                    state.vpblu_nodes.ensure(&myself, &snapshot);
                }
            }
            RecomputeMsg::Status(reply) => {
                let status = RecomputeStatus { synced: state.caches.synced(), ..state.status.clone() };
                let _caller_gone = reply.send(status);
            }
        }
        Ok(())
    }
}

/// A published result: every node's state, shared with the [`DesiredSink`]
/// (and through it with the streams), and the findings.
#[derive(Debug, PartialEq, Eq)]
struct Published {
    nodes: BTreeMap<NodeName, Arc<NodeDesiredState>>,
    findings: Vec<Finding>,
}

impl Published {
    /// Wraps freshly computed `nodes`, reusing `last`'s `Arc` for every
    /// state that did not change: what is unchanged is then held once,
    /// and compared by pointer downstream.
    fn share(
        nodes: BTreeMap<NodeName, NodeDesiredState>,
        findings: Vec<Finding>,
        last: Option<&Published>,
    ) -> Self {
        let nodes = nodes
            .into_iter()
            .map(|(node, state)| {
                let old = last.and_then(|last| last.nodes.get(&node)).filter(|old| ***old == state);
                let state = old.map_or_else(|| Arc::new(state), Arc::clone);
                (node, state)
            })
            .collect();
        Published { nodes, findings }
    }
}

/// One pass: snapshot, convert, compute, publish if changed, then create
/// missing VpbluNodes. Any replica with synced caches computes; only the
/// leader publishes and creates, a standby keeps the result ready for the
/// moment it leads.
async fn pass(myself: &ActorRef<RecomputeMsg>, state: &mut RecomputeState) -> Result<(), ActorProcessingErr> {
    if !state.caches.inputs_synced() {
        tracing::debug!(waiting_for = ?state.caches.unsynced(), "caches not synced yet; not computing");
        return Ok(());
    }
    let started = Instant::now();
    let caches = state.caches.clone();
    let sink = Arc::clone(&state.sink);
    let leading = state.leading;
    // The standby shares its unchanged states with its previous result too.
    let last = if leading { state.last.clone() } else { state.prepared.clone() };
    let service_cidrs = state.config.service_cidrs.clone();
    let (output, snapshot, published, phases) = tokio::task::spawn_blocking(move || {
        let mut phases = Phases::start();
        let snapshot = caches.snapshot();
        phases.lap("snapshot");
        let (mut inputs, mut findings) = inputs_from(snapshot.objects());
        inputs.service_cidrs = service_cidrs;
        phases.lap("convert");
        // The previous result's entries and mesh tree, so unchanged states
        // share their trees with it and `share` compares them cheaply.
        let previous = last.as_deref().map(|last| Previous::of(last.nodes.values().map(|s| &**s)));
        let computed = vpblu_engine::compute_after(&inputs, &previous.unwrap_or_default());
        findings.extend(computed.findings);
        findings.sort();
        findings.dedup();
        phases.lap("compute");
        let output = Arc::new(Published::share(computed.nodes, findings, last.as_deref()));
        let publish = leading && last.as_deref() != Some(&*output);
        phases.lap("compare");
        if publish {
            sink.publish(output.nodes.clone(), output.findings.clone());
        }
        phases.lap("publish");
        (output, snapshot, publish, phases)
    })
    .await
    .map_err(|e| format!("computing desired state failed: {e}"))?;
    let elapsed = started.elapsed();
    state.metrics.duration.observe(elapsed.as_secs_f64());
    state.metrics.passes.inc();
    state.status.passes += 1;
    if !leading {
        tracing::debug!(
            ms = elapsed.as_millis() as u64,
            "standby: desired state computed, held for a takeover"
        );
        state.prepared = Some(output);
        return Ok(());
    }
    if published {
        record_publish(state, &output, elapsed, &phases);
    } else {
        tracing::debug!(ms = elapsed.as_millis() as u64, "desired state unchanged");
    }
    state.last = Some(output);
    state.vpblu_nodes.ensure(myself, &snapshot);
    Ok(())
}

/// A new leader's first publish: what it computed as a standby, when no
/// change came since; otherwise a pass. Daemons that reconnect to it get
/// their state without waiting for a computation.
async fn take_over(
    myself: &ActorRef<RecomputeMsg>,
    state: &mut RecomputeState,
) -> Result<(), ActorProcessingErr> {
    let prepared = state.prepared.take();
    let Some(prepared) = prepared.filter(|_| state.burst.is_none() && state.caches.inputs_synced()) else {
        state.burst = None;
        return pass(myself, state).await;
    };
    let started = Instant::now();
    let sink = Arc::clone(&state.sink);
    let output = Arc::clone(&prepared);
    tokio::task::spawn_blocking(move || sink.publish(output.nodes.clone(), output.findings.clone()))
        .await
        .map_err(|e| format!("publishing desired state failed: {e}"))?;
    let mut phases = Phases::start();
    phases.laps.push(("publish-prepared", started.elapsed()));
    record_publish(state, &prepared, started.elapsed(), &phases);
    state.last = Some(prepared);
    let snapshot = state.caches.snapshot();
    state.vpblu_nodes.ensure(myself, &snapshot);
    Ok(())
}

/// Counts and logs a publish of `output`.
fn record_publish(state: &mut RecomputeState, output: &Published, elapsed: Duration, phases: &Phases) {
    let metrics = &state.metrics;
    metrics.publishes.inc();
    metrics.nodes.set(i64::try_from(output.nodes.len()).unwrap_or(i64::MAX));
    metrics.findings.set(i64::try_from(output.findings.len()).unwrap_or(i64::MAX));
    state.status.publishes += 1;
    state.status.nodes = output.nodes.len();
    state.status.findings = output.findings.len();
    tracing::info!(
        nodes = output.nodes.len(),
        findings = output.findings.len(),
        ms = elapsed.as_millis() as u64,
        phases = %phases,
        "published desired state"
    );
    for finding in &output.findings {
        tracing::debug!(%finding, "finding");
    }
}
