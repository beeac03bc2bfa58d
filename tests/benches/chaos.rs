//! Chaos under traffic: for a bounded time (`VPBLU_CHAOS_SECONDS`,
//! default 300), while every pair of pods on different nodes pings at
//! 100/s and keeps a steady TCP stream, faults are injected one after
//! another in a random order (`VPBLU_CHAOS_SEED` replays one): the leader
//! controller SIGKILLed, the standby SIGKILLed, a daemon (the parent of its
//! node's wireguard-go) SIGKILLed, kube-apiserver SIGKILLed, etcd
//! SIGKILLed, kube-apiserver SIGSTOPped for 30 s, and a panic injected into
//! one actor of the leader controller or of a daemon (the binaries run with
//! `--fault-injection`, which only chaos runs set: `POST /debug/panic/<child>`
//! makes that supervised actor panic in its own task). Each process fault
//! is repaired at once (the process started again, as a kubelet would), a
//! panicked actor by its supervisor; every kind runs at least once.
//!
//! Invariants, checked throughout:
//! - nothing crosses the underlay but WireGuard and the controller stream
//!   (no pod packet in clear), per fault;
//! - no peer flaps: every device keeps exactly the peers it started with
//!   and their byte counters never go back (nothing in the desired state
//!   changes, so nothing may be removed and re-added);
//! - a BlockPolicy (one pod to another) keeps dropping: a ping along it
//!   gets no reply for the whole run;
//! - the mesh converges after each fault: a leader holds the Lease and
//!   every node reports Ready with all its peers up (the worst time is
//!   printed);
//! - nothing is left behind once the lab is gone (processes, namespaces,
//!   pins).
//!
//! Prints pings lost, the longest TCP gap and the worst convergence per
//! fault kind; every fault here leaves the kernel data plane (eBPF,
//! WireGuard) untouched, so the goal is 0 lost for each. Exit status 1 when an
//! invariant broke or a ping was lost. `make chaos`, or `cargo bench -p
//! vpblu-e2e --bench chaos` after a release build of the binaries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use kube::Api;
use kube::api::PostParams;
use vpblu_e2e::lab::pair_traffic::{PairTraffic, utc_millis};
use vpblu_e2e::lab::traffic::{ContinuousPing, wait_dropped};
use vpblu_e2e::lab::{Lab, LabBinaries, LabOptions, leftovers, wg};
use vpblu_k8s::conditions::READY;
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};

#[path = "chaos/peer_watcher.rs"]
mod peer_watcher;

use self::peer_watcher::*;

/// Ping interval and TCP write interval per pair.
const EVERY: Duration = Duration::from_millis(10);
/// Traffic runs this long before each fault and after the mesh converged.
const MARGIN: Duration = Duration::from_secs(1);
/// A fault the mesh has not recovered from by then is a failure.
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);
/// How long the API server stays SIGSTOPped.
const PAUSE: Duration = Duration::from_secs(30);
/// The pair the BlockPolicy cuts (its direction: from the first).
const BLOCKED: (&str, &str) = ("pod-1-2", "pod-2-2");
/// How often the peer watcher reads every device.
const WATCH_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    LeaderKilled,
    StandbyKilled,
    DaemonKilled,
    ApiserverKilled,
    EtcdKilled,
    ApiserverPaused,
    ControllerActorPanic,
    DaemonActorPanic,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::LeaderKilled,
        Fault::StandbyKilled,
        Fault::DaemonKilled,
        Fault::ApiserverKilled,
        Fault::EtcdKilled,
        Fault::ApiserverPaused,
        Fault::ControllerActorPanic,
        Fault::DaemonActorPanic,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::LeaderKilled => "leader controller SIGKILL",
            Fault::StandbyKilled => "standby controller SIGKILL",
            Fault::DaemonKilled => "daemon (wireguard-go's parent) SIGKILL",
            Fault::ApiserverKilled => "kube-apiserver SIGKILL",
            Fault::EtcdKilled => "etcd SIGKILL",
            Fault::ApiserverPaused => "kube-apiserver SIGSTOP 30 s",
            Fault::ControllerActorPanic => "panic in one leader controller actor",
            Fault::DaemonActorPanic => "panic in one daemon actor",
        }
    }
}

