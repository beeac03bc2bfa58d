//! The lab's network: an underlay bridge, one namespace per node attached
//! to it, a `cni0` bridge and pod namespaces inside every node, and plain
//! host-gw routes between the nodes for the pod CIDRs (what Flannel's
//! host-gw backend installs), so without vpblu pod traffic crosses the
//! underlay in clear. The host (the root namespace, where the API server
//! and the controllers run, as on a control-plane node) joins the underlay
//! through one veth pair, so daemons reach the controllers over the host
//! network and never through the mesh.
//!
//! Addresses, for lab `id` (0..=249) and node `n` (1-based):
//! underlay `10.240.id.n/24` and `fd00:240:id::n/64`, the host
//! `10.240.id.254`; pods `10.244.n.p/24` and `fd00:244:n::p/64` behind
//! `cni0` (`.1`). Pod addresses live only inside node namespaces, so two
//! labs differ only in their underlay.

use std::fmt;
use std::process::{Command, Stdio};

use crate::netns::{Bridge, Netns, ip};

/// Names every lab resource starts with (`make lab-down` finds leftovers
/// by it).
pub const PREFIX: &str = "vlab";

/// A pod: its namespace and addresses.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace (`eth0` inside).
    pub ns: Netns,
    /// `pod-N-P`, also its Pod object's name.
    pub name: String,
    /// 10.244.n.p
    pub v4: String,
    /// fd00:244:n::p
    pub v6: String,
}

/// A node: its namespace, addresses, pod CIDRs and pods.
#[derive(Debug)]
pub struct LabNode {
    /// 1-based.
    pub index: u8,
    /// `node-N`, its Node object's name.
    pub name: String,
    /// Its namespace (`eth0` on the underlay, `cni0` for its pods).
    pub ns: Netns,
    /// Its underlay IPv4 address (the Node's InternalIP).
    pub underlay_v4: String,
    /// Its underlay IPv6 address.
    pub underlay_v6: String,
    /// `10.244.n.0/24` and `fd00:244:n::/64`.
    pub pod_cidrs: [String; 2],
    /// Its pods.
    pub pods: Vec<Pod>,
}

/// The whole network. Dropping it removes every namespace (and the host's
/// veth with them); pods go before their nodes, nodes before the underlay.
pub struct Topology {
    /// The lab's id (third octet of the underlay).
    pub id: u8,
    /// Pods' and nodes' namespaces; dropped first.
    pub nodes: Vec<LabNode>,
    /// The underlay bridge, in a namespace of its own.
    pub underlay: Bridge,
    /// The host's end of its underlay veth, in the root namespace.
    pub host_link: String,
    /// The host's underlay address (controllers listen here).
    pub host_v4: String,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("id", &self.id)
            .field("nodes", &self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>())
            .field("host_v4", &self.host_v4)
            .finish_non_exhaustive()
    }
}

/// The underlay subnet of lab `id`, e.g. `10.240.7`.
pub fn underlay_prefix(id: u8) -> String {
    format!("10.240.{id}")
}

impl Topology {
    /// Builds `nodes` nodes with `pods_per_node` pods each. Panics (after
    /// removing what it made) if any step fails.
    pub fn build(id: u8, nodes: u8, pods_per_node: u8) -> Topology {
        assert!(id < 250, "lab id {id} is out of range: use 0..=249");
        assert!((1..=9).contains(&nodes), "a lab has 1 to 9 nodes, not {nodes}");
        let mut topology = Topology::underlay_only(id);
        for n in 1..=nodes {
            topology.nodes.push(build_node(id, n, pods_per_node, &topology.underlay));
        }
        // Host-gw: every other node's pod CIDRs via its underlay address.
        for node in &topology.nodes {
            for other in topology.nodes.iter().filter(|o| o.index != node.index) {
                node.ns.ip(&["route", "add", &other.pod_cidrs[0], "via", &other.underlay_v4]);
                node.ns.ip(&["-6", "route", "add", &other.pod_cidrs[1], "via", &other.underlay_v6]);
            }
        }
        topology
    }

