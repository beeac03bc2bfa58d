//! Why the controller refuses a daemon's stream (identity) or closes it
//! (bad input).

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use tonic::Status;
use vpblu_messages::Generation;
use vpblu_messages::wire::WireError;

use super::identity::IdentityError;

/// A daemon stream refused for who is on it, or closed because of what it
/// sent. Only that stream closes; the daemon reconnects and starts over
/// with a Hello.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The first message was something other than a Hello.
    #[error("the first message on a stream must be Hello, got {got}")]
    NotHello {
        /// What came instead.
        got: &'static str,
    },
    /// No Hello arrived in time.
    #[error("no Hello within {0:?} of opening the stream")]
    HelloTimeout(Duration),
    /// A message that does not convert into a valid domain value.
    #[error("malformed message: {0}")]
    Malformed(#[source] WireError),
    /// A message over the size limit.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// A Hello after the first message.
    #[error("second Hello on one stream; a stream carries one node's identity: reconnect to start over")]
    SecondHello,
    /// An ack for a generation this stream never sent, or acked already.
    #[error("ack for generation {0}, which this stream never sent or has seen acked already")]
    UnknownAck(Generation),
    /// Too many commands without an ack.
    #[error("{0} commands are unacked; the daemon is not applying what it is sent")]
    Unacked(usize),
    /// The client may not speak for the node its Hello names.
    #[error("refused: {0}")]
    Identity(#[source] IdentityError),
}

impl Rejection {
    /// The bounded metric label for this rejection.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejection::NotHello { .. } => RejectReason::NotHello,
            Rejection::HelloTimeout(_) => RejectReason::HelloTimeout,
            Rejection::Malformed(_) => RejectReason::Malformed,
            Rejection::TooLarge(_) => RejectReason::TooLarge,
            Rejection::SecondHello => RejectReason::SecondHello,
            Rejection::UnknownAck(_) => RejectReason::UnknownAck,
            Rejection::Unacked(_) => RejectReason::Unacked,
            Rejection::Identity(e) => e.reason(),
        }
    }

    /// The status the stream closes with: `PermissionDenied` for identity
    /// (`Unavailable` when the API server could not be asked),
    /// `ResourceExhausted` for size and backlog limits, `InvalidArgument`
    /// for the rest; the message says why.
    pub fn status(&self) -> Status {
        match self {
            Rejection::Identity(IdentityError::Unavailable(_)) => Status::unavailable(self.to_string()),
            Rejection::Identity(_) => Status::permission_denied(self.to_string()),
            Rejection::TooLarge(_) | Rejection::Unacked(_) => Status::resource_exhausted(self.to_string()),
            Rejection::NotHello { .. }
            | Rejection::HelloTimeout(_)
            | Rejection::Malformed(_)
            | Rejection::SecondHello
            | Rejection::UnknownAck(_) => Status::invalid_argument(self.to_string()),
        }
    }
}

/// The `reason` label of `vpblu_controller_stream_rejected_total`: one per
/// [`Rejection`] variant, so the label stays bounded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// See [`Rejection::NotHello`].
    NotHello,
    /// See [`Rejection::HelloTimeout`].
    HelloTimeout,
    /// See [`Rejection::Malformed`].
    Malformed,
    /// See [`Rejection::TooLarge`].
    TooLarge,
    /// See [`Rejection::SecondHello`].
    SecondHello,
    /// See [`Rejection::UnknownAck`].
    UnknownAck,
    /// See [`Rejection::Unacked`].
    Unacked,
    /// The TLS handshake failed (a plaintext client, or one that does not
    /// trust the controller's certificate).
    TlsHandshake,
    /// No usable bearer token.
    NoToken,
    /// The TokenReview did not authenticate the token.
    TokenRejected,
    /// The token is for another audience.
    WrongAudience,
    /// The token or its Pod belong to another service account.
    WrongServiceAccount,
    /// The token is not bound to a Pod.
    NotPodBound,
    /// The token's Pod is gone or was replaced.
    PodMismatch,
    /// The token's Pod is not the daemon DaemonSet's.
    NotDaemonSetPod,
    /// The token's Pod runs on another node than the Hello claims.
    WrongNode,
    /// The API server could not check the identity.
    AuthUnavailable,
}

impl RejectReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotHello => "not_hello",
            RejectReason::HelloTimeout => "hello_timeout",
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::SecondHello => "second_hello",
            RejectReason::UnknownAck => "unknown_ack",
            RejectReason::Unacked => "unacked",
            RejectReason::TlsHandshake => "tls_handshake",
            RejectReason::NoToken => "no_token",
            RejectReason::TokenRejected => "token_rejected",
            RejectReason::WrongAudience => "wrong_audience",
            RejectReason::WrongServiceAccount => "wrong_service_account",
            RejectReason::NotPodBound => "not_pod_bound",
            RejectReason::PodMismatch => "pod_mismatch",
            RejectReason::NotDaemonSetPod => "not_daemonset_pod",
            RejectReason::WrongNode => "wrong_node",
            RejectReason::AuthUnavailable => "auth_unavailable",
        }
    }

    /// The `action` of the Kubernetes Event that reports it (UpperCamelCase).
    pub fn event_action(self) -> &'static str {
        match self {
            RejectReason::NotHello => "NotHello",
            RejectReason::HelloTimeout => "HelloTimeout",
            RejectReason::Malformed => "Malformed",
            RejectReason::TooLarge => "TooLarge",
            RejectReason::SecondHello => "SecondHello",
            RejectReason::UnknownAck => "UnknownAck",
            RejectReason::Unacked => "Unacked",
            RejectReason::TlsHandshake => "TlsHandshake",
            RejectReason::NoToken => "NoToken",
            RejectReason::TokenRejected => "TokenRejected",
            RejectReason::WrongAudience => "WrongAudience",
            RejectReason::WrongServiceAccount => "WrongServiceAccount",
            RejectReason::NotPodBound => "NotPodBound",
            RejectReason::PodMismatch => "PodMismatch",
            RejectReason::NotDaemonSetPod => "NotDaemonSetPod",
            RejectReason::WrongNode => "WrongNode",
            RejectReason::AuthUnavailable => "AuthUnavailable",
        }
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// tonic reports a message over the decoding limit as `OutOfRange`
/// (declared length) or `ResourceExhausted` (decompressed size).
pub(crate) fn is_too_large(status: &Status) -> bool {
    matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
}
