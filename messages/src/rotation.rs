//! Key rotation vocabulary shared by the controller's scheduler and the
//! daemon: Prepare → Distribute → Activate → Retire, or Rollback.

use serde::{Deserialize, Serialize};

use crate::{NodeName, PublicKey};

/// A phase of one node's key rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RotationPhase {
    /// The rotating node stages a new keypair; the old one stays active.
    Prepare,
    /// Every peer learns to accept both keys of the rotating node.
    Distribute,
    /// The rotating node switches to the new key.
    Activate,
    /// The old key is dropped and zeroized everywhere.
    Retire,
    /// Undo everything back to the old key.
    Rollback,
}

/// A rotation step the controller asks a daemon to take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationCommand {
    /// Identifies one rotation of one node across its phases.
    pub rotation_id: u64,
    /// The step to take.
    pub phase: RotationPhase,
    /// The node whose key rotates.
    pub node: NodeName,
    /// Its new public key, once staged.
    pub new_public_key: Option<PublicKey>,
    /// Its old public key.
    pub old_public_key: Option<PublicKey>,
}

/// How a daemon did with a rotation step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationReport {
    /// The rotation this answers.
    pub rotation_id: u64,
    /// The step taken.
    pub phase: RotationPhase,
    /// `Err` with the reason when the step failed.
    pub result: Result<(), String>,
    /// The staged public key, after Prepare on the rotating node.
    pub staged_public_key: Option<PublicKey>,
}
