//! What travels on a node's stream, in domain terms: the daemon's messages
//! up, generation-stamped commands down. `wire` converts these to and from
//! the proto types.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Command, DigestKey, Generation, NodeName, PublicKey, RotationReport, StateDigest};

/// Which WireGuard implementation a daemon drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// In-kernel WireGuard over netlink.
    Kernel,
    /// A userspace WireGuard over its UAPI socket.
    Userspace,
}

impl Backend {
    /// Lowercase name, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }
}

/// The first message on every stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The node the daemon runs on.
    pub node: NodeName,
    /// Its active public key.
    pub public_key: PublicKey,
    /// A key staged for rotation, if any.
    pub staged_public_key: Option<PublicKey>,
    /// The newest generation it has applied.
    pub applied_generation: Generation,
    /// Its WireGuard backend.
    pub backend: Backend,
    /// MTU of its mesh device.
    pub mtu: u32,
    /// Daemon version.
    pub version: String,
    /// The key it digests desired states under; `None` from a daemon that
    /// cannot check a digest (it gets only full states).
    pub digest_key: Option<DigestKey>,
    /// The digest of the desired state it holds, under `digest_key`;
    /// `None` when it holds none.
    pub held: Option<StateDigest>,
}

/// What a daemon observes about one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerObservation {
    /// The peer node.
    pub node: NodeName,
    /// The key the device holds for it.
    pub public_key: PublicKey,
    /// Time since the last handshake, `None` if there was none.
    pub last_handshake_age: Option<Duration>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

/// Daemon → controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Upstream {
    /// Identity and what the daemon has applied; first on every stream.
    Hello(Hello),
    /// The result of applying the command with this generation.
    Ack {
        /// The command's generation.
        generation: Generation,
        /// `Err` with the reason when it failed.
        result: Result<(), String>,
    },
    /// Per-peer handshakes and counters.
    Observed(Vec<PeerObservation>),
    /// The result of a rotation step.
    RotationReport(RotationReport),
}

/// The body of a controller → daemon message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Downstream {
    /// A change of desired state (rotations included: they are part of it).
    State(Command),
}

/// Controller → daemon: a body stamped with the node's next generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Strictly increasing per node.
    pub generation: Generation,
    /// What to do.
    pub body: Downstream,
}
