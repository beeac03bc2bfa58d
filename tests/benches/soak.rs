//! Rotation soak: many consecutive 3-node key rotations on the lab while
//! every pair of pods on different nodes pings at 100/s and keeps a steady
//! TCP stream, so a loss that happens once in ten runs shows up, with what
//! led to it on disk the first time.
//!
//! Per run it prints the rotation time, pings lost and the longest TCP gap;
//! at the end the totals and the rotation time p50/p99/max. A flight
//! recorder ([`RingCapture`]: every main and lane device, and the
//! underlay's UDP) runs throughout; a run that loses a ping or stalls TCP
//! for [`GAP_LIMIT`] or more keeps its capture, with the per-pair loss
//! windows and every daemon's and controller's log, in a directory it
//! prints. Clean runs leave nothing.
//!
//! `VPBLU_SOAK_RUNS` (default 50) runs; `VPBLU_SOAK_STRESS=N` runs
//! `stress-ng --cpu N` throughout (competing load). Under that load a run
//! fails only on a lost ping: with both cores saturated the longest TCP gap
//! also measures how long the scheduler kept the lab's processes off the
//! CPU (every node's devices fall silent at the same instant), so it is
//! printed and its capture kept, but not counted as a loss. `VPBLU_SOAK_DIR`
//! where to write (default a new `/tmp/vpblu-soak-*`). Each run is bounded
//! by the lab's run limit; Ctrl-C stops after cleaning up. Exit status 1
//! when anything was lost. `make soak`, or `cargo bench -p vpblu-e2e
//! --bench soak` after a release build of the binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vpblu_e2e::lab::pair_traffic::{PairTraffic, PairTrafficResult};
use vpblu_e2e::lab::ring_capture::RingCapture;
use vpblu_e2e::lab::rotation::{now_rfc3339, rotate_now, wait_rotated};
use vpblu_e2e::lab::{Lab, LabOptions};

/// Ping interval and TCP write interval per pair.
const EVERY: Duration = Duration::from_millis(10);
/// A TCP gap this long counts as a failure (a lost segment costs 200 ms).
const GAP_LIMIT: Duration = Duration::from_millis(100);
/// Traffic runs this long before and after each rotation.
const MARGIN: Duration = Duration::from_millis(700);

/// One run's figures.
struct Run {
    took: Duration,
    lost: u32,
    sent: u32,
    gap: Duration,
}

