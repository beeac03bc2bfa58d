//! Figures for the warm stream at scale: the real controller binary against
//! a real kube-apiserver (the test cluster), N simulated daemons in this
//! process (real `StreamClient`s over a counting data plane), N = 100 and
//! 1000 by default (`VPBLU_BENCH_NODES=100,1000`).
//!
//! For each N, one line per figure:
//! - full mesh formed (every daemon holds every other node's key);
//! - how long the controller takes to write every node's status after
//!   that, then its RSS and CPU idle for 60 s; then, once every daemon
//!   has had a resync since the mesh formed (up to 1.5 resync intervals
//!   later, 7.5 min), its CPU idle for 60 s again: steady state, where the
//!   goal applies (the first window still pays each state's first digest);
//! - BlockPolicy create -> applied (and acked) by every daemon, p50/p99 of
//!   `VPBLU_BENCH_TRIALS` (10) trials;
//! - node join (Node created, its daemon started) -> every daemon has the
//!   peer, p50/p99 of as many joins;
//! - controller CPU during that churn, and its RSS after it;
//! - leader failover: the leader SIGKILLed, a warm standby with the same
//!   flags takes the Lease and every daemon has applied its whole state
//!   from it (a KeepState where the daemon's digest showed it held it, as
//!   every daemon here does, a SyncState otherwise), and how many of each.
//!
//! Everything shares this machine's cores: the API server, etcd, the
//! controller and N daemons. The daemons here do no WireGuard or eBPF work;
//! streams are plaintext (`--insecure-dev`), so TLS and TokenReview (paid
//! once per connect) are not in the figures. It prints; it asserts nothing
//! about timings. A size that cannot form its mesh in time says so and the
//! next size runs. At 1000 and 5000 daemons each figure with a goal also
//! prints a GOAL line for `make bench`'s table (a figure not measured is
//! missed); `make bench` runs 100 and 1000, `VPBLU_BENCH_NODES=5000` the
//! larger size. Run with `make bench` or
//! `cargo bench -p vpblu-controller --bench stream_fanout`.

use std::collections::HashSet;
use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use ractor::{Actor, ActorRef};
use vpblu_daemon::stream::{
    Backoff, ClientConfig, DataPlane, HelloFacts, StreamClient, StreamClientArgs, StreamClientMsg,
    StreamSecurity,
};
use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::{Guarded, free_addr, http_get, wait_http_ok};
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};
use vpblu_messages::{Backend, Command as MeshCommand, Generation, NodeName, PublicKey};

/// The simulated daemons decode N² peers between them (25 million at
/// 5000): with glibc's allocator this process spent over half its CPU in
/// `_int_malloc` and `malloc_consolidate`, starving its own streams. The
/// controller runs on mimalloc too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXE: &str = env!("CARGO_BIN_EXE_vpblu-controller");
const LEASE: [&str; 4] = ["--lease-duration", "2s", "--lease-renew", "500ms"];
/// Long enough to hold two HTTP/2 keepalive periods (30 s on each side of
/// every stream): a shorter window either misses the pings or catches
/// one burst of them, and idle CPU is mostly those pings.
const IDLE: Duration = Duration::from_secs(60);
/// Above 1000 daemons, how many start at once, and the pause between waves.
const CONNECT_WAVE: usize = 500;
const CONNECT_WAVE_PAUSE: Duration = Duration::from_secs(2);

/// What one simulated daemon has applied, readable without a lock.
#[derive(Debug, Default)]
struct Counts {
    peers: AtomicUsize,
    blocks: AtomicUsize,
    syncs: AtomicU64,
}

/// A data plane that keeps what the figures wait on (which peers, how
/// many blocks) and publishes the counts. Peers are kept as node numbers,
/// not as whole states: at 5000 daemons the states alone would hold 25
/// million peers in this process, beside the controller being measured.
#[derive(Debug)]
struct CountingPlane {
    facts: HelloFacts,
    peers: HashSet<u32>,
    applied: AtomicU64,
    counts: Arc<Counts>,
}

/// The number in a simulated node's name (`node-<i>`).
fn node_number(node: &NodeName) -> u32 {
    node.as_str()
        .strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("{node} is not a simulated node's name"))
}

