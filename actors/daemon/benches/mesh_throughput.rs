//! Pod → pod iperf3 TCP throughput across two nodes, three ways:
//! - (a) vpblu: a [`NodeDataPlane`] per node (userspace wireguard-go,
//!   classify/deliver eBPF, fwmark routing, MSS clamp), as
//!   tests/mesh_netns.rs runs it;
//! - (b) the same wireguard-go with plain routes and no eBPF, configured
//!   through vpblu's wireguard module only;
//! - (c) the plain underlay (host-gw routes, no encryption), for reference.
//!
//! Each is a `vpblu_e2e::lab::topology` of two nodes with one pod each.
//! (a) and (b) run in adjacent pairs, the order flipped every pair, so
//! drifting machine load hits both alike; the figure is the median of the
//! per-pair ratios a/b with a distribution-free 95 % interval (order
//! statistics), and pairs are added (from 10, up to 30) until that interval
//! is within ±3 % of the median. (c) runs every third pair for reference.
//! Each setup prints its runs, the median in Mbit/s, and CPU time: the
//! iperf3 sender and receiver (their own accounting), the wireguard-go
//! processes (/proc), the whole machine's busy time (which includes
//! anything else running), and both per Gbit/s. The bytes the WireGuard
//! devices sent are checked against what iperf3 moved, so (a) and (b)
//! cannot quietly bypass the tunnel.
//!
//! `cargo bench -p vpblu-daemon --bench mesh_throughput` as root, with
//! `ip`, `iperf3`, `nft`, `sysctl`, `ping` and Go (for the pinned
//! wireguard-go, tools/wireguard-go/build.sh). Fails naming what is missing.
//! `VPBLU_BENCH_PAIRS` (10), `VPBLU_BENCH_MAX_PAIRS` (30) and
//! `VPBLU_BENCH_SECONDS` (5 s per run) override the defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vpblu_daemon::data_plane::{Config, NodeDataPlane};
use vpblu_daemon::keys::PrivateKey;
use vpblu_daemon::stream::DataPlane as _;
use vpblu_daemon::wireguard::{UserspaceOptions, WireGuard, WireGuardDevice, WireGuardGo};
use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::lab::topology::{LabNode, Topology};
use vpblu_e2e::lab::traffic::wait_flows;
use vpblu_e2e::netns::PinDir;
use vpblu_e2e::netns::{Netns, require_root_and};
use vpblu_messages::{
    Backend, Cidr, Command as MeshCommand, Generation, NodeDesiredState, NodeName, Peer, PeerMap, PublicKey,
    SelfSettings,
};

const PORT: u16 = 51820;
const IPERF_PORT: &str = "5201";
/// Underlay 1500 − vpblu's default overhead 80, for both WireGuard setups.
const MESH_MTU: &str = "1420";

/// A bpffs pin directory, emptied and removed on drop.
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn cidrs(node: &LabNode) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = node.pod_cidrs.iter().map(|c| c.parse().expect("pod CIDR")).collect();
    out.sort();
    out
}

fn peer(node: &LabNode, key: PublicKey) -> Arc<Peer> {
    Arc::new(Peer {
        node: NodeName::new(node.name.clone()).expect("node name"),
        public_key: key,
        endpoint: SocketAddr::new(node.underlay_v4.parse::<IpAddr>().expect("underlay address"), PORT),
        allowed_ips: cidrs(node),
        persistent_keepalive: None,
    })
}

fn userspace_options(log_dir: PathBuf) -> UserspaceOptions {
    UserspaceOptions {
        program: WireGuardGo::Path(vpblu_e2e::built_tools::wireguard_go().to_path_buf()),
        log_dir,
        ..UserspaceOptions::default()
    }
}

/// (a): vpblu's data plane on every node of `topology`.
struct Vpblu {
    interface: Vec<String>,
    wireguard_pids: Vec<u32>,
    _pins: Vec<PinDir>,
}

