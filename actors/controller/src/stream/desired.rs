//! The desired state every node should hold, the per-node generation
//! counters, and the node streams to tell when an entry changes.
//!
//! Generations live here rather than in a `NodeStream` so that a node that
//! reconnects continues from the last value sent to it, whichever stream
//! sent it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ractor::{ActorId, ActorRef};
use vpblu_messages::{Generation, NodeDesiredState, NodeName};

use super::NodeStreamMsg;

/// Shared handle to the desired-state store; clones share one store.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    // Shared with Recompute's last result and each stream's last sent
    // state: a full mesh's N² peer entries are held once, not three times.
    states: RwLock<BTreeMap<NodeName, Arc<NodeDesiredState>>>,
    generations: Mutex<BTreeMap<NodeName, Generation>>,
    streams: Mutex<BTreeMap<NodeName, ActorRef<NodeStreamMsg>>>,
}

impl Desired {
    /// An empty store: no node has a desired state yet.
    pub fn new() -> Self {
        Desired::default()
    }

    /// Replaces every node's desired state with `states` (keyed by node;
    /// each key must equal its state's `node`, or that daemon refuses it)
    /// and tells the connected stream of every node whose entry changed,
    /// appeared or disappeared. Returns those nodes.
    ///
    /// A node without an entry is sent nothing: its data plane keeps what it
    /// last had rather than being emptied.
    pub fn publish(&self, states: BTreeMap<NodeName, NodeDesiredState>) -> BTreeSet<NodeName> {
        self.publish_shared(states.into_iter().map(|(node, state)| (node, Arc::new(state))).collect())
    }

    /// [`publish`](Self::publish) for states that may be shared with the
    /// caller. An entry that is the same `Arc` as the current one counts as
    /// unchanged without comparing its peers.
    pub fn publish_shared(&self, states: BTreeMap<NodeName, Arc<NodeDesiredState>>) -> BTreeSet<NodeName> {
        let changed: BTreeSet<NodeName> = {
            let mut current = self.inner.states.write().unwrap_or_else(PoisonError::into_inner);
            let same = |node: &NodeName, state: &Arc<NodeDesiredState>| {
                current.get(node).is_some_and(|old| Arc::ptr_eq(old, state) || old == state)
            };
            let changed = states
                .iter()
                .filter(|(node, state)| !same(node, state))
                .map(|(node, _)| node)
                .chain(current.keys().filter(|node| !states.contains_key(*node)))
                .cloned()
                .collect();
            let old = std::mem::replace(&mut *current, states);
            drop(current);
            // The old states are freed outside the lock.
            drop(old);
            changed
        };
        let streams = self.inner.streams.lock().unwrap_or_else(PoisonError::into_inner);
        for node in &changed {
            if let Some(stream) = streams.get(node) {
                // A stream that just stopped needs no news.
                let _stopped = stream.cast(NodeStreamMsg::Changed);
            }
        }
        changed
    }

    /// The desired state of `node`, if there is one.
    pub fn get(&self, node: &NodeName) -> Option<NodeDesiredState> {
        self.get_shared(node).map(|state| NodeDesiredState::clone(&state))
    }

    /// The desired state of `node`, shared rather than copied.
    pub fn get_shared(&self, node: &NodeName) -> Option<Arc<NodeDesiredState>> {
        self.inner.states.read().unwrap_or_else(PoisonError::into_inner).get(node).cloned()
    }

    /// The nodes whose desired state satisfies `test` (the rotation
    /// scheduler: which nodes hold a rotation in a given phase).
    pub fn nodes_where(&self, test: impl Fn(&NodeDesiredState) -> bool) -> BTreeSet<NodeName> {
        let states = self.inner.states.read().unwrap_or_else(PoisonError::into_inner);
        states.iter().filter(|(_, state)| test(state)).map(|(node, _)| node.clone()).collect()
    }

    /// The last generation handed out for `node`, if any.
    pub fn last_generation(&self, node: &NodeName) -> Option<Generation> {
        self.inner.generations.lock().unwrap_or_else(PoisonError::into_inner).get(node).copied()
    }

    /// A new generation for `node`: greater than every one handed out
    /// before and than `above` (what the daemon said it applied, which
    /// matters after a controller restart emptied this counter).
    pub(crate) fn next_generation(&self, node: &NodeName, above: Generation) -> Generation {
        let mut generations = self.inner.generations.lock().unwrap_or_else(PoisonError::into_inner);
        let last = generations.entry(node.clone()).or_default();
        *last = (*last).max(above).next();
        *last
    }

    /// Makes `stream` the one told about changes to `node`.
    pub(crate) fn attach(&self, node: &NodeName, stream: ActorRef<NodeStreamMsg>) {
        self.inner.streams.lock().unwrap_or_else(PoisonError::into_inner).insert(node.clone(), stream);
    }

    /// Forgets the stream of `node` if it is still `stream` (a newer stream
    /// of the same node may have attached already).
    pub(crate) fn detach(&self, node: &NodeName, stream: ActorId) {
        let mut streams = self.inner.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.get(node).is_some_and(|s| s.get_id() == stream) {
            streams.remove(node);
        }
    }
}
