//! What the stream tests share: a controller StreamServer on loopback, real
//! daemon StreamClients with RecordingDataPlanes, desired states, and
//! waiting with a deadline (a broken stream fails a test, never hangs it).

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use vpblu_controller::stream::{
    Desired, NodeStreamStatus, StreamConfig, StreamEvent, StreamMetrics, StreamServer, StreamServerArgs,
    StreamServerMsg, node_status,
};
use vpblu_daemon::stream::{
    Backoff, ClientConfig, ClientStatus, HelloFacts, RecordedCommand, RecordingDataPlane, StreamClient,
    StreamClientArgs, StreamClientMsg,
};
use vpblu_messages::{Backend, Cidr, NodeDesiredState, NodeName, Peer, PublicKey, SelfSettings};
use vpblu_runtime::Health;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing else arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn name(text: &str) -> NodeName {
    NodeName::new(text).expect("test node names are valid")
}

pub fn cidr(text: &str) -> Cidr {
    text.parse().expect("test CIDRs are valid")
}

/// Node number `i`'s key: 32 bytes of `i + 1`.
pub fn key(i: usize) -> PublicKey {
    PublicKey::from_bytes([u8::try_from(i + 1).expect("few test nodes"); 32])
}

/// Node number `i` as everybody's peer: pod CIDR 10.244.i.0/24.
pub fn peer(node: &str, i: usize, extra: &[&str]) -> Arc<Peer> {
    let mut allowed_ips: Vec<Cidr> = extra.iter().map(|c| cidr(c)).collect();
    allowed_ips.push(cidr(&format!("10.244.{i}.0/24")));
    allowed_ips.sort();
    Arc::new(Peer {
        node: name(node),
        public_key: key(i),
        endpoint: format!("192.0.2.{}:51820", i + 1).parse().expect("valid endpoint"),
        allowed_ips,
        persistent_keepalive: None,
    })
}

/// A full mesh of `nodes`: each peers every other one.
pub fn mesh(nodes: &[&str]) -> BTreeMap<NodeName, NodeDesiredState> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, me)| {
            let mut state = NodeDesiredState::empty(name(me));
            state.settings = SelfSettings {
                listen_port: 51820,
                isolated: false,
                drained: false,
                pod_cidrs: vec![cidr(&format!("10.244.{i}.0/24"))],
            };
            for (j, other) in nodes.iter().enumerate() {
                if i != j {
                    state.peers.insert(name(other), peer(other, j, &[]));
                }
            }
            (name(me), state)
        })
        .collect()
}

/// Polls `check` until it gives a value; panics naming `what` after [`WAIT`].
pub async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    until(what, async || check().await.then_some(())).await;
}

/// A StreamServer on a loopback port, with its store and metrics.
pub struct Controller {
    pub server: ActorRef<StreamServerMsg>,
    pub desired: Desired,
    pub metrics: StreamMetrics,
    pub health: Health,
    pub events: broadcast::Receiver<StreamEvent>,
    pub addr: SocketAddr,
    pub endpoint: String,
}

impl Controller {
    pub async fn start(config: StreamConfig) -> Self {
        Controller::start_at("127.0.0.1:0".parse().expect("valid address"), Desired::new(), config).await
    }

    /// A controller on `addr` over `desired` (a restarted controller gets
    /// a fresh one: its generation counters are gone).
    pub async fn start_at(addr: SocketAddr, desired: Desired, config: StreamConfig) -> Self {
        let health = Health::new();
        let metrics = StreamMetrics::register(&health);
        let (events_tx, events) = broadcast::channel(1024);
        let args = StreamServerArgs {
            addr,
            desired: desired.clone(),
            config,
            metrics: metrics.clone(),
            events: events_tx,
        };
        let (server, _handle) = Actor::spawn(None, StreamServer, args).await.expect("stream server starts");
        let addr = match server.call(StreamServerMsg::LocalAddr, Some(WAIT)).await {
            Ok(CallResult::Success(addr)) => addr,
            other => panic!("stream server did not tell its address: {other:?}"),
        };
        Controller { server, desired, metrics, health, events, addr, endpoint: format!("http://{addr}") }
    }

