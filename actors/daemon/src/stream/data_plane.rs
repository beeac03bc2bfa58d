//! What the stream client applies commands through.

use std::future::Future;

use tokio::sync::watch;
use vpblu_messages::{Backend, Command, Generation, PublicKey, RotationReport};

/// What the Hello says about the node's data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloFacts {
    /// The active public key.
    pub public_key: PublicKey,
    /// A key staged for rotation, if any.
    pub staged_public_key: Option<PublicKey>,
    /// The WireGuard backend in use.
    pub backend: Backend,
    /// MTU of the mesh device.
    pub mtu: u32,
}

/// The node's data plane as the stream client sees it. The real one,
/// `NodeDataPlane`, sends each step to the WireGuard, Routing and BPF-map
/// actors in the order its converge step documents and gathers their
/// answers into the one result the ack carries;
/// `RecordingDataPlane` (feature `test-support`) records.
pub trait DataPlane: Send + 'static {
    /// Why an apply failed; its text goes back to the controller in the
    /// ack.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one command. The client has already checked it: it is for
    /// this node and leaves a state that passes `validate()`. On success the
    /// data plane records `generation` as applied; on error the reason goes
    /// back to the controller in the ack.
    fn apply(
        &mut self,
        generation: Generation,
        command: &Command,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The newest generation applied, 0 for none. It belongs to the data
    /// plane (not the stream client) so a restarted client says the truth
    /// in its Hello.
    fn applied_generation(&self) -> Generation;

    /// Keys, backend and MTU for the Hello.
    fn hello_facts(&self) -> HelloFacts;

    /// How this node did with its part of the key rotation phase in force:
    /// `None` until it is done (or when no rotation is), then its report.
    /// The stream client sends each (rotation, phase) report once per
    /// stream. `None` for a data plane that takes no part in rotations.
    fn rotation_reports(&self) -> Option<watch::Receiver<Option<RotationReport>>> {
        None
    }
}
