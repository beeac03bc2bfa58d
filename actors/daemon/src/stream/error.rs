//! Why a command is refused, and why a stream could not be kept open.

use std::time::Duration;

use vpblu_messages::wire::WireError;
use vpblu_messages::{InvalidState, NodeName, StateDigest};

/// Why the daemon refused a command. The text goes back in the ack.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A full state addressed to another node.
    #[error("refused a SyncState for node {got}: this daemon runs on node {node}")]
    OtherNode {
        /// This daemon's node.
        node: NodeName,
        /// The node the state was for.
        got: NodeName,
    },
    /// The state after the command would be invalid.
    #[error("refused: {0}; the previous state stays in force")]
    Invalid(#[source] InvalidState),
    /// A targeted command before any full state on this daemon.
    #[error("refused a {kind}: no full state yet to apply it to; send a SyncState")]
    NoBaseState {
        /// The command's kind.
        kind: &'static str,
    },
    /// A KeepState whose digest is not that of the state held.
    #[error("refused a KeepState: the state held here has digest {held}, not {sent}; send a SyncState")]
    StateDiffers {
        /// The digest of the state held, under this daemon's key.
        held: StateDigest,
        /// The digest the controller sent.
        sent: StateDigest,
    },
    /// A command that does not convert from the wire.
    #[error("malformed command: {0}")]
    Malformed(#[source] WireError),
    /// The data plane could not apply it.
    #[error("the data plane failed: {0}")]
    DataPlane(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a stream to the controller ended or never opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The controller endpoint is not a URL.
    #[error("controller endpoint {endpoint:?} is not a valid URL (use https://HOST:PORT)")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The endpoint's scheme does not fit the security (see
    /// [`super::StreamSecurity::check_endpoint`]).
    #[error("{0}")]
    Scheme(String),
    /// The CA bundle could not be read.
    #[error("cannot read the CA bundle {path}: {source} (check --ca-file and the mounted ConfigMap)")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be configured (a bad CA bundle or server name).
    #[error("cannot set up TLS to the controller as {server_name:?} with CA bundle {ca_file}")]
    Tls {
        /// The name the controller's certificate must carry.
        server_name: String,
        /// The CA bundle.
        ca_file: std::path::PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] super::security::TokenError),
    /// TCP, TLS or HTTP/2 connect failed (a TLS failure says why the
    /// controller's certificate was not trusted).
    #[error("cannot connect to the controller at {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The controller did not answer the Hello in time.
    #[error("the controller did not answer the Hello within {0:?}")]
    HelloTimeout(Duration),
    /// The controller closed the stream with an error status (or refused it).
    #[error("the controller closed the stream: {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The controller ended the stream without an error.
    #[error("the controller ended the stream")]
    Ended,
}

impl From<tonic::Status> for ConnectError {
    fn from(status: tonic::Status) -> Self {
        ConnectError::Status { code: status.code(), message: status.message().to_owned() }
    }
}
