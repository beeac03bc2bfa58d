//! Why the controller closes a daemon's stream for bad input.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use tonic::Status;
use vpblu_messages::Generation;
use vpblu_messages::wire::WireError;

/// A daemon stream closed because of what the daemon sent. Only that
/// stream closes; the daemon reconnects and starts over with a Hello.
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
        }
    }

    /// The status the stream closes with: `ResourceExhausted` for size and
    /// backlog limits, `InvalidArgument` for the rest; the message says why.
    pub fn status(&self) -> Status {
        match self {
            Rejection::TooLarge(_) | Rejection::Unacked(_) => Status::resource_exhausted(self.to_string()),
            Rejection::NotHello { .. }
            | Rejection::HelloTimeout(_)
            | Rejection::Malformed(_)
            | Rejection::SecondHello
            | Rejection::UnknownAck(_) => Status::invalid_argument(self.to_string()),
        }
    }
}

/// The `reason` label of `vpblu_stream_rejected_total`: one per
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
