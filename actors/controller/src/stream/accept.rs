//! The accept path: the tonic server and the start of every daemon stream.
//!
//! This is the one place a connection becomes a node's stream: TLS (see
//! `tls`), a valid Hello, then the identity check (see `identity`): the
//! client's token must prove it runs on the node its Hello names. A refused
//! client is counted, logged and reported as an Event, and changes nothing:
//! its Hello reaches neither a node stream nor the status writer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use vpblu_messages::wire::WireError;
use vpblu_messages::{Hello, Upstream};
use vpblu_proto as pb;

use super::identity::{NodeAuth, bearer_token};
use super::node_stream::upstream_kind;
use super::refusal_events::{REFUSED, Regarding};
use super::rejection::is_too_large;
use super::route::MeshRoute;
use super::stream_server::Attach;
use super::tls::{ServerTransport, TlsIncoming};
use super::{RefusalEvents, Rejection, StreamConfig, StreamMetrics, StreamServerMsg};

/// The highest applied generation a Hello may claim: far beyond anything a
/// controller sends, and far enough from `u64::MAX` that counting on from
/// it cannot overflow.
const MAX_APPLIED_GENERATION: u64 = 1 << 62;
/// How long accepting a Hello may wait for the server actor.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive finds a daemon whose host vanished without closing its
/// connection: the daemon's own HTTP/2 pings (every 30 s) keep a live
/// connection busy, so probes start only after this much silence and give
/// up after [`TCP_KEEPALIVE_PROBES`] unanswered ones, [`TCP_KEEPALIVE_PROBE`]
/// apart: about a minute. The kernel sends them: no wakeup here.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const TCP_KEEPALIVE_PROBE: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_PROBES: u32 = 3;
/// HTTP/2 pings from this side find a daemon process that hangs while its
/// kernel still answers TCP. Each one wakes this process for every stream
/// (5000 streams at 30 s were 170 wakeups a second, a tenth of the idle
/// leader's CPU), and the daemon already pings every 30 s: these go rarely.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(120);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `Mesh` gRPC service.
#[derive(Debug)]
pub(crate) struct MeshService {
    server: ActorRef<StreamServerMsg>,
    config: StreamConfig,
    metrics: StreamMetrics,
    auth: NodeAuth,
    refusals: RefusalEvents,
}

impl MeshService {
    pub(crate) fn new(
        server: ActorRef<StreamServerMsg>,
        config: StreamConfig,
        metrics: StreamMetrics,
        auth: NodeAuth,
        refusals: RefusalEvents,
    ) -> Self {
        MeshService { server, config, metrics, auth, refusals }
    }

    /// Waits for the first message, which must be a valid Hello.
    async fn hello(
        &self,
        inbound: &mut Streaming<pb::DaemonMessage>,
        remote: Option<SocketAddr>,
    ) -> Result<Hello, Status> {
        let reject = |rejection| self.reject(rejection, Regarding::Controller, remote);
        let first = match tokio::time::timeout(self.config.hello_timeout, inbound.message()).await {
            Err(_) => return Err(reject(Rejection::HelloTimeout(self.config.hello_timeout))),
            Ok(Err(status)) if is_too_large(&status) => {
                return Err(reject(Rejection::TooLarge(status.message().to_owned())));
            }
            // The daemon went away: nothing to count.
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::invalid_argument("the stream ended before its Hello")),
            Ok(Ok(Some(first))) => first,
        };
        match Upstream::try_from(&first) {
            Ok(Upstream::Hello(hello)) if hello.applied_generation.0 > MAX_APPLIED_GENERATION => {
                Err(reject(Rejection::Malformed(WireError::Range {
                    field: "hello.applied_generation",
                    value: hello.applied_generation.0,
                    range: "0..=2^62",
                })))
            }
            Ok(Upstream::Hello(hello)) => Ok(hello),
            Ok(other) => Err(reject(Rejection::NotHello { got: upstream_kind(&other) })),
            Err(e) => Err(reject(Rejection::Malformed(e))),
        }
    }

    fn reject(&self, rejection: Rejection, regarding: Regarding, remote: Option<SocketAddr>) -> Status {
        tracing::warn!(
            reason = rejection.reason().as_str(),
            ?regarding,
            ?remote,
            error = %rejection,
            "refusing a daemon stream"
        );
        self.metrics.rejected(rejection.reason());
        self.refusals.record(regarding, REFUSED, &rejection, remote);
        rejection.status()
    }
}

/// The controller's half of a session: messages framed by the node stream
/// (see `encode`), or the status that ends the stream.
pub(crate) type SessionStream = ReceiverStream<Result<Bytes, Status>>;

impl MeshService {
    /// The `Mesh.Session` call: the Hello, the node's identity, then the
    /// node stream that answers it.
    pub(crate) async fn session(
        &self,
        request: Request<Streaming<pb::DaemonMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let remote = request.remote_addr();
        // Read now, judged after the Hello: a refusal then names the node.
        let token = bearer_token(request.metadata());
        let mut inbound = request.into_inner();
        let hello = self.hello(&mut inbound, remote).await?;
        let refuse = |e| self.reject(Rejection::Identity(e), Regarding::Node(hello.node.clone()), remote);
        let token = token.map_err(refuse)?;
        let pod = self.auth.verify(token.as_ref(), &hello.node).await.map_err(refuse)?;
        drop(token);
        match &pod {
            Some(pod) => tracing::debug!(node = %hello.node, %pod, ?remote, "daemon said hello"),
            None => tracing::debug!(node = %hello.node, ?remote, "daemon said hello (identity not checked)"),
        }
        let (outbound, response) = mpsc::channel(self.config.outbound_capacity);
        let attach = Attach { hello, inbound: inbound.boxed(), outbound };
        match self
            .server
            .call(|reply| StreamServerMsg::Attach(Box::new(attach), reply), Some(ATTACH_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(Response::new(ReceiverStream::new(response))),
            Ok(CallResult::Success(Err(e))) => Err(Status::unavailable(e)),
            Ok(CallResult::Timeout) => Err(Status::unavailable("the stream server is busy; retry")),
            Ok(CallResult::SenderError) | Err(_) => Err(Status::unavailable("the stream server is stopping")),
        }
    }
}

/// Serves `service` on `listener` over `transport` until `stop` fires (or
/// its sender drops).
pub(crate) async fn serve(
    listener: TcpListener,
    transport: &ServerTransport,
    service: MeshService,
    stop: oneshot::Receiver<()>,
) -> Result<(), tonic::transport::Error> {
    let max_message_size = service.config.max_message_size;
    let metrics = service.metrics.clone();
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE_IDLE))
        .with_keepalive_interval(Some(TCP_KEEPALIVE_PROBE))
        .with_keepalive_retries(Some(TCP_KEEPALIVE_PROBES));
    let router = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(MeshRoute::new(service, max_message_size));
    let stopped = async {
        let _ = stop.await;
    };
    match transport {
        ServerTransport::Tls(tls) => {
            let incoming = TlsIncoming::new(incoming, tls.acceptor(), metrics);
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
        ServerTransport::InsecurePlaintext => router.serve_with_incoming_shutdown(incoming, stopped).await,
    }
}
