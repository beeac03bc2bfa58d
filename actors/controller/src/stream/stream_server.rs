//! The stream server: listens for daemons and keeps one `NodeStream` per
//! connected node.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use vpblu_messages::{Hello, NodeName};

use super::accept::{MeshService, serve};
use super::encode::PeerEncodings;
use super::node_stream::{Inbound, NodeStream, NodeStreamArgs, Outbound};
use super::{
    Desired, NodeAuth, NodeStreamMsg, NodeStreamStatus, RefusalEvents, ServerTransport, StreamConfig,
    StreamEvent, StreamMetrics,
};

/// How long the server waits for its tonic task to drain when stopping.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the stream server starts with.
#[derive(Debug)]
pub struct StreamServerArgs {
    /// Listen address (node IP and port on the host network).
    pub addr: SocketAddr,
    /// Where desired state and generations come from.
    pub desired: Desired,
    /// Tunables.
    pub config: StreamConfig,
    /// Metrics, registered once by the caller.
    pub metrics: StreamMetrics,
    /// Where Hello, Observed and RotationReport messages go, and the news
    /// that a node's stream closed.
    pub events: broadcast::Sender<StreamEvent>,
    /// TLS (or, only for `--insecure-dev` and tests, plaintext).
    pub transport: ServerTransport,
    /// Who may speak for which node.
    pub auth: NodeAuth,
    /// Where refused and closed streams become Events.
    pub refusals: RefusalEvents,
}

/// A daemon whose Hello was accepted, ready for its `NodeStream`.
pub struct Attach {
    pub(crate) hello: Hello,
    pub(crate) inbound: Inbound,
    pub(crate) outbound: Outbound,
}

impl fmt::Debug for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attach").field("node", &self.hello.node).finish_non_exhaustive()
    }
}

/// Messages the stream server takes.
#[derive(Debug)]
pub enum StreamServerMsg {
    /// A daemon said Hello: start its node stream, replacing (and closing)
    /// an older stream of the same node; the reply says whether it started.
    Attach(Box<Attach>, RpcReplyPort<Result<(), String>>),
    /// The address the server listens on (tests bind port 0).
    LocalAddr(RpcReplyPort<SocketAddr>),
    /// The node stream of a connected node.
    Stream(NodeName, RpcReplyPort<Option<ActorRef<NodeStreamMsg>>>),
    /// The connected nodes.
    Connected(RpcReplyPort<Vec<NodeName>>),
}

/// The stream server actor. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct StreamServer;

