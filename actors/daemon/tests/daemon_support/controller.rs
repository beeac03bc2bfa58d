//! The controller's real stream server in this process, on a tokio
//! runtime whose threads live in a namespace on the underlay, fed through
//! its `Desired` store the way the controller's Recompute feeds it.
//! Plaintext and every Hello believed: TLS and node identity are proven by
//! the controller's stream tests; these tests are about what the daemon
//! does with what it is sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use vpblu_controller::stream::{
    Desired, NodeAuth, NodeStreamStatus, RefusalEvents, ServerTransport, StreamConfig, StreamEvent,
    StreamMetrics, StreamServer, StreamServerArgs, StreamServerMsg, node_status,
};
use vpblu_e2e::netns::Netns;
use vpblu_messages::{Generation, NodeName, RotationPhase, RotationReport, Upstream};
use vpblu_runtime::Health;

/// Waits on the controller side.
const WAIT: Duration = Duration::from_secs(20);

/// The stream server and what feeds it.
#[derive(Debug)]
pub struct StreamController {
    pub runtime: tokio::runtime::Runtime,
    pub server: ActorRef<StreamServerMsg>,
    pub desired: Desired,
    /// `http://ADDR:PORT` for the daemons' `--controller-addr`.
    pub endpoint: String,
    pub ns: Netns,
    /// Every RotationReport a daemon sent, in arrival order.
    reports: Arc<Mutex<Vec<(NodeName, RotationReport)>>>,
}

impl StreamController {
    /// Starts the stream server on `ADDR:0` inside `ns`: the runtime's
    /// worker threads are spawned from a thread inside it, and the server
    /// binds from a task on them.
    pub fn start(ns: Netns, addr: &str) -> StreamController {
        let runtime = ns.enter(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime for the controller")
        });
        let desired = Desired::new();
        let (events, mut heard) = broadcast::channel(4096);
        let reports = Arc::new(Mutex::new(Vec::new()));
        {
            let reports = Arc::clone(&reports);
            runtime.spawn(async move {
                loop {
                    match heard.recv().await {
                        Ok(StreamEvent::Message(node, Upstream::RotationReport(report))) => {
                            reports.lock().unwrap_or_else(PoisonError::into_inner).push((node, report));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            eprintln!("the test's event collector missed {n} stream events");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        let args = StreamServerArgs {
            addr: format!("{addr}:0").parse().unwrap(),
            desired: desired.clone(),
            config: StreamConfig::default(),
            metrics: StreamMetrics::register(&Health::new()),
            events,
            // Plaintext and every Hello believed: TLS and node identity are
            // proven by the controller's stream tests; this one is about
            // what the daemon does with what it is sent.
            transport: ServerTransport::InsecurePlaintext,
            auth: NodeAuth::TrustAll,
            refusals: RefusalEvents::disabled(),
        };
        let server = runtime.block_on(async {
            runtime
                .spawn(async move {
                    let (server, _) =
                        Actor::spawn(None, StreamServer, args).await.expect("stream server starts");
                    server
                })
                .await
                .expect("the spawn task")
        });
        let local: SocketAddr = runtime.block_on(async {
            match server.call(StreamServerMsg::LocalAddr, Some(WAIT)).await {
                Ok(CallResult::Success(addr)) => addr,
                other => panic!("the stream server did not tell its address: {other:?}"),
            }
        });
        StreamController { runtime, server, desired, endpoint: format!("http://{local}"), ns, reports }
    }

    /// Every RotationReport heard so far, in arrival order.
    pub fn reports(&self) -> Vec<(NodeName, RotationReport)> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for `node`'s report on phase `phase` of rotation `id` (the
    /// `nth` one, counting from 1: a daemon reports again on a new stream).
    pub fn wait_report(
        &self,
        node: &NodeName,
        id: u64,
        phase: RotationPhase,
        nth: usize,
        within: Duration,
    ) -> RotationReport {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<RotationReport> = self
                .reports()
                .into_iter()
                .filter(|(n, r)| n == node && r.rotation_id == id && r.phase == phase)
                .map(|(_, r)| r)
                .collect();
            if let Some(report) = found.get(nth - 1) {
                return report.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{node}: report #{nth} on rotation {id} phase {phase} within {within:?}; heard {:?}; stream status {:?}",
                self.reports(),
                self.status(node)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self, node: &NodeName) -> Option<NodeStreamStatus> {
        self.runtime.block_on(node_status(&self.server, node, WAIT))
    }

    pub fn connected(&self) -> Vec<NodeName> {
        self.runtime.block_on(async {
            match self.server.call(StreamServerMsg::Connected, Some(WAIT)).await {
                Ok(CallResult::Success(nodes)) => nodes,
                other => panic!("the stream server did not list its streams: {other:?}"),
            }
        })
    }

    /// Waits until `node` has a stream whose status passes `check`.
    pub fn wait_status(
        &self,
        node: &NodeName,
        what: &str,
        check: impl Fn(&NodeStreamStatus) -> bool,
    ) -> NodeStreamStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status(node);
            if let Some(status) = status.as_ref().filter(|s| check(s)) {
                return status.clone();
            }
            if let Some(error) = status.as_ref().and_then(|s| s.last_error.clone()) {
                panic!("{node} refused generation {}: {}", error.generation, error.error);
            }
            assert!(Instant::now() < deadline, "{node}: {what} within {WAIT:?}; last status: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `node` acked everything sent to it, ok, up to at least
    /// a generation above `above`.
    pub fn wait_acked_above(&self, node: &NodeName, above: Generation) -> NodeStreamStatus {
        self.wait_status(node, &format!("an ok ack above generation {above}"), |s| {
            s.last_acked.is_some_and(|g| g > above) && s.unacked.is_empty() && s.last_error.is_none()
        })
    }

    pub fn stop(self) {
        let StreamController { runtime, server, ns, .. } = self;
        runtime.block_on(async {
            let _ = server.stop_and_wait(None, Some(WAIT)).await;
        });
        runtime.shutdown_timeout(Duration::from_secs(5));
        drop(ns);
    }
}
