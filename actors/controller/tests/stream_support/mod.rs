//! What the stream tests share: a controller StreamServer on loopback
//! serving TLS (a test CA from rcgen), real daemon StreamClients with
//! RecordingDataPlanes that verify it, desired states, and waiting with a
//! deadline (a broken stream fails a test, never hangs it).
//!
//! Identity is not what these tests are about: unless a test passes its
//! own [`NodeAuth`], the server believes every Hello ([`NodeAuth::TrustAll`])
//! and the daemons send no token. `stream_identity.rs` tests identity.

#![allow(dead_code)] // each test file uses its own part of this

pub mod controller_process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vpblu_controller::stream::{
    Desired, NodeAuth, NodeStreamStatus, RefusalEvents, ServerTls, ServerTransport, StreamConfig,
    StreamEvent, StreamMetrics, StreamServer, StreamServerArgs, StreamServerMsg, TlsFiles, node_status,
};
use vpblu_daemon::stream::{
    Backoff, ClientConfig, ClientStatus, HelloFacts, RecordedCommand, RecordingDataPlane, StreamClient,
    StreamClientArgs, StreamClientMsg, StreamSecurity,
};
use vpblu_e2e::cluster::{DAEMON_AUDIENCE, DAEMON_NAME, DAEMON_NAMESPACE, TestCluster};
use vpblu_e2e::stream_pki::{SERVER_NAME, StreamPki};
use vpblu_messages::{Backend, Cidr, NodeDesiredState, NodeName, Peer, PublicKey, SelfSettings};
use vpblu_proto::mesh::mesh_client::MeshClient;
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
                lane_port: 51821,
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

/// How a daemon reaches a controller: its URL, and what it checks and
/// presents. Holds the PKI's files alive.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub security: StreamSecurity,
    pub pki: Arc<StreamPki>,
}

impl Endpoint {
    /// The same controller, presenting the token in `token_file`.
    pub fn with_token(&self, token_file: &std::path::Path) -> Endpoint {
        let mut endpoint = self.clone();
        endpoint.security.token_file = Some(token_file.to_owned());
        endpoint
    }

    /// The same controller, checked against another CA bundle.
    pub fn trusting(&self, ca_file: &std::path::Path) -> Endpoint {
        let mut endpoint = self.clone();
        if let Some(tls) = &mut endpoint.security.tls {
            tls.ca_file = ca_file.to_owned();
        }
        endpoint
    }

    /// A raw gRPC client over TLS (no token), for tests that speak the
    /// protocol by hand.
    pub async fn raw_client(&self) -> MeshClient<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.pki.ca_file()).expect("read the CA")))
            .domain_name(SERVER_NAME);
        let channel = Channel::from_shared(self.url.clone())
            .expect("a valid URL")
            .tls_config(tls)
            .expect("a valid TLS config")
            .connect()
            .await
            .expect("the server accepts TLS connections");
        MeshClient::new(channel)
    }

    /// One session by hand: `token` in the metadata, `first` as the first
    /// message. The status it is refused with (panics if it is accepted).
    pub async fn attempt(&self, token: Option<&str>, first: vpblu_proto::DaemonMessage) -> tonic::Status {
        let mut client = self.raw_client().await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(first).await.expect("room");
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(token) = token {
            let value =
                tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).expect("ASCII token");
            request.metadata_mut().insert("authorization", value);
        }
        let response = tokio::time::timeout(WAIT, client.session(request)).await.expect("answered in time");
        drop(tx);
        match response {
            Err(status) => status,
            Ok(_) => panic!("a session that should be refused was accepted"),
        }
    }
}

/// A StreamServer on a loopback port, with its store and metrics.
pub struct Controller {
    pub server: ActorRef<StreamServerMsg>,
    pub desired: Desired,
    pub metrics: StreamMetrics,
    pub health: Health,
    pub events: broadcast::Receiver<StreamEvent>,
    pub addr: SocketAddr,
    /// TLS to the test CA; no token (the server trusts every Hello).
    pub endpoint: Endpoint,
    pub pki: Arc<StreamPki>,
}

impl Controller {
    /// On a free loopback port, with a fresh test CA.
    pub async fn start(config: StreamConfig) -> Self {
        let pki = Arc::new(StreamPki::new());
        Controller::start_at("127.0.0.1:0".parse().expect("valid address"), Desired::new(), config, pki).await
    }

    /// A controller on `addr` over `desired` (a restarted controller gets
    /// a fresh one: its generation counters are gone), serving the
    /// certificate of `pki`.
    pub async fn start_at(
        addr: SocketAddr,
        desired: Desired,
        config: StreamConfig,
        pki: Arc<StreamPki>,
    ) -> Self {
        Controller::start_with(addr, desired, config, pki, NodeAuth::TrustAll, RefusalEvents::disabled())
            .await
    }

