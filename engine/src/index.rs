//! Everything decided once for the whole cluster, before any one node's
//! state is assembled: the node table, the tunnel policy, the claims and
//! the block rules. `compute` and `compute_node` both read it, which is
//! what makes them agree.

use vpblu_messages::BlockRule;

use super::blocks;
use super::claims::{Claims, Route};
use super::findings::{Finding, Findings};
use super::guards::Protected;
use super::inputs::Inputs;
use super::nodes::{NodeTable, Standing};
use super::peering::Tunnel;

/// The cluster-wide decisions.
#[derive(Debug)]
pub(super) struct Index<'a> {
    pub(super) nodes: NodeTable<'a>,
    pub(super) tunnel: Tunnel,
    pub(super) claims: Claims<'a>,
    /// Every block rule, sorted and unique.
    pub(super) blocks: Vec<BlockRule>,
    /// Node-table indices of the eligible nodes, in name order.
    pub(super) eligible: Vec<usize>,
    /// Node-table indices of the live nodes that are not eligible.
    pub(super) ineligible: Vec<usize>,
    /// Eligible nodes with a pod CIDR that some route overrides: the only
    /// peers whose entry can differ between viewers.
    pub(super) overridden: Vec<usize>,
}

impl<'a> Index<'a> {
    /// Builds the index; order of the inputs does not matter, everything is
    /// sorted first.
    pub(super) fn build(inputs: &'a Inputs) -> (Self, Vec<Finding>) {
        let mut findings = Findings::default();
        let mut nodes = NodeTable::new(&inputs.nodes, &mut findings);
        blocks::apply_node_actions(&inputs.block_policies, &mut nodes, &mut findings);
        nodes.settle(&mut findings);
        let tunnel = Tunnel::resolve(&inputs.tunnel_policies, &nodes, &mut findings);
        let protected = Protected::new(&nodes, &inputs.service_cidrs);
        let claims = Claims::resolve(&nodes, &inputs.route_policies, &protected, &mut findings);
        let blocks = blocks::rules(&inputs.block_policies, &protected, &mut findings);
        let mut eligible = Vec::new();
        let mut ineligible = Vec::new();
        for (index, node) in nodes.nodes.iter().enumerate() {
            match node.standing {
                Standing::Eligible => eligible.push(index),
                Standing::Ineligible(_) => ineligible.push(index),
                Standing::Gone => {}
            }
        }
        let overridden = eligible.iter().copied().filter(|&p| !claims.overrides[p].is_empty()).collect();
        let index = Index { nodes, tunnel, claims, blocks, eligible, ineligible, overridden };
        (index, findings.into_sorted())
    }

    /// Node-table indices of the nodes that get a state, in name order.
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.nodes.nodes.len()).filter(|&i| self.nodes.nodes[i].is_live()).collect()
    }

    /// Whether two different nodes have a tunnel between them.
    pub(super) fn peered(&self, a: usize, b: usize) -> bool {
        a != b
            && self.nodes.nodes[a].is_eligible()
            && self.nodes.nodes[b].is_eligible()
            && self.tunnel.allows(a, b)
    }

    /// Whether `route` decides what happens to its CIDR on eligible node
    /// `viewer`: not on its own target, and not where the target is a
    /// usable node that `viewer` does not peer (there the route simply
    /// does not exist, and the pod CIDRs inside it keep their owners).
    pub(super) fn in_effect(&self, route: &Route, viewer: usize) -> bool {
        route.via != viewer && (route.blocked.is_some() || self.tunnel.allows(viewer, route.via))
    }
}
