//! The status writer: what daemons report over their streams becomes the
//! status of their VpbluNode, so `kubectl get vpblunodes` shows each node's
//! public key, backend, MTU, applied generation and peer health, and the
//! published key feeds the next recompute (that is how a new node's key
//! reaches every peer).
//!
//! It also keeps the `Connected` condition: `True` (`StreamOpen`) from a
//! daemon's Hello, `False` (`StreamClosed`, with the time) when the stream
//! server says the node's stream closed and no newer one replaced it. Only
//! the leader's writer owns it: every [`connection_grace`] (one Lease
//! period) it marks `False` (`NoStream`) every VpbluNode whose daemon has
//! no stream to it, so a `True` left by an old leader does not outlive the
//! failover.
//!
//! And the `Ready` condition (see `readiness.rs`): connected, the desired
//! generation applied (`desiredGeneration`, the last one sent, is written
//! too), every peer with a recent handshake; otherwise `False` with
//! `Disconnected`, `Lagging` or `PeersDown` and a message naming what is
//! not so. A daemon gets a few seconds to apply a change and a new peer
//! some more to handshake before either counts against it (`watch.rs`).
//!
//! [`connection_grace`]: StatusWriterArgs::connection_grace
//!
//! It runs only on the leader (behind a gate), writes with server-side
//! apply under [`vpblu_k8s::FIELD_MANAGER`] to the status subresource, and
//! skips a write when nothing it owns would change. An apply replaces
//! every field the manager applied before, so a node's report starts from
//! its VpbluNode's current status (in the informer's cache): a restarted
//! writer's first Observed must not erase the key the previous one wrote.
//!
//! It never writes `status.rotation` nor `status.stagedPublicKey`: the
//! rotation scheduler owns those (merge patches under its own field
//! manager, which an apply of other fields leaves alone). At the end of a
//! successful rotation the scheduler hands the node's new key over through
//! a [`KeyHandoff`]; from then on this writer's report carries the new key,
//! so no later write of the report can put the old one back.
//!
//! Writes are coalesced per node and never block the writer: a node is
//! queued at most once, a change of its key, backend, MTU or connection is
//! written at once, while acks and observations (which every daemon sends
//! for every change, so N writes per change) wait [`LAZY_DELAY`] for more
//! and then go out at most [`queue::LAZY_WRITES_PER_SECOND`] a second
//! across the cluster. At most [`MAX_WRITES`] writes run at a time. A node
//! whose VpbluNode is not in the cache yet (a new node: Recompute creates
//! it) is looked at again every [`ABSENT_RECHECK`], without an API call;
//! a failed write is retried after [`RETRY`] (100 ms, doubling up to
//! 5 s).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use vpblu_k8s::{FIELD_MANAGER, VpbluNode};
use vpblu_messages::{Backend, NodeName, Upstream};
use vpblu_runtime::{Backoff, Forward, broadcast_messages, forward};

use crate::informers::Cache;
use crate::rotation::KeyHandoff;
use crate::stream::StreamEvent;

mod metrics;
mod queue;
mod readiness;
mod report;
mod watch;

use metrics::Outcome;
pub use metrics::StatusMetrics;
use queue::{Tier, WriteQueue};
use report::{Connection, NodeReport, Ready};
use watch::Watch;

/// How often the graces above are looked at.
const GRACE_TICK: Duration = Duration::from_secs(2);

/// How long one status write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// When a write failed (e.g. the VpbluNode is not created yet), try again
/// after 100 ms, doubling on each further failure up to 5 s.
const RETRY: Backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) };

/// A change only to what a node applied or observes waits this long for
/// more before it is written: a burst of acks costs one write per node,
/// not one per ack.
const LAZY_DELAY: Duration = Duration::from_secs(1);

/// Status writes under way at once (each node has at most one).
const MAX_WRITES: usize = 8;

/// How often a node whose VpbluNode is not cached yet is looked at again.
const ABSENT_RECHECK: Duration = Duration::from_millis(50);

/// What the status writer starts with.
#[derive(Clone)]
pub struct StatusWriterArgs {
    /// The API client.
    pub client: kube::Client,
    /// The stream server's events (Hello, Observed, RotationReport, and
    /// closed streams).
    pub events: broadcast::Sender<StreamEvent>,
    /// The VpbluNode informer's cache: where a node's report starts from.
    pub vpblu_nodes: Cache<VpbluNode>,
    /// New keys of nodes whose rotation succeeded, from the scheduler.
    pub handoff: KeyHandoff,
    /// Metrics, registered once by the caller.
    pub metrics: StatusMetrics,
    /// How long daemons get to connect to a new leader before the
    /// VpbluNodes of those that did not are marked `Connected=False`, and
    /// how often that is checked again: one Lease period.
    pub connection_grace: Duration,
}