impl DataPlane for CountingPlane {
    type Error = std::convert::Infallible;

    async fn apply(&mut self, generation: Generation, command: &MeshCommand) -> Result<(), Self::Error> {
        match command {
            MeshCommand::SyncState(state) => {
                self.peers = state.peers.keys().map(node_number).collect();
                self.counts.blocks.store(state.blocks.len(), Ordering::Release);
                self.counts.syncs.fetch_add(1, Ordering::AcqRel);
            }
            MeshCommand::PeerUpsert(peer) => {
                self.peers.insert(node_number(&peer.node));
            }
            MeshCommand::PeerRemove(node) => {
                self.peers.remove(&node_number(node));
            }
            MeshCommand::SetBlocks(blocks) => self.counts.blocks.store(blocks.len(), Ordering::Release),
            // The client hands a confirmed KeepState over as the SyncState
            // it holds; none reaches a data plane as such.
            MeshCommand::SetSettings(_)
            | MeshCommand::SetUnreachable(_)
            | MeshCommand::SetRotation(_)
            | MeshCommand::KeepState(_) => {}
        }
        self.counts.peers.store(self.peers.len(), Ordering::Release);
        self.applied.store(generation.0, Ordering::Release);
        Ok(())
    }

    fn applied_generation(&self) -> Generation {
        Generation(self.applied.load(Ordering::Acquire))
    }

    fn hello_facts(&self) -> HelloFacts {
        self.facts.clone()
    }
}

struct Daemon {
    client: ActorRef<StreamClientMsg>,
    counts: Arc<Counts>,
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// Node `i`'s pod CIDR: 10.x.y.0/24, all inside 10.0.0.0/8.
fn pod_cidr(i: usize) -> String {
    format!("10.{}.{}.0/24", i >> 8, i & 0xff)
}

/// Node `i`'s address: 172.16.0.0/12 counted from 172.16.0.1, one each.
fn node_ip(i: usize) -> String {
    let j = i + 1;
    format!("172.{}.{}.{}", 16 + (j >> 16), (j >> 8) & 0xff, j & 0xff)
}

fn key(i: usize) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    bytes[31] = 0x40;
    PublicKey::from_bytes(bytes)
}

async fn start_daemon(i: usize, endpoint: &str) -> Daemon {
    let node = NodeName::new(node_name(i)).expect("valid node name");
    let counts = Arc::new(Counts::default());
    let plane = CountingPlane {
        facts: HelloFacts {
            public_key: key(i),
            staged_public_key: None,
            backend: Backend::Userspace,
            mtu: 1420,
        },
        peers: HashSet::new(),
        applied: AtomicU64::new(0),
        counts: Arc::clone(&counts),
    };
    let config = ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) },
        ..ClientConfig::default()
    };
    let args = StreamClientArgs {
        node,
        endpoint: endpoint.to_owned(),
        data_plane: plane,
        config,
        security: StreamSecurity::insecure_dev(),
    };
    let (client, _) =
        Actor::spawn(None, StreamClient::<CountingPlane>::new(), args).await.expect("client starts");
    Daemon { client, counts }
}

/// The controller binary as one replica; SIGKILLed when dropped.
struct Controller {
    process: Guarded,
    metrics: std::net::SocketAddr,
}

