//! The node data plane on real parts: three "nodes" (network namespaces)
//! on an underlay bridge, two "pods" per node behind a `cni0` bridge, and
//! plain host-gw routes between the nodes for the pod CIDRs (what Flannel
//! host-gw installs), so without vpblu pod traffic crosses the underlay in
//! clear. Each node runs a [`NodeDataPlane`] (real wireguard-go, real tc
//! BPF, real routes and nftables) on a thread of its own inside its
//! namespace, and is sent a hand-built full-mesh desired state. tcpdump on
//! the underlay bridge shows what actually crosses it.
//!
//! One test, in phases (each prints a summary line with its time):
//! baseline in clear (proves the capture would see a leak); full mesh, all
//! pod pairs v4 and v6, only WireGuard on the underlay; a block rule on both
//! ends, then on the receiver only (deliver drops it); the largest ping that
//! fits the mesh MTU and a loud refusal one byte above, 50 MiB of TCP;
//! strict mode (a removed peer's CIDRs dropped, counted by reason, never in
//! clear, then restored); invalid states refused with traffic untouched; a
//! pod veth that appears later gets classify; a data-plane restart adopts
//! everything and loses no packet.
//!
//! Needs root, `ip`, `ping`, `tcpdump`, `nft`, and Go to build the pinned
//! wireguard-go (tools/wireguard-go/build.sh; instant once cached). Fails,
//! never skips, when any is missing. Namespaces, wireguard-go processes
//! (by PID), UAPI sockets and bpffs pins are removed when the test ends,
//! failed or not.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vpblu_daemon::bpf::Verdict;
use vpblu_daemon::data_plane::{Config, GENERATION_FILE, NodeDataPlane};
use vpblu_daemon::stream::{DataPlane as _, HelloFacts};
use vpblu_daemon::wireguard::{UserspaceOptions, WireGuardGo};
use vpblu_e2e::lab::capture::{Capture, Expect};
use vpblu_e2e::lab::traffic::{PingResult, assert_dropped, assert_flows, bulk_tcp, ping, wait_flows};
use vpblu_e2e::netns::{Bridge, Netns, require_root_and};
use vpblu_messages::{
    Backend, BlockRule, Cidr, Command as MeshCommand, Generation, NodeDesiredState, NodeName, Peer,
    PublicKey, SelfSettings, Unreachable, UnreachableReason,
};

#[path = "mesh_netns/lab.rs"]
mod lab;
#[path = "mesh_netns/node_runner.rs"]
mod node_runner;

use self::lab::*;
use self::node_runner::*;

const PORT: u16 = 51820;
const NODES: [u8; 3] = [1, 2, 3];
/// Underlay 1500 − WireGuard overhead 80.
const MESH_MTU: u32 = 1420;

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn pod_v4(node: u8, pod: u8) -> String {
    format!("10.77.{node}.{pod}")
}

fn pod_v6(node: u8, pod: u8) -> String {
    format!("fd77:{node}::{pod}")
}

fn pod_cidrs(node: u8) -> Vec<Cidr> {
    let mut cidrs = vec![cidr(&format!("10.77.{node}.0/24")), cidr(&format!("fd77:{node}::/64"))];
    cidrs.sort();
    cidrs
}

// ---------------------------------------------------------------------------
// Traffic and the underlay capture come from the lab (vpblu_e2e::lab).

/// What the underlay may carry once the mesh is up.
fn expect() -> Expect {
    Expect {
        underlay_prefix: "192.168.77.".to_owned(),
        mesh_ports: vec![PORT],
        control_ports: Vec::new(),
        pod_markers: vec!["10.77.".to_owned(), "fd77:".to_owned()],
    }
}

fn delta(before: &BTreeMap<Verdict, u64>, after: &BTreeMap<Verdict, u64>, verdict: Verdict) -> u64 {
    after[&verdict] - before[&verdict]
}

// ---------------------------------------------------------------------------