impl std::fmt::Debug for StatusWriterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriterArgs").finish_non_exhaustive()
    }
}

/// Messages the status writer takes.
#[derive(Debug)]
pub enum StatusWriterMsg {
    /// A daemon said something on its stream, or its stream closed (sent
    /// by the event task).
    Event(StreamEvent),
    /// Events were lost because the writer fell behind; the next message of
    /// every node is compared with the cache rather than with what this
    /// writer last wrote.
    Lagged(u64),
    /// Start the writes now due (sent to itself).
    Flush,
    /// The rotation scheduler handed over new keys (sent by the handoff
    /// task).
    KeysHanded,
    /// A write ended (sent by its task).
    Written(Written),
    /// Mark the VpbluNodes whose daemons have no stream to this leader
    /// (sent to itself every connection grace).
    Sweep,
    /// Look at lag and handshake graces that may have run out (sent to
    /// itself every [`GRACE_TICK`]).
    Tick,
}

/// Writes VpbluNode status. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct StatusWriter;

/// A write finished (sent by its task to the writer).
#[derive(Debug)]
pub struct Written {
    node: NodeName,
    report: NodeReport,
    ok: bool,
}

/// The status writer's state.
#[derive(Debug)]
pub struct StatusWriterState {
    api: Api<VpbluNode>,
    vpblu_nodes: Cache<VpbluNode>,
    reports: BTreeMap<NodeName, NodeReport>,
    written: BTreeMap<NodeName, NodeReport>,
    queue: WriteQueue,
    /// Writes under way (at most [`MAX_WRITES`], one per node).
    writing: BTreeMap<NodeName, AbortHandle>,
    /// The delay before the next retry of a node whose last write failed.
    /// Failed writes in a row, by node.
    backoff: BTreeMap<NodeName, u32>,
    /// When the pending `Flush` fires, if one is pending.
    flush_at: Option<Instant>,
    handoff: KeyHandoff,
    /// The handed-over key last taken into each node's report: a key is
    /// taken once, so a later Hello with another key still wins.
    handed: BTreeMap<NodeName, String>,
    metrics: StatusMetrics,
    /// Nodes whose daemon has a stream open to this controller.
    connected_here: BTreeSet<NodeName>,
    /// What `Ready` is judged from beyond the report: lag and peers down.
    watch: Watch,
    _events: Forward,
    _handoffs: Forward,
    timers: Vec<tokio::task::JoinHandle<()>>,
}

/// `node`'s status as the VpbluNode informer's cache holds it.
fn cached_report(cache: &Cache<VpbluNode>, node: &NodeName) -> NodeReport {
    let current = cache.store().get(&ObjectRef::new(node.as_str()));
    let status = current.as_ref().and_then(|v| v.status.as_ref());
    status.map(NodeReport::from_status).unwrap_or_default()
}

impl StatusWriterState {
    /// `node`'s report, started from its VpbluNode's current status.
    fn report(&mut self, node: &NodeName) -> &mut NodeReport {
        let cache = &self.vpblu_nodes;
        self.reports.entry(node.clone()).or_insert_with(|| cached_report(cache, node))
    }

    /// Judges `node`'s `Ready` condition anew.
    fn judge_ready(&mut self, node: &NodeName) {
        if let Some(report) = self.reports.get_mut(node) {
            let verdict = self.watch.verdict(node, report, Instant::now());
            Ready::update(&mut report.ready, verdict);
        }
    }

    /// Marks every cached VpbluNode whose daemon has no stream to this
    /// controller: a `Connected=True` written by an old leader ends here.
    fn sweep(&mut self) {
        let nodes: Vec<NodeName> = self
            .vpblu_nodes
            .store()
            .state()
            .iter()
            // Borrowed until one is found: every 2-15 s over every node.
            .filter_map(|v| v.metadata.name.as_deref())
            .filter(|n| !self.connected_here.contains(*n))
            .filter_map(|n| NodeName::new(n).ok())
            .collect();
        for node in nodes {
            if Connection::absent(&mut self.report(&node).connection) {
                tracing::info!(node = %node, "no stream from this node's daemon to the leader; marking it disconnected");
            }
            self.changed(&node);
        }
    }

