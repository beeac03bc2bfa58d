//! The informers' stores, outside the actors: a restarted informer relists
//! into the same [`Cache`], so Recompute never reads a stale one. What a
//! kind's informer must watch for (its [`Watched`] impl) lives here too: a
//! change that `from_k8s` does not read is no change.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use prometheus_client::encoding::EncodeLabelValue;
use serde::de::DeserializeOwned;
use vpblu_k8s::{BlockPolicy, RotationPolicy, RoutePolicy, TunnelPolicy, VpbluNode};

use crate::from_k8s::{Objects, inputs_from, rotation_of};

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
    pub(super) fn apply(&self, event: &watcher::Event<K>) -> bool {
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