    /// The underlay bridge and the host's leg on it (`.254`), no nodes yet:
    /// for nodes that are not namespaces (the guests of `crate::kvm`).
    pub fn underlay_only(id: u8) -> Topology {
        assert!(id < 250, "lab id {id} is out of range: use 0..=249");
        let net = underlay_prefix(id);
        let underlay = Bridge::new(&format!("{PREFIX}{id}-ul"));
        let host_link = format!("{PREFIX}{id}-host");
        let host_v4 = format!("{net}.254");
        let topology = Topology {
            id,
            nodes: Vec::new(),
            underlay,
            host_link: host_link.clone(),
            host_v4: host_v4.clone(),
        };

        // The host's leg: created in the root namespace with its peer in the
        // bridge's; deleting the bridge namespace deletes the pair.
        let port = format!("{PREFIX}-hostp");
        let _ = Command::new("ip").args(["link", "del", &host_link]).stderr(Stdio::null()).status();
        ip(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            topology.underlay.netns().name(),
        ]);
        ip(&["addr", "add", &format!("{host_v4}/24"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        topology.underlay.netns().ip(&["link", "set", &port, "master", Bridge::NAME, "up"]);
        topology
    }

    /// Node `n` (1-based).
    pub fn node(&self, n: u8) -> &LabNode {
        self.nodes
            .iter()
            .find(|node| node.index == n)
            .unwrap_or_else(|| panic!("the lab has no node {n} (it has {})", self.nodes.len()))
    }

    /// Every (from, to) pair of pods on different nodes.
    pub fn cross_node_pairs(&self) -> Vec<(&Pod, &Pod)> {
        let mut pairs = Vec::new();
        for a in &self.nodes {
            for b in self.nodes.iter().filter(|b| b.index != a.index) {
                for from in &a.pods {
                    for to in &b.pods {
                        pairs.push((from, to));
                    }
                }
            }
        }
        pairs
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Pods and nodes (and what runs in them) first, then the underlay,
        // whose namespace takes the host's veth with it.
        self.nodes.clear();
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).stderr(Stdio::null()).status();
    }
}

fn build_node(id: u8, n: u8, pods_per_node: u8, underlay: &Bridge) -> LabNode {
    let ns = Netns::new(&format!("{PREFIX}{id}-n{n}"));
    let underlay_v4 = format!("{}.{n}", underlay_prefix(id));
    let underlay_v6 = format!("fd00:240:{id}::{n}");
    underlay.attach(&ns, "eth0", &format!("{underlay_v4}/24"));
    ns.ip(&["addr", "add", &format!("{underlay_v6}/64"), "dev", "eth0", "nodad"]);
    // Routers, with the reverse-path filter most distributions ship (loose).
    ns.run_ok(
        "sysctl",
        &[
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.all.rp_filter=2",
            "net.ipv4.conf.default.rp_filter=2",
        ],
    );
    ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    ns.ip(&["addr", "add", &format!("10.244.{n}.1/24"), "dev", "cni0"]);
    ns.ip(&["addr", "add", &format!("fd00:244:{n}::1/64"), "dev", "cni0", "nodad"]);
    ns.ip(&["link", "set", "cni0", "up"]);
    let pods = (1..=pods_per_node).map(|p| build_pod(id, &ns, n, p + 1)).collect();
    LabNode {
        index: n,
        name: format!("node-{n}"),
        ns,
        underlay_v4,
        underlay_v6,
        pod_cidrs: [format!("10.244.{n}.0/24"), format!("fd00:244:{n}::/64")],
        pods,
    }
}

/// Pod `.p` of node `n`: a veth `vethNP` on `cni0` to the pod's `eth0`.
fn build_pod(id: u8, node: &Netns, n: u8, p: u8) -> Pod {
    let ns = Netns::new(&format!("{PREFIX}{id}-p{n}{p}"));
    let host = format!("veth{n}{p}");
    node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
    node.ip(&["link", "set", &host, "master", "cni0", "up"]);
    let (v4, v6) = (format!("10.244.{n}.{p}"), format!("fd00:244:{n}::{p}"));
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", &format!("10.244.{n}.1")]);
    ns.ip(&["-6", "route", "add", "default", "via", &format!("fd00:244:{n}::1")]);
    Pod { ns, name: format!("pod-{n}-{p}"), v4, v6 }
}