    /// Takes what `node`'s daemon said into its report; false when that
    /// cannot change its status.
    fn take(&mut self, node: &NodeName, upstream: Upstream) -> bool {
        match upstream {
            Upstream::Hello(hello) => {
                self.connected_here.insert(node.clone());
                let report = self.report(node);
                Connection::set(&mut report.connection, true);
                report.public_key = Some(hello.public_key.to_base64());
                report.backend = Some(match hello.backend {
                    Backend::Kernel => "kernel",
                    Backend::Userspace => "userspace",
                });
                report.mtu = Some(hello.mtu);
                report.applied_generation = Some(hello.applied_generation.0);
            }
            Upstream::Ack { generation, result: Ok(()) } => {
                self.report(node).applied_generation = Some(generation.0);
            }
            // A failed apply changes nothing the daemon runs; the stream's
            // ack tracking keeps the error (and the node turns Lagging).
            Upstream::Ack { result: Err(_), .. } => return false,
            Upstream::Observed(peers) => {
                self.watch.observe(node, &peers, Instant::now());
                self.report(node).observe(&peers);
            }
            // Rotation progress is written by the rotation scheduler.
            Upstream::RotationReport(_) => return false,
        }
        true
    }

    /// Queues a write of `node`'s report if it differs from what the API
    /// holds (what this writer last wrote, or else the cache), unless one
    /// is under way (its end looks again).
    fn changed(&mut self, node: &NodeName) {
        self.judge_ready(node);
        if self.writing.contains_key(node) {
            return;
        }
        let Some(report) = self.reports.get(node) else { return };
        let cached;
        let current = match self.written.get(node) {
            Some(written) => written,
            None => {
                cached = cached_report(&self.vpblu_nodes, node);
                &cached
            }
        };
        if current == report {
            self.queue.remove(node);
            return;
        }
        let lazy_only = report.lazy_part_over(current);
        let now = Instant::now();
        if lazy_only == *report {
            self.queue.schedule(node, Tier::Lazy, now + LAZY_DELAY);
        } else {
            self.queue.schedule(node, Tier::Urgent, now);
        }
    }

    /// Starts the writes that are due, as many as may run, and arms the
    /// timer for the next one.
    fn start_writes(&mut self, myself: &ActorRef<StatusWriterMsg>) {
        let now = Instant::now();
        while self.writing.len() < MAX_WRITES {
            let Some((node, tier)) = self.queue.pop_due(now) else { break };
            let Some(report) = self.reports.get(&node).cloned() else { continue };
            if self.vpblu_nodes.synced()
                && self.vpblu_nodes.store().get(&ObjectRef::new(node.as_str())).is_none()
            {
                // Not created yet: writing would only earn a NotFound.
                self.queue.schedule(&node, tier, now + ABSENT_RECHECK);
                continue;
            }
            let api = self.api.clone();
            let me = myself.clone();
            let name = node.clone();
            let task = vpblu_runtime::spawn(async move {
                let ok = write(&api, &name, &report).await;
                let _stopped = me.cast(StatusWriterMsg::Written(Written { node: name, report, ok }));
            });
            self.writing.insert(node, task.abort_handle());
        }
        if self.writing.len() >= MAX_WRITES {
            return; // the next write to end starts more
        }
        if let Some(next) = self.queue.next_due()
            && self.flush_at.is_none_or(|at| next < at)
        {
            self.flush_at = Some(next);
            myself.send_after(next.saturating_duration_since(now), || StatusWriterMsg::Flush);
        }
    }

    /// Takes every newly handed-over key into its node's report.
    fn take_handed_keys(&mut self) {
        for (node, key) in self.handoff.current() {
            if self.handed.get(&node) == Some(&key) {
                continue;
            }
            self.report(&node).public_key = Some(key.clone());
            self.handed.insert(node.clone(), key);
            self.changed(&node);
        }
    }

    fn written(&mut self, done: Written) {
        self.writing.remove(&done.node);
        self.metrics.written(if done.ok { Outcome::Ok } else { Outcome::Failed });
        if done.ok {
            self.backoff.remove(&done.node);
            self.written.insert(done.node.clone(), done.report);
            self.changed(&done.node);
        } else {
            let failures = self.backoff.entry(done.node.clone()).or_default();
            let delay = RETRY.ceiling(*failures);
            *failures = failures.saturating_add(1);
            self.queue.schedule(&done.node, Tier::Urgent, Instant::now() + delay);
        }
    }
}

