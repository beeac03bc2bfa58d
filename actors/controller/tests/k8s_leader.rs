//! Leader election on a real Lease: one leader of two, a fast handover on a
//! clean stop, a takeover after expiry when the leader dies, and a warm
//! standby that publishes as soon as it leads.

mod k8s_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vpblu_controller::leader::{Leader, LeaderArgs, LeaderMetrics, LeaderMsg};
use vpblu_e2e::cluster::TestCluster;
use vpblu_runtime::Health;

use k8s_support::{Controller, LEASE_NAMESPACE, WAIT, eventually, lease, publish_key};

/// One Leader actor outside any tree (so a kill stays a kill).
struct Candidate {
    identity: String,
    actor: ActorRef<LeaderMsg>,
    handle: JoinHandle<()>,
    leading: watch::Receiver<bool>,
}

impl Candidate {
    async fn start(client: Client, identity: &str) -> Candidate {
        let (flag, leading) = watch::channel(false);
        let args = LeaderArgs {
            client,
            config: lease(identity),
            leading: flag,
            metrics: LeaderMetrics::register(&Health::new()),
        };
        let (actor, handle) = Actor::spawn(None, Leader, args).await.expect("the Leader starts");
        let handle = tokio::spawn(async move {
            let _ = handle.await;
        });
        Candidate { identity: identity.to_owned(), actor, handle, leading }
    }

    fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

async fn holder(cluster: &TestCluster) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(cluster.client(), LEASE_NAMESPACE);
    api.get("vpblu-controller").await.expect("the Lease exists").spec.and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_hands_over_on_stop_and_takes_over_after_expiry() {
    let cluster = TestCluster::start().await;
    cluster.ensure_namespace(LEASE_NAMESPACE).await;
    // Both start at once: both find no Lease, only one create wins.
    let (a, b) =
        tokio::join!(Candidate::start(cluster.client(), "a"), Candidate::start(cluster.client(), "b"));
    eventually(WAIT, "one of a and b leads", || a.leads() || b.leads()).await;
    // Several renewals later, still exactly one, and it holds the Lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(a.leads() != b.leads(), "exactly one leads (a: {}, b: {})", a.leads(), b.leads());
    let (leader, standby) = if a.leads() { (a, b) } else { (b, a) };
    assert_eq!(holder(&cluster).await.as_deref(), Some(leader.identity.as_str()));
    assert!(ractor::call_t!(leader.actor, LeaderMsg::IsLeader, 5_000).expect("answers"));

    // A clean stop releases the Lease: the standby takes it on its next poll.
    let started = Instant::now();
    leader.actor.stop(Some("clean shutdown".into()));
    tokio::time::timeout(WAIT, leader.handle).await.expect("the leader stops").expect("joined");
    assert!(!*leader.leading.borrow(), "a stopped leader told its subscribers");
    eventually(WAIT, "the standby leads", || standby.leads()).await;
    let handover = started.elapsed();
    println!("failover after a clean stop (release): {:.2} s", handover.as_secs_f64());
    assert!(handover < Duration::from_millis(2500), "handover took {handover:?}");
    assert_eq!(holder(&cluster).await.as_deref(), Some(standby.identity.as_str()));

    // A new standby watches the Lease; then the leader dies without a word.
    let c = Candidate::start(cluster.client(), "c").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!c.leads(), "c must not take a live Lease");
    let started = Instant::now();
    standby.actor.kill();
    tokio::time::timeout(WAIT, standby.handle).await.expect("the killed leader ends").expect("joined");
    assert!(!*standby.leading.borrow(), "a dead Leader leaves nobody believing it leads");
    eventually(WAIT, "c takes over after the Lease expired", || c.leads()).await;
    let takeover = started.elapsed();
    println!("failover after a kill (expiry of a 3 s Lease): {:.2} s", takeover.as_secs_f64());
    assert!(takeover >= Duration::from_secs(2), "c took a Lease that had not expired ({takeover:?})");
    assert!(takeover < Duration::from_secs(8), "takeover took {takeover:?}");
    assert_eq!(holder(&cluster).await.as_deref(), Some("c"));
    c.actor.stop(None);
    tokio::time::timeout(WAIT, c.handle).await.expect("c stops").expect("joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_standby_publishes_as_soon_as_it_leads() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    cluster.ensure_namespace(LEASE_NAMESPACE).await;
    let first = Controller::start_with_leader(cluster.client(), "first").await;
    eventually(WAIT, "the first replica leads", || first.is_leading()).await;
    let second = Controller::start_with_leader(cluster.client(), "second").await;
    for i in 1..=2 {
        let node = format!("node-{i}");
        cluster.register_node(&node, &format!("172.18.0.{i}"), &[&format!("10.244.{i}.0/24")], true).await;
        publish_key(&cluster, &node, i).await;
    }
    let mesh = ["node-1", "node-2"];
    first.sink.wait_for("the leader publishes the mesh", |p| p.is_full_mesh_of(&mesh)).await;
    // The standby's caches are warm, but it publishes nothing.
    eventually(WAIT, "the standby's caches hold both nodes", || {
        second.caches.synced() && second.caches.nodes.store().state().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_leading());
    assert_eq!(second.sink.count(), 0, "a standby must not publish");

    let started = Instant::now();
    first.stop().await;
    second.sink.wait_for("the new leader publishes the mesh", |p| p.is_full_mesh_of(&mesh)).await;
    let takeover = started.elapsed();
    println!("standby published {:.2} s after the leader began to stop", takeover.as_secs_f64());
    assert!(takeover < Duration::from_secs(3), "takeover took {takeover:?}");
    second.stop().await;
}
