//! The lab: three node namespaces on an underlay bridge, two pods each.

use super::*;

pub(crate) use vpblu_e2e::netns::PinDir;

/// One node. Fields drop in order: the data plane first, then its pins,
/// its pods, its namespace (which kills wireguard-go by PID).
pub(crate) struct Node {
    pub(crate) runner: Option<NodeRunner>,
    pub(crate) pin_dir: PinDir,
    pub(crate) pods: Vec<Netns>,
    pub(crate) ns: Netns,
    pub(crate) index: u8,
    pub(crate) name: NodeName,
    pub(crate) config: Config,
    pub(crate) public_key: PublicKey,
    pub(crate) generation: u64,
}

impl Node {
    pub(crate) fn runner(&self) -> &NodeRunner {
        self.runner.as_ref().expect("the node's data plane is running")
    }

    pub(crate) fn pod(&self, pod: u8) -> &Netns {
        &self.pods[usize::from(pod - 2)]
    }

    /// Starts (or restarts) the node's data plane.
    pub(crate) fn start(&mut self) -> Inspection {
        let (runner, inspection) = NodeRunner::start(self.ns.path(), self.name.clone(), self.config.clone());
        if let Some(pid) = inspection.wireguard_pid {
            self.ns.kill_on_drop(pid);
        }
        if let Some(socket) = &inspection.wireguard_socket {
            self.ns.remove_on_drop(socket);
        }
        self.public_key = inspection.facts.public_key;
        self.runner = Some(runner);
        inspection
    }

    /// Applies `command` under the next generation.
    pub(crate) fn apply(&mut self, command: MeshCommand) -> Result<(), String> {
        let next = Generation(self.generation + 1);
        let result = self.runner().apply(next, command);
        if result.is_ok() {
            self.generation = next.0;
        }
        result
    }

    pub(crate) fn apply_ok(&mut self, command: MeshCommand) {
        let what = format!("{command:?}");
        self.apply(command).unwrap_or_else(|e| panic!("{} refused {what}: {e}", self.name));
    }

    pub(crate) fn counters(&self) -> BTreeMap<Verdict, u64> {
        self.runner().inspect().counters
    }