/// What the faults of one kind cost.
#[derive(Debug, Default)]
struct Tally {
    faults: u32,
    sent: u32,
    lost: u32,
    gap: Duration,
    converged: Duration,
}

fn main() {
    let seconds: u64 = env_number("VPBLU_CHAOS_SECONDS", 300);
    let seed: u64 = env_number(
        "VPBLU_CHAOS_SEED",
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    );
    println!("chaos: {seconds} s of faults under traffic; VPBLU_CHAOS_SEED={seed} replays this order");
    let mut rng = Rng(seed.max(1));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let mut broken: Vec<String> = Vec::new();
    let lab_id = 245;
    runtime.block_on(async {
        let mut options = LabOptions::acceptance();
        options.id = lab_id;
        options.fault_injection = true;
        let mut lab = Lab::up(options).await;
        let block = Block::create(&lab).await;
        let watcher = PeerWatcher::start(&lab);
        let mut tallies: BTreeMap<Fault, Tally> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        // Every kind once, shuffled; then at random until the time is up.
        let mut first = Fault::ALL.to_vec();
        for i in (1..first.len()).rev() {
            first.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut n = 0;
        loop {
            let fault = if first.is_empty() {
                if Instant::now() >= deadline {
                    break;
                }
                Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize]
            } else {
                first.remove(0)
            };
            n += 1;
            let tally = tallies.entry(fault).or_default();
            chaos_round(&mut lab, n, fault, &mut rng, tally, &mut broken).await;
            if broken.iter().any(|b| b.starts_with("did not converge")) {
                break; // the lab is in no state to go on
            }
        }
        broken.extend(block.finish());
        broken.extend(watcher.stop());
        report(&tallies);
        if !broken.is_empty() {
            lab.dump_logs();
        }
    });
    // The lab is gone: nothing of it may remain.
    let removed = leftovers::down();
    if removed.processes + removed.namespaces + removed.other > 0 {
        broken.push(format!("the lab left things behind (removed now by lab-down): {removed:?}"));
    } else {
        println!("leftovers after the lab: none (processes, namespaces, pins, sockets)");
    }
    if broken.is_empty() {
        println!("chaos: every invariant held");
    } else {
        println!("chaos: {} invariant(s) broke:", broken.len());
        for b in &broken {
            println!("  - {b}");
        }
        std::process::exit(1);
    }
}

/// One fault under traffic: inject, repair, wait for convergence; what it
/// cost goes to `tally`, broken invariants to `broken`.
async fn chaos_round(
    lab: &mut Lab,
    n: u32,
    fault: Fault,
    rng: &mut Rng,
    tally: &mut Tally,
    broken: &mut Vec<String>,
) {
    let capture = lab.capture();
    let traffic = PairTraffic::start_where(&lab.topology, EVERY, EVERY, |from, to| (from, to) != BLOCKED);
    tokio::time::sleep(MARGIN).await;
    let injected = Instant::now();
    let at = utc_millis(SystemTime::now());
    let what = inject(lab, fault, rng).await;
    let converged = match converge(lab, injected).await {
        Ok(took) => took,
        Err(why) => {
            broken.push(format!("did not converge after {what}: {why}"));
            CONVERGE_WITHIN
        }
    };
    tokio::time::sleep(MARGIN).await;
    let result = tokio::task::spawn_blocking(move || traffic.finish()).await.expect("the traffic task");
    let seen = capture.finish(&lab.expect());
    let (lost, sent, gap) = (result.lost(), result.sent(), result.max_tcp_gap());
    println!(
        "fault {n:>2} at {at}: {what}; converged in {:5.2} s; {lost} of {sent} pings lost; longest TCP gap {:4} \
         ms; underlay: {}",
        converged.as_secs_f64(),
        gap.as_millis(),
        seen.summary()
    );
    if lost > 0 {
        print!("{}", result.summary());
    }
    if !seen.other.is_empty() {
        broken.push(format!(
            "after {what} the underlay carried more than WireGuard:\n{}",
            seen.other.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        ));
    }
    if seen.wireguard == 0 {
        broken.push(format!("no WireGuard packet crossed the underlay around {what}"));
    }
    if lost > 0 {
        broken.push(format!("{lost} pings lost around {what}"));
    }
    tally.faults += 1;
    tally.sent += sent;
    tally.lost += lost;
    tally.gap = tally.gap.max(gap);
    tally.converged = tally.converged.max(converged);
}