#[test]
fn three_node_mesh_encrypts_blocks_and_fails_closed() {
    require_root_and(&["ip", "ping", "tcpdump", "nft", "sysctl"]);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    vpblu_e2e::built_tools::wireguard_go();
    let test_start = Instant::now();
    let mut summary: Vec<String> = Vec::new();
    let mut phase = Instant::now();
    let mut lap = |summary: &mut Vec<String>, what: String| {
        summary.push(format!("{:>6.2}s  {what}", phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };

    let mut lab = Lab::new();
    lap(&mut summary, "lab: 1 underlay bridge, 3 nodes, 6 pods, host-gw routes".into());

    // 0. Without vpblu the pods talk in clear: the capture must see it.
    let capture = Capture::start(&lab.bridge);
    // Fresh links: the first IPv6 packets wait for neighbour discovery.
    wait_flows(lab.node(1).pod(2), &pod_v4(2, 2), Duration::from_secs(5));
    wait_flows(lab.node(1).pod(2), &pod_v6(2, 2), Duration::from_secs(5));
    assert_flows(lab.node(1).pod(2), &pod_v4(2, 2), "host-gw baseline v4");
    assert_flows(lab.node(1).pod(2), &pod_v6(2, 2), "host-gw baseline v6");
    let seen = capture.finish(&expect());
    for needle in ["10.77.1.2 > 10.77.2.2: ICMP echo request", "fd77:1::2 > fd77:2::2: ICMP6, echo request"] {
        assert!(
            seen.other.iter().any(|l| l.contains(needle)),
            "baseline: the capture should show {needle:?} in clear; it saw:\n{}",
            seen.other.join("\n")
        );
    }
    lap(
        &mut summary,
        format!("baseline without vpblu: {} pod packets in clear on the underlay", seen.other.len()),
    );

    // 1. Start the three data planes and send each its full mesh.
    for n in NODES {
        let inspection = lab.node_mut(n).start();
        assert_eq!(inspection.facts.backend, Backend::Userspace);
        assert_eq!(inspection.applied, Generation(0), "a fresh node has applied nothing");
        assert!(inspection.wireguard_pid.is_some());
        let mut want = vec!["cni0".to_owned(), format!("veth{n}2"), format!("veth{n}3")];
        want.sort();
        assert_eq!(inspection.pod_interfaces, want, "classify on every pod-facing interface");
    }
    let capture = Capture::start(&lab.bridge);
    for n in [3, 2, 1] {
        let state = lab.full_mesh(n);
        lab.node_mut(n).apply_ok(MeshCommand::SyncState(state));
    }
    for node in &lab.nodes {
        let inspection = node.runner().inspect();
        assert_eq!(inspection.applied, Generation(1));
        assert_eq!(inspection.facts.mtu, MESH_MTU, "mesh MTU = underlay 1500 - 80");
        let recorded = std::fs::read_to_string(node.config.state_dir.join(GENERATION_FILE)).unwrap();
        assert_eq!(recorded.trim(), "1", "the applied generation is recorded for a restart");
    }
    lap(&mut summary, "3 data planes started, full mesh applied (generation 1)".into());

    let mut first = Duration::ZERO;
    for n in NODES {
        for m in NODES.into_iter().filter(|m| *m != n) {
            for to in [pod_v4(m, 3), pod_v6(m, 3)] {
                let waited = lab.diagnosed(|| wait_flows(lab.node(n).pod(2), &to, Duration::from_secs(10)));
                first = first.max(waited);
            }
        }
    }
    let mut pings = 0;
    for n in NODES {
        for m in NODES.into_iter().filter(|m| *m != n) {
            for (p, q) in [(2, 3), (3, 2)] {
                assert_flows(lab.node(n).pod(p), &pod_v4(m, q), "mesh v4");
                assert_flows(lab.node(n).pod(p), &pod_v6(m, q), "mesh v6");
                pings += 2;
            }
        }
    }
    let seen = capture.finish(&expect());
    seen.assert_only_wireguard("full mesh");
    for node in &lab.nodes {
        let c = node.counters();
        assert!(c[&Verdict::ToMesh] > 0 && c[&Verdict::DeliverPass] > 0, "{}: {c:?}", node.name);
    }
    lap(
        &mut summary,
        format!(
            "pod->pod across nodes, {pings} ping runs v4+v6 all pairs: ok (slowest first answer {first:.2?}); \
             underlay: {} WireGuard packets, {} ARP/ND, 0 pod packets in clear",
            seen.wireguard, seen.link_control
        ),
    );

    // 2. Blocks: 10.77.1.0/24 -> 10.77.2.0/24 on both ends, then only on the receiver.
    let (to2, to3) = (pod_v4(2, 2), pod_v4(3, 2));
    let rule = BlockRule { from: cidr("10.77.1.0/24"), to: cidr("10.77.2.0/24") };
    let before = lab.node(1).counters();
    for n in [1, 2] {
        lab.node_mut(n).apply_ok(MeshCommand::SetBlocks(vec![rule]));
    }
    assert_dropped(lab.node(1).pod(2), &to2, "blocked 1->2 right after SetBlocks");
    assert_flows(lab.node(1).pod(2), &to3, "1->3 is not blocked");
    assert_flows(lab.node(1).pod(2), &pod_v6(2, 2), "the v4 rule leaves v6 alone");
    assert!(delta(&before, &lab.node(1).counters(), Verdict::DropBlocked) >= 2, "the sender drops the pair");
    for n in [1, 2] {
        lab.node_mut(n).apply_ok(MeshCommand::SetBlocks(vec![]));
    }
    assert_flows(lab.node(1).pod(2), &to2, "unblocked");
    let (before1, before2) = (lab.node(1).counters(), lab.node(2).counters());
    lab.node_mut(2).apply_ok(MeshCommand::SetBlocks(vec![rule]));
    assert_dropped(lab.node(1).pod(2), &to2, "blocked at the receiver only");
    let (after1, after2) = (lab.node(1).counters(), lab.node(2).counters());
    assert!(delta(&before1, &after1, Verdict::ToMesh) >= 2, "node 1 still sends it into the mesh");
    assert_eq!(delta(&before1, &after1, Verdict::DropBlocked), 0, "node 1 has no block");
    let deliver_drops = delta(&before2, &after2, Verdict::DeliverDropBlocked);
    assert!(deliver_drops >= 2, "deliver on node 2 drops it: {after2:?}");
    lab.node_mut(2).apply_ok(MeshCommand::SetBlocks(vec![]));
    assert_flows(lab.node(1).pod(2), &to2, "unblocked at the receiver");
    lap(
        &mut summary,
        format!(
            "block 10.77.1.0/24->10.77.2.0/24: dropped at once by classify (sender) and by deliver \
             (receiver only: {deliver_drops} drops); removal restores traffic"
        ),
    );

    // 3. MTU: the largest packet that fits, one byte more, and bulk TCP.
    let pod12 = lab.node(1).pod(2);
    let fit4 = (MESH_MTU - 28).to_string();
    let over4 = (MESH_MTU - 27).to_string();
    let PingResult { received: ok, text, .. } = ping(pod12, &to2, &["-M", "do", "-s", &fit4, "-c", "1"]);
    assert_eq!(ok, 1, "ping -M do -s {fit4} fits the mesh MTU:\n{text}");
    let PingResult { received: ok, text, .. } = ping(pod12, &to2, &["-M", "do", "-s", &over4, "-c", "1"]);
    assert_eq!(ok, 0, "-s {over4} cannot fit:\n{text}");
    assert!(
        text.contains("Frag needed") || text.contains("message too long"),
        "-s {over4} must be refused loudly (Frag needed / message too long), not silently:\n{text}"
    );
    let fit6 = (MESH_MTU - 48).to_string();
    let over6 = (MESH_MTU - 47).to_string();
    let PingResult { received: ok, text, .. } =
        ping(pod12, &pod_v6(2, 2), &["-M", "do", "-s", &fit6, "-c", "1"]);
    assert_eq!(ok, 1, "v6 -s {fit6} fits:\n{text}");
    let PingResult { received: ok, text, .. } =
        ping(pod12, &pod_v6(2, 2), &["-M", "do", "-s", &over6, "-c", "1"]);
    assert_eq!(ok, 0, "v6 -s {over6} cannot fit:\n{text}");
    assert!(
        text.contains("Packet too big") || text.contains("message too long"),
        "v6 -s {over6} must be refused loudly:\n{text}"
    );
    let nft = lab.node(1).ns.run_ok("nft", &["list", "table", "inet", "vpblu"]);
    assert!(nft.contains("maxseg size set 1380"), "MSS clamp to mesh MTU - 40:\n{nft}");
    const BULK: usize = 50 * 1024 * 1024;
    let capture = Capture::start(&lab.bridge);
    let took = bulk_tcp(lab.node(1).pod(3), lab.node(2).pod(3), &pod_v4(2, 3), 5201, BULK);
    let seen = capture.finish(&expect());
    seen.assert_only_wireguard("bulk TCP");
    let mbits = (BULK as f64 * 8.0) / took.as_secs_f64() / 1e6;
    lap(
        &mut summary,
        format!(
            "MTU {MESH_MTU}: -s {fit4} passes, -s {over4} Frag needed; v6 -s {fit6} passes, -s {over6} \
             Packet too big; MSS clamp 1380; 50 MiB TCP 1->2 in {took:.2?} ({mbits:.0} Mbit/s), \
             {} WireGuard packets, 0 in clear",
            seen.wireguard
        ),
    );

    // 4. Strict: node 3 loses its tunnel from node 1.
    let capture = Capture::start(&lab.bridge);
    let before = lab.node(1).counters();
    let name3 = lab.node(3).name.clone();
    lab.node_mut(1).apply_ok(MeshCommand::PeerRemove(name3));
    // Between PeerRemove and the SetUnreachable that follows it, the CIDR
    // is dropped as not peered, not routed in clear.
    assert_dropped(lab.node(1).pod(2), &to3, "after PeerRemove, before SetUnreachable");
    let mid = lab.node(1).counters();
    assert!(delta(&before, &mid, Verdict::DropUnreachableNotPeered) >= 2, "{mid:?}");
    let unreachable: Vec<Unreachable> =
        pod_cidrs(3).into_iter().map(|cidr| Unreachable { cidr, reason: UnreachableReason::NoKey }).collect();
    lab.node_mut(1).apply_ok(MeshCommand::SetUnreachable(unreachable));
    assert_dropped(lab.node(1).pod(2), &to3, "unreachable v4");
    assert_dropped(lab.node(1).pod(2), &pod_v6(3, 2), "unreachable v6");
    let after = lab.node(1).counters();
    let no_key = delta(&mid, &after, Verdict::DropUnreachableNoKey);
    assert!(no_key >= 4, "counted under NoKey: {after:?}");
    assert_flows(lab.node(1).pod(2), &to2, "node 2 is unaffected");
    let peer3 = lab.node(3).peer();
    lab.node_mut(1).apply_ok(MeshCommand::PeerUpsert(peer3));
    let back = wait_flows(lab.node(1).pod(2), &to3, Duration::from_secs(10));
    lab.node_mut(1).apply_ok(MeshCommand::SetUnreachable(vec![]));
    assert_flows(lab.node(1).pod(2), &to3, "peer back");
    assert_flows(lab.node(1).pod(2), &pod_v6(3, 2), "peer back v6");
    let seen = capture.finish(&expect());
    seen.assert_only_wireguard("strict mode");
    lap(
        &mut summary,
        format!(
            "strict: node 3 removed from node 1 -> dropped (NotPeered between the commands, then \
             {no_key} NoKey drops), never in clear; peer back -> flows after {back:.2?}"
        ),
    );

    // 5. Invalid states are refused and the previous one stays in force.
    let applied = lab.node(1).runner().inspect().applied;
    let ghost = |key: PublicKey, allowed: &str| {
        MeshCommand::PeerUpsert(Arc::new(Peer {
            node: NodeName::new("node-9").unwrap(),
            public_key: key,
            endpoint: "192.168.77.9:51820".parse().unwrap(),
            allowed_ips: vec![cidr(allowed)],
            persistent_keepalive: None,
        }))
    };
    let own_key = lab.node(1).public_key;
    let mut zero_key = (*lab.node(2).peer()).clone();
    zero_key.public_key = PublicKey::from_bytes([0; 32]);
    let other_node = lab.full_mesh(2);
    let refusals = [
        (ghost(PublicKey::from_bytes([9; 32]), "10.77.2.0/24"), "10.77.2.0/24"),
        (MeshCommand::PeerUpsert(Arc::new(zero_key)), "all zeros"),
        (ghost(own_key, "10.77.9.0/24"), "own key"),
        (MeshCommand::SyncState(other_node), "node-2"),
    ];
    for (command, needle) in refusals {
        let what = format!("{command:?}");
        let err = lab.node_mut(1).apply(command).expect_err("an invalid state must be refused");
        assert!(err.contains(needle) && err.contains("refused"), "{what}\n-> {err}");
        summary.push(format!("          -> {err}"));
    }
    assert_eq!(lab.node(1).runner().inspect().applied, applied, "a refusal does not advance the generation");
    assert_flows(lab.node(1).pod(2), &to2, "still flowing after the refusals");
    assert_flows(lab.node(1).pod(2), &to3, "still flowing after the refusals");
    lap(&mut summary, "4 invalid commands refused, generation unchanged, traffic kept flowing".into());

    // 6. A pod that appears later gets classify; one that goes is forgotten.
    let node1 = lab.node(1);
    let late = add_pod(&node1.ns, 1, 4, "veth14");
    let link_pin = node1.pin_dir.0.join("link_classify_veth14");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node1.runner().inspect().pod_interfaces.contains(&"veth14".to_owned()) {
        assert!(Instant::now() < deadline, "classify was not attached to the new veth14 within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(link_pin.exists(), "{} pinned", link_pin.display());
    let before = node1.counters();
    wait_flows(&late, &to2, Duration::from_secs(5));
    assert!(delta(&before, &node1.counters(), Verdict::ToMesh) > 0);
    node1.ns.ip(&["link", "del", "veth14"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node1.runner().inspect().pod_interfaces.contains(&"veth14".to_owned()) || link_pin.exists() {
        assert!(Instant::now() < deadline, "veth14 was not forgotten within 5 s of its deletion");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(late);
    lap(
        &mut summary,
        "a pod veth created later got classify from the link watcher; deleted -> forgotten".into(),
    );

    // 7. The daemon restarts (in-process): device adopted, generation told, no loss.
    let node1 = lab.node_mut(1);
    let generation = node1.generation;
    let old_pid = node1.runner().inspect().wireguard_pid;
    let stream = node1.pod(2).spawn_in(
        Command::new("ping")
            .args(["-n", "-q", "-i", "0.01", "-c", "300", "-W", "1", &to2])
            .stdout(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let restart = Instant::now();
    drop(node1.runner.take());
    let again = node1.start();
    let restarted = restart.elapsed();
    assert_eq!(again.applied, Generation(generation), "the Hello after a restart says what was applied");
    assert_eq!(again.wireguard_pid, old_pid, "wireguard-go was adopted, not restarted");
    let state = lab.full_mesh(1);
    lab.node_mut(1).apply_ok(MeshCommand::SyncState(state));
    let out = stream.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (sent, received, _) = {
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default();
        let nums: Vec<u32> =
            line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0), ())
    };
    assert_eq!((sent, received), (300, 300), "no packet lost across the restart:\n{text}");
    assert_flows(lab.node(1).pod(2), &to3, "after the restart");
    lap(
        &mut summary,
        format!(
            "data plane restarted in {restarted:.2?}: wireguard-go adopted, Hello generation {generation}, 300/300 pings"
        ),
    );

    let total = test_start.elapsed();
    println!("mesh_netns summary ({total:.1?} in all):\n{}", summary.join("\n"));
    drop(lab);
}
