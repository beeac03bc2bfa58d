//! The pure heart of the controller: nodes and policies in, every node's
//! desired state and a list of findings out. No I/O, no clock, no
//! randomness; the same inputs in any order give the same output.
//!
//! # Rules
//!
//! Precedence is **BlockPolicy > RoutePolicy > TunnelPolicy > derived from
//! the Node**.
//!
//! - **Nodes.** Every node not being deleted gets a state. A node is
//!   *eligible* (can be a peer) when it is Ready, has a public key, an
//!   internal IP and a pod CIDR, and is not isolated. Other nodes get no
//!   peers and list every remote CIDR as unreachable; everyone else lists
//!   their CIDRs as unreachable, with the reason Isolated > NotReady >
//!   NoKey (no internal IP or no pod CIDR count as NotReady). Nodes being
//!   deleted are simply absent. A public key published by two nodes stays
//!   with the older; the other counts as keyless.
//! - **Derived.** Eligible nodes peer each other; the endpoint is the
//!   internal IP and the listen port; allowed IPs are the pod CIDRs.
//!   Overlapping pod CIDRs of two nodes: the longest prefix wins, then the
//!   older node, then the name; the loser's CIDR leaves its peer entry.
//! - **TunnelPolicy.** None means a full mesh on 51820 without keepalive.
//!   Of several, the oldest (then name) applies. `Explicit` peers only the
//!   listed pairs (both ways); the other eligible nodes' CIDRs are
//!   unreachable as NotPeered.
//! - **RoutePolicy.** `cidr via V` adds `cidr` to V's entry on every node
//!   that peers V (not on V). Identical CIDRs: the oldest policy wins, then
//!   its name, then the target (the same target twice is no conflict).
//!   Pod CIDRs equal to or inside a route's CIDR leave their owner's entry
//!   wherever the route applies, except V's own. A drained, isolated,
//!   not-ready, keyless or deleted target makes the CIDR unreachable on
//!   every node but V instead (Drained, or the target's reason), covering
//!   the pod CIDRs inside it too. A node that does not peer a usable V
//!   lists the CIDR as NotPeered and keeps the pod CIDRs inside it with
//!   their owners.
//! - **Guards.** A route that is a default route, covers a node's internal
//!   IP or overlaps a Service CIDR is refused unless its RoutePolicy opts
//!   in to egress via a node; a block covering a node's internal IP is
//!   always refused (see `guards.rs`).
//! - **BlockPolicy.** Each block (both ways if bidirectional) is enforced
//!   by every node with a local CIDR (its pod CIDRs and routes via it)
//!   overlapping either end; blocks never make anything unreachable.
//!   Isolate makes a node ineligible; Drain keeps it a peer for its own pod
//!   CIDRs but not a route target; Isolate beats Drain.
//!
//! A node never lists as unreachable a CIDR it routes to a peer, and lists
//! each unreachable CIDR once, with the severest reason (Isolated >
//! NotReady > NoKey > Drained > NotPeered).
//!
//! - **Rotation.** The key rotation in progress (at most one; of several
//!   recorded, the first by node name, the others reported) is laid over
//!   the result: the rotating node and every node peering it get
//!   `rotation`, with the lane peers and, from Retire on, the new key in
//!   the peers' main entry for the rotating node (see `rotation.rs`).
//!
//! Everything the rules had to resolve or skip is reported as a
//! [`Finding`] on the object concerned.
//!
//! # Cost
//!
//! A full mesh of N nodes holds N² peer entries. Each peer's entry is one
//! `Arc<Peer>` shared by every viewer that sees it alike; in a full mesh
//! each viewer's map is a clone of one shared map minus the viewer, and
//! nodes are split over two threads. `compute_node` builds the same index
//! (sorts and overlap sweeps, O(N log N)) but only one map.

mod blocks;
mod claims;
mod findings;
mod guards;
mod index;
mod inputs;
mod nodes;
mod peering;
mod rotation;
mod view;

use std::collections::BTreeMap;

use vpblu_messages::{NodeDesiredState, NodeName};

pub use findings::{Finding, FindingReason, PolicyRef, SubjectKind};
pub use inputs::{
    BlockInput, BlockPolicyInput, Inputs, NodeAction, NodeInput, Peering, RotationInput, RouteInput,
    RoutePolicyInput, TunnelPolicyInput,
};
pub use peering::DEFAULT_LISTEN_PORT;

use index::Index;
pub use view::Previous;
use view::{Entries, Viewers};

/// Below this many nodes one thread is quicker than two.
const PARALLEL_FROM: usize = 512;

/// What `compute` produces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The desired state of every node not being deleted.
    pub nodes: BTreeMap<NodeName, NodeDesiredState>,
    /// Conflicts, unknown names and skipped rules, sorted and unique.
    pub findings: Vec<Finding>,
}

/// Every node's desired state. Large meshes are split over two threads;
/// the result is the same either way.
pub fn compute(inputs: &Inputs) -> Output {
    compute_after(inputs, &Previous::default())
}

/// [`compute`], reusing what `previous` (see [`Previous::of`]) offers:
/// equal peer entries keep their `Arc`, and the mesh is built as an edit of
/// the previous one, so a state that did not change shares its tree with
/// its previous self and `==` between them costs what changed, not N. The
/// result equals [`compute`]'s.
pub fn compute_after(inputs: &Inputs, previous: &Previous) -> Output {
    let (index, mut findings) = Index::build(inputs);
    let mut rotation_findings = findings::Findings::default();
    let rotation = rotation::in_effect(&inputs.rotations, &mut rotation_findings);
    if rotation.is_some() && inputs.rotations.len() > 1 {
        findings.extend(rotation_findings.into_sorted());
        findings.sort();
        findings.dedup();
    }
    let live = index.live();
    let states_of = |chunk: &[usize]| {
        let mut entries = Entries::new(&index, Viewers::Many, previous);
        chunk
            .iter()
            .map(|&n| (index.nodes.nodes[n].name().clone(), index.node_state(n, &mut entries)))
            .collect::<Vec<_>>()
    };
    let states = if live.len() < PARALLEL_FROM {
        states_of(&live)
    } else {
        let (first, second) = live.split_at(live.len() / 2);
        std::thread::scope(|scope| {
            let other = scope.spawn(|| states_of(second));
            let mut states = states_of(first);
            let rest = other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            states.extend(rest);
            states
        })
    };
    let mut nodes: BTreeMap<NodeName, NodeDesiredState> = states.into_iter().collect();
    if let Some(rotation) = rotation {
        let mut overlay = rotation::Overlay::new(rotation);
        nodes.values_mut().for_each(|state| overlay.apply(state));
    }
    Output { nodes, findings }
}

/// One node's desired state, as `compute` would give it, without building
/// anyone else's. `None` when the node is unknown or being deleted.
pub fn compute_node(inputs: &Inputs, node: &NodeName) -> Option<NodeDesiredState> {
    let (index, _) = Index::build(inputs);
    let n = index.nodes.find(node.as_str())?;
    if !index.nodes.nodes[n].is_live() {
        return None;
    }
    let none = Previous::default();
    let mut entries = Entries::new(&index, Viewers::One, &none);
    let mut state = index.node_state(n, &mut entries);
    if let Some(rotation) = rotation::in_effect(&inputs.rotations, &mut findings::Findings::default()) {
        rotation::Overlay::new(rotation).apply(&mut state);
    }
    Some(state)
}