impl Vpblu {
    fn start(topology: &Topology, dir: &std::path::Path) -> Vpblu {
        let pid = std::process::id();
        let mut configs = Vec::new();
        let mut pins = Vec::new();
        for node in &topology.nodes {
            let interface = format!("vbm{pid}x{}", node.index);
            let pin = PathBuf::from(format!("/sys/fs/bpf/vpblu-bench-mesh-{pid}-{}", node.index));
            let home = dir.join(&node.name);
            let mut config = Config::new(home.join("keys"), home.join("state"), &pin, interface);
            config.backend = Some(Backend::Userspace);
            config.userspace = userspace_options(dir.join("logs"));
            configs.push(config);
            pins.push(PinDir(pin));
        }
        // Start each node once for its key (the key and the device outlive
        // the data plane, as across a daemon restart), then send each its
        // full mesh.
        let mut keys = Vec::new();
        let mut wireguard_pids = Vec::new();
        for (node, config) in topology.nodes.iter().zip(&configs) {
            let (key, pid, socket) = run_data_plane(node, config, None);
            node.ns.kill_on_drop(pid);
            node.ns.remove_on_drop(socket);
            keys.push(key);
            wireguard_pids.push(pid);
        }
        for (i, (node, config)) in topology.nodes.iter().zip(&configs).enumerate() {
            let mut state = NodeDesiredState::empty(NodeName::new(node.name.clone()).expect("node name"));
            state.settings = SelfSettings {
                listen_port: PORT,
                lane_port: PORT + 1,
                pod_cidrs: cidrs(node),
                ..SelfSettings::default()
            };
            for (j, other) in topology.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
                state
                    .peers
                    .insert(NodeName::new(other.name.clone()).expect("node name"), peer(other, keys[j]));
            }
            run_data_plane(node, config, Some(MeshCommand::SyncState(state)));
        }
        Vpblu { interface: configs.into_iter().map(|c| c.interface).collect(), wireguard_pids, _pins: pins }
    }
}

/// Starts `node`'s data plane inside its namespace, applies `command` if
/// any, and drops it (the data plane keeps running). Returns its public
/// key, wireguard-go PID and UAPI socket.
fn run_data_plane(
    node: &LabNode,
    config: &Config,
    command: Option<MeshCommand>,
) -> (PublicKey, u32, PathBuf) {
    let name = NodeName::new(node.name.clone()).expect("node name");
    node.ns.enter(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut dp = NodeDataPlane::start(name, config.clone())
                .await
                .unwrap_or_else(|e| panic!("NodeDataPlane::start on {}: {e}", node.name));
            if let Some(command) = command {
                dp.apply(Generation(dp.applied_generation().0 + 1), &command)
                    .await
                    .unwrap_or_else(|e| panic!("{} refused its full mesh: {e}", node.name));
            }
            let processes = dp.processes().await.expect("ask the WireGuard actor for its processes");
            let pid = processes.main.expect("a userspace WireGuard has a PID");
            let socket = processes.socket.expect("a userspace WireGuard has a socket");
            (dp.hello_facts().public_key, pid, socket)
        })
    })
}

/// (b): wireguard-go through vpblu's wireguard module, plain routes.
struct PlainWireGuard {
    interface: Vec<String>,
    wireguard_pids: Vec<u32>,
}

