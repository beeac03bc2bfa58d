//! The warm stream, daemon side.
//!
//! The [`StreamClient`] keeps one gRPC stream open to the controller over
//! the host network, TLS-verified against a CA bundle and carrying the
//! node's projected service-account token ([`StreamSecurity`]), says Hello (node, keys, the generation its data plane
//! last applied, backend, MTU), then applies every command it is sent, in
//! order, through a [`DataPlane`], and acks each one. It reconnects with
//! jittered exponential backoff; while it is disconnected nothing in the
//! data plane changes.
//!
//! **Generation guard.** A command whose generation is not above the data
//! plane's applied generation is ignored and *not acked*: the controller
//! never sends one on a live stream (it stamps each stream's commands past
//! the Hello's applied generation), so such a command is a replay, and an
//! ack for it would name a generation the current stream never sent, which
//! the controller treats as a protocol error. Every other command gets
//! exactly one ack: ok once applied, or the reason it was refused (a
//! SyncState for another node, a resulting state that fails `validate()`, a
//! targeted command before any full state, a malformed command, a data
//! plane error). A refused command leaves the previous state in force and
//! does not advance the applied generation.

mod connection;
mod data_plane;
mod error;
#[cfg(feature = "test-support")]
mod recording;
mod security;
mod stream_client;

pub use data_plane::{DataPlane, HelloFacts};
pub use error::{ConnectError, Refusal};
#[cfg(feature = "test-support")]
pub use recording::{InjectedFailure, RecordedCommand, RecordingDataPlane};
pub use security::{ClientTls, StreamSecurity, TokenError};
pub use stream_client::{
    ClientConfig, ClientStatus, RECONNECT, StreamClient, StreamClientArgs, StreamClientMsg,
};
/// The type of [`ClientConfig::backoff`], re-exported for callers that tune it.
pub use vpblu_runtime::Backoff;
