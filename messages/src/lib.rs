//! vpblu's shared vocabulary.
//!
//! Domain types (node names, CIDRs, public keys, peers, blocks, per-node
//! desired state), the commands that move a node from one desired state to
//! the next, what travels on a node's stream, and the conversions to and
//! from the wire types in `vpblu-proto`. Nothing here does I/O; private keys
//! never enter this crate.

mod cidr;
mod command;
mod digest;
mod key;
mod node;
mod rotation;
mod state;
mod stream;
pub mod wire;

pub use cidr::{Cidr, CidrError};
pub use command::{Command, apply, diff};
pub use digest::{DigestKey, StateDigest};
pub use key::{KeyError, PublicKey};
pub use node::{Generation, NodeName, NodeNameError};
pub use rotation::{NodeRotation, RotationPhase, RotationReport};
pub use state::{
    BlockRule, InvalidState, NodeDesiredState, Peer, PeerMap, SelfSettings, Unreachable, UnreachableReason,
};
pub use stream::{Backend, Downstream, Envelope, Hello, PeerObservation, Upstream};