impl PlainWireGuard {
    fn start(topology: &Topology, dir: &std::path::Path) -> PlainWireGuard {
        let pid = std::process::id();
        let wireguard = WireGuard::new(Backend::Userspace, userspace_options(dir.join("logs")));
        let mut devices: Vec<WireGuardDevice> = Vec::new();
        let mut keys = Vec::new();
        for node in &topology.nodes {
            let interface = format!("vbw{pid}x{}", node.index);
            let key = PrivateKey::generate();
            let device = node.ns.enter(|| {
                wireguard
                    .ensure_device(&interface, PORT, &key)
                    .unwrap_or_else(|e| panic!("wireguard-go {interface} on {}: {e}", node.name))
            });
            node.ns.kill_on_drop(device.pid().expect("userspace"));
            node.ns.remove_on_drop(device.socket().expect("userspace").to_path_buf());
            node.ns.ip(&["link", "set", &interface, "mtu", MESH_MTU, "up"]);
            keys.push(key.public_key());
            devices.push(device);
        }
        for (i, (node, device)) in topology.nodes.iter().zip(devices.iter_mut()).enumerate() {
            let mut peers = PeerMap::new();
            for (j, other) in topology.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
                peers.insert(NodeName::new(other.name.clone()).expect("node name"), peer(other, keys[j]));
                for cidr in &other.pod_cidrs {
                    let family = if cidr.contains(':') { "-6" } else { "-4" };
                    node.ns.ip(&[family, "route", "replace", cidr, "dev", device.name()]);
                }
            }
            device.apply_peers(&peers).unwrap_or_else(|e| panic!("peers on {}: {e}", node.name));
        }
        PlainWireGuard {
            interface: devices.iter().map(|d| d.name().to_owned()).collect(),
            wireguard_pids: devices.iter().filter_map(WireGuardDevice::pid).collect(),
        }
    }
}

/// One iperf3 run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    mbit_s: f64,
    /// iperf3 client + server CPU, seconds.
    iperf_cpu: f64,
    /// wireguard-go processes, seconds.
    wireguard_cpu: f64,
    /// Busy time of every CPU of the machine, seconds.
    machine_cpu: f64,
}

/// One configuration under test: a topology, optionally with a tunnel.
struct Setup<'a> {
    label: &'static str,
    topology: &'a Topology,
    /// The tunnel device of node 1 (its tx bytes must carry the traffic).
    tunnel: Option<&'a str>,
    wireguard_pids: Vec<u32>,
    runs: Vec<Run>,
}

impl Setup<'_> {
    fn median(&self) -> Run {
        let mut runs = self.runs.clone();
        runs.sort_by(|a, b| a.mbit_s.total_cmp(&b.mbit_s));
        runs[runs.len() / 2]
    }

    /// The median over this setup's runs of `f`.
    fn median_of(&self, f: impl Fn(&Run) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
}

fn clock_ticks() -> f64 {
    let out =
        Command::new("getconf").arg("CLK_TCK").output().expect("getconf(1) is needed to read CPU times");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// utime + stime of `pid` (all its threads), in ticks.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("wireguard-go (PID {pid}) is gone: {e}"));
    let fields: Vec<&str> = stat.rsplit_once(')').expect("/proc/PID/stat").1.split_whitespace().collect();
    // After "PID (COMM)": state is field 3, utime 14, stime 15.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Busy ticks of all CPUs: everything but idle and iowait.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
}

fn tx_bytes(ns: &Netns, interface: &str) -> u64 {
    ns.run_ok("cat", &[&format!("/sys/class/net/{interface}/statistics/tx_bytes")])
        .trim()
        .parse()
        .expect("tx_bytes")
}

