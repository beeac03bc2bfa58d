//! The node table: which nodes exist, which are isolated or drained, and
//! which can be peers ("eligible"). Everything else indexes into it.

use std::borrow::Cow;

use vpblu_messages::{Cidr, NodeName, PublicKey, UnreachableReason};

use super::findings::{FindingReason, Findings, SubjectKind};
use super::inputs::NodeInput;

/// Where a node stands for the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// Being deleted: it gets no state and its CIDRs are simply absent.
    Gone,
    /// Can be a peer.
    Eligible,
    /// Present but not a peer; its CIDRs are unreachable for this reason.
    Ineligible(UnreachableReason),
}

/// One node, normalised.
#[derive(Debug)]
pub(super) struct Node<'a> {
    pub(super) input: &'a NodeInput,
    /// Its pod CIDRs, sorted and unique (borrowed when they already were).
    pub(super) pod_cidrs: Cow<'a, [Cidr]>,
    /// Its key, unless another (older) node published the same one.
    pub(super) key: Option<PublicKey>,
    pub(super) isolated: bool,
    /// Drained and not isolated (Isolate beats Drain).
    pub(super) drained: bool,
    pub(super) standing: Standing,
}

impl Node<'_> {
    pub(super) fn name(&self) -> &NodeName {
        &self.input.name
    }

    pub(super) fn is_live(&self) -> bool {
        self.standing != Standing::Gone
    }

    pub(super) fn is_eligible(&self) -> bool {
        self.standing == Standing::Eligible
    }
}

/// The more severe of two reasons: a node that is both isolated and not
/// ready is reported as isolated (Isolated > NotReady > NoKey > Drained >
/// NotPeered).
pub(super) fn severer(a: UnreachableReason, b: UnreachableReason) -> UnreachableReason {
    if rank(a) >= rank(b) { a } else { b }
}

fn rank(reason: UnreachableReason) -> u8 {
    match reason {
        UnreachableReason::NotPeered => 0,
        UnreachableReason::Drained => 1,
        UnreachableReason::NoKey => 2,
        UnreachableReason::NotReady => 3,
        UnreachableReason::Isolated => 4,
    }
}

/// All nodes sorted by name, one entry per name.
#[derive(Debug)]
pub(super) struct NodeTable<'a> {
    pub(super) nodes: Vec<Node<'a>>,
}

impl<'a> NodeTable<'a> {
    /// Sorts and deduplicates the nodes. Standing is settled later, once the
    /// block policies have said who is isolated or drained.
    pub(super) fn new(inputs: &'a [NodeInput], findings: &mut Findings) -> Self {
        let mut sorted: Vec<&NodeInput> = inputs.iter().collect();
        sorted.sort();
        let mut nodes: Vec<Node<'a>> = Vec::with_capacity(sorted.len());
        for input in sorted {
            if let Some(kept) = nodes.last()
                && kept.input.name == input.name
            {
                findings.push(
                    SubjectKind::Node,
                    input.name.as_str(),
                    FindingReason::Conflict,
                    format!(
                        "node {} appears more than once in the input; only one copy is used: \
                         report this as a bug",
                        input.name
                    ),
                );
                continue;
            }
            let pod_cidrs = if input.pod_cidrs.is_sorted_by(|a, b| a < b) {
                Cow::Borrowed(&input.pod_cidrs[..])
            } else {
                let mut sorted = input.pod_cidrs.clone();
                sorted.sort_unstable();
                sorted.dedup();
                Cow::Owned(sorted)
            };
            nodes.push(Node {
                input,
                pod_cidrs,
                key: input.public_key,
                isolated: false,
                drained: false,
                standing: if input.deleting { Standing::Gone } else { Standing::Eligible },
            });
        }
        NodeTable { nodes }
    }

    /// The index of the node called `name`, deleting ones included.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.name().as_str().cmp(name)).ok()
    }

    /// Decides every node's standing, after isolate/drain flags are set.
    /// A public key published by two nodes stays with the older one; the
    /// other is treated as keyless until it has its own (WireGuard would
    /// merge two peers with one key).
    pub(super) fn settle(&mut self, findings: &mut Findings) {
        // Sorting by key puts the holders of one key side by side. Keys are
        // sorted on their first 16 bytes (cheap to compare); a run sharing
        // those is sorted again on the whole key, and within one key the
        // oldest (then the name) comes first and keeps it.
        let head = |key: &PublicKey| u128::from_be_bytes(key.as_bytes()[..16].try_into().unwrap_or([0; 16]));
        let mut holders: Vec<(u128, i64, usize)> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_live())
            .filter_map(|i| Some((head(&self.nodes[i].key?), self.nodes[i].input.created, i)))
            .collect();
        holders.sort_unstable();
        let mut shared: Vec<(PublicKey, i64, usize)> = Vec::new();
        for run in holders.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
            shared.clear();
            shared.extend(run.iter().filter_map(|&(_, created, i)| Some((self.nodes[i].key?, created, i))));
            shared.sort_unstable();
            for same in shared.chunk_by(|a, b| a.0 == b.0) {
                let winner = same[0].2;
                for &(_, _, loser) in &same[1..] {
                    self.nodes[loser].key = None;
                    let (w, l) = (self.nodes[winner].name(), self.nodes[loser].name());
                    findings.push(
                        SubjectKind::Node,
                        l.as_str(),
                        FindingReason::Conflict,
                        format!(
                            "node {l} publishes the same public key as node {w}, which is older and keeps \
                             it; {l} is not peered until it has its own key: regenerate the key on {l}"
                        ),
                    );
                }
            }
        }
        for node in &mut self.nodes {
            if !node.is_live() {
                continue;
            }
            let input = node.input;
            if input.ready && input.internal_ip.is_none() {
                findings.push(
                    SubjectKind::Node,
                    input.name.as_str(),
                    FindingReason::NoInternalIp,
                    format!(
                        "node {} has no InternalIP address, so no tunnel can reach it: \
                         check the kubelet's --node-ip",
                        input.name
                    ),
                );
            }
            if input.ready && node.pod_cidrs.is_empty() {
                findings.push(
                    SubjectKind::Node,
                    input.name.as_str(),
                    FindingReason::NoPodCidrs,
                    format!(
                        "node {} has no pod CIDR, so it carries no pod traffic: \
                         check the cluster's IPAM (spec.podCIDRs)",
                        input.name
                    ),
                );
            }
            node.standing = if node.isolated {
                Standing::Ineligible(UnreachableReason::Isolated)
            } else if !input.ready || input.internal_ip.is_none() || node.pod_cidrs.is_empty() {
                Standing::Ineligible(UnreachableReason::NotReady)
            } else if node.key.is_none() {
                Standing::Ineligible(UnreachableReason::NoKey)
            } else {
                Standing::Eligible
            };
        }
    }
}
