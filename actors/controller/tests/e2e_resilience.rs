//! The controller when things break, against the real API server with real
//! daemon stream clients (recording data planes):
//!
//! - the API server stopped for 30 s and started again: the real
//!   controller binary keeps every daemon's stream (no daemon reconnects),
//!   recovers its watches, and a policy created afterwards reaches the
//!   daemons;
//! - a supervised child that fails (an informer whose watch ends, a killed
//!   Recompute, a stream server that stops) is restarted by its supervisor
//!   and the tree converges again: after each restart a new policy still
//!   reaches the daemons. The tree runs in-process as a library
//!   ([`vpblu_controller::run_until`]); the failures are caused through
//!   the actors' own refs, with no fault hook in the product.

mod stream_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kube::Api;
use kube::api::PostParams;
use ractor::{ActorCell, ActorRef};
use tokio::sync::oneshot;
use vpblu_controller::informers::InformerMsg;
use vpblu_controller::{Args, run_until};
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::{free_addr, wait_http_ok};
use vpblu_k8s::conditions::CONNECTED;
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule, VpbluNode};
use vpblu_messages::Command as MeshCommand;
use vpblu_runtime::{RootExit, SupervisorMsg};

use vpblu_e2e::stream_pki::StreamPki;

use stream_support::controller_process::ControllerProcess;
use stream_support::{Daemon, deployed_daemon, key, three_nodes, tls_flags};

/// Short Lease timings, so a leader that stepped down at its renew
/// deadline (3 s) would show within the outage.
const LEASE: [&str; 4] = ["--lease-duration", "4s", "--lease-renew", "1s"];
/// Generous: a change crosses API server, informer, recompute, stream.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long the API server stays down.
const OUTAGE: Duration = Duration::from_secs(30);

async fn converge(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < CONVERGE {
        if check() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {CONVERGE:?} waiting for {what}");
}

/// The daemon of node-`i`, connecting to the controller at `grpc` as a
/// deployed one does (TLS to `pki`'s certificate, its Pod's token).
async fn daemon(cluster: &TestCluster, pki: &Arc<StreamPki>, i: usize, grpc: &str) -> Daemon {
    deployed_daemon(cluster, pki, grpc, i).await
}

/// Waits until every daemon peers the other two under the keys they said
/// in their Hello (Hello -> status -> VpbluNode -> recompute -> stream).
async fn full_mesh(daemons: &[Daemon]) {
    converge("a full mesh of 3", || {
        daemons.iter().all(|d| {
            let state = d.plane.state();
            state.peers.len() == 2
                && state.peers.values().all(|p| {
                    let i: usize = p.node.as_str().trim_start_matches("node-").parse().expect("node-N");
                    p.public_key == key(i)
                })
        })
    })
    .await;
}

/// A BlockPolicy `name` dropping node-`from`'s pods' traffic to node-`to`'s.
async fn block(cluster: &TestCluster, name: &str, from: usize, to: usize) {
    let policy = BlockPolicy::new(
        name,
        BlockPolicySpec {
            blocks: vec![BlockRule {
                from: format!("10.244.{from}.0/24"),
                to: format!("10.244.{to}.0/24"),
                bidirectional: false,
            }],
            ..BlockPolicySpec::default()
        },
    );
    Api::<BlockPolicy>::all(cluster.client())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("create BlockPolicy {name}: {e}"));
}

/// How many blocks each daemon holds.
fn blocks(daemons: &[Daemon]) -> Vec<usize> {
    daemons.iter().map(|d| d.plane.state().blocks.len()).collect()
}

/// A metric's value from a Prometheus text page (summed over its labels).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_keeps_its_streams_through_an_api_server_outage() {
    let mut cluster = three_nodes().await;
    let grpc = free_addr().to_string();
    let pki = Arc::new(StreamPki::new());
    let controller = tokio::task::block_in_place(|| {
        ControllerProcess::start(&cluster, "controller-0", &grpc, &pki, "info")
    });
    let mut daemons = Vec::new();
    for i in 1..=3 {
        daemons.push(daemon(&cluster, &pki, i, &grpc).await);
    }
    full_mesh(&daemons).await;
    let mut connects = Vec::new();
    for d in &daemons {
        connects.push(d.status().await.connects);
    }
    let states: Vec<_> = daemons.iter().map(|d| d.plane.state()).collect();
    let counts: Vec<usize> = daemons.iter().map(|d| d.commands().len()).collect();
    let errors_before = metric(&controller.metrics(), "vpblu_controller_informer_watch_errors_total");

    // No API server for 30 s. The Lease cannot be renewed (its renew
    // deadline is 3 s), yet the leader keeps leading and every stream stays.
    let down = cluster.stop_apiserver();
    println!("kube-apiserver stopped; lease flags {LEASE:?}, outage grace 60s (the default)");
    let start = Instant::now();
    while start.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (d, before) in daemons.iter().zip(&connects) {
            let status = d.status().await;
            assert!(status.connected && status.connects == *before, "{} lost its stream: {status:?}", d.node);
        }
        let page = tokio::task::block_in_place(|| controller.metrics());
        assert_eq!(
            metric(&page, "vpblu_controller_lease_held"),
            1.0,
            "the leader stepped down during the outage"
        );
    }
    let outage = cluster.start_apiserver(down).await;
    println!("kube-apiserver back after {outage:.2?}; no daemon reconnected");

    // Watches recover: a policy created now reaches both ends of it.
    block(&cluster, "after-the-outage", 1, 3).await;
    let took = converge("the block on node-1 and node-3", || blocks(&daemons) == [1, 0, 1]).await;
    println!("BlockPolicy created after the restart reached its daemons in {took:.2?}");
    let page = tokio::task::block_in_place(|| controller.metrics());
    let errors_after = metric(&page, "vpblu_controller_informer_watch_errors_total");
    assert!(errors_after > errors_before, "the watches failed during the outage and were retried: {page}");

    for (i, d) in daemons.iter().enumerate() {
        let status = d.status().await;
        assert_eq!(status.connects, connects[i], "{} reconnected: {status:?}", d.node);
        // Nothing but the block was sent: no resync, no other change.
        let after = &d.commands()[counts[i]..];
        assert!(
            after.iter().all(|c| matches!(c.command, MeshCommand::SetBlocks(_))),
            "{}: only the block may follow the outage, got {after:?}",
            d.node
        );
        let mut want = states[i].clone();
        want.blocks.clone_from(&d.plane.state().blocks);
        assert_eq!(d.plane.state(), want, "{}: only its blocks changed", d.node);
    }
    // The status writer writes again: every node shows its stream open.
    let vnodes: Api<VpbluNode> = Api::all(cluster.client());
    for i in 1..=3 {
        let status = vnodes.get(&format!("node-{i}")).await.expect("read VpbluNode").status;
        let connected = status.iter().flat_map(|s| &s.conditions).find(|c| c.type_ == CONNECTED);
        assert_eq!(connected.map(|c| c.status.as_str()), Some("True"), "node-{i}: {status:?}");
    }
    drop(controller);
    for d in daemons {
        d.stop().await;
    }
}