/// One iperf3 run from node 1's pod to node 2's pod.
fn iperf(setup: &Setup<'_>, seconds: u64, ticks: f64) -> Run {
    let (client, server) = (&setup.topology.nodes[0].pods[0], &setup.topology.nodes[1].pods[0]);
    let wg_before: u64 = setup.wireguard_pids.iter().map(|p| process_ticks(*p)).sum();
    let machine_before = machine_busy_ticks();
    let tunnel_before = setup.tunnel.map(|t| tx_bytes(&setup.topology.nodes[0].ns, t));
    let secs = seconds.to_string();
    let args = ["-c", &server.v4, "-p", IPERF_PORT, "-t", &secs, "-J"];
    let mut out = client.ns.run("iperf3", &args);
    // The server may still be starting: "connection refused" comes back at once.
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        out = client.ns.run("iperf3", &args);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: iperf3 {} failed: {text}", setup.label, args.join(" "));
    let json: serde_json::Value = serde_json::from_str(&text).expect("iperf3 -J prints JSON");
    let end = &json["end"];
    let bits = end["sum_received"]["bits_per_second"].as_f64().expect("end.sum_received.bits_per_second");
    let bytes = end["sum_received"]["bytes"].as_f64().expect("end.sum_received.bytes");
    let duration = end["sum_received"]["seconds"].as_f64().expect("end.sum_received.seconds");
    let cpu = &end["cpu_utilization_percent"];
    let iperf_cpu = (cpu["host_total"].as_f64().expect("host_total")
        + cpu["remote_total"].as_f64().expect("remote_total"))
        / 100.0
        * duration;
    if let (Some(tunnel), Some(before)) = (setup.tunnel, tunnel_before) {
        let sent = tx_bytes(&setup.topology.nodes[0].ns, tunnel) - before;
        assert!(
            sent as f64 >= bytes * 0.9,
            "{}: the tunnel {tunnel} sent {sent} bytes while iperf3 moved {bytes:.0}: traffic bypassed it",
            setup.label
        );
    }
    let wg_after: u64 = setup.wireguard_pids.iter().map(|p| process_ticks(*p)).sum();
    Run {
        mbit_s: bits / 1e6,
        iperf_cpu,
        wireguard_cpu: (wg_after - wg_before) as f64 / ticks,
        machine_cpu: (machine_busy_ticks() - machine_before) as f64 / ticks,
    }
}

/// iperf3 -s in node 2's pod; the pod's namespace stops and reaps it.
fn start_server(topology: &Topology) -> std::process::Child {
    let server = &topology.nodes[1].pods[0];
    server.ns.spawn_in(
        Command::new("iperf3")
            .args(["-s", "-p", IPERF_PORT])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null()),
    )
}

