//! What can go wrong starting the node's data plane or applying a command;
//! the message is what the controller sees in the ack, so each one names
//! the component first, then the cause.

use std::io;
use std::path::PathBuf;

use vpblu_messages::{Generation, InvalidState, NodeName};

use super::plan::Refused;
use crate::bpf::BpfError;
use crate::keys::KeyStoreError;
use crate::pod_interfaces::PodInterfaceError;
use crate::routing::RoutingError;
use crate::wireguard::WireGuardError;

/// A failure of the node's data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The configuration contradicts itself.
    #[error("data plane configuration: {0}")]
    Config(String),
    /// The key store could not be opened.
    #[error("keys: {0}")]
    Keys(#[source] KeyStoreError),
    /// The state directory (applied generation) could not be used.
    #[error("state directory: {path}: {source}; check that it is writable by the daemon")]
    StateDir {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Everything was applied but the generation could not be recorded;
    /// the next command (or a retry) records it.
    #[error(
        "state directory: generation {generation} was applied but recording it in {path} failed: \
         {source}; a restarted daemon would report an older generation"
    )]
    Record {
        /// The generation applied.
        generation: Generation,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The WireGuard device failed.
    #[error("wireguard: {0}")]
    WireGuard(#[source] WireGuardError),
    /// The mesh device's link could not be looked up or brought up.
    #[error("mesh device {name}: {action}: {source}")]
    MeshLink {
        /// The device.
        name: String,
        /// What was being done.
        action: &'static str,
        /// The netlink error; boxed, it is large.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// The mesh device disappeared.
    #[error(
        "mesh device {name}: it does not exist in this network namespace although WireGuard \
         answers for it; check that wireguard-go runs in the node's network namespace"
    )]
    MeshLinkMissing {
        /// The device.
        name: String,
    },
    /// A sysctl of the mesh device could not be read or written.
    #[error("mesh device sysctl {path}: {source}; the daemon needs CAP_NET_ADMIN and a writable /proc/sys")]
    Sysctl {
        /// The /proc/sys file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A routing step failed.
    #[error("routing: {0}")]
    Routing(#[source] RoutingError),
    /// A BPF step failed.
    #[error("bpf: {0}")]
    Bpf(#[source] BpfError),
    /// The pod interface watcher could not start.
    #[error("pod interfaces: {0}")]
    PodInterfaces(#[source] PodInterfaceError),
    /// A blocking step panicked or was cancelled.
    #[error("{component}: the blocking task failed: {source}")]
    Task {
        /// Which component.
        component: &'static str,
        /// What tokio said.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The actor that owns a component did not answer (it failed and is
    /// being restarted); the next command redoes every component.
    #[error("{0}")]
    Actor(#[source] vpblu_runtime::SlotError),
    /// A SyncState for another node.
    #[error("refused: a full state for node {got} was sent to the daemon of node {node}")]
    OtherNode {
        /// This node.
        node: NodeName,
        /// The node the state was for.
        got: NodeName,
    },
    /// A targeted command before any full state (e.g. right after a
    /// restart): applying it to an empty state would tear everything down.
    #[error("refused: a {kind} command needs a full state first (send SyncState)")]
    NoBaseState {
        /// The command's kind.
        kind: &'static str,
    },
    /// The resulting state fails `validate()`.
    #[error("refused: the resulting desired state is invalid: {0}; the previous state stays in force")]
    Invalid(#[source] InvalidState),
    /// Lane peers for a data plane without a lane device.
    #[error(
        "refused: the rotation of node {rotating} gives the lane device peers, but this data plane has \
         no lane device; start the daemon with --lane-interface"
    )]
    NoLane {
        /// The rotating node.
        rotating: NodeName,
    },
    /// The resulting state is valid but this data plane cannot carry it out.
    #[error("refused: {0}; the previous state stays in force")]
    Refused(#[source] Refused),
}
