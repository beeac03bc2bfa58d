//! BlockPolicies: CIDR-to-CIDR drops, and the Isolate/Drain node actions.
//! Blocks sit above everything else: a rule is enforced whatever the routes
//! and peering say, by the sending node (before routing) and the receiving
//! node (at delivery).

use std::collections::BTreeSet;

use vpblu_messages::{BlockRule, Cidr};

use super::findings::{FindingReason, Findings, SubjectKind};
use super::guards::Protected;
use super::inputs::{BlockPolicyInput, NodeAction};
use super::nodes::NodeTable;

/// Every directional rule of every BlockPolicy, sorted and unique. A block
/// whose ends are of different families matches nothing and is skipped; a
/// block `protected` forbids is refused.
pub(super) fn rules(
    policies: &[BlockPolicyInput],
    protected: &Protected<'_>,
    findings: &mut Findings,
) -> Vec<BlockRule> {
    let mut rules = BTreeSet::new();
    for policy in policies {
        for block in &policy.blocks {
            if block.from.is_ipv4() != block.to.is_ipv4() {
                findings.push(
                    SubjectKind::BlockPolicy,
                    &policy.name,
                    FindingReason::FamilyMismatch,
                    format!(
                        "block from {} to {} mixes IPv4 and IPv6, so it can match nothing and is skipped; \
                         use one family on both sides (two blocks for dual stack)",
                        block.from, block.to
                    ),
                );
                continue;
            }
            if let Some((reason, message)) = protected.block_hazard(&block.from, &block.to) {
                findings.push(SubjectKind::BlockPolicy, &policy.name, reason, message);
                continue;
            }
            rules.insert(BlockRule { from: block.from, to: block.to });
            if block.bidirectional {
                rules.insert(BlockRule { from: block.to, to: block.from });
            }
        }
    }
    rules.into_iter().collect()
}

/// Whether a node with `local` among its local CIDRs enforces `rule`: it
/// is the sender or the receiver of some traffic the rule matches.
pub(super) fn enforces(rule: &BlockRule, local: &Cidr) -> bool {
    local.overlaps(&rule.from) || local.overlaps(&rule.to)
}

/// Marks nodes isolated or drained. Isolate beats Drain.
pub(super) fn apply_node_actions(
    policies: &[BlockPolicyInput],
    nodes: &mut NodeTable<'_>,
    findings: &mut Findings,
) {
    let mut drains: Vec<(usize, &str)> = Vec::new();
    for policy in policies {
        for (name, action) in &policy.nodes {
            let Some(index) = nodes.find(name.as_str()) else {
                let verb = match action {
                    NodeAction::Isolate => "Isolate",
                    NodeAction::Drain => "Drain",
                };
                findings.push(
                    SubjectKind::BlockPolicy,
                    &policy.name,
                    FindingReason::UnknownNode,
                    format!(
                        "{verb} names node {name}, which does not exist; fix the name or remove the entry"
                    ),
                );
                continue;
            };
            match action {
                NodeAction::Isolate => nodes.nodes[index].isolated = true,
                NodeAction::Drain => drains.push((index, &policy.name)),
            }
        }
    }
    for (index, policy) in drains {
        let node = &mut nodes.nodes[index];
        if node.isolated {
            findings.push(
                SubjectKind::BlockPolicy,
                policy,
                FindingReason::Overridden,
                format!(
                    "Drain of node {} has no effect: the node is also isolated, and Isolate beats Drain",
                    node.name()
                ),
            );
        } else {
            node.drained = true;
        }
    }
}