/// The running server.
#[derive(Debug)]
pub struct StreamServerState {
    local_addr: SocketAddr,
    streams: BTreeMap<NodeName, ActorRef<NodeStreamMsg>>,
    desired: Desired,
    config: StreamConfig,
    metrics: StreamMetrics,
    events: broadcast::Sender<StreamEvent>,
    refusals: RefusalEvents,
    /// Peers' wire encodings, shared by every node stream.
    encodings: Arc<PeerEncodings>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl StreamServerState {
    async fn attach(&mut self, myself: &ActorRef<StreamServerMsg>, attach: Attach) -> Result<(), String> {
        let node = attach.hello.node.clone();
        if let Some(old) = self.streams.remove(&node) {
            // The old stream's Hello is stale: the node reconnected (a
            // restart, or a half-open connection we have not noticed yet).
            let _already_stopped = old.cast(NodeStreamMsg::Replaced);
        }
        let args = NodeStreamArgs {
            hello: attach.hello,
            inbound: attach.inbound,
            outbound: attach.outbound,
            desired: self.desired.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            events: self.events.clone(),
            refusals: self.refusals.clone(),
            encodings: Arc::clone(&self.encodings),
        };
        let spawned = Actor::spawn_linked(None, NodeStream, args, myself.get_cell()).await;
        self.metrics.set_connected(self.streams.len() + usize::from(spawned.is_ok()));
        let (stream, _handle) = spawned.map_err(|e| {
            // Its Hello went out before it failed to start.
            self.closed(node.clone());
            format!("could not start the stream of node {node}: {e}")
        })?;
        self.streams.insert(node, stream);
        Ok(())
    }

    /// Tells the rest of the controller that `node` has no stream now.
    fn closed(&self, node: NodeName) {
        tracing::debug!(%node, "daemon stream closed");
        let _no_subscriber = self.events.send(StreamEvent::Closed(node));
    }
}

/// Connections the kernel may queue for accept (capped by
/// `net.core.somaxconn`). After a failover every daemon of the cluster
/// reconnects within a second; with tokio's default of 1024, 1000 nodes
/// overflowed the queue and each dropped SYN cost its daemon 1 to 3 s of
/// TCP retransmission before it got its state.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listener on `addr` with room for a whole cluster's reconnects.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

impl Actor for StreamServer {
    type Msg = StreamServerMsg;
    type State = StreamServerState;
    type Arguments = StreamServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StreamServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listener = listen(args.addr).map_err(|e| {
            format!("cannot listen on {} for daemon streams: {e} (pick another --grpc-addr)", args.addr)
        })?;
        let local_addr = listener.local_addr()?;
        match &args.transport {
            ServerTransport::Tls(tls) => {
                tracing::info!(addr = %local_addr, cert = %tls.files().cert_file.display(), auth = ?args.auth, "serving daemon streams over TLS");
            }
            ServerTransport::InsecurePlaintext => {
                tracing::warn!(addr = %local_addr, auth = ?args.auth, "serving daemon streams in PLAINTEXT");
            }
        }
        let service = MeshService::new(
            myself.clone(),
            args.config.clone(),
            args.metrics.clone(),
            args.auth,
            args.refusals.clone(),
        );
        let transport = args.transport;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = myself.clone();
        let task = vpblu_runtime::spawn(async move {
            if let Err(e) = serve(listener, &transport, service, stopped).await {
                tracing::error!(error = %e, "stream server failed");
                // Let the supervisor restart us.
                server.stop(Some(format!("stream server failed: {e}")));
            }
        });
        args.metrics.set_connected(0);
        Ok(StreamServerState {
            local_addr,
            streams: BTreeMap::new(),
            desired: args.desired,
            config: args.config,
            metrics: args.metrics,
            events: args.events,
            refusals: args.refusals,
            encodings: Arc::default(),
            stop: Some(stop),
            task,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Streams first: their response halves end, so the server can drain.
        state.streams.clear();
        myself.stop_children_and_wait(Some("stream server stopping".into()), Some(DRAIN_TIMEOUT)).await;
        state.metrics.set_connected(0);
        if let Some(stop) = state.stop.take() {
            let _already_done = stop.send(());
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut state.task).await.is_err() {
            tracing::warn!("stream server did not drain in time; dropping its connections");
            state.task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StreamServerMsg::Attach(attach, reply) => {
                let started = state.attach(&myself, *attach).await;
                if let Err(e) = &started {
                    tracing::warn!(error = %e, "daemon stream not started");
                }
                let _caller_gone = reply.send(started);
            }
            StreamServerMsg::LocalAddr(reply) => {
                let _caller_gone = reply.send(state.local_addr);
            }
            StreamServerMsg::Stream(node, reply) => {
                let _caller_gone = reply.send(state.streams.get(&node).cloned());
            }
            StreamServerMsg::Connected(reply) => {
                let _caller_gone = reply.send(state.streams.keys().cloned().collect());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A node stream is never restarted here: its daemon reconnects.
        let cell = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(error = %err, "a daemon stream failed");
                cell
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => cell,
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => return Ok(()),
        };
        // A stream replaced by a newer one of its node is no longer listed:
        // its end is no disconnect.
        let ended = state.streams.iter().find(|(_, s)| s.get_id() == cell.get_id()).map(|(n, _)| n.clone());
        if let Some(node) = ended {
            state.streams.remove(&node);
            state.closed(node);
        }
        state.metrics.set_connected(state.streams.len());
        Ok(())
    }
}

/// The ack tracking of `node`'s stream, or `None` when it is not connected
/// (or does not answer within `timeout`).
pub async fn node_status(
    server: &ActorRef<StreamServerMsg>,
    node: &NodeName,
    timeout: Duration,
) -> Option<NodeStreamStatus> {
    let stream = match server.call(|reply| StreamServerMsg::Stream(node.clone(), reply), Some(timeout)).await
    {
        Ok(CallResult::Success(Some(stream))) => stream,
        Ok(CallResult::Success(None) | CallResult::Timeout | CallResult::SenderError) | Err(_) => {
            return None;
        }
    };
    match stream.call(NodeStreamMsg::Status, Some(timeout)).await {
        Ok(CallResult::Success(status)) => Some(status),
        Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => None,
    }
}
