//! Informers: one actor per watched kind (Node, VpbluNode, TunnelPolicy,
//! RoutePolicy, BlockPolicy, RotationPolicy, Pod), each a kube-runtime
//! watcher filling a reflector store and telling Recompute when something
//! it reads changed.
//!
//! - Desired state is computed from the first five. RotationPolicies feed
//!   the rotation scheduler, and Pods (only the daemon's own, in the
//!   controller's namespace, by label) the check of which node a stream
//!   speaks for; a change to those two is no reason to recompute, but their
//!   caches count for readiness like the others.
//!
//! - The stores live in [`Caches`], outside the actors: a restarted informer
//!   relists into the same store, so Recompute never reads a stale one.
//! - Watch errors (API server gone, 5xx, an expired resourceVersion) are
//!   logged, counted and retried by the watcher after a [`WatchBackoff`];
//!   they do not stop the actor. On reconnect the watcher resumes or relists,
//!   and the store swaps in the new list whole (`InitDone`), never half.
//! - Applies, deletes and finished (re)lists reach Recompute as
//!   [`RecomputeMsg::Changed`](crate::recompute::RecomputeMsg::Changed), but
//!   only when they change what `from_k8s` reads: a Node heartbeat or a
//!   status condition written by the controller itself does not.
//! - Informers run on every replica, leader or not, so a standby's caches
//!   are warm when it takes over.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, future, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::de::DeserializeOwned;
use vpblu_k8s::{BlockPolicy, RotationPolicy, RoutePolicy, TunnelPolicy, VpbluNode};
use vpblu_runtime::{ChildSpec, Forward, Health, error_chain, forward};

use crate::from_k8s::{Objects, inputs_from, rotation_of};
use crate::recompute::RecomputeHandle;

/// The kinds the controller watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelValue)]
pub enum Kind {
    /// `v1` Node.
    Node,
    /// `vpblu.dev` VpbluNode (its status carries the node's public key).
    VpbluNode,
    /// `vpblu.dev` TunnelPolicy.
    TunnelPolicy,
    /// `vpblu.dev` RoutePolicy.
    RoutePolicy,
    /// `vpblu.dev` BlockPolicy.
    BlockPolicy,
    /// `vpblu.dev` RotationPolicy (not a desired-state input).
    RotationPolicy,
    /// `v1` Pod: the daemon's pods only (not a desired-state input).
    Pod,
}

impl Kind {
    /// Every kind, in the order the informers start.
    pub const ALL: [Kind; 7] = [
        Kind::Node,
        Kind::VpbluNode,
        Kind::TunnelPolicy,
        Kind::RoutePolicy,
        Kind::BlockPolicy,
        Kind::RotationPolicy,
        Kind::Pod,
    ];

    /// The Kubernetes kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::VpbluNode => "VpbluNode",
            Kind::TunnelPolicy => "TunnelPolicy",
            Kind::RoutePolicy => "RoutePolicy",
            Kind::BlockPolicy => "BlockPolicy",
            Kind::RotationPolicy => "RotationPolicy",
            Kind::Pod => "Pod",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind an [`Informer`] can watch: which [`Kind`] it is, and whether an
/// update changes anything desired state is computed from.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
    /// Which kind this is.
    const KIND: Kind;

    /// Whether `old` and `new` (the same object) give `from_k8s` the same
    /// inputs, so the update needs no recompute. Always true for a kind
    /// desired state is not computed from.
    fn same_inputs(old: &Self, new: &Self) -> bool;

    /// Whether desired state is computed from this kind at all: when not,
    /// only a finished (re)list reaches Recompute (which owns readiness).
    const INPUT: bool = true;
}

// Nodes and policies are compared through `inputs_from` itself, so this
// stays right when the conversion starts reading another field.
impl Watched for Node {
    const KIND: Kind = Kind::Node;
    fn same_inputs(old: &Self, new: &Self) -> bool {
        let inputs = |n| inputs_from(Objects { nodes: vec![n], ..Objects::default() });
        inputs(old) == inputs(new)
    }
}