    /// Everything chosen by the caller, down to identity and Events.
    pub async fn start_with(
        addr: SocketAddr,
        desired: Desired,
        config: StreamConfig,
        pki: Arc<StreamPki>,
        auth: NodeAuth,
        refusals: RefusalEvents,
    ) -> Self {
        let files = TlsFiles { cert_file: pki.cert_file().to_owned(), key_file: pki.key_file().to_owned() };
        let tls = ServerTls::load(files).expect("the test certificate loads");
        Controller::start_serving(addr, desired, config, ServerTransport::Tls(tls), pki, auth, refusals).await
    }

    /// With an explicit transport (a test of an impostor's certificate).
    pub async fn start_serving(
        addr: SocketAddr,
        desired: Desired,
        config: StreamConfig,
        transport: ServerTransport,
        pki: Arc<StreamPki>,
        auth: NodeAuth,
        refusals: RefusalEvents,
    ) -> Self {
        let health = Health::new();
        let metrics = StreamMetrics::register(&health);
        let (events_tx, events) = broadcast::channel(1024);
        let args = StreamServerArgs {
            addr,
            desired: desired.clone(),
            config,
            metrics: metrics.clone(),
            events: events_tx,
            transport,
            auth,
            refusals,
        };
        let (server, _handle) = Actor::spawn(None, StreamServer, args).await.expect("stream server starts");
        let addr = match server.call(StreamServerMsg::LocalAddr, Some(WAIT)).await {
            Ok(CallResult::Success(addr)) => addr,
            other => panic!("stream server did not tell its address: {other:?}"),
        };
        let endpoint = Endpoint {
            url: format!("https://{addr}"),
            security: StreamSecurity { tls: tls_to(&pki), token_file: None },
            pki: Arc::clone(&pki),
        };
        Controller { server, desired, metrics, health, events, addr, endpoint, pki }
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

/// The daemon of node-`i` (IP 192.0.2.`i`) as the DaemonSet runs it: its
/// Pod on the node, controlled by the vpblu DaemonSet (installed if
/// missing), and that Pod's projected token (audience vpblu) in a file; it
/// dials the controller at `grpc` over TLS checked against `pki`. What the
/// controller binary's TokenReview accepts by default.
pub async fn deployed_daemon(cluster: &TestCluster, pki: &Arc<StreamPki>, grpc: &str, i: usize) -> Daemon {
    let node = format!("node-{i}");
    let pod_name = format!("{DAEMON_NAME}-{node}");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), DAEMON_NAMESPACE);
    let pod = match pods.get_opt(&pod_name).await.expect("look the daemon Pod up") {
        Some(pod) => pod,
        None => {
            let daemonset = cluster.install_daemonset().await;
            cluster.daemon_pod(&pod_name, &node, &format!("192.0.2.{i}"), DAEMON_NAME, Some(&daemonset)).await
        }
    };
    let token = pki.dir().join(format!("{node}.token"));
    cluster.write_pod_token(&pod, DAEMON_NAME, &[DAEMON_AUDIENCE], &token).await;
    let endpoint = Endpoint {
        url: format!("https://{grpc}"),
        security: StreamSecurity::tls(pki.ca_file(), SERVER_NAME, token),
        pki: Arc::clone(pki),
    };
    Daemon::start(&node, i, &endpoint).await
}

/// The flags that make the controller binary serve `pki`'s certificate.
pub fn tls_flags(pki: &StreamPki) -> Vec<String> {
    vec![
        "--tls-cert-file".to_owned(),
        pki.cert_file().display().to_string(),
        "--tls-key-file".to_owned(),
        pki.key_file().display().to_string(),
    ]
}

/// TLS that trusts `pki`'s CA and checks the controller's usual name.
pub fn tls_to(pki: &StreamPki) -> Option<vpblu_daemon::stream::ClientTls> {
    Some(vpblu_daemon::stream::ClientTls {
        ca_file: pki.ca_file().to_owned(),
        server_name: SERVER_NAME.to_owned(),
    })
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
    pub async fn start(node: &str, i: usize, endpoint: &Endpoint) -> Self {
        let facts =
            HelloFacts { public_key: key(i), staged_public_key: None, backend: Backend::Kernel, mtu: 1420 };
        let plane = RecordingDataPlane::new(name(node), facts);
        Daemon::start_with(node, plane, endpoint).await
    }

    /// A daemon over an existing data plane (a restarted daemon process
    /// finds its data plane as it left it).
    pub async fn start_with(node: &str, plane: RecordingDataPlane, endpoint: &Endpoint) -> Self {
        let args = StreamClientArgs {
            node: name(node),
            endpoint: endpoint.url.clone(),
            data_plane: plane.clone(),
            config: fast_client(),
            security: endpoint.security.clone(),
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

/// A test cluster with the CRDs, the namespace, the daemon's account and
/// DaemonSet (the daemons' Pods belong to it), and Ready nodes node-1..=3.
pub async fn three_nodes() -> vpblu_e2e::cluster::TestCluster {
    let cluster = vpblu_e2e::cluster::TestCluster::start().await;
    cluster.install_crds().await;
    cluster.install_daemonset().await;
    for i in 1..=3 {
        let (node, ip, cidr) = (format!("node-{i}"), format!("192.0.2.{i}"), format!("10.244.{i}.0/24"));
        cluster.register_node(&node, &ip, &[&cidr], true).await;
    }
    cluster
}