    pub async fn status(&self, node: &str) -> Option<NodeStreamStatus> {
        node_status(&self.server, &name(node), WAIT).await
    }

    pub async fn connected(&self) -> Vec<NodeName> {
        match self.server.call(StreamServerMsg::Connected, Some(WAIT)).await {
            Ok(CallResult::Success(nodes)) => nodes,
            other => panic!("stream server did not list its streams: {other:?}"),
        }
    }

    /// Waits until `node`'s stream has acked everything it was sent, ok.
    pub async fn wait_acked(&self, node: &str) -> NodeStreamStatus {
        until(&format!("{node} to ack everything"), async || {
            self.status(node)
                .await
                .filter(|s| s.last_sent.is_some() && s.unacked.is_empty() && s.last_acked == s.last_sent)
        })
        .await
    }

    pub async fn stop(self) {
        self.server.stop_and_wait(None, Some(WAIT)).await.expect("stream server stops");
    }
}

/// Fast reconnects so the tests do not wait on production backoff.
pub fn fast_client() -> ClientConfig {
    ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_millis(200) },
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

/// A daemon's StreamClient and the data plane it records into.
pub struct Daemon {
    pub node: NodeName,
    pub client: ActorRef<StreamClientMsg>,
    pub plane: RecordingDataPlane,
}

impl Daemon {
    /// Node number `i` named `node`, with a fresh data plane.
    pub async fn start(node: &str, i: usize, endpoint: &str) -> Self {
        let facts =
            HelloFacts { public_key: key(i), staged_public_key: None, backend: Backend::Kernel, mtu: 1420 };
        let plane = RecordingDataPlane::new(name(node), facts);
        Daemon::start_with(node, plane, endpoint).await
    }

    /// A daemon over an existing data plane (a restarted daemon process
    /// finds its data plane as it left it).
    pub async fn start_with(node: &str, plane: RecordingDataPlane, endpoint: &str) -> Self {
        let args = StreamClientArgs {
            node: name(node),
            endpoint: endpoint.to_owned(),
            data_plane: plane.clone(),
            config: fast_client(),
        };
        let (client, _handle) =
            Actor::spawn(None, StreamClient::<RecordingDataPlane>::new(), args).await.expect("client starts");
        Daemon { node: name(node), client, plane }
    }

    pub async fn status(&self) -> ClientStatus {
        match self.client.call(StreamClientMsg::Status, Some(WAIT)).await {
            Ok(CallResult::Success(status)) => status,
            other => panic!("stream client of {} did not answer: {other:?}", self.node),
        }
    }

    pub fn commands(&self) -> Vec<RecordedCommand> {
        self.plane.commands()
    }

    /// Waits until the recorded state equals `want`.
    pub async fn wait_state(&self, want: &NodeDesiredState) {
        eventually(&format!("{} to hold its desired state", self.node), async || self.plane.state() == *want)
            .await;
    }

    pub async fn stop(self) {
        self.client.stop_and_wait(None, Some(WAIT)).await.expect("stream client stops");
    }
}

/// Stops every daemon, then the controller.
pub async fn teardown(controller: Controller, daemons: Vec<Daemon>) {
    for daemon in daemons {
        daemon.stop().await;
    }
    controller.stop().await;
}

/// Starts a controller and one daemon per node, publishes a full mesh and
/// waits until every daemon holds its state and acked it.
pub async fn cluster(nodes: &[&str], config: StreamConfig) -> (Controller, Vec<Daemon>) {
    let controller = Controller::start(config).await;
    controller.desired.publish(mesh(nodes));
    let mut daemons = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        daemons.push(Daemon::start(node, i, &controller.endpoint).await);
    }
    for daemon in &daemons {
        let want = controller.desired.get(&daemon.node).expect("published");
        daemon.wait_state(&want).await;
        controller.wait_acked(daemon.node.as_str()).await;
    }
    (controller, daemons)
}