impl Watched for VpbluNode {
    const KIND: Kind = Kind::VpbluNode;
    /// `from_k8s` reads `status.publicKey` (for the Node of that name) and
    /// the rotation in progress (`status.rotation`, `status.stagedPublicKey`).
    fn same_inputs(old: &Self, new: &Self) -> bool {
        let key = |v: &VpbluNode| v.status.as_ref().and_then(|s| s.public_key.clone());
        key(old) == key(new) && rotation_of(old) == rotation_of(new)
    }
}

impl Watched for TunnelPolicy {
    const KIND: Kind = Kind::TunnelPolicy;
    fn same_inputs(old: &Self, new: &Self) -> bool {
        let inputs = |p| inputs_from(Objects { tunnel_policies: vec![p], ..Objects::default() });
        inputs(old) == inputs(new)
    }
}

impl Watched for RoutePolicy {
    const KIND: Kind = Kind::RoutePolicy;
    fn same_inputs(old: &Self, new: &Self) -> bool {
        let inputs = |p| inputs_from(Objects { route_policies: vec![p], ..Objects::default() });
        inputs(old) == inputs(new)
    }
}

impl Watched for BlockPolicy {
    const KIND: Kind = Kind::BlockPolicy;
    fn same_inputs(old: &Self, new: &Self) -> bool {
        let inputs = |p| inputs_from(Objects { block_policies: vec![p], ..Objects::default() });
        inputs(old) == inputs(new)
    }
}

impl Watched for RotationPolicy {
    const KIND: Kind = Kind::RotationPolicy;
    const INPUT: bool = false;
    fn same_inputs(_: &Self, _: &Self) -> bool {
        true
    }
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
    const INPUT: bool = false;
    fn same_inputs(_: &Self, _: &Self) -> bool {
        true
    }
}

/// The label every daemon pod carries (k8s/deploy/daemon-daemonset.yaml):
/// the Pod informer watches only those, in the controller's namespace.
pub const DAEMON_POD_SELECTOR: &str = "app.kubernetes.io/name=vpblu-daemon";

/// The reflector store of one kind, shared by its informer (which writes it)
/// and Recompute (which reads it). Clones share one store; it outlives
/// informer restarts.
pub struct Cache<K: Watched> {
    reader: Store<K>,
    writer: Arc<Mutex<Writer<K>>>,
    synced: Arc<AtomicBool>,
    /// Watch events applied so far: a reader that saw the same count saw
    /// the same objects.
    events: Arc<AtomicU64>,
}

impl<K: Watched> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            reader: self.reader.clone(),
            writer: Arc::clone(&self.writer),
            synced: Arc::clone(&self.synced),
            events: Arc::clone(&self.events),
        }
    }
}

impl<K: Watched> fmt::Debug for Cache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &K::KIND)
            .field("objects", &self.reader.len())
            .field("synced", &self.synced())
            .finish()
    }
}

impl<K: Watched> Default for Cache<K> {
    fn default() -> Self {
        let writer = Writer::default();
        Cache {
            reader: writer.as_reader(),
            writer: Arc::new(Mutex::new(writer)),
            synced: Arc::default(),
            events: Arc::default(),
        }
    }
}

impl<K: Watched> Cache<K> {
    /// An empty store, not synced.
    pub fn new() -> Self {
        Cache::default()
    }