/// The running child `name` of `supervisor`, waiting for it to be (re)started.
async fn child(supervisor: &ActorRef<SupervisorMsg>, name: &str, not: Option<&ActorCell>) -> ActorCell {
    let start = Instant::now();
    loop {
        let running = ractor::call_t!(supervisor, SupervisorMsg::Child, 5_000, name.to_owned())
            .expect("the supervisor answers");
        if let Some(cell) = running.filter(|c| not.is_none_or(|old| old.get_id() != c.get_id())) {
            return cell;
        }
        assert!(start.elapsed() < CONVERGE, "{name} was not (re)started within {CONVERGE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_child_is_restarted_and_the_tree_converges() {
    let cluster = three_nodes().await;
    let grpc = free_addr().to_string();
    let pki = Arc::new(StreamPki::new());
    let tls = tls_flags(&pki);
    let (metrics, dashboard) = (free_addr().to_string(), free_addr().to_string());
    let args = Args::try_parse_from(
        [
            "vpblu-controller",
            "--grpc-addr",
            &grpc,
            "--metrics-addr",
            &metrics,
            "--dashboard-addr",
            &dashboard,
        ]
        .into_iter()
        .chain(["--identity", "controller-0", "--log-format", "text"])
        .chain(LEASE)
        .chain(tls.iter().map(String::as_str)),
    )
    .expect("valid flags");
    let (stop, stopped) = oneshot::channel::<()>();
    let (root_tx, root_rx) = oneshot::channel();
    let shutdown = async move {
        let _ = stopped.await;
        "the test is done"
    };
    let tree = tokio::spawn(run_until(args, Some(cluster.client()), shutdown, move |root| {
        let _ = root_tx.send(root);
    }));
    let root = root_rx.await.expect("the tree starts");
    wait_http_ok(metrics.parse().expect("an address"), "/readyz", CONVERGE);
    let mut daemons = Vec::new();
    for i in 1..=3 {
        daemons.push(daemon(&cluster, &pki, i, &grpc).await);
    }
    full_mesh(&daemons).await;

    // The BlockPolicy informer's watch ends (what a watcher never does by
    // itself): the informer fails, is restarted, relists.
    let informer = child(&root, "informer-BlockPolicy", None).await;
    ActorRef::<InformerMsg>::from(informer.clone()).cast(InformerMsg::Ended).expect("the informer runs");
    child(&root, "informer-BlockPolicy", Some(&informer)).await;
    block(&cluster, "after-informer", 1, 3).await;
    converge("the block after the informer restart", || blocks(&daemons) == [1, 0, 1]).await;

    // Recompute is killed outright (no post_stop): the new one reads every
    // cache and carries on from the published state.
    let recompute = child(&root, "recompute", None).await;
    recompute.kill();
    child(&root, "recompute", Some(&recompute)).await;
    block(&cluster, "after-recompute", 2, 3).await;
    converge("the block after the Recompute restart", || blocks(&daemons) == [1, 1, 2]).await;

    // The stream server fails the way it does when its listener dies: every
    // stream closes, the server restarts, the daemons reconnect to it.
    let gate = child(&root, "leader-gate", None).await;
    let leader_only: ActorRef<SupervisorMsg> =
        gate.get_children().into_iter().next().expect("the leader runs its subtree").into();
    let server = child(&leader_only, "stream-server", None).await;
    let mut connects = Vec::new();
    for d in &daemons {
        connects.push(d.status().await.connects);
    }
    server.stop(Some("stream server failed: injected by the test".into()));
    child(&leader_only, "stream-server", Some(&server)).await;
    for (d, before) in daemons.iter().zip(&connects) {
        let start = Instant::now();
        loop {
            let status = d.status().await;
            if status.connected && status.connects > *before {
                break;
            }
            assert!(start.elapsed() < CONVERGE, "{} did not reconnect: {status:?}", d.node);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    block(&cluster, "after-stream-server", 1, 2).await;
    converge("the block after the stream server restart", || blocks(&daemons) == [2, 2, 2]).await;

    // Nothing escalated: the tree stops cleanly on request.
    stop.send(()).expect("the tree listens for its shutdown");
    let exit = tokio::time::timeout(CONVERGE, tree).await.expect("the tree stops in time").expect("joins");
    assert_eq!(exit, RootExit::Stopped);
    for d in daemons {
        d.stop().await;
    }
}
