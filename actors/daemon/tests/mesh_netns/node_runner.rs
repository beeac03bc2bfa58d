//! A node's data plane on a thread inside the node's namespace.

use super::*;

/// What a test asks of a node's data plane.
enum Request {
    Apply(Generation, Box<MeshCommand>, mpsc::Sender<Result<(), String>>),
    Inspect(mpsc::Sender<Inspection>),
}

/// The data plane as the test sees it.
#[derive(Clone, Debug)]
pub(crate) struct Inspection {
    pub(crate) facts: HelloFacts,
    pub(crate) applied: Generation,
    pub(crate) counters: BTreeMap<Verdict, u64>,
    pub(crate) pod_interfaces: Vec<String>,
    pub(crate) wireguard_pid: Option<u32>,
    pub(crate) wireguard_socket: Option<PathBuf>,
}

/// A [`NodeDataPlane`] owned by a thread that setns(2)ed into the node's
/// namespace and runs a current-thread tokio runtime (whose blocking
/// threads it spawns, so they are in that namespace too). Dropping it
/// drops the data plane, as a daemon exiting would.
pub(crate) struct NodeRunner {
    requests: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeRunner {
    pub(crate) fn start(netns: PathBuf, node: NodeName, config: Config) -> (NodeRunner, Inspection) {
        let (requests, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Inspection, String>>();
        let label = node.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("dp-{label}"))
            .spawn(move || {
                let file = File::open(&netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
                rustix::thread::move_into_link_name_space(
                    file.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("setns into {}: {e}", netns.display()));
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async move {
                    let mut data_plane = match NodeDataPlane::start(node, config).await {
                        Ok(dp) => dp,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(inspect(&data_plane).await));
                    while let Some(request) = inbox.recv().await {
                        match request {
                            Request::Apply(generation, command, reply) => {
                                let _ = reply.send(
                                    data_plane.apply(generation, &command).await.map_err(|e| e.to_string()),
                                );
                            }
                            Request::Inspect(reply) => {
                                let _ = reply.send(inspect(&data_plane).await);
                            }
                        }
                    }
                });
            })
            .expect("spawn a data-plane thread");
        // On failure the thread is detached, not joined: a start that hangs
        // fails the test (and its namespaces are removed) instead of hanging it.
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(inspection)) => (NodeRunner { requests: Some(requests), thread: Some(thread) }, inspection),
            Ok(Err(e)) => panic!("NodeDataPlane::start for {label} failed: {e}"),
            Err(e) => panic!("NodeDataPlane::start for {label} did not report within 30 s ({e})"),
        }
    }

    pub(crate) fn apply(&self, generation: Generation, command: MeshCommand) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .as_ref()
            .unwrap()
            .send(Request::Apply(generation, Box::new(command), tx))
            .expect("node thread alive");
        rx.recv_timeout(Duration::from_secs(30)).expect("apply answered within 30 s")
    }

    pub(crate) fn inspect(&self) -> Inspection {
        let (tx, rx) = mpsc::channel();
        self.requests.as_ref().unwrap().send(Request::Inspect(tx)).expect("node thread alive");
        rx.recv_timeout(Duration::from_secs(10)).expect("inspect answered within 10 s")
    }
}

impl Drop for NodeRunner {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("a data-plane thread panicked");
        }
    }
}

pub(crate) async fn inspect(dp: &NodeDataPlane) -> Inspection {
    let processes = dp.processes().await.expect("ask the WireGuard actor for its processes");
    Inspection {
        facts: dp.hello_facts(),
        applied: dp.applied_generation(),
        counters: dp.counters().await.expect("read the BPF counters"),
        pod_interfaces: dp.pod_interfaces().await.expect("ask the BPF-map actor for its pod interfaces"),
        wireguard_pid: processes.main,
        wireguard_socket: processes.socket,
    }
}
