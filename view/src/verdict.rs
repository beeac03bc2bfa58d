//! The verdict: is the mesh healthy, and if not, what is wrong, one line
//! per problem (what `vpblu status` prints and exits non-zero on).

use serde::{Deserialize, Serialize};

use crate::model::{LeaderView, LeaseState, NodeView, PolicyView, RotationView};

/// A peer is up when its last handshake is at most this old: WireGuard's
/// rekey window (REJECT_AFTER_TIME), the daemons' and status writer's rule.
pub const PEER_UP_WITHIN_SECONDS: u64 = 180;

/// Healthy, or the problems.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Nothing is wrong.
    pub healthy: bool,
    /// What is wrong, one line each, naming the object.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Judges: a leader holds the Lease, every node is Ready, no policy
    /// has a problem, no rotation is rolling back.
    pub fn judge(
        leader: &LeaderView,
        nodes: &[NodeView],
        policies: &[PolicyView],
        rotations: &[RotationView],
    ) -> Verdict {
        let mut problems = Vec::new();
        match leader.state {
            LeaseState::Held => {}
            LeaseState::Missing => problems.push(format!("no leader: Lease {} does not exist", leader.lease)),
            LeaseState::Released => problems.push(format!("no leader: Lease {} has no holder", leader.lease)),
            LeaseState::Expired => problems.push(format!(
                "no leader: Lease {} held by {} expired ({} s since renewal)",
                leader.lease,
                leader.holder.as_deref().unwrap_or("?"),
                leader.renewed_seconds_ago.unwrap_or_default()
            )),
        }
        if nodes.is_empty() {
            problems.push("no VpbluNodes: the controller has not registered any node".to_owned());
        }
        for node in nodes {
            match &node.ready {
                Some(ready) if ready.status == "True" => {}
                Some(ready) => problems
                    .push(format!("node {} not Ready ({}): {}", node.name, ready.reason, ready.message)),
                None => problems.push(format!("node {}: no Ready condition yet", node.name)),
            }
        }
        for policy in policies {
            if let Some(problem) = &policy.problem {
                problems.push(format!("{} {}: {problem}", policy.kind, policy.name));
            }
        }
        for rotation in rotations.iter().filter(|r| r.phase == "RollingBack") {
            problems.push(format!(
                "rotation of {} rolling back: {}",
                rotation.node,
                rotation.message.as_deref().unwrap_or("no reason given")
            ));
        }
        Verdict { healthy: problems.is_empty(), problems }
    }
}