    /// The reader: every object as the watch last saw it.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// Whether the store has held a complete list (the watcher's first
    /// `InitDone`). A relist keeps the old list readable until the new one
    /// is complete, so this never goes back to false.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How many watch events the store has applied: unchanged means the
    /// store holds what it held when the count was read.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Acquire)
    }

    /// Copies of every object.
    pub fn objects(&self) -> Vec<K> {
        self.reader.state().iter().map(|o| K::clone(o.as_ref())).collect()
    }

    /// Every object, shared with the store rather than copied.
    pub fn shared(&self) -> Vec<Arc<K>> {
        self.reader.state()
    }

    /// Applies one watch event; true when Recompute should hear of it.
    fn apply(&self, event: &watcher::Event<K>) -> bool {
        let relevant = match event {
            watcher::Event::Apply(new) => {
                K::INPUT
                    && self.reader.get(&ObjectRef::from_obj(new)).is_none_or(|old| !K::same_inputs(&old, new))
            }
            watcher::Event::Delete(_) => K::INPUT,
            watcher::Event::InitDone => true,
            watcher::Event::Init | watcher::Event::InitApply(_) => false,
        };
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).apply_watcher_event(event);
        self.events.fetch_add(1, Ordering::AcqRel);
        if matches!(event, watcher::Event::InitDone) {
            self.synced.store(true, Ordering::Release);
        }
        relevant
    }
}

/// The caches of every watched kind. Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Caches {
    /// Nodes.
    pub nodes: Cache<Node>,
    /// VpbluNodes.
    pub vpblu_nodes: Cache<VpbluNode>,
    /// TunnelPolicies.
    pub tunnel_policies: Cache<TunnelPolicy>,
    /// RoutePolicies.
    pub route_policies: Cache<RoutePolicy>,
    /// BlockPolicies.
    pub block_policies: Cache<BlockPolicy>,
    /// RotationPolicies.
    pub rotation_policies: Cache<RotationPolicy>,
    /// The daemon's pods ([`DAEMON_POD_SELECTOR`], controller's namespace).
    pub daemon_pods: Cache<Pod>,
}

impl Caches {
    /// Empty, unsynced caches.
    pub fn new() -> Self {
        Caches::default()
    }

    /// The kinds whose cache has not held a complete list yet.
    pub fn unsynced(&self) -> Vec<Kind> {
        let synced = [
            self.nodes.synced(),
            self.vpblu_nodes.synced(),
            self.tunnel_policies.synced(),
            self.route_policies.synced(),
            self.block_policies.synced(),
            self.rotation_policies.synced(),
            self.daemon_pods.synced(),
        ];
        Kind::ALL.into_iter().zip(synced).filter(|(_, s)| !s).map(|(k, _)| k).collect()
    }

    /// Every cache has held a complete list: the controller's readiness.
    pub fn synced(&self) -> bool {
        self.unsynced().is_empty()
    }

    /// Every cache desired state is computed from has held a complete list,
    /// so Recompute can run (a missing Pod or RotationPolicy list does not
    /// hold up the mesh; it only keeps the replica unready).
    pub fn inputs_synced(&self) -> bool {
        self.nodes.synced()
            && self.vpblu_nodes.synced()
            && self.tunnel_policies.synced()
            && self.route_policies.synced()
            && self.block_policies.synced()
    }

    /// Copies of every desired-state input. Each kind is read at once; the
    /// kinds one after the other (a change in between shows up in the next
    /// snapshot).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.shared(),
            vpblu_nodes: self.vpblu_nodes.shared(),
            tunnel_policies: self.tunnel_policies.shared(),
            route_policies: self.route_policies.shared(),
            block_policies: self.block_policies.shared(),
        }
    }

    /// One supervised informer per kind, all feeding `recompute`; the
    /// daemon's pods are watched in `namespace` (the controller's own).
    pub fn informers(
        &self,
        client: &Client,
        namespace: &str,
        recompute: &RecomputeHandle,
        metrics: &InformerMetrics,
    ) -> Vec<ChildSpec> {
        fn child<K: Watched>(
            api: Api<K>,
            cache: &Cache<K>,
            config: watcher::Config,
            recompute: &RecomputeHandle,
            metrics: &InformerMetrics,
        ) -> ChildSpec {
            let (cache, recompute, metrics) = (cache.clone(), recompute.clone(), metrics.clone());
            Informer::child(InformerArgs { api, config, cache, recompute, metrics })
        }
        let all = watcher::Config::default;
        let daemon_pods = watcher::Config::default().labels(DAEMON_POD_SELECTOR);
        let (r, m) = (recompute, metrics);
        vec![
            child(Api::all(client.clone()), &self.nodes, all(), r, m),
            child(Api::all(client.clone()), &self.vpblu_nodes, all(), r, m),
            child(Api::all(client.clone()), &self.tunnel_policies, all(), r, m),
            child(Api::all(client.clone()), &self.route_policies, all(), r, m),
            child(Api::all(client.clone()), &self.block_policies, all(), r, m),
            child(Api::all(client.clone()), &self.rotation_policies, all(), r, m),
            child(Api::namespaced(client.clone(), namespace), &self.daemon_pods, daemon_pods, r, m),
        ]
    }
}