/// Injects `fault` and repairs it at once; what was hit.
async fn inject(lab: &mut Lab, fault: Fault, rng: &mut Rng) -> String {
    match fault {
        Fault::LeaderKilled | Fault::StandbyKilled => {
            let leader = lab.leader().await.expect("a leader before the fault (the last round converged)");
            let i = if fault == Fault::LeaderKilled { leader } else { 1 - leader };
            let who = format!("{} ({})", lab.controllers[i].identity, fault.name());
            lab.controllers[i].kill();
            let binaries = LabBinaries::find();
            lab.controllers[i].restart(&binaries);
            lab.record_processes();
            who
        }
        Fault::DaemonKilled => {
            let node = rng.below(u64::from(lab.options().nodes)) as u8 + 1;
            let daemon = &mut lab.daemons[usize::from(node - 1)];
            let who = format!("{}'s daemon ({})", daemon.node_name, fault.name());
            let topology = &lab.topology;
            daemon.kill();
            daemon.restart(topology);
            who
        }
        Fault::ApiserverKilled => {
            let outage = lab.cluster.crash_apiserver().await;
            lab.record_processes();
            format!("{} (no API for {:.1} s)", fault.name(), outage.as_secs_f64())
        }
        Fault::EtcdKilled => {
            let outage = lab.cluster.crash_etcd().await;
            lab.record_processes();
            format!("{} (API ready again after {:.1} s)", fault.name(), outage.as_secs_f64())
        }
        Fault::ApiserverPaused => {
            let outage = lab.cluster.pause_apiserver(PAUSE).await;
            format!("{} (no answer for {:.1} s)", fault.name(), outage.as_secs_f64())
        }
        Fault::ControllerActorPanic => {
            let leader = lab.leader().await.expect("a leader before the fault (the last round converged)");
            let controller = &lab.controllers[leader];
            let child = pick(&controller.panic_targets(), rng, &controller.identity);
            let answer = controller.inject_panic(&child).unwrap_or_else(|e| panic!("{e}"));
            format!("{child:?} of {} ({}: {answer})", controller.identity, fault.name())
        }
        Fault::DaemonActorPanic => {
            let node = rng.below(u64::from(lab.options().nodes)) as usize;
            let daemon = &lab.daemons[node];
            let child = pick(&daemon.panic_targets(&lab.topology), rng, &daemon.node_name);
            let answer = daemon.inject_panic(&lab.topology, &child).unwrap_or_else(|e| panic!("{e}"));
            format!("{child:?} of {}'s daemon ({}: {answer})", daemon.node_name, fault.name())
        }
    }
}

/// One of the actors `who` lists as panic targets.
fn pick(targets: &[String], rng: &mut Rng, who: &str) -> String {
    assert!(!targets.is_empty(), "{who} lists no actor to panic: was it started with --fault-injection?");
    targets[rng.below(targets.len() as u64) as usize].clone()
}

