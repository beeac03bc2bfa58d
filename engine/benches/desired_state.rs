//! Figures for the desired-state engine on a 5000-node dual-stack full mesh
//! with 100 block rules: full `compute` time and peak RSS, `compute_node`
//! time, and how many nodes one BlockPolicy change reaches.
//!
//! The full compute runs in a child process (this binary re-executed with
//! `VPBLU_BENCH_CHILD=compute`) so its peak RSS is not mixed with the rest.
//! Run with `cargo bench -p vpblu-engine --bench desired_state`.
//! For profiling, `VPBLU_BENCH_CHILD=compute` or `=profile-node` (500
//! `compute_node` calls) run one workload alone, e.g. under `perf record`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use vpblu_engine::{BlockInput, BlockPolicyInput, Inputs, NodeInput, compute, compute_node};
use vpblu_messages::{Cidr, NodeName, PublicKey, diff};

const NODES: usize = 5000;
const BLOCKS: usize = 100;
const CHILD_ENV: &str = "VPBLU_BENCH_CHILD";

fn v4(i: usize) -> Cidr {
    Cidr::new(IpAddr::V4(Ipv4Addr::new(10, (i >> 8) as u8, (i & 0xff) as u8, 0)), 24).expect("valid /24")
}

fn v6(i: usize) -> Cidr {
    Cidr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0, i as u16, 0, 0, 0, 0)), 64).expect("valid /64")
}

fn name(i: usize) -> NodeName {
    NodeName::new(format!("node-{i:05}")).expect("valid node name")
}

fn cluster() -> Inputs {
    let nodes = (0..NODES)
        .map(|i| {
            let mut key = [7u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            NodeInput {
                name: name(i),
                internal_ip: Some(IpAddr::V4(Ipv4Addr::new(172, 16, (i >> 8) as u8, (i & 0xff) as u8))),
                pod_cidrs: vec![v4(i), v6(i)],
                ready: true,
                deleting: false,
                public_key: Some(PublicKey::from_bytes(key)),
                created: 1_700_000_000 + i as i64,
            }
        })
        .collect();
    // 100 rules between neighbouring nodes, half IPv4 and half IPv6.
    let blocks = (0..BLOCKS)
        .map(|b| {
            let (from, to) = (b * 40, b * 40 + 1);
            if b % 2 == 0 {
                BlockInput { from: v4(from), to: v4(to), bidirectional: false }
            } else {
                BlockInput { from: v6(from), to: v6(to), bidirectional: false }
            }
        })
        .collect();
    let policy = BlockPolicyInput { name: "bench-blocks".into(), created: 1, blocks, nodes: Vec::new() };
    Inputs {
        nodes,
        tunnel_policies: Vec::new(),
        route_policies: Vec::new(),
        block_policies: vec![policy],
        rotations: Vec::new(),
        // The default Service CIDR: every block is checked against it and
        // the node addresses, as in a cluster.
        service_cidrs: vec!["10.96.0.0/12".parse().expect("a CIDR")],
    }
}

/// Peak resident set size of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib / 1024.0
}

/// CPU time (user + system) this process has used so far. /proc reports
/// it in USER_HZ ticks, which Linux fixes at 100 per second.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

fn child_compute() {
    let inputs = cluster();
    let before = peak_rss_mib();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut peers = 0;
    for _ in 0..3 {
        let (start, cpu_start) = (Instant::now(), cpu_time());
        let output = compute(&inputs);
        times.push(start.elapsed());
        cpu.push(cpu_time() - cpu_start);
        peers = output.nodes.values().map(|s| s.peers.len()).sum::<usize>();
        drop(output);
    }
    let best = times.iter().min().copied().unwrap_or_default();
    let list =
        |v: &[Duration]| v.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect::<Vec<_>>().join(", ");
    println!(
        "desired_state compute {NODES} nodes: {:.3} s, peak RSS {:.0} MiB \
         (best of 3 runs; wall {} s; CPU {} s; inputs {:.0} MiB; {peers} peer entries)",
        best.as_secs_f64(),
        peak_rss_mib(),
        list(&times),
        list(&cpu),
        before,
    );
    goal(
        &format!("compute, {NODES}-node full mesh"),
        "< 1 s",
        &format!("{:.3} s", best.as_secs_f64()),
        best < Duration::from_secs(1),
    );
    goal(
        &format!("compute peak RSS, {NODES} nodes"),
        "< 2048 MiB",
        &format!("{:.0} MiB", peak_rss_mib()),
        peak_rss_mib() < 2048.0,
    );
}

/// A `GOAL` line for `make bench`'s table (the format of
/// vpblu_e2e::bench_goal, which this std-only crate does not depend on).
fn goal(figure: &str, goal: &str, measured: &str, met: bool) {
    println!("GOAL\t{figure}\t{goal}\t{measured}\t{}", if met { "met" } else { "missed" });
}

fn main() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("profile-node") {
        // A workload to profile, not a measurement.
        let inputs = cluster();
        for i in 0..500 {
            std::hint::black_box(compute_node(&inputs, &name(i * 7)));
        }
        return;
    }
    if std::env::var_os(CHILD_ENV).is_some() {
        child_compute();
        return;
    }
    let exe = std::env::current_exe().expect("path of this bench binary");
    let status = Command::new(exe).env(CHILD_ENV, "compute").status().expect("re-run this bench as a child");
    assert!(status.success(), "full-compute child failed: {status}");

    let inputs = cluster();
    // One call first so the allocator's arenas are warm, as in the controller.
    let _ = compute_node(&inputs, &name(0));
    let samples = 50;
    let mut times: Vec<Duration> = (0..samples)
        .map(|s| {
            let node = name(s * (NODES / samples) + 1);
            let start = Instant::now();
            let state = compute_node(&inputs, &node).expect("node exists");
            let took = start.elapsed();
            assert_eq!(state.peers.len(), NODES - 1);
            took
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().sum::<Duration>() / samples as u32;
    println!(
        "compute_node: {:.1} ms (mean of {samples}; median {:.1} ms, slowest {:.1} ms)",
        ms(mean),
        ms(times[samples / 2]),
        ms(times[samples - 1])
    );
    goal(
        "compute_node, one node's state",
        "< 5 ms",
        &format!("{:.1} ms (slowest of {samples})", ms(times[samples - 1])),
        ms(times[samples - 1]) < 5.0,
    );

    let before = compute(&inputs);
    let mut changed = inputs.clone();
    changed.block_policies[0].blocks.push(BlockInput { from: v4(17), to: v4(4242), bidirectional: false });
    let after = compute(&changed);
    let touched: Vec<&NodeName> = after
        .nodes
        .iter()
        .filter(|(name, state)| !diff(&before.nodes[*name], state).is_empty())
        .map(|(name, _)| name)
        .collect();
    println!(
        "one BlockPolicy change: commands for {} of {NODES} nodes ({})",
        touched.len(),
        touched.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
    );
    // The rule's source is node 17's CIDR and its destination node 4242's:
    // those two nodes hold the block, no other node's state changes.
    goal(
        "one BlockPolicy change reaches",
        "only its 2 nodes",
        &format!("{} of {NODES} nodes", touched.len()),
        touched.len() == 2,
    );
}
