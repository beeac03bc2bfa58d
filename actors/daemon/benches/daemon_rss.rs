//! The daemon's memory at 1000 peers (goal: RSS < 64 MiB).
//!
//! One real `vpblu-daemon` process (release build) in a node namespace with
//! userspace WireGuard, fed by the controller's real stream server in this
//! process: first a state with no peers, then one with 1000 peers (each an
//! IPv4 /24 and an IPv6 /64, an endpoint and a key) plus 100 block rules.
//! Prints the daemon's RSS (VmRSS) and peak (VmHWM) after each, the time
//! from publish to ack, and wireguard-go's RSS separately: in userspace
//! mode the device is its own process (with the kernel backend it is
//! kernel memory), so it is not the daemon's figure.
//!
//! Needs root, ip, nsenter, sysctl, nft and Go (for the pinned
//! wireguard-go); fails naming what is missing. Run with `make bench` or
//! `cargo bench -p vpblu-daemon --bench daemon_rss`.

#[path = "../tests/daemon_support/mod.rs"]
mod daemon_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_support::controller::StreamController;
use daemon_support::{DaemonSetup, processes_named};
use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::netns::{Bridge, Netns, require_root_and};
use vpblu_messages::{
    BlockRule, Cidr, Generation, NodeDesiredState, NodeName, Peer, PublicKey, SelfSettings,
};

const PEERS: u32 = 1000;
const BLOCKS: u32 = 100;

fn main() {
    require_root_and(&["ip", "nsenter", "sysctl", "nft"]);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let bridge = Bridge::new("drss-ul");
    let ns = Netns::new("drss-n");
    bridge.attach(&ns, "eth0", "192.168.82.1/24");
    ns.run_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
    ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    ns.ip(&["addr", "add", "10.82.0.1/24", "dev", "cni0"]);
    ns.ip(&["link", "set", "cni0", "up"]);
    let ctl_ns = Netns::new("drss-c");
    bridge.attach(&ctl_ns, "eth0", "192.168.82.254/24");
    // The peers' endpoints (192.168.100-103.x) are reached via the default
    // route; nothing answers there, which memory does not care about.
    ns.ip(&["route", "add", "default", "via", "192.168.82.254"]);
    let controller = StreamController::start(ctl_ns, "192.168.82.254");

    let node = NodeName::new("node-0").expect("a node name");
    let mut setup = DaemonSetup::new(&ns, node.as_str(), tmp.path()).userspace().with(&[
        "--controller-addr",
        &controller.endpoint,
        "--insecure-dev",
        "--observe-interval",
        "2s",
    ]);
    let daemon = setup.start(&ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !controller.connected().contains(&node) {
        assert!(Instant::now() < deadline, "the daemon did not connect within 30 s:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // No peers: the baseline.
    let mut state = NodeDesiredState::empty(node.clone());
    state.settings = SelfSettings {
        listen_port: 51820,
        lane_port: 51821,
        pod_cidrs: vec!["10.82.0.0/24".parse().expect("a CIDR")],
        ..SelfSettings::default()
    };
    controller.desired.publish([(node.clone(), state.clone())].into());
    let first = controller.wait_acked_above(&node, Generation(0));
    std::thread::sleep(Duration::from_secs(3));
    let (idle, idle_peak) = rss(daemon.pid());
    println!("daemon RSS, no peers: {:.1} MiB (peak {:.1} MiB)", mib(idle), mib(idle_peak));

    // 1000 peers and 100 blocks.
    for i in 0..PEERS {
        let name = NodeName::new(format!("peer-{i}")).expect("a node name");
        let (hi, lo) = ((i / 256) as u8, (i % 256) as u8);
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        key[31] = 0x40;
        let v4: Cidr = format!("10.{}.{lo}.0/24", 100 + u32::from(hi)).parse().expect("a CIDR");
        let v6: Cidr = format!("fd00:{:x}::/64", 0x1000 + i).parse().expect("a CIDR");
        state.peers.insert(
            name.clone(),
            Arc::new(Peer {
                node: name,
                public_key: PublicKey::from_bytes(key),
                endpoint: format!("192.168.{}.{}:51820", 100 + u32::from(hi), lo.max(1))
                    .parse()
                    .expect("an endpoint"),
                allowed_ips: vec![v4, v6],
                persistent_keepalive: None,
            }),
        );
    }
    for b in 0..BLOCKS {
        state.blocks.insert(BlockRule {
            from: "10.82.0.0/24".parse().expect("a CIDR"),
            to: format!("10.{}.{}.0/24", 100 + b / 256, b % 256).parse().expect("a CIDR"),
        });
    }
    let published = Instant::now();
    controller.desired.publish([(node.clone(), state)].into());
    let acked = controller.wait_acked_above(&node, first.last_acked.unwrap_or(Generation(0)));
    let took = published.elapsed();
    // Let the observer read the 1000-peer device a few times.
    std::thread::sleep(Duration::from_secs(6));
    let (full, full_peak) = rss(daemon.pid());
    let metrics = daemon.metrics();
    let configured = daemon_support::sample(&metrics, "vpblu_daemon_peers").unwrap_or(0.0);
    println!(
        "daemon RSS, {PEERS} peers (v4 + v6 each) and {BLOCKS} blocks: {:.1} MiB (peak {:.1} MiB); goal < 64 MiB; \
         {configured} peers in its metrics; state of generation {} applied and acked in {:.0} ms",
        mib(full),
        mib(full_peak),
        acked.last_acked.map_or(0, |g| g.0),
        took.as_secs_f64() * 1000.0
    );
    goal(
        &format!("daemon RSS, {PEERS} peers + {BLOCKS} blocks"),
        "< 64 MiB",
        &format!("{:.1} MiB (peak {:.1})", mib(full), mib(full_peak)),
        mib(full_peak) < 64.0,
    );
    for pid in processes_named(&ns, "wireguard-go") {
        let (rss, peak) = rss(pid);
        println!(
            "wireguard-go (the userspace device, its own process) with {PEERS} peers: {:.1} MiB (peak {:.1} MiB)",
            mib(rss),
            mib(peak)
        );
    }
    drop(daemon);
    controller.stop();
}

/// (VmRSS, VmHWM) of `pid` in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
