//! The lab: the whole mesh on one machine. A real control plane
//! ([`TestCluster`]), an underlay with one network namespace per node and
//! pods behind each ([`topology`]), two real controllers (leader-elected)
//! in the host namespace and one real daemon per node inside its namespace
//! ([`processes`]), with real eBPF and userspace WireGuard; plus the checks
//! the §12 acceptance suite and `make lab` share ([`traffic`], [`capture`]).
//!
//! Everything is torn down on drop (also while a failing test unwinds):
//! daemons and WireGuard processes with their namespaces, controllers by
//! PID, bpffs pins and UAPI sockets by name, the control plane and the lab
//! directory. A lab killed before it could clean up is removed by
//! `make lab-down` (`vpblu-lab down`), which finds it by [`topology::PREFIX`].

pub mod capture;
pub mod leftovers;
pub mod pair_traffic;
pub mod processes;
pub mod ring_capture;
pub mod rotation;
pub mod steady_tcp;
pub mod topology;
pub mod traffic;
pub mod wg;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use vpblu_k8s::{VpbluNode, VpbluNodeStatus};

use crate::cluster::TestCluster;

pub use self::processes::{Controller, Daemon, LabBinaries};
pub use self::topology::{LabNode, Pod, Topology};

/// Namespace of the daemon and controller objects, as in k8s/deploy.
pub const SYSTEM_NAMESPACE: &str = "vpblu-system";
/// Namespace of the lab's workload Pods.
pub const POD_NAMESPACE: &str = "lab";
/// The WireGuard listen port every node gets (the engine's default).
pub const MESH_PORT: u16 = 51820;
/// The lane device's port (the main port + 1), used while a key rotates.
pub const LANE_PORT: u16 = MESH_PORT + 1;
/// The controllers' stream ports on the host (one per replica).
pub const CONTROLLER_PORTS: [u16; 2] = [9443, 9444];
/// Lease timings: failover within a few seconds.
pub const LEASE_DURATION: &str = "4s";
/// How often the leader renews.
pub const LEASE_RENEW: &str = "1s";

/// How a lab is shaped.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Distinguishes concurrent labs (third octet of the underlay).
    pub id: u8,
    /// Nodes (3 for the acceptance suite).
    pub nodes: u8,
    /// Pods per node.
    pub pods_per_node: u8,
    /// Controller replicas (2: one leads, one stands by).
    pub controllers: u8,
    /// Start controllers and daemons with `--fault-injection` (chaos runs:
    /// `POST /debug/panic/<child>` makes one of their actors panic).
    pub fault_injection: bool,
}

impl LabOptions {
    /// Three nodes, two pods each, two controllers; an id from the PID so
    /// test binaries running side by side do not collide.
    pub fn acceptance() -> LabOptions {
        LabOptions {
            id: (std::process::id() % 200) as u8 + 20,
            nodes: 3,
            pods_per_node: 2,
            controllers: 2,
            fault_injection: false,
        }
    }
}

/// One lab at a time in a test binary: two would fight over two cores.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` on a fresh acceptance lab (its id shifted by
/// `id_offset * 20`, so tests in one binary never reuse names), one lab at
/// a time, on its own tokio runtime. The lab is torn down after, also when
/// `test` panics.
pub fn with_lab(id_offset: u8, test: impl AsyncFnOnce(&mut Lab)) {
    with_lab_options(id_offset, |_| {}, test);
}

/// [`with_lab`], with the acceptance options changed by `configure` first
/// (e.g. `fault_injection`).
pub fn with_lab_options(
    id_offset: u8,
    configure: impl FnOnce(&mut LabOptions),
    test: impl AsyncFnOnce(&mut Lab),
) {
    let _one_at_a_time = ONE_LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let mut options = LabOptions::acceptance();
        configure(&mut options);
        options.id = options.id.wrapping_add(id_offset * 20) % 250;
        let started = Instant::now();
        let mut lab = Lab::up(options).await;
        println!("lab up in {:.1} s", started.elapsed().as_secs_f64());
        test(&mut lab).await;
    });
}