impl Controller {
    fn start(cluster: &TestCluster, identity: &str, grpc: &str) -> Controller {
        let metrics = free_addr();
        let log = File::create(cluster.dir().join(format!("{identity}.log"))).expect("controller log");
        let process = Command::new(EXE)
            .args(["--grpc-addr", grpc, "--metrics-addr", &metrics.to_string()])
            .args(["--dashboard-addr", &free_addr().to_string(), "--identity", identity])
            .args(LEASE)
            .args(["--insecure-dev", "--log-format", "json"])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("RUST_LOG", controller_log().as_deref().unwrap_or("warn"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start vpblu-controller");
        let controller = Controller { process: Guarded::new(process), metrics };
        wait_http_ok(metrics, "/readyz", Duration::from_secs(120));
        controller
    }

    /// (resident MiB, peak resident MiB) from /proc.
    fn rss(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// A gauge or counter from its `/metrics` (summed over labels).
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.metrics, "/metrics")?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Waits until the controller has no status writes left to make (the
    /// VpbluNode status of a large cluster trails its acks, see the status
    /// writer's lazy budget): only then is it idle. How long that took.
    async fn settle(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let pending =
                tokio::task::block_in_place(|| self.metric("vpblu_controller_status_writes_pending"));
            if pending == Some(0.0) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// CPU seconds (user + system) used so far.
    fn cpu(&self) -> f64 {
        cpu_seconds(self.process.pid())
    }

    /// (passes, seconds spent in them) of the recompute so far.
    fn recompute(&self) -> (f64, f64) {
        let passes = self.metric("vpblu_controller_recompute_duration_seconds_count").unwrap_or(f64::NAN);
        let seconds = self.metric("vpblu_controller_recompute_duration_seconds_sum").unwrap_or(f64::NAN);
        (passes, seconds)
    }
}

/// The CPU `leader` uses over [`IDLE`], in percent of one core.
async fn idle_cpu_over(leader: &Controller) -> f64 {
    let cpu = leader.cpu();
    tokio::time::sleep(IDLE).await;
    (leader.cpu() - cpu) / IDLE.as_secs_f64() * 100.0
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// CPU seconds this process (the simulated daemons) used so far.
fn daemons_cpu() -> f64 {
    cpu_seconds(std::process::id())
}

/// `VPBLU_BENCH_CONTROLLER_LOG`: the controllers' `RUST_LOG` (default
/// `warn`). Set, it also makes the bench print when each trial starts, to
/// line the controllers' logs up with (`VPBLU_E2E_KEEP_CLUSTER=1` keeps
/// them).
fn controller_log() -> Option<String> {
    std::env::var("VPBLU_BENCH_CONTROLLER_LOG").ok()
}

/// Prints when trial `t` of `what` starts, if the bench traces.
fn trace_trial(what: &str, t: usize) {
    if controller_log().is_some() {
        println!("  {what} trial {t} starts at {}", k8s_openapi::jiff::Timestamp::now());
    }
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// Waits (polling every 2 ms) until `done` holds; the time it took, or
/// `None` after `limit`.
async fn time_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The goals at a size: #5's at 1000 daemons, #19's at 5000 (other sizes
/// only print their figures).
#[derive(Clone, Copy, Debug)]
struct Goals {
    block_p99: Duration,
    join_p99: Duration,
    rss_mib: f64,
    idle_cpu_percent: f64,
    failover: Duration,
}

fn goals(n: usize) -> Option<Goals> {
    match n {
        1000 => Some(Goals {
            block_p99: Duration::from_secs(1),
            join_p99: Duration::from_secs(1),
            rss_mib: 256.0,
            idle_cpu_percent: 1.0,
            failover: Duration::from_secs(5),
        }),
        5000 => Some(Goals {
            block_p99: Duration::from_secs(2),
            join_p99: Duration::from_secs(2),
            rss_mib: 1024.0,
            idle_cpu_percent: 2.0,
            failover: Duration::from_secs(10),
        }),
        _ => None,
    }
}

/// A GOAL line for a time figure at `n` daemons when `n` has goals; a
/// figure that was not measured (`None`) is missed.
fn time_goal(figure: &str, n: usize, limit: Option<Duration>, measured: Option<Duration>) {
    let Some(limit) = limit else { return };
    let text =
        measured.map_or_else(|| "not measured".to_owned(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    goal(
        &format!("{figure} @ {n} daemons"),
        &format!("< {:.0} ms", limit.as_secs_f64() * 1e3),
        &text,
        measured.is_some_and(|d| d < limit),
    );
}

/// Prints p50/p99/max of `samples`; returns the p99.
fn report(label: &str, n: usize, mut samples: Vec<Duration>, failed: usize) -> Option<Duration> {
    if samples.is_empty() {
        println!("{label} @ {n} daemons: no trial finished ({failed} timed out)");
        return None;
    }
    samples.sort();
    println!(
        "{label} @ {n} daemons: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} trials{}",
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len(),
        if failed > 0 { format!(" ({failed} more timed out)") } else { String::new() },
    );
    // A trial that timed out counts against the goal.
    (failed == 0).then(|| percentile(&samples, 99.0))
}

async fn register_nodes(cluster: &TestCluster, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .map(|i| async move {
            cluster.register_node(&node_name(i), &node_ip(i), &[&pod_cidr(i)], true).await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

async fn scenario(n: usize, trials: usize) {
    println!("--- {n} simulated daemons ---");
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    cluster.apply_manifest(&cluster.repo_root().join("k8s/deploy/namespace.yaml")).await;
    let started = Instant::now();
    register_nodes(&cluster, 0..n).await;
    println!("registered {n} Nodes in {:.1} s", started.elapsed().as_secs_f64());
    let grpc = free_addr().to_string();
    let endpoint = format!("http://{grpc}");
    let leader = tokio::task::block_in_place(|| Controller::start(&cluster, "controller-0", &grpc));
    let mut daemons = Vec::with_capacity(n + trials);
    // Past 1000 the daemons come up as a DaemonSet rollout would, in
    // waves: 5000 hellos in one instant on two shared cores time out in the
    // controller's accept and come back as a reconnect storm.
    let wave = if n > 1000 { CONNECT_WAVE } else { n };
    let first_started = Instant::now();
    let (formation_cpu, formation_daemons_cpu) = (leader.cpu(), daemons_cpu());
    for i in 0..n {
        if i > 0 && i % wave == 0 {
            tokio::time::sleep(CONNECT_WAVE_PAUSE).await;
        }
        daemons.push(start_daemon(i, &endpoint).await);
    }
    if wave < n {
        println!(
            "started {n} daemons in waves of {wave}, {CONNECT_WAVE_PAUSE:?} apart ({:.1} s)",
            first_started.elapsed().as_secs_f64()
        );
    }
    let limit = Duration::from_secs(120 + n as u64 / 2);
    // From the first daemon's start.
    let mesh = time_until(limit, || daemons.iter().all(|d| d.counts.peers.load(Ordering::Acquire) == n - 1))
        .await
        .map(|_| first_started.elapsed());
    let goals = goals(n);
    if goals.is_some() {
        goal(
            &format!("full mesh @ {n} daemons"),
            "formed",
            &mesh.map_or_else(
                || format!("not formed within {limit:?}"),
                |took| format!("formed in {:.1} s", took.as_secs_f64()),
            ),
            mesh.is_some(),
        );
    }
    let Some(mesh) = mesh else {
        let complete = daemons.iter().filter(|d| d.counts.peers.load(Ordering::Acquire) == n - 1).count();
        let (rss, peak) = leader.rss();
        println!(
            "full mesh @ {n} daemons: NOT formed within {limit:?} ({complete}/{n} daemons complete; controller RSS \
             {rss:.0} MiB, peak {peak:.0} MiB): too heavy for this machine at this size; skipping its other figures"
        );
        time_goal("BlockPolicy create -> acked by all, p99", n, goals.map(|g| g.block_p99), None);
        time_goal("node join -> every daemon has the peer, p99", n, goals.map(|g| g.join_p99), None);
        time_goal("leader failover -> standby serving all", n, goals.map(|g| g.failover), None);
        stop(daemons).await;
        return;
    };
    let formed_syncs: Vec<u64> = daemons.iter().map(|d| d.counts.syncs.load(Ordering::Acquire)).collect();
    println!(
        "full mesh @ {n} daemons: every daemon holds {} peers, {:.1} s after the first daemon started \
         (the controller used {:.1} CPU s, the simulated daemons {:.1})",
        n - 1,
        mesh.as_secs_f64(),
        leader.cpu() - formation_cpu,
        daemons_cpu() - formation_daemons_cpu,
    );

    // Idle: once the status of every node is written (lazy writes go at
    // 50/s: a large cluster needs n/50 s for one round).
    let settle_limit = Duration::from_secs(120 + n as u64 / 50);
    match leader.settle(settle_limit).await {
        Some(took) => println!(
            "controller settled @ {n} daemons: every VpbluNode status written {:.1} s after the mesh formed",
            took.as_secs_f64()
        ),
        None => println!("controller @ {n} daemons: status writes still pending after {settle_limit:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled_cpu = idle_cpu_over(&leader).await;
    let (rss, peak) = leader.rss();
    println!(
        "controller idle @ {n} daemons, first {IDLE:?} after settling: RSS {rss:.1} MiB (peak so far {peak:.1} MiB), \
         CPU {settled_cpu:.2}% of one core (this includes daemons' first resyncs: each digests a state that \
         changed since its Hello)"
    );
    // Steady: every daemon has had a resync since the mesh formed, so the
    // controller holds the digest of every node's state and a resync
    // costs a lookup. Resyncs come 0.5-1.5 resync intervals apart.
    // The bench keeps the controller's default --resync-interval.
    let resync_interval = vpblu_controller::stream::StreamConfig::default().resync_interval;
    let resynced_by = resync_interval.mul_f64(1.5) + Duration::from_secs(60);
    let waited = Instant::now();
    let resynced = time_until(resynced_by, || {
        daemons.iter().zip(&formed_syncs).all(|(d, formed)| d.counts.syncs.load(Ordering::Acquire) > *formed)
    })
    .await;
    let steady_cpu = match resynced {
        Some(_) => {
            let cpu = idle_cpu_over(&leader).await;
            println!(
                "controller idle @ {n} daemons, steady (every daemon resynced once since the mesh formed, \
                 {:.0} s later): CPU {cpu:.2}% of one core over {IDLE:?}",
                waited.elapsed().as_secs_f64()
            );
            Some(cpu)
        }
        None => {
            println!(
                "controller @ {n} daemons: not every daemon resynced within {resynced_by:?} of settling"
            );
            None
        }
    };
    let (rss, peak) = leader.rss();
    if let Some(g) = goals {
        goal(
            &format!("controller idle RSS @ {n} daemons"),
            &format!("< {:.0} MiB", g.rss_mib),
            &format!("{rss:.0} MiB (peak so far {peak:.0} MiB)"),
            rss < g.rss_mib,
        );
        goal(
            &format!("controller idle CPU @ {n} daemons (steady)"),
            &format!("< {}%", g.idle_cpu_percent),
            &steady_cpu.map_or_else(
                || format!("not measured (first {IDLE:?} after settling: {settled_cpu:.2}%)"),
                |cpu| format!("{cpu:.2}% (first {IDLE:?} after settling: {settled_cpu:.2}%)"),
            ),
            steady_cpu.is_some_and(|cpu| cpu < g.idle_cpu_percent),
        );
    }

    // Churn: BlockPolicies, then node joins.
    let churn_cpu = leader.cpu();
    let churn_daemons_cpu = daemons_cpu();
    let churn_recompute = leader.recompute();
    let churn_start = Instant::now();
    let blocks: Api<BlockPolicy> = Api::all(cluster.client());
    let (mut samples, mut failed) = (Vec::new(), 0);
    for t in 0..trials {
        let policy = BlockPolicy::new(
            &format!("bench-{t}"),
            BlockPolicySpec {
                blocks: vec![BlockRule {
                    from: "10.0.0.0/8".into(),
                    to: format!("192.168.{t}.0/24"),
                    bidirectional: false,
                }],
                ..BlockPolicySpec::default()
            },
        );
        trace_trial("BlockPolicy", t);
        let start = Instant::now();
        blocks.create(&PostParams::default(), &policy).await.expect("create a BlockPolicy");
        let took = time_until(Duration::from_secs(60), || {
            daemons.iter().all(|d| d.counts.blocks.load(Ordering::Acquire) == t + 1)
        })
        .await;
        match took {
            Some(_) => samples.push(start.elapsed()),
            None => failed += 1,
        }
    }
    let p99 = report("BlockPolicy create -> applied and acked by every daemon", n, samples, failed);
    time_goal("BlockPolicy create -> acked by all, p99", n, goals.map(|g| g.block_p99), p99);

    let (mut samples, mut failed) = (Vec::new(), 0);
    for t in 0..trials {
        let i = n + t;
        trace_trial("node join", t);
        let start = Instant::now();
        cluster.register_node(&node_name(i), &node_ip(i), &[&pod_cidr(i)], true).await;
        daemons.push(start_daemon(i, &endpoint).await);
        let want = n + t; // peers of every daemon now, the new one included
        let took = time_until(Duration::from_secs(60), || {
            daemons.iter().all(|d| d.counts.peers.load(Ordering::Acquire) == want)
        })
        .await;
        match took {
            Some(_) => samples.push(start.elapsed()),
            None => failed += 1,
        }
    }
    let p99 = report(
        "node join (Node created, its daemon started) -> every daemon has the peer",
        n,
        samples,
        failed,
    );
    time_goal("node join -> every daemon has the peer, p99", n, goals.map(|g| g.join_p99), p99);
    let churn = churn_start.elapsed();
    let churn_cpu = (leader.cpu() - churn_cpu) / churn.as_secs_f64() * 100.0;
    let churn_daemons_cpu = (daemons_cpu() - churn_daemons_cpu) / churn.as_secs_f64() * 100.0;
    let (passes, seconds) = leader.recompute();
    let passes = passes - churn_recompute.0;
    let (rss, peak) = leader.rss();
    println!(
        "controller during churn @ {n} daemons: CPU {churn_cpu:.1}% of one core over {:.1} s; RSS {rss:.1} MiB, peak {peak:.1} MiB; \
         {passes:.0} recompute passes of {:.0} ms on average; the simulated daemons used {churn_daemons_cpu:.1}%",
        churn.as_secs_f64(),
        (seconds - churn_recompute.1) / passes * 1e3,
    );

    // Failover: a warm standby (same --grpc-addr; it listens only once it
    // leads), the leader killed without a goodbye.
    let total = daemons.len();
    let standby = tokio::task::block_in_place(|| Controller::start(&cluster, "controller-1", &grpc));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let syncs: Vec<u64> = daemons.iter().map(|d| d.counts.syncs.load(Ordering::Acquire)).collect();
    let kept_before = kept_states(&daemons).await;
    trace_trial("failover", 0);
    let (standby_cpu, failover_daemons_cpu) = (standby.cpu(), daemons_cpu());
    drop(leader);
    let served = time_until(Duration::from_secs(120), || {
        daemons.iter().zip(&syncs).all(|(d, before)| d.counts.syncs.load(Ordering::Acquire) > *before)
    })
    .await;
    match served {
        Some(took) => println!(
            "leader failover @ {total} daemons (SIGKILL; {}): standby serving every daemon its whole state in {:.2} s",
            LEASE.join(" "),
            took.as_secs_f64()
        ),
        None => println!("leader failover @ {total} daemons: not every daemon was served within 120 s"),
    }
    println!(
        "during the failover: the new leader used {:.1} CPU s, the simulated daemons {:.1} CPU s",
        standby.cpu() - standby_cpu,
        daemons_cpu() - failover_daemons_cpu
    );
    let kept_after = kept_states(&daemons).await;
    let kept = kept_before.iter().zip(&kept_after).filter(|(before, after)| after > before).count();
    println!(
        "  {kept} of them had their state confirmed by its digest (KeepState), {} got it whole (SyncState)",
        total - kept
    );
    time_goal("leader failover -> standby serving all", n, goals.map(|g| g.failover), served);
    let (rss, peak) = standby.rss();
    println!("new leader after failover @ {total} daemons: RSS {rss:.1} MiB, peak {peak:.1} MiB");
    drop(standby);
    stop(daemons).await;
}

/// How many KeepStates each daemon applied so far.
async fn kept_states(daemons: &[Daemon]) -> Vec<u64> {
    let mut kept = Vec::with_capacity(daemons.len());
    for d in daemons {
        kept.push(match d.client.call(StreamClientMsg::Status, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(status)) => status.kept,
            _ => 0,
        });
    }
    kept
}

async fn stop(daemons: Vec<Daemon>) {
    for d in daemons {
        d.client.stop(None);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn main() {
    let sizes: Vec<usize> = std::env::var("VPBLU_BENCH_NODES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("VPBLU_BENCH_NODES is a comma-separated list of numbers"))
        .collect();
    let trials: usize = std::env::var("VPBLU_BENCH_TRIALS").ok().map_or(10, |t| t.parse().expect("a number"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a Tokio runtime");
    runtime.block_on(async {
        println!(
            "stream fanout: real kube-apiserver + the vpblu-controller binary + in-process daemons on {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for n in sizes {
            scenario(n, trials).await;
        }
    });
}
