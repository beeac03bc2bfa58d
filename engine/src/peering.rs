//! The tunnel policy in effect: who peers whom, on which port, with which
//! keepalive. Several TunnelPolicies resolve to the oldest (then by name).

use super::findings::{FindingReason, Findings, SubjectKind};
use super::inputs::{Peering, TunnelPolicyInput};
use super::nodes::NodeTable;

/// The listen port when no TunnelPolicy exists: WireGuard's usual one.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// The resolved tunnel policy.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) listen_port: u16,
    pub(super) keepalive: Option<u16>,
    /// `None` for a full mesh; otherwise each node's explicit partners,
    /// sorted node-table indices.
    explicit: Option<Vec<Vec<usize>>>,
}

impl Tunnel {
    pub(super) fn resolve(
        policies: &[TunnelPolicyInput],
        nodes: &NodeTable<'_>,
        findings: &mut Findings,
    ) -> Self {
        // Normalised copies, so that even two policies alike in age and name
        // rank the same whatever order their pairs came in.
        let mut sorted: Vec<TunnelPolicyInput> = policies.iter().map(normalised).collect();
        sorted.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)).then_with(|| a.cmp(b)));
        let Some((winner, losers)) = sorted.split_first() else {
            return Tunnel { listen_port: DEFAULT_LISTEN_PORT, keepalive: None, explicit: None };
        };
        for loser in losers {
            findings.push(
                SubjectKind::TunnelPolicy,
                &loser.name,
                FindingReason::Conflict,
                format!(
                    "TunnelPolicy {:?} is ignored: only one TunnelPolicy applies and {:?} is older \
                     (or as old and sorts first); delete one of them",
                    loser.name, winner.name
                ),
            );
        }
        let explicit = match &winner.peering {
            Peering::FullMesh => None,
            Peering::Explicit(pairs) => Some(explicit_partners(winner, pairs, nodes, findings)),
        };
        Tunnel { listen_port: winner.listen_port, keepalive: winner.persistent_keepalive, explicit }
    }

    pub(super) fn is_full_mesh(&self) -> bool {
        self.explicit.is_none()
    }

    /// Whether the policy lets `a` and `b` (two different nodes) peer;
    /// eligibility is the caller's business.
    pub(super) fn allows(&self, a: usize, b: usize) -> bool {
        match &self.explicit {
            None => true,
            Some(partners) => partners[a].binary_search(&b).is_ok(),
        }
    }
}

fn normalised(policy: &TunnelPolicyInput) -> TunnelPolicyInput {
    let mut policy = policy.clone();
    if let Peering::Explicit(pairs) = &mut policy.peering {
        for pair in pairs.iter_mut() {
            if pair.1 < pair.0 {
                std::mem::swap(&mut pair.0, &mut pair.1);
            }
        }
        pairs.sort();
        pairs.dedup();
    }
    policy
}

fn explicit_partners(
    policy: &TunnelPolicyInput,
    pairs: &[(vpblu_messages::NodeName, vpblu_messages::NodeName)],
    nodes: &NodeTable<'_>,
    findings: &mut Findings,
) -> Vec<Vec<usize>> {
    let mut partners = vec![Vec::new(); nodes.nodes.len()];
    for (a, b) in pairs {
        if a == b {
            findings.push(
                SubjectKind::TunnelPolicy,
                &policy.name,
                FindingReason::SelfPair,
                format!("peering pair ({a}, {b}) pairs node {a} with itself; remove the pair"),
            );
            continue;
        }
        let mut unknown = false;
        for name in [a, b] {
            if nodes.find(name.as_str()).is_none() {
                unknown = true;
                findings.push(
                    SubjectKind::TunnelPolicy,
                    &policy.name,
                    FindingReason::UnknownNode,
                    format!(
                        "peering pair ({a}, {b}) names node {name}, which does not exist; \
                         fix the name or remove the pair"
                    ),
                );
            }
        }
        if let (false, Some(i), Some(j)) = (unknown, nodes.find(a.as_str()), nodes.find(b.as_str())) {
            partners[i].push(j);
            partners[j].push(i);
        }
    }
    for list in &mut partners {
        list.sort_unstable();
        list.dedup();
    }
    partners
}