/// Waits until a controller holds the Lease and every node reports
/// Ready=True with every other node's peer up; the time since `since`.
async fn converge(lab: &Lab, since: Instant) -> Result<Duration, String> {
    let want = i32::from(lab.options().nodes - 1);
    let mut last = String::from("no status read yet");
    while since.elapsed() < CONVERGE_WITHIN {
        if lab.leader().await.is_some() {
            let statuses = lab.statuses().await;
            let unready: Vec<String> = statuses
                .iter()
                .filter(|(_, s)| {
                    let ready = s.conditions.iter().any(|c| c.type_ == READY && c.status == "True");
                    !(ready && s.peers == Some(want) && s.peers_up == Some(want))
                })
                .map(|(name, s)| {
                    format!("{name}: peers {:?} up {:?} {:?}", s.peers, s.peers_up, s.conditions)
                })
                .collect();
            if unready.is_empty() && statuses.len() == usize::from(lab.options().nodes) {
                return Ok(since.elapsed());
            }
            last = unready.join("; ");
        } else {
            last = "no controller holds the Lease".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("not within {CONVERGE_WITHIN:?}: {last}"))
}

/// The BlockPolicy and the ping that must never get through it.
struct Block {
    ping: ContinuousPing,
}

impl Block {
    /// Creates the policy, waits until it drops, then pings along it.
    async fn create(lab: &Lab) -> Block {
        let pod = |name: &str| {
            lab.topology
                .nodes
                .iter()
                .flat_map(|n| &n.pods)
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("the lab has no pod {name}"))
        };
        let (from, to) = (pod(BLOCKED.0), pod(BLOCKED.1));
        let policy = BlockPolicy::new(
            "chaos-block",
            BlockPolicySpec {
                blocks: vec![BlockRule {
                    from: format!("{}/32", from.v4),
                    to: format!("{}/32", to.v4),
                    bidirectional: false,
                }],
                ..BlockPolicySpec::default()
            },
        );
        Api::<BlockPolicy>::all(lab.cluster.client())
            .create(&PostParams::default(), &policy)
            .await
            .expect("the API server takes the BlockPolicy");
        let took = wait_dropped(&from.ns, &to.v4, Duration::from_secs(10));
        println!("BlockPolicy {} -> {} drops (after {} ms)", from.v4, to.v4, took.as_millis());
        Block { ping: ContinuousPing::start(&from.ns, &to.v4, Duration::from_millis(100)) }
    }

    /// Stops the ping: a broken invariant if anything came back.
    fn finish(self) -> Option<String> {
        let result = self.ping.finish_now();
        println!(
            "BlockPolicy {} -> {}: {} of {} pings answered through the whole run",
            BLOCKED.0, BLOCKED.1, result.received, result.sent
        );
        (result.received > 0 || result.sent == 0).then(|| {
            format!(
                "the BlockPolicy leaked: {} of {} pings {} -> {} answered",
                result.received, result.sent, BLOCKED.0, BLOCKED.1
            )
        })
    }
}

fn now() -> String {
    utc_millis(SystemTime::now())
}

fn report(tallies: &BTreeMap<Fault, Tally>) {
    println!("per fault kind (pings at 100/s per pair plus a TCP stream per pair, through each fault):");
    println!(
        "  {:<40} {:>6} {:>10} {:>6} {:>12} {:>16}",
        "fault", "count", "sent", "lost", "TCP gap ms", "converged max s"
    );
    for (fault, t) in tallies {
        println!(
            "  {:<40} {:>6} {:>10} {:>6} {:>12} {:>16.2}",
            fault.name(),
            t.faults,
            t.sent,
            t.lost,
            t.gap.as_millis(),
            t.converged.as_secs_f64()
        );
    }
    let worst = tallies.values().map(|t| t.converged).max().unwrap_or_default();
    let lost: u32 = tallies.values().map(|t| t.lost).sum();
    let sent: u32 = tallies.values().map(|t| t.sent).sum();
    let faults: u32 = tallies.values().map(|t| t.faults).sum();
    println!(
        "chaos: {faults} faults; {lost} of {sent} pings lost; worst convergence {:.2} s",
        worst.as_secs_f64()
    );
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// xorshift64: a reproducible order from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