    /// What the node's kernel holds, for failure messages.
    pub(crate) fn diagnose(&self) -> String {
        let table = vpblu_daemon::routing::DEFAULT_TABLE.to_string();
        let mut out = format!("--- {} ---\n", self.name);
        for (cmd, args) in [
            ("ip", vec!["-br", "addr"]),
            ("ip", vec!["rule"]),
            ("ip", vec!["route", "show", "table", &table]),
            ("ip", vec!["-6", "route", "show", "table", &table]),
            ("nstat", vec!["-asz", "TcpExtIPReversePathFilter"]),
        ] {
            let o = self.ns.run(cmd, &args);
            out += &format!(
                "$ {cmd} {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if let Some(runner) = &self.runner {
            let c = runner.inspect().counters;
            out += &format!("counters: {:?}\n", c.iter().filter(|(_, n)| **n > 0).collect::<Vec<_>>());
        }
        out
    }

    pub(crate) fn peer(&self) -> Arc<Peer> {
        Arc::new(Peer {
            node: self.name.clone(),
            public_key: self.public_key,
            endpoint: SocketAddr::new(format!("192.168.77.{}", self.index).parse().unwrap(), PORT),
            allowed_ips: pod_cidrs(self.index),
            persistent_keepalive: None,
        })
    }
}

pub(crate) struct Lab {
    pub(crate) nodes: Vec<Node>,
    pub(crate) bridge: Bridge,
    pub(crate) _tmp: tempfile::TempDir,
}

static LAB: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub(crate) fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let bridge = Bridge::new("mesh-ul");
        let lab_id = LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut nodes = Vec::new();
        for n in NODES {
            let ns = Netns::new(&format!("mesh-n{n}"));
            bridge.attach(&ns, "eth0", &format!("192.168.77.{n}/24"));
            ns.ip(&["addr", "add", &format!("fd00:77::{n}/64"), "dev", "eth0", "nodad"]);
            // rp_filter as hosts have it: loose (systemd's default) on nodes 1
            // and 2, strict on node 3. Decrypted traffic arrives on the mesh
            // device while the main table routes its source via eth0.
            let rp_filter = if n == 3 { "1" } else { "2" };
            let all = format!("net.ipv4.conf.all.rp_filter={rp_filter}");
            let default = format!("net.ipv4.conf.default.rp_filter={rp_filter}");
            ns.run_ok(
                "sysctl",
                &["-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", &all, &default],
            );
            // The pods' bridge, as Flannel's CNI makes it.
            ns.ip(&["link", "add", "cni0", "type", "bridge"]);
            ns.ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", "cni0"]);
            ns.ip(&["addr", "add", &format!("fd77:{n}::1/64"), "dev", "cni0", "nodad"]);
            ns.ip(&["link", "set", "cni0", "up"]);
            let pods = (2..=3).map(|p| add_pod(&ns, n, p, &format!("veth{n}{p}"))).collect();
            // Host-gw: the other nodes' pod CIDRs via their node IPs, in clear.
            for m in NODES.into_iter().filter(|m| *m != n) {
                ns.ip(&["route", "add", &format!("10.77.{m}.0/24"), "via", &format!("192.168.77.{m}")]);
                ns.ip(&["-6", "route", "add", &format!("fd77:{m}::/64"), "via", &format!("fd00:77::{m}")]);
            }
            let interface = format!("wgm{pid}x{lab_id}{n}");
            let pin_dir = PathBuf::from(format!("/sys/fs/bpf/vpblu-mesh-{pid}-{lab_id}-{n}"));
            let dir = tmp.path().join(format!("node{n}"));
            let mut config = Config::new(dir.join("keys"), dir.join("state"), &pin_dir, interface);
            config.backend = Some(Backend::Userspace);
            config.userspace = UserspaceOptions {
                program: WireGuardGo::Path(vpblu_e2e::built_tools::wireguard_go().to_path_buf()),
                log_dir: tmp.path().join("logs"),
                ..UserspaceOptions::default()
            };
            nodes.push(Node {
                runner: None,
                pin_dir: PinDir(pin_dir),
                pods,
                ns,
                index: n,
                name: NodeName::new(format!("node-{n}")).unwrap(),
                config,
                public_key: PublicKey::from_bytes([0; 32]),
                generation: 0,
            });
        }
        Lab { nodes, bridge, _tmp: tmp }
    }

    /// Runs `f`; if it panics, panics again with what every node's kernel
    /// holds.
    pub(crate) fn diagnosed<T>(&self, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(value) => value,
            Err(_) => panic!(
                "(see the panic above) the nodes hold:\n{}",
                self.nodes.iter().map(Node::diagnose).collect::<Vec<_>>().join("\n")
            ),
        }
    }

    pub(crate) fn node(&self, n: u8) -> &Node {
        &self.nodes[usize::from(n - 1)]
    }

    pub(crate) fn node_mut(&mut self, n: u8) -> &mut Node {
        &mut self.nodes[usize::from(n - 1)]
    }

    /// Node `n`'s full-mesh desired state: every other node a peer.
    pub(crate) fn full_mesh(&self, n: u8) -> NodeDesiredState {
        let me = self.node(n);
        let mut state = NodeDesiredState::empty(me.name.clone());
        state.settings = SelfSettings {
            listen_port: PORT,
            lane_port: PORT + 1,
            pod_cidrs: pod_cidrs(n),
            ..SelfSettings::default()
        };
        for other in self.nodes.iter().filter(|o| o.index != n) {
            state.peers.insert(other.name.clone(), other.peer());
        }
        state
    }
}

/// A pod namespace `.p` of node `n`: veth `host` (enslaved to cni0) to its
/// `eth0` with 10.77.n.p/24 and fd77:n::p/64, default routes via the node.
pub(crate) fn add_pod(node: &Netns, n: u8, p: u8, host: &str) -> Netns {
    let pod = Netns::new(&format!("mesh-p{n}{p}"));
    node.ip(&["link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod.name()]);
    node.ip(&["link", "set", host, "master", "cni0", "up"]);
    pod.ip(&["addr", "add", &format!("{}/24", pod_v4(n, p)), "dev", "eth0"]);
    pod.ip(&["addr", "add", &format!("{}/64", pod_v6(n, p)), "dev", "eth0", "nodad"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", "default", "via", &format!("10.77.{n}.1")]);
    pod.ip(&["-6", "route", "add", "default", "via", &format!("fd77:{n}::1")]);
    pod
}