impl StatusWriter {
    /// The supervised child `status-writer` that runs with `args`.
    pub fn child(args: StatusWriterArgs) -> vpblu_runtime::ChildSpec {
        vpblu_runtime::ChildSpec::new("status-writer", move || (StatusWriter, args.clone()))
    }
}

impl Actor for StatusWriter {
    type Msg = StatusWriterMsg;
    type State = StatusWriterState;
    type Arguments = StatusWriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StatusWriterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let events = broadcast_messages(args.events.subscribe()).map(|event| match event {
            Ok(event) => StatusWriterMsg::Event(event),
            Err(lost) => StatusWriterMsg::Lagged(lost),
        });
        let handoffs = forward(args.handoff.changes().map(|()| StatusWriterMsg::KeysHanded), myself.clone());
        // Keys handed over before this writer (re)started count too.
        myself.cast(StatusWriterMsg::KeysHanded)?;
        let timers = vec![
            myself.send_interval(args.connection_grace, || StatusWriterMsg::Sweep),
            myself.send_interval(GRACE_TICK, || StatusWriterMsg::Tick),
        ];
        Ok(StatusWriterState {
            api: Api::all(args.client),
            vpblu_nodes: args.vpblu_nodes,
            reports: BTreeMap::new(),
            written: BTreeMap::new(),
            queue: WriteQueue::default(),
            writing: BTreeMap::new(),
            backoff: BTreeMap::new(),
            flush_at: None,
            handoff: args.handoff,
            handed: BTreeMap::new(),
            metrics: args.metrics,
            connected_here: BTreeSet::new(),
            watch: Watch::default(),
            _events: forward(events, myself),
            _handoffs: handoffs,
            timers,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A writer that stopped (lost the lead) writes nothing more.
        for task in state.writing.values() {
            task.abort();
        }
        for timer in &state.timers {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StatusWriterMsg::Flush => state.flush_at = None,
            StatusWriterMsg::KeysHanded => state.take_handed_keys(),
            StatusWriterMsg::Written(done) => state.written(done),
            StatusWriterMsg::Sweep => state.sweep(),
            StatusWriterMsg::Tick => {
                for node in state.watch.due(Instant::now()) {
                    state.changed(&node);
                }
            }
            StatusWriterMsg::Lagged(lost) => {
                tracing::warn!(
                    lost,
                    "status writer fell behind; checking every node's status again on its next report"
                );
                state.written.clear();
                return Ok(());
            }
            StatusWriterMsg::Event(StreamEvent::Closed(node)) => {
                state.connected_here.remove(&node);
                Connection::set(&mut state.report(&node).connection, false);
                state.changed(&node);
            }
            StatusWriterMsg::Event(StreamEvent::Sent(node, generation)) => {
                state.report(&node).desired_generation = Some(generation.0);
                state.changed(&node);
            }
            StatusWriterMsg::Event(StreamEvent::Message(node, upstream)) => {
                if !state.take(&node, upstream) {
                    return Ok(());
                }
                state.changed(&node);
            }
        }
        state.start_writes(&myself);
        state.metrics.set_pending(state.queue.len() + state.writing.len());
        Ok(())
    }
}

/// Applies `report` as `node`'s status; false when the write failed
/// (logged; the caller retries). A status is a view, not a command:
/// nothing breaks while it lags.
async fn write(api: &Api<VpbluNode>, node: &NodeName, report: &NodeReport) -> bool {
    let patch = json!({
        "apiVersion": "vpblu.dev/v1alpha1",
        "kind": "VpbluNode",
        "status": report.status(),
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result =
        tokio::time::timeout(WRITE_TIMEOUT, api.patch_status(node.as_str(), &params, &Patch::Apply(&patch)))
            .await;
    match result {
        Ok(Ok(_)) => {
            tracing::debug!(node = %node, "wrote status");
            true
        }
        // A new node's VpbluNode is created by Recompute, maybe after its
        // daemon's Hello: expected, and retried soon.
        Ok(Err(kube::Error::Api(status))) if status.is_not_found() => {
            tracing::debug!(node = %node, "no VpbluNode yet for this node's status; will retry");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(node = %node, error = %e, "could not write VpbluNode status; will retry");
            false
        }
        Err(_) => {
            tracing::warn!(node = %node, "VpbluNode status write timed out; will retry");
            false
        }
    }
}