/// Every cached object (shared with the stores), what `from_k8s` converts.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// VpbluNodes.
    pub vpblu_nodes: Vec<Arc<VpbluNode>>,
    /// TunnelPolicies.
    pub tunnel_policies: Vec<Arc<TunnelPolicy>>,
    /// RoutePolicies.
    pub route_policies: Vec<Arc<RoutePolicy>>,
    /// BlockPolicies.
    pub block_policies: Vec<Arc<BlockPolicy>>,
}

impl Snapshot {
    /// The snapshot as `from_k8s` takes it.
    pub fn objects(&self) -> Objects<'_> {
        fn borrowed<K>(objects: &[Arc<K>]) -> Vec<&K> {
            objects.iter().map(AsRef::as_ref).collect()
        }
        Objects {
            nodes: borrowed(&self.nodes),
            vpblu_nodes: borrowed(&self.vpblu_nodes),
            tunnel_policies: borrowed(&self.tunnel_policies),
            route_policies: borrowed(&self.route_policies),
            block_policies: borrowed(&self.block_policies),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: Kind,
}

/// Counters of the informers. Registered once per process (a restarted
/// informer reuses them; registering twice would print every series twice).
#[derive(Clone, Debug, Default)]
pub struct InformerMetrics {
    changes: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
}

impl InformerMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_controller_informer_changes_total{kind}` and
    /// `vpblu_controller_informer_watch_errors_total{kind}`.
    pub fn register(health: &Health) -> Self {
        let metrics = InformerMetrics::default();
        // Every kind's series from the start, at 0: a series born at 1
        // would hide its first increase from rate() and increase().
        for kind in Kind::ALL {
            metrics.changes.get_or_create(&KindLabels { kind }).inc_by(0);
            metrics.errors.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        health.register_component("controller_informer", |registry| {
            registry.register(
                "changes",
                "Watch events that changed desired-state inputs, by Kubernetes kind",
                metrics.changes.clone(),
            );
            registry.register(
                "watch_errors",
                "Watch errors, retried with backoff, by Kubernetes kind",
                metrics.errors.clone(),
            );
        });
        metrics
    }

    /// Watch errors seen for `kind` so far.
    pub fn watch_errors(&self, kind: Kind) -> u64 {
        self.errors.get_or_create(&KindLabels { kind }).get()
    }

    /// Input-changing events seen for `kind` so far.
    pub fn changes(&self, kind: Kind) -> u64 {
        self.changes.get_or_create(&KindLabels { kind }).get()
    }
}

/// What an informer starts with. Cheap to clone: a restart gets a copy.
pub struct InformerArgs<K: Watched> {
    /// Where to watch: cluster-wide, or one namespace.
    pub api: Api<K>,
    /// Which objects (label and field selectors) and how to list.
    pub config: watcher::Config,
    /// The store to fill.
    pub cache: Cache<K>,
    /// Where changes go.
    pub recompute: RecomputeHandle,
    /// Counters, registered once by the caller.
    pub metrics: InformerMetrics,
}

impl<K: Watched> Clone for InformerArgs<K> {
    fn clone(&self) -> Self {
        InformerArgs {
            api: self.api.clone(),
            config: self.config.clone(),
            cache: self.cache.clone(),
            recompute: self.recompute.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<K: Watched> fmt::Debug for InformerArgs<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformerArgs").field("kind", &K::KIND).finish_non_exhaustive()
    }
}

/// Messages an informer takes.
#[derive(Debug)]
pub enum InformerMsg {
    /// The watch applied an event that changes desired-state inputs (the
    /// cache already holds it): tell Recompute.
    Changed,
    /// The watch failed with this error; the watcher retries by itself
    /// after a backoff.
    WatchError(String),
    /// The watch stream ended, which a watcher never does by itself:
    /// restart the informer.
    Ended,
    /// Whether the cache has held a complete list.
    Synced(RpcReplyPort<bool>),
}

/// Watches one kind. Empty: the watch task and the cache are its state.
pub struct Informer<K>(PhantomData<fn() -> K>);

impl<K> Default for Informer<K> {
    fn default() -> Self {
        Informer(PhantomData)
    }
}

impl<K: Watched> fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Informer<{}>", K::KIND)
    }
}

impl<K: Watched> Informer<K> {
    /// The supervised child `informer-<Kind>` that runs with `args`.
    pub fn child(args: InformerArgs<K>) -> ChildSpec {
        ChildSpec::new(format!("informer-{}", K::KIND), move || (Informer::<K>::default(), args.clone()))
    }
}

/// A running informer.
pub struct InformerState<K: Watched> {
    cache: Cache<K>,
    recompute: RecomputeHandle,
    metrics: InformerMetrics,
    _watch: Forward,
}

impl<K: Watched> fmt::Debug for InformerState<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformerState").field("cache", &self.cache).finish_non_exhaustive()
    }
}

impl<K: Watched> Actor for Informer<K> {
    type Msg = InformerMsg;
    type State = InformerState<K>;
    type Arguments = InformerArgs<K>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: InformerArgs<K>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cache = args.cache.clone();
        let messages = watcher(args.api, args.config)
            .backoff(WatchBackoff::default())
            .filter_map(move |event| {
                future::ready(match event {
                    Ok(event) => cache.apply(&event).then_some(InformerMsg::Changed),
                    Err(e) => Some(InformerMsg::WatchError(error_chain(&e))),
                })
            })
            .chain(stream::once(future::ready(InformerMsg::Ended)));
        tracing::debug!(kind = %K::KIND, "watching");
        Ok(InformerState {
            cache: args.cache,
            recompute: args.recompute,
            metrics: args.metrics,
            _watch: forward(messages, myself),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let labels = KindLabels { kind: K::KIND };
        match msg {
            InformerMsg::Changed => {
                state.metrics.changes.get_or_create(&labels).inc();
                state.recompute.changed(K::KIND);
            }
            InformerMsg::WatchError(error) => {
                state.metrics.errors.get_or_create(&labels).inc();
                tracing::warn!(kind = %K::KIND, %error, "watch failed; retrying with backoff");
            }
            InformerMsg::Ended => {
                return Err(format!("the {} watch stream ended", K::KIND).into());
            }
            InformerMsg::Synced(reply) => {
                let _caller_gone = reply.send(state.cache.synced());
            }
        }
        Ok(())
    }
}

/// How long a failed watch waits before it tries again: 250 ms, doubling
/// up to 5 s, each delay cut by up to half at random (equal jitter) so
/// replicas spread out; back to the start once the watch delivers again. kube's default
/// grows to 30 s, so after a 30 s API server outage a watch could stay
/// blind (and the mesh unchanged) for up to a minute: two retries of up
/// to 30 s each, the second one for the relist after "resourceVersion too
/// old". Seven watches a replica retrying every 5 s are no load.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    attempt: u32,
}

impl WatchBackoff {
    const DELAYS: vpblu_runtime::Backoff =
        vpblu_runtime::Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(5) };
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = WatchBackoff::DELAYS.equal_jitter(self.attempt, &mut rand::rng());
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Node n1 as stored at `version`, whose heartbeat is `version` seconds in.
    fn node(ready: &str, version: u32, cidr: &str) -> Node {
        let heartbeat = format!("2026-01-01T00:00:{version:02}Z");
        serde_json::from_value(json!({
            "metadata": { "name": "n1", "resourceVersion": version.to_string() },
            "spec": { "podCIDRs": [cidr] },
            "status": {
                "addresses": [{ "type": "InternalIP", "address": "192.0.2.1" }],
                "conditions": [{ "type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat }],
            },
        }))
        .expect("a valid Node")
    }

    fn block(to: &str, conditions: serde_json::Value) -> BlockPolicy {
        serde_json::from_value(json!({
            "apiVersion": "vpblu.dev/v1alpha1", "kind": "BlockPolicy",
            "metadata": { "name": "b" },
            "spec": { "blocks": [{ "from": "10.244.1.0/24", "to": to }] },
            "status": { "conditions": conditions },
        }))
        .expect("a valid BlockPolicy")
    }

    #[test]
    fn watch_retries_back_off_to_five_seconds_and_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        for (delay, full) in delays.iter().zip([250, 500, 1000, 2000, 4000, 5000, 5000, 5000]) {
            let full = Duration::from_millis(full);
            assert!(*delay <= full && *delay >= full / 2, "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next().expect("endless") <= Duration::from_millis(250));
    }

    #[test]
    fn a_heartbeat_is_no_change_but_readiness_and_cidrs_are() {
        let before = node("True", 0, "10.244.1.0/24");
        assert!(Node::same_inputs(&before, &node("True", 10, "10.244.1.0/24")));
        assert!(!Node::same_inputs(&before, &node("False", 10, "10.244.1.0/24")));
        assert!(!Node::same_inputs(&before, &node("True", 0, "10.244.7.0/24")));
    }

    #[test]
    fn a_policy_status_is_no_change_but_its_spec_is() {
        let before = block("10.244.2.0/24", json!([]));
        let status = json!([{
            "type": "Ready", "status": "True", "reason": "Enforced", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]);
        assert!(BlockPolicy::same_inputs(&before, &block("10.244.2.0/24", status)));
        assert!(!BlockPolicy::same_inputs(&before, &block("10.244.3.0/24", json!([]))));
    }

    #[test]
    fn only_the_public_key_of_a_vpblu_node_matters() {
        let vnode = |key: &str, peers: i32| -> VpbluNode {
            serde_json::from_value(json!({
                "apiVersion": "vpblu.dev/v1alpha1", "kind": "VpbluNode",
                "metadata": { "name": "n1" }, "spec": {},
                "status": { "publicKey": key, "peers": peers },
            }))
            .expect("a valid VpbluNode")
        };
        assert!(VpbluNode::same_inputs(&vnode("k1", 1), &vnode("k1", 5)));
        assert!(!VpbluNode::same_inputs(&vnode("k1", 1), &vnode("k2", 1)));
    }

    #[test]
    fn the_cache_reports_changes_and_syncs_on_the_first_complete_list() {
        let cache = Cache::<Node>::new();
        let n = node("True", 1, "10.244.1.0/24");
        assert!(!cache.apply(&watcher::Event::Init));
        assert!(!cache.apply(&watcher::Event::InitApply(n.clone())));
        assert!(!cache.synced() && cache.objects().is_empty(), "a list shows only once complete");
        assert!(cache.apply(&watcher::Event::InitDone));
        assert!(cache.synced());
        assert_eq!(cache.objects(), vec![n.clone()]);
        assert!(!cache.apply(&watcher::Event::Apply(node("True", 2, "10.244.1.0/24"))), "a heartbeat");
        assert_eq!(cache.objects()[0].metadata.resource_version.as_deref(), Some("2"), "still stored");
        assert!(cache.apply(&watcher::Event::Apply(node("False", 3, "10.244.1.0/24"))));
        assert!(cache.apply(&watcher::Event::Delete(n)));
        assert!(cache.objects().is_empty());
        // A relist keeps the old list readable and the cache synced.
        assert!(!cache.apply(&watcher::Event::Init));
        assert!(cache.synced());
    }
}
