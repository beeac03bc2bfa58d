//! The small mesh the daemon process tests run on: nodes as network
//! namespaces on an underlay bridge, one "pod" per node behind a `cni0`
//! bridge, no route between pod CIDRs but what vpblu installs, and each
//! node's daemon dialling the in-process stream controller. Each test file
//! numbers its own mesh ([`MeshNet`]) so two never share addresses.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use vpblu_e2e::netns::{Bridge, Netns};
use vpblu_messages::{Cidr, NodeName, PublicKey};

use super::controller::StreamController;
use super::{DaemonSetup, Running};

/// Node `n`'s name, `node-N`.
pub fn name(n: u8) -> NodeName {
    NodeName::new(format!("node-{n}")).unwrap()
}

/// One test's numbering: underlay `192.168.ID.N`, pods `10.ID.N.2` in
/// `10.ID.N.0/24`, namespaces `PREFIX-nN` and `PREFIX-pN`.
#[derive(Clone, Copy, Debug)]
pub struct MeshNet {
    /// The third octet of the underlay, the second of the pods.
    pub id: u8,
    /// Namespace name prefix.
    pub prefix: &'static str,
}

/// A node of the mesh.
pub struct Node {
    /// 1-based.
    pub n: u8,
    /// Its daemon, while it runs.
    pub daemon: Option<Running>,
    /// How its daemon starts.
    pub setup: DaemonSetup,
    /// Its pod.
    pub pod: Netns,
    /// The node.
    pub ns: Netns,
}

impl Node {
    /// The running daemon.
    pub fn daemon(&mut self) -> &mut Running {
        self.daemon.as_mut().expect("the node's daemon is running")
    }
}

impl MeshNet {
    /// Node `n`'s underlay address.
    pub fn underlay(&self, n: u8) -> String {
        format!("192.168.{}.{n}", self.id)
    }

    /// Node `n`'s pod address.
    pub fn pod_ip(&self, n: u8) -> String {
        format!("10.{}.{n}.2", self.id)
    }

    /// Node `n`'s pod CIDR.
    pub fn pod_cidr(&self, n: u8) -> Cidr {
        format!("10.{}.{n}.0/24", self.id).parse().unwrap()
    }

    /// The underlay bridge and, in a namespace on it at `.254`, the
    /// in-process stream controller the daemons dial.
    pub fn underlay_and_controller(&self) -> (Bridge, StreamController) {
        let bridge = Bridge::new(&format!("{}-ul", self.prefix));
        let ctl_ns = Netns::new(&format!("{}-ctl", self.prefix));
        let addr = self.underlay(254);
        bridge.attach(&ctl_ns, "eth0", &format!("{addr}/24"));
        let controller = StreamController::start(ctl_ns, &addr);
        (bridge, controller)
    }

    /// Starts every node's daemon, waits until each answers `/healthz` and
    /// has connected to `controller` (at most `within`); the public key
    /// each announced in its Hello.
    pub fn start_all(
        nodes: &mut [Node],
        controller: &StreamController,
        within: Duration,
    ) -> BTreeMap<u8, PublicKey> {
        for node in nodes.iter_mut() {
            node.daemon = Some(node.setup.start(&node.ns));
        }
        for node in nodes.iter_mut() {
            node.daemon().wait_status("/healthz", 200, Duration::from_secs(30));
        }
        let deadline = Instant::now() + within;
        while controller.connected().len() < nodes.len() {
            if Instant::now() >= deadline {
                let first = nodes[0].n;
                let log = nodes[0].daemon().log_text();
                panic!(
                    "every daemon connects to the controller within {within:?}; connected: {:?}; node-{first} \
                     logged:\n{log}",
                    controller.connected()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        nodes
            .iter()
            .map(|node| (node.n, controller.status(&name(node.n)).expect("connected").hello.public_key))
            .collect()
    }

    /// Node `n`: `eth0` on the underlay, a `cni0` bridge with one pod behind
    /// a `vethN` pair, forwarding on; its daemon (userspace WireGuard) set up
    /// to dial `endpoint` in plaintext, not started.
    pub fn add_node(&self, bridge: &Bridge, n: u8, dir: &Path, endpoint: &str) -> Node {
        let ns = Netns::new(&format!("{}-n{n}", self.prefix));
        bridge.attach(&ns, "eth0", &format!("{}/24", self.underlay(n)));
        ns.run_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        ns.ip(&["link", "add", "cni0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("10.{}.{n}.1/24", self.id), "dev", "cni0"]);
        ns.ip(&["link", "set", "cni0", "up"]);
        let pod = Netns::new(&format!("{}-p{n}", self.prefix));
        let host = format!("veth{n}");
        ns.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", pod.name()]);
        ns.ip(&["link", "set", &host, "master", "cni0", "up"]);
        pod.ip(&["addr", "add", &format!("{}/24", self.pod_ip(n)), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", &format!("10.{}.{n}.1", self.id)]);
        let setup = DaemonSetup::new(&ns, &format!("node-{n}"), dir).userspace().with(&[
            "--controller-addr",
            endpoint,
            "--insecure-dev",
            "--observe-interval",
            "1s",
        ]);
        Node { n, daemon: None, setup, pod, ns }
    }
}
