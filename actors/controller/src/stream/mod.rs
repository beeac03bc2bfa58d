//! The warm stream, controller side.
//!
//! Every daemon keeps one bidirectional gRPC stream open to the controller
//! (`Mesh.Session`). The [`StreamServer`] accepts it, waits for the
//! daemon's Hello, and starts one `NodeStream` actor per node (replacing an
//! older stream of the same node). The `NodeStream` sends the node's whole
//! desired state on connect and on a periodic resync, and only the
//! difference in between; every message carries a per-node generation that
//! only grows, and every ack is tracked. "The whole state" is a `KeepState`
//! with its digest when the daemon's Hello showed it holds that state (on
//! connect) or can check it does (on a resync); see `vpblu_messages`'s
//! `digest` module.
//!
//! What a node should hold comes from the [`Desired`] store: whoever computes
//! desired state (the Recompute actor) calls [`Desired::publish`], and the
//! streams of the nodes whose entry changed are told.

mod accept;
mod desired;
mod encode;
pub mod identity;
mod metrics;
mod node_stream;
mod refusal_events;
mod rejection;
mod route;
mod security;
mod stream_server;
mod tls;

use std::time::Duration;

use vpblu_messages::{Generation, NodeName, Upstream};

pub use desired::Desired;
pub use identity::{IdentityError, NodeAuth, ServiceAccountName, TokenReviewAuth};
pub use metrics::StreamMetrics;
pub use node_stream::{AckError, NodeStreamMsg, NodeStreamStatus};
pub use refusal_events::{CLOSED, REFUSED, RefusalEvents, Regarding};
pub use rejection::{RejectReason, Rejection};
pub use security::{StreamSecurity, controller_reference};
pub use stream_server::{Attach, StreamServer, StreamServerArgs, StreamServerMsg, node_status};
pub use tls::{ServerTls, ServerTransport, TlsError, TlsFiles};

/// What the streams pass on to the rest of the controller (the status
/// writer, the rotation scheduler), in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// A daemon said something on its open stream: its Hello (the stream
    /// opened), its acks of generations this stream sent (also kept in the
    /// stream's own tracking, [`NodeStreamStatus`]), Observed and
    /// RotationReport messages.
    Message(NodeName, Upstream),
    /// The node's stream sent it commands up to this generation: the
    /// desired generation the node should reach.
    Sent(NodeName, Generation),
    /// The node's stream closed and no newer stream of the node replaced
    /// it: the node has no stream to this controller now.
    Closed(NodeName),
}

/// Tunables of the stream server and its node streams.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Period of the resync to every connected daemon (a KeepState, or a
    /// SyncState to a daemon that cannot check a digest).
    pub resync_interval: Duration,
    /// How long a new stream may stay silent before its Hello.
    pub hello_timeout: Duration,
    /// Largest message a daemon may send (bytes); larger ones close the
    /// stream with `ResourceExhausted`.
    pub max_message_size: usize,
    /// After a daemon acks an error, send a full SyncState again this much
    /// later (unless a change or the periodic resync sends one first).
    pub error_retry: Duration,
    /// Messages queued towards one daemon before it counts as not reading
    /// (its stream is then closed; it reconnects and gets a full state).
    pub outbound_capacity: usize,
    /// Commands a daemon may leave unacked before its stream is closed.
    pub max_unacked: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            resync_interval: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(10),
            max_message_size: 4 * 1024 * 1024,
            error_retry: Duration::from_secs(30),
            outbound_capacity: 1024,
            max_unacked: 4096,
        }
    }
}
