//! Key rotation figures from the lab (3 nodes, 2 controllers, real daemons,
//! wireguard-go and eBPF), while every pair of pods on different nodes
//! pings at 100/s and keeps a steady TCP stream:
//! - the machine's CPU use with that traffic and no rotation (baseline);
//! - rotating one node: wall time from `rotate-now` to Succeeded, CPU use;
//! - rotating all three in turn: the same;
//! - pings lost (must print 0) and the longest TCP gap.
//!
//! Overlap (the dwell with traffic on the lanes) is 1 s per node, so the
//! times are the machinery's own cost plus 1 s per node. It prints and
//! asserts nothing about timings. Run with `make bench` or
//! `cargo bench -p vpblu-e2e --bench rotation`.

use std::time::{Duration, Instant};

use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::cpu;
use vpblu_e2e::lab::pair_traffic::PairTraffic;
use vpblu_e2e::lab::rotation::{now_rfc3339, rotate_now, wait_rotated};
use vpblu_e2e::lab::{Lab, LabOptions};

const EVERY: Duration = Duration::from_millis(10);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let mut options = LabOptions::acceptance();
        options.id = 241;
        let lab = Lab::up(options).await;
        let traffic = PairTraffic::start(&lab.topology, EVERY, EVERY);
        let traffic_started = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;

        let before = cpu::ticks();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let baseline = cpu::busy_percent(before, cpu::ticks());
        println!("traffic on every pod pair, no rotation: {baseline:.0}% of the machine's CPU busy");

        let one = vec![lab.topology.node(1).name.clone()];
        let (took, busy) = rotate(&lab, "bench-one", Some(&one[0]), &one).await;
        println!(
            "  (rotation started {:.1} s after the traffic)",
            traffic_started.elapsed().as_secs_f64() - took.as_secs_f64()
        );
        println!(
            "rotate one node: {:.2} s ({:.0}% CPU busy, +{:.0} points over the baseline)",
            took.as_secs_f64(),
            busy,
            busy - baseline
        );
        let all: Vec<String> = lab.topology.nodes.iter().map(|n| n.name.clone()).collect();
        println!(
            "  (the 3-node run starts {:.1} s after the traffic)",
            traffic_started.elapsed().as_secs_f64()
        );
        let (took, busy) = rotate(&lab, "bench-all", None, &all).await;
        goal(
            "rotate a 3-node cluster",
            "< 10 s",
            &format!("{:.2} s", took.as_secs_f64()),
            took < Duration::from_secs(10),
        );
        println!(
            "rotate a 3-node cluster: {:.2} s ({:.0}% CPU busy, +{:.0} points over the baseline)",
            took.as_secs_f64(),
            busy,
            busy - baseline
        );

        tokio::time::sleep(Duration::from_secs(1)).await;
        let result = traffic.finish();
        println!(
            "packets lost during both runs: {} of {} pings; longest TCP gap {} ms; {}",
            result.lost(),
            result.sent(),
            result.max_tcp_gap().as_millis(),
            if result.lost() == 0 { "zero loss" } else { "LOSS" }
        );
        goal(
            "pings lost during the rotations",
            "0",
            &format!("{} of {}", result.lost(), result.sent()),
            result.lost() == 0,
        );
        goal(
            "longest TCP gap during the rotations",
            "< 100 ms",
            &format!("{} ms", result.max_tcp_gap().as_millis()),
            result.max_tcp_gap() < Duration::from_millis(100),
        );
        if result.lost() > 0 || result.max_tcp_gap() > Duration::from_millis(200) {
            print!("{}", result.summary());
            lab.dump_logs();
        }
    });
}

/// Runs policy `name` now and waits for `nodes` to finish; (wall time,
/// machine CPU busy %).
async fn rotate(lab: &Lab, name: &str, only: Option<&str>, nodes: &[String]) -> (Duration, f64) {
    let since = now_rfc3339();
    let before = cpu::ticks();
    let start = Instant::now();
    rotate_now(lab, name, 1, only, name).await;
    wait_rotated(lab, nodes, &since).await;
    (start.elapsed(), cpu::busy_percent(before, cpu::ticks()))
}
