//! Figures from the lab (3 nodes, 2 controllers, real daemons, real eBPF
//! and userspace WireGuard), one line each:
//! - BlockPolicy create -> the first dropped ping on the wire, over
//!   `VPBLU_BENCH_TRIALS` (20) trials: p50/p99 (goal p99 < 250 ms). Pings
//!   are sent back to back; the figure is when the first unanswered one
//!   left, so it is bounded by one ping's round trip;
//! - Node delete -> its peer gone from every other node's device (read
//!   through UAPI), p50/p99 over as many trials (the Node is registered
//!   again between trials and the mesh re-forms);
//! - pod -> pod TCP (iperf3, 10 s) through the mesh vs. node -> node over
//!   the plain underlay in the same lab, with the machine's CPU use.
//!
//! It prints and asserts nothing about timings. Needs what the lab needs
//! plus iperf3. Run with `make bench` or `cargo bench -p vpblu-e2e --bench lab`.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::lab::traffic::{wait_dropped, wait_flows};
use vpblu_e2e::lab::{Lab, LabOptions, wg};
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};

fn main() {
    vpblu_e2e::netns::require_root_and(&["iperf3"]);
    let trials: usize = std::env::var("VPBLU_BENCH_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let mut options = LabOptions::acceptance();
        options.id = 240;
        let lab = Lab::up(options).await;
        block_latency(&lab, trials).await;
        node_delete_latency(&lab, trials).await;
        throughput(&lab);
    });
}

async fn block_latency(lab: &Lab, trials: usize) {
    let (a, b) = (lab.topology.node(1), lab.topology.node(2));
    let (pa, pb) = (&a.pods[0], &b.pods[0]);
    let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
    let mut took = Vec::new();
    for trial in 0..trials {
        wait_flows(&pa.ns, &pb.v4, Duration::from_secs(10));
        let policy = BlockPolicy::new(
            "bench-block",
            BlockPolicySpec {
                blocks: vec![BlockRule {
                    from: a.pod_cidrs[0].clone(),
                    to: b.pod_cidrs[0].clone(),
                    bidirectional: false,
                }],
                ..BlockPolicySpec::default()
            },
        );
        let start = Instant::now();
        api.create(&PostParams::default(), &policy).await.expect("create the BlockPolicy");
        let api_call = start.elapsed();
        took.push(api_call + wait_dropped(&pa.ns, &pb.v4, Duration::from_secs(10)));
        api.delete("bench-block", &DeleteParams::default()).await.expect("delete the BlockPolicy");
        if trial == 0 {
            println!("block trial 1: create call {} ms", api_call.as_millis());
        }
    }
    let (p50, p99) = percentiles(&mut took);
    println!(
        "BlockPolicy create -> first dropped ping on the wire, {trials} trials: p50 {} ms, p99 {} ms (goal p99 < 250 ms)",
        p50.as_millis(),
        p99.as_millis()
    );
    goal(
        "lab: BlockPolicy create -> first dropped ping, p99",
        "< 250 ms",
        &format!("{} ms", p99.as_millis()),
        p99 < Duration::from_millis(250),
    );
}

async fn node_delete_latency(lab: &Lab, trials: usize) {
    let gone = lab.topology.node(3);
    let mut took = Vec::new();
    for _ in 0..trials {
        lab.wait_mesh(Duration::from_secs(60)).await;
        let key = lab
            .statuses()
            .await
            .into_iter()
            .find(|(n, _)| *n == gone.name)
            .and_then(|(_, s)| s.public_key)
            .expect("node-3's key");
        let hex = wg::hex_of_base64(&key);
        let start = Instant::now();
        lab.delete_node_object(3).await;
        for n in [1, 2] {
            let interface = &lab.daemon(n).interface;
            while wg::show(interface).peers.iter().any(|p| p.public_key == hex) {
                assert!(start.elapsed() < Duration::from_secs(30), "node-{n} kept node-3's peer for 30 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        took.push(start.elapsed());
        let cidrs: Vec<&str> = gone.pod_cidrs.iter().map(String::as_str).collect();
        lab.cluster.register_node(&gone.name, &gone.underlay_v4, &cidrs, true).await;
    }
    let (p50, p99) = percentiles(&mut took);
    println!(
        "Node delete -> peer gone from both other nodes' devices, {trials} trials: p50 {} ms, p99 {} ms",
        p50.as_millis(),
        p99.as_millis()
    );
}

fn throughput(lab: &Lab) {
    let (a, b) = (lab.topology.node(1), lab.topology.node(2));
    let (pa, pb) = (&a.pods[0], &b.pods[0]);
    let mesh = iperf(&pa.ns, &pb.ns, &pb.v4);
    let plain = iperf(&a.ns, &b.ns, &b.underlay_v4);
    println!(
        "pod -> pod TCP through the mesh: {:.0} Mbit/s ({:.0}% of 2 cores busy); node -> node on the plain underlay: {:.0} Mbit/s ({:.0}% busy); ratio {:.2}",
        mesh.0,
        mesh.1,
        plain.0,
        plain.1,
        mesh.0 / plain.0
    );
}

/// (Mbit/s received, machine CPU busy %) of a 10 s iperf3 run.
fn iperf(from: &vpblu_e2e::netns::Netns, to: &vpblu_e2e::netns::Netns, addr: &str) -> (f64, f64) {
    let mut server = to.spawn_in(
        std::process::Command::new("iperf3")
            .args(["-s", "-1", "-B", addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = vpblu_e2e::cpu::ticks();
    let out = from.run_ok("iperf3", &["-c", addr, "-t", "10", "-f", "m", "-J"]);
    let after = vpblu_e2e::cpu::ticks();
    let _ = server.wait();
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J output: {e}\n{out}"));
    let bits = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sum_received in {out}"));
    let busy = vpblu_e2e::cpu::busy_percent(before, after);
    (bits / 1e6, busy)
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1)]
    };
    (at(0.50), at(0.99))
}