/// A running lab. Fields drop in order: daemons, controllers, the network,
/// the control plane, the directory.
#[derive(Debug)]
pub struct Lab {
    /// One per node, in node order.
    pub daemons: Vec<Daemon>,
    /// The controller replicas.
    pub controllers: Vec<Controller>,
    /// The network.
    pub topology: Topology,
    /// The control plane.
    pub cluster: TestCluster,
    options: LabOptions,
    binaries: LabBinaries,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Brings the whole lab up: control plane, CRDs and k8s/deploy RBAC,
    /// the network, Node and Pod objects, the controllers, the daemons,
    /// and a FullMesh TunnelPolicy; returns once every daemon has every
    /// peer with a handshake (panics with the logs otherwise).
    pub async fn up(options: LabOptions) -> Lab {
        crate::netns::require_root_and(&["ip", "ping", "tcpdump", "nft", "sysctl"]);
        let binaries = LabBinaries::find();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-", topology::PREFIX, options.id))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the lab directory: {e}"));
        let cluster = start_control_plane().await;
        let topology = Topology::build(options.id, options.nodes, options.pods_per_node);
        let mut lab =
            Lab { daemons: Vec::new(), controllers: Vec::new(), topology, cluster, options, binaries, dir };
        lab.register_objects().await;
        let tls = processes::StreamTls::issue(lab.dir.path());
        for replica in 0..lab.options.controllers {
            let controller = Controller::start(
                &lab.cluster,
                &lab.binaries,
                &lab.topology,
                &tls,
                lab.dir.path(),
                replica,
                lab.options.fault_injection,
            )
            .await;
            lab.controllers.push(controller);
        }
        for n in 1..=lab.options.nodes {
            let daemon = Daemon::start(
                &lab.cluster,
                &lab.binaries,
                &lab.topology,
                &tls,
                lab.dir.path(),
                n,
                lab.options.fault_injection,
            )
            .await;
            lab.daemons.push(daemon);
        }
        lab.record_processes();
        lab.cluster
            .apply_manifest(lab.cluster.repo_root().join("k8s/deploy/samples/tunnelpolicy-fullmesh.yaml"))
            .await;
        lab.wait_mesh(Duration::from_secs(60)).await;
        lab
    }

    /// The options it was built with.
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// The lab's directory (logs, keys, tokens, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon of node `n` (1-based).
    pub fn daemon(&self, n: u8) -> &Daemon {
        &self.daemons[usize::from(n - 1)]
    }

    /// The daemon of node `n`, mutably (to kill and restart it).
    pub fn daemon_mut(&mut self, n: u8) -> &mut Daemon {
        &mut self.daemons[usize::from(n - 1)]
    }

    /// What the capture classifier allows on this lab's underlay.
    pub fn expect(&self) -> capture::Expect {
        capture::Expect {
            underlay_prefix: format!("{}.", topology::underlay_prefix(self.topology.id)),
            mesh_ports: vec![MESH_PORT, LANE_PORT],
            control_ports: CONTROLLER_PORTS.to_vec(),
            pod_markers: vec!["10.244.".to_owned(), "fd00:244:".to_owned()],
        }
    }

    /// Starts a capture on the underlay.
    pub fn capture(&self) -> capture::Capture {
        capture::Capture::start(&self.topology.underlay)
    }

    /// Every VpbluNode's status, by node name.
    pub async fn statuses(&self) -> Vec<(String, VpbluNodeStatus)> {
        let names: Vec<&str> = self.topology.nodes.iter().map(|n| n.name.as_str()).collect();
        statuses_of(&self.cluster, &names).await
    }

    /// Waits until every node reports every other node as a peer with a
    /// recent handshake (which needs traffic: each node pings one pod on
    /// every other node while waiting); how long it took.
    pub async fn wait_mesh(&self, within: Duration) -> Duration {
        let start = Instant::now();
        let want = i32::from(self.topology.nodes.len() as u8 - 1);
        loop {
            self.poke_every_pair();
            let statuses = self.statuses().await;
            let ready = statuses.iter().all(|(_, s)| s.peers == Some(want) && s.peers_up == Some(want));
            if ready {
                return start.elapsed();
            }
            if start.elapsed() > within {
                self.dump_logs();
                panic!("the mesh did not form within {within:?}; node statuses:\n{statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One ping from each node's first pod to each other node's first pod
    /// (starts handshakes; the result does not matter).
    pub fn poke_every_pair(&self) {
        for a in &self.topology.nodes {
            for b in self.topology.nodes.iter().filter(|b| b.index != a.index) {
                let _ = traffic::ping(&a.pods[0].ns, &b.pods[0].v4, &["-q", "-c", "1", "-W", "0.2"]);
            }
        }
    }

    /// The index in [`Lab::controllers`] of the replica holding the
    /// leader Lease, if any.
    pub async fn leader(&self) -> Option<usize> {
        let leases: Api<Lease> = Api::namespaced(self.cluster.client(), SYSTEM_NAMESPACE);
        let holder = leases.get_opt("vpblu-controller").await.ok().flatten()?.spec?.holder_identity?;
        self.controllers.iter().position(|c| c.identity == holder)
    }

    /// Deletes Node `n`'s Node object (a node leaving the cluster).
    pub async fn delete_node_object(&self, n: u8) {
        let name = &self.topology.node(n).name;
        self.cluster.delete_node(name).await;
    }

    /// Records the host processes' PIDs so `vpblu-lab down` can stop them
    /// if this process dies without cleaning up. Call after restarting a
    /// controller.
    pub fn record_processes(&self) {
        let mut pids = self.cluster.control_plane_pids();
        pids.extend(self.controllers.iter().filter_map(Controller::pid));
        leftovers::record(self.options.id, &pids);
    }

    /// Prints the tail of every process log (for a failing test).
    pub fn dump_logs(&self) {
        for controller in &self.controllers {
            processes::print_tail(controller.log());
        }
        for daemon in &self.daemons {
            processes::print_tail(daemon.log());
        }
    }

    /// Nodes and Pods as a kubelet and a CNI would register them: every
    /// node with its InternalIP and pod CIDRs, every workload pod, and per
    /// node the daemon's Pod (owned by the vpblu-daemon DaemonSet, running
    /// as its service account) that the daemon's token is bound to.
    async fn register_objects(&mut self) {
        for node in &self.topology.nodes {
            let cidrs: Vec<&str> = node.pod_cidrs.iter().map(String::as_str).collect();
            self.cluster.register_node(&node.name, &node.underlay_v4, &cidrs, true).await;
            for pod in &node.pods {
                self.cluster
                    .register_pod(POD_NAMESPACE, &pod.name, &node.name, &pod.v4, None, &[("app", "lab")])
                    .await;
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Daemons (and their WireGuard processes, pins, sockets), then
        // controllers; the network and the control plane follow as fields.
        self.daemons.clear();
        self.controllers.clear();
        leftovers::forget(self.options.id);
    }
}

/// A control plane with vpblu's CRDs and k8s/deploy's namespace, RBAC and
/// daemon DaemonSet, as every lab starts.
pub async fn start_control_plane() -> TestCluster {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let deploy = cluster.repo_root().join("k8s/deploy");
    for file in ["namespace.yaml", "controller-rbac.yaml", "daemon-rbac.yaml", "daemon-daemonset.yaml"] {
        cluster.apply_manifest(deploy.join(file)).await;
    }
    cluster
}

/// The VpbluNode status of each of `names` (empty where there is none yet),
/// in that order.
pub async fn statuses_of(cluster: &TestCluster, names: &[&str]) -> Vec<(String, VpbluNodeStatus)> {
    let api: Api<VpbluNode> = Api::all(cluster.client());
    let mut out = Vec::new();
    for name in names {
        let status = api.get_opt(name).await.ok().flatten().and_then(|n| n.status).unwrap_or_default();
        out.push(((*name).to_owned(), status));
    }
    out
}

/// Creates the daemon Pod object for `node` owned by the DaemonSet;
/// returns (name, uid) to bind the daemon's token to.
pub(crate) async fn register_daemon_pod(cluster: &TestCluster, node: &LabNode) -> (String, String) {
    register_daemon_pod_on(cluster, &node.name, &node.underlay_v4).await
}

/// [`register_daemon_pod`] for a node known by name and underlay address
/// (a guest of `crate::kvm`).
pub(crate) async fn register_daemon_pod_on(
    cluster: &TestCluster,
    node: &str,
    node_v4: &str,
) -> (String, String) {
    let name = format!("vpblu-daemon-{node}");
    let pod = cluster
        .register_pod(
            SYSTEM_NAMESPACE,
            &name,
            node,
            node_v4,
            Some("vpblu-daemon"),
            &[("app.kubernetes.io/name", "vpblu-daemon"), ("app.kubernetes.io/part-of", "vpblu")],
        )
        .await;
    let uid = pod.metadata.uid.unwrap_or_else(|| panic!("Pod {SYSTEM_NAMESPACE}/{name} has no uid"));
    // Controlled by the DaemonSet, as the DaemonSet controller would make it
    // (the controller accepts only that DaemonSet's pods).
    let daemonsets: Api<DaemonSet> = Api::namespaced(cluster.client(), SYSTEM_NAMESPACE);
    let daemonset = daemonsets.get("vpblu-daemon").await.expect("the vpblu-daemon DaemonSet from k8s/deploy");
    let owner = serde_json::json!({"metadata": {"ownerReferences": [{
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "name": "vpblu-daemon",
        "uid": daemonset.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]}});
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), SYSTEM_NAMESPACE);
    pods.patch(&name, &PatchParams::default(), &Patch::Merge(&owner))
        .await
        .unwrap_or_else(|e| panic!("cannot make Pod {name} the DaemonSet's: {e}"));
    (name, uid)
}