fn main() {
    require_root_and(&["ip", "iperf3", "nft", "sysctl", "ping", "getconf", "cat"]);
    let pairs = env_number("VPBLU_BENCH_PAIRS", 10).max(6) as usize;
    let max_pairs = env_number("VPBLU_BENCH_MAX_PAIRS", 30).max(pairs as u64) as usize;
    let seconds = env_number("VPBLU_BENCH_SECONDS", 5).max(1);
    let ticks = clock_ticks();
    vpblu_e2e::built_tools::wireguard_go();
    let dir = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();

    // Three labs side by side, ids outside the acceptance suite's 20..=219.
    let id = (std::process::id() % 10) as u8;
    let mesh_lab = Topology::build(220 + id, 2, 1);
    let wg_lab = Topology::build(230 + id, 2, 1);
    let underlay_lab = Topology::build(240 + id, 2, 1);
    let vpblu = Vpblu::start(&mesh_lab, dir.path());
    let plain_wg = PlainWireGuard::start(&wg_lab, dir.path());
    let mut servers = Vec::new();
    for lab in [&mesh_lab, &wg_lab, &underlay_lab] {
        servers.push(start_server(lab));
        let (client, server) = (&lab.nodes[0].pods[0], &lab.nodes[1].pods[0]);
        wait_flows(&client.ns, &server.v4, Duration::from_secs(15));
    }
    println!(
        "3 two-node labs up in {:.1} s; iperf3 TCP pod -> pod across nodes, {seconds} s runs, \
         (a) and (b) in at least {pairs} adjacent pairs (at most {max_pairs})",
        started.elapsed().as_secs_f64()
    );

    let mut setups = [
        Setup {
            label: "(c) plain underlay, no encryption",
            topology: &underlay_lab,
            tunnel: None,
            wireguard_pids: Vec::new(),
            runs: Vec::new(),
        },
        Setup {
            label: "(a) vpblu: wireguard-go + eBPF classify/deliver",
            topology: &mesh_lab,
            tunnel: Some(&vpblu.interface[0]),
            wireguard_pids: vpblu.wireguard_pids.clone(),
            runs: Vec::new(),
        },
        Setup {
            label: "(b) the same wireguard-go, plain routes, no eBPF",
            topology: &wg_lab,
            tunnel: Some(&plain_wg.interface[0]),
            wireguard_pids: plain_wg.wireguard_pids.clone(),
            runs: Vec::new(),
        },
    ];
    // Pairs of adjacent (a) and (b) runs, the order flipped every pair
    // (AB BA AB ...) so neither always runs second; (c), the reference,
    // every third pair. At least `pairs` pairs, then more until the
    // ratio's 95 % interval is within ±3 % of its median (or `max_pairs`).
    let mut ratios = Vec::new();
    let mut interval = None;
    for pair in 0..max_pairs {
        if pair % 3 == 0 {
            let run = iperf(&setups[0], seconds, ticks);
            setups[0].runs.push(run);
        }
        let order = if pair % 2 == 0 { [1, 2] } else { [2, 1] };
        for i in order {
            let run = iperf(&setups[i], seconds, ticks);
            setups[i].runs.push(run);
        }
        let (a, b) = (setups[1].runs[pair].mbit_s, setups[2].runs[pair].mbit_s);
        ratios.push(a / b);
        println!("  pair {:>2}: (a) {a:>6.0} Mbit/s, (b) {b:>6.0} Mbit/s, ratio {:.3}", pair + 1, a / b);
        interval = median_interval(&ratios);
        if ratios.len() >= pairs && interval.is_some_and(|i| i.half_width() < 0.03) {
            break;
        }
    }

    for setup in &setups {
        let m = setup.median();
        let all: Vec<String> = setup.runs.iter().map(|r| format!("{:.0}", r.mbit_s)).collect();
        println!(
            "  {:<50} {:>7.0} Mbit/s median (runs: {}); CPU in the median run: iperf3 {:.2} s, \
             wireguard-go {:.2} s, machine {:.2} s; machine CPU per Gbit/s {:.2} cores, wireguard-go {:.2}",
            setup.label,
            m.mbit_s,
            all.join(", "),
            m.iperf_cpu,
            m.wireguard_cpu,
            m.machine_cpu,
            setup.median_of(|r| r.machine_cpu / seconds as f64 / (r.mbit_s / 1000.0)),
            setup.median_of(|r| r.wireguard_cpu / seconds as f64 / (r.mbit_s / 1000.0)),
        );
    }
    println!("(machine CPU counts every process on this host, other work included)");
    let interval = interval.expect("at least two pairs ran");
    println!(
        "vpblu / same wireguard-go without eBPF over {} pairs: median {:.3}, 95% interval {:.3}..{:.3} \
         (±{:.1}%; goal median >= 0.97, interval narrower than ±3%)",
        ratios.len(),
        interval.median,
        interval.low,
        interval.high,
        interval.half_width() * 100.0
    );
    goal(
        "mesh / same wireguard-go without eBPF, median ratio",
        ">= 0.97",
        &format!("{:.3} ({:.3}..{:.3})", interval.median, interval.low, interval.high),
        interval.median >= 0.97,
    );
    goal(
        "that ratio's 95% interval",
        "narrower than +/-3%",
        &format!("+/-{:.1}% over {} pairs", interval.half_width() * 100.0, ratios.len()),
        interval.half_width() < 0.03,
    );
}

/// A median and its distribution-free 95 % interval: the order statistics
/// `k` in from each end, with `k` the largest for which
/// P(Binomial(n, ½) < k) ≤ 2.5 % (no assumption about the ratios'
/// distribution; pairs are independent given the interleaving).
#[derive(Clone, Copy, Debug)]
struct Interval {
    median: f64,
    low: f64,
    high: f64,
}

impl Interval {
    /// The larger distance from the median to an end, relative to it.
    fn half_width(&self) -> f64 {
        (self.median - self.low).max(self.high - self.median) / self.median
    }
}

fn median_interval(values: &[f64]) -> Option<Interval> {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // P(X <= j) for X ~ Binomial(n, 1/2), accumulated term by term.
    let mut term = 0.5f64.powi(n as i32);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        below += term; // P(X <= j) = P(X < j + 1)
        if below > 0.025 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    if k == 0 {
        return None; // too few values for a 95 % interval
    }
    let mid = n / 2;
    let median = if n.is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
    Some(Interval { median, low: sorted[k - 1], high: sorted[n - k] })
}
