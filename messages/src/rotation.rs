//! Key rotation vocabulary shared by the controller's scheduler and the
//! daemon.
//!
//! One node rotates at a time. Every node has two WireGuard devices: the
//! main device, which carries all traffic between rotations, and a spare
//! *lane* device on its own listen port. The rotation of node R walks
//! Prepare → Distribute → Activate → Retire → Settle:
//!
//! - Prepare: R stages a new keypair; nothing else changes.
//! - Distribute: R's lane takes the new key and every peer of R; each peer's
//!   lane takes R with the new key. Lanes warm their sessions.
//! - Activate: traffic between R and its peers is routed into the lanes
//!   (both ends accept on both devices, so the order does not matter).
//! - Retire: R's main device switches to the new key and each peer's main
//!   device replaces R's old key with the new one; the old private key is
//!   zeroized. Traffic still rides the lanes while main sessions warm.
//! - Settle: traffic goes back to the main devices; then the lanes empty.
//!
//! Rollback (from any phase before Retire) routes traffic back to the main
//! devices, which never stopped holding the old key, then empties the lanes
//! and discards the staged key. The rotation is part of each node's desired
//! state ([`NodeRotation`]), so a new controller leader or a reconnecting
//! daemon picks it up from a `SyncState` like everything else.

use serde::{Deserialize, Serialize};

use crate::{NodeName, PeerMap, PublicKey};

/// A phase of one node's key rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RotationPhase {
    /// The rotating node stages a new keypair; the old one stays active.
    Prepare,
    /// Lanes hold the new key of the rotating node and warm their sessions.
    Distribute,
    /// Traffic between the rotating node and its peers rides the lanes.
    Activate,
    /// Main devices switch to the new key; the old one is zeroized.
    Retire,
    /// Traffic returns to the main devices; lanes are emptied after.
    Settle,
    /// Traffic returns to the main devices, still on the old key; lanes are
    /// emptied and the staged key discarded after.
    Rollback,
}

impl RotationPhase {
    /// Every phase, in order.
    pub const ALL: [RotationPhase; 6] = [
        RotationPhase::Prepare,
        RotationPhase::Distribute,
        RotationPhase::Activate,
        RotationPhase::Retire,
        RotationPhase::Settle,
        RotationPhase::Rollback,
    ];

    /// Whether traffic to the lane peers' allowed IPs is routed into the
    /// lane device rather than the main device.
    pub fn lane_carries(self) -> bool {
        matches!(self, RotationPhase::Activate | RotationPhase::Retire)
    }

    /// Whether the rotating node's main device (and its peers' main entry
    /// for it) uses the new key.
    pub fn main_uses_new_key(self) -> bool {
        matches!(self, RotationPhase::Retire | RotationPhase::Settle)
    }

    /// Whether a failure in this phase still rolls back (the old key is
    /// valid everywhere until Retire).
    pub fn can_roll_back(self) -> bool {
        matches!(self, RotationPhase::Prepare | RotationPhase::Distribute | RotationPhase::Activate)
    }

    /// The name used in VpbluNode status and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Prepare => "Prepare",
            RotationPhase::Distribute => "Distribute",
            RotationPhase::Activate => "Activate",
            RotationPhase::Retire => "Retire",
            RotationPhase::Settle => "Settle",
            RotationPhase::Rollback => "RollingBack",
        }
    }

    /// The phase named `text` (as written by [`RotationPhase::as_str`]).
    pub fn parse(text: &str) -> Option<RotationPhase> {
        RotationPhase::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl std::fmt::Display for RotationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rotation as one node must take part in it: part of that node's
/// desired state while the rotation runs, absent otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRotation {
    /// Identifies one rotation of one node across its phases.
    pub id: u64,
    /// The node whose key rotates (this node itself, or one of its peers).
    pub node: NodeName,
    /// Where the rotation stands.
    pub phase: RotationPhase,
    /// The rotating node's new public key, known once Prepare reported it.
    pub new_public_key: Option<PublicKey>,
    /// Peers of this node's lane device, by name, with their lane
    /// endpoints. On the rotating node: every peer, under their current
    /// keys; on a peer: the rotating node, under its new key. Empty during
    /// Prepare.
    pub lane: PeerMap,
}

impl NodeRotation {
    /// Whether `me` is the node whose key rotates.
    pub fn rotates(&self, me: &NodeName) -> bool {
        self.node == *me
    }
}

/// How a daemon did with its part of a rotation phase. Sent once per
/// (rotation, phase) on each stream; again after a reconnect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationReport {
    /// The rotation this answers.
    pub rotation_id: u64,
    /// The phase done.
    pub phase: RotationPhase,
    /// `Err` with the reason when the node could not do its part.
    pub result: Result<(), String>,
    /// The staged public key, after Prepare on the rotating node.
    pub staged_public_key: Option<PublicKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip() {
        for phase in RotationPhase::ALL {
            assert_eq!(RotationPhase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(RotationPhase::parse("Idle"), None);
    }

    #[test]
    fn lanes_carry_only_between_activate_and_retire() {
        let carrying: Vec<_> = RotationPhase::ALL.into_iter().filter(|p| p.lane_carries()).collect();
        assert_eq!(carrying, [RotationPhase::Activate, RotationPhase::Retire]);
        let rollback: Vec<_> = RotationPhase::ALL.into_iter().filter(|p| p.can_roll_back()).collect();
        assert_eq!(rollback, [RotationPhase::Prepare, RotationPhase::Distribute, RotationPhase::Activate]);
    }
}