fn main() {
    let runs: u32 = env_number("VPBLU_SOAK_RUNS", 50);
    let stress: u32 = env_number("VPBLU_SOAK_STRESS", 0);
    let out = std::env::var_os("VPBLU_SOAK_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        PathBuf::from(format!("/tmp/vpblu-soak-{stamp}"))
    });
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
    println!("soak: {runs} runs of a 3-node key rotation; evidence of any loss goes to {}", out.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let figures = runtime.block_on(async {
        let mut options = LabOptions::acceptance();
        options.id = 243;
        let lab = Lab::up(options).await;
        // After the lab: stress-ng starves nothing while the lab comes up.
        let _stress = (stress > 0).then(|| Stress::start(stress));
        let mut figures = Vec::new();
        for n in 1..=runs {
            let run = tokio::select! {
                run = soak_run(&lab, n, runs, stress > 0, &out) => run,
                _ = tokio::signal::ctrl_c() => {
                    println!("interrupted after {} runs; cleaning up", figures.len());
                    break;
                }
            };
            figures.push(run);
        }
        figures
    });
    let lost = summarize(&figures, stress);
    if lost {
        println!("evidence: {}", out.display());
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir(&out);
}

/// One 3-node rotation under traffic, with its capture kept on a loss.
async fn soak_run(lab: &Lab, n: u32, runs: u32, stressed: bool, out: &Path) -> Run {
    let dir = out.join(format!("run-{n:03}"));
    let ring = RingCapture::start(lab, &dir);
    let traffic = PairTraffic::start(&lab.topology, EVERY, EVERY);
    tokio::time::sleep(MARGIN).await;
    let nodes: Vec<String> = lab.topology.nodes.iter().map(|n| n.name.clone()).collect();
    let since = now_rfc3339();
    let started = Instant::now();
    rotate_now(lab, "soak", 1, None, &format!("soak-{}-{n}", std::process::id())).await;
    wait_rotated(lab, &nodes, &since).await;
    let took = started.elapsed();
    tokio::time::sleep(MARGIN).await;
    let result = tokio::task::spawn_blocking(move || traffic.finish()).await.expect("the traffic task");
    let dir = ring.stop();
    let run = Run { took, lost: result.lost(), sent: result.sent(), gap: result.max_tcp_gap() };
    let mark = match (failed(&run, stressed), run.gap >= GAP_LIMIT) {
        (true, _) => "  <-- LOSS",
        (false, true) => "  <-- stall under load (kept, not a loss)",
        (false, false) => "",
    };
    println!(
        "run {n:>3}/{runs}: 3 nodes rotated in {:5.2} s; {} of {} pings lost; longest TCP gap {:4} ms{mark}",
        took.as_secs_f64(),
        run.lost,
        run.sent,
        run.gap.as_millis(),
    );
    if !mark.is_empty() {
        keep_evidence(lab, &dir, &result);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    run
}

/// A lost ping always fails a run; a long TCP gap only without a
/// competing load.
fn failed(run: &Run, stressed: bool) -> bool {
    run.lost > 0 || (!stressed && run.gap >= GAP_LIMIT)
}

/// Prints the per-pair losses and copies every log next to the capture.
fn keep_evidence(lab: &Lab, dir: &Path, result: &PairTrafficResult) {
    let summary = result.summary();
    print!("{summary}");
    let _ = std::fs::write(dir.join("traffic.txt"), &summary);
    let logs = lab
        .daemons
        .iter()
        .map(|d| (format!("{}-daemon.log", d.node_name), d.log().to_owned()))
        .chain(lab.controllers.iter().map(|c| (format!("{}.log", c.identity), c.log().to_owned())));
    for (name, from) in logs {
        if let Err(e) = std::fs::copy(&from, dir.join(&name)) {
            println!("  could not keep {}: {e}", from.display());
        }
    }
    println!("  capture (main and lane devices, underlay UDP) and logs kept in {}", dir.display());
}

/// Prints the totals; whether anything was lost.
fn summarize(figures: &[Run], stress: u32) -> bool {
    let mut times: Vec<f64> = figures.iter().map(|r| r.took.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).copied().unwrap_or(f64::NAN)
    };
    let lost: u32 = figures.iter().map(|r| r.lost).sum();
    let sent: u32 = figures.iter().map(|r| r.sent).sum();
    let gap = figures.iter().map(|r| r.gap).max().unwrap_or_default();
    let bad = figures.iter().filter(|r| failed(r, stress > 0)).count();
    println!(
        "soak{}: {} runs ({} node rotations); {lost} of {sent} pings lost; longest TCP gap {} ms; runs with a \
         loss: {bad}; 3-node rotation p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        if stress > 0 { format!(" under stress-ng --cpu {stress}") } else { String::new() },
        figures.len(),
        figures.len() * 3,
        gap.as_millis(),
        pick(0.5),
        pick(0.99),
        times.last().copied().unwrap_or(f64::NAN),
    );
    bad > 0
}

fn env_number(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|e| panic!("{name}={text:?} is not a count: {e}")),
        Err(_) => default,
    }
}

/// `stress-ng --cpu N`, stopped by PID when dropped.
struct Stress(Child);

impl Stress {
    fn start(cpus: u32) -> Stress {
        let child = Command::new("stress-ng")
            .args(["--cpu", &cpus.to_string(), "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("VPBLU_SOAK_STRESS needs stress-ng (apt-get install stress-ng): {e}"));
        println!("competing load: stress-ng --cpu {cpus} (pid {})", child.id());
        Stress(child)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // stress-ng's workers follow their parent on SIGTERM.
        if let Ok(raw) = i32::try_from(self.0.id())
            && let Some(pid) = rustix::process::Pid::from_raw(raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }
}
