//! Informers and Recompute against a real kube-apiserver: Nodes, keys and
//! policies in, every node's desired state out (§12.5), bursts coalesced,
//! and watches that survive the API server going away.

mod k8s_support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vpblu_controller::informers::Kind;
use vpblu_controller::recompute::RecomputeConfig;
use vpblu_e2e::cluster::TestCluster;
use vpblu_engine::{FindingReason, SubjectKind};
use vpblu_k8s::{BlockPolicy, RotationPolicy, VpbluNode};
use vpblu_messages::BlockRule;

use k8s_support::{Controller, LEASE_NAMESPACE, WAIT, eventually, name, publish_key, write_public_key};

/// Registers Ready node `node-i` (InternalIP 172.18.0.i, pod CIDR
/// 10.244.i.0/24) and publishes its key.
async fn join(cluster: &TestCluster, i: u8) {
    let node = format!("node-{i}");
    cluster.register_node(&node, &format!("172.18.0.{i}"), &[&format!("10.244.{i}.0/24")], true).await;
    publish_key(cluster, &node, i).await;
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    cluster
}

fn block_policy(name: &str, from: &str, to: &str) -> BlockPolicy {
    serde_json::from_value(json!({
        "apiVersion": "vpblu.dev/v1alpha1", "kind": "BlockPolicy",
        "metadata": { "name": name },
        "spec": { "blocks": [{ "from": from, "to": to }] },
    }))
    .expect("a valid BlockPolicy")
}

fn rule(from: &str, to: &str) -> BlockRule {
    BlockRule { from: from.parse().expect("a CIDR"), to: to.parse().expect("a CIDR") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_follows_nodes_joining_and_leaving() {
    let cluster = cluster().await;
    let ctl = Controller::start(cluster.client(), RecomputeConfig::default()).await;
    for i in 1..=3 {
        join(&cluster, i).await;
    }
    let p = ctl
        .sink
        .wait_for("node-1..3 peer each other", |p| p.is_full_mesh_of(&["node-1", "node-2", "node-3"]))
        .await;
    let n1 = &p.states[&name("node-1")];
    let to_n2 = &n1.peers[&name("node-2")];
    assert_eq!(to_n2.endpoint, "172.18.0.2:51820".parse().unwrap());
    assert_eq!(to_n2.allowed_ips, vec!["10.244.2.0/24".parse().unwrap()]);
    assert_eq!(to_n2.public_key, k8s_support::key(2));
    assert!(p.findings.is_empty(), "no findings expected:\n{}", p.describe());

    // The VpbluNodes were created by the controller: owned by their Node,
    // written under its field manager.
    let vn = Api::<VpbluNode>::all(cluster.client()).get("node-1").await.expect("VpbluNode node-1 exists");
    let owner = &vn.metadata.owner_references.as_ref().expect("an owner reference")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", "node-1"));
    let managers: Vec<&str> =
        vn.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.as_deref()).collect();
    assert!(managers.contains(&vpblu_k8s::FIELD_MANAGER), "managers: {managers:?}");

    join(&cluster, 4).await;
    ctl.sink
        .wait_for("node-4 joined everyone's peers", |p| {
            p.is_full_mesh_of(&["node-1", "node-2", "node-3", "node-4"])
        })
        .await;

    cluster.delete_node("node-2").await;
    let p = ctl
        .sink
        .wait_for("node-2 is gone everywhere", |p| p.is_full_mesh_of(&["node-1", "node-3", "node-4"]))
        .await;
    assert!(!p.states.contains_key(&name("node-2")));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_bad_input_and_bursts() {
    let cluster = cluster().await;
    let ctl = Controller::start(cluster.client(), RecomputeConfig::default()).await;
    for i in 1..=3 {
        join(&cluster, i).await;
    }
    let mesh = ["node-1", "node-2", "node-3"];
    ctl.sink.wait_for("a full mesh of 3", |p| p.is_full_mesh_of(&mesh)).await;

    // A block is enforced by the nodes that own either end, and only them.
    let policies: Api<BlockPolicy> = Api::all(cluster.client());
    let block = rule("10.244.1.0/24", "10.244.2.0/24");
    policies
        .create(&PostParams::default(), &block_policy("deny-1-2", "10.244.1.0/24", "10.244.2.0/24"))
        .await
        .expect("create BlockPolicy deny-1-2");
    let blocks = |p: &k8s_support::Published, node: &str| p.states[&name(node)].blocks.clone();
    let p = ctl
        .sink
        .wait_for("node-1 and node-2 enforce the block", |p| blocks(p, "node-1").contains(&block))
        .await;
    assert!(blocks(&p, "node-2").contains(&block), "{}", p.describe());
    assert!(blocks(&p, "node-3").is_empty(), "{}", p.describe());
    policies.delete("deny-1-2", &DeleteParams::default()).await.expect("delete BlockPolicy deny-1-2");
    ctl.sink.wait_for("no block anywhere", |p| p.states.values().all(|s| s.blocks.is_empty())).await;

    // A key the API server cannot check (VpbluNode status has no schema
    // for it; Kubernetes 1.37 now refuses pod CIDRs with host bits) is
    // reported on its Node; the rest of the mesh still computes.
    cluster.register_node("node-4", "172.18.0.4", &["10.244.4.0/24"], true).await;
    write_public_key(&cluster, "node-4", "not-a-wireguard-key").await;
    let p = ctl
        .sink
        .wait_for("an Invalid finding on Node node-4", |p| {
            p.findings.iter().any(|f| {
                f.reason == FindingReason::Invalid
                    && f.subject.kind == SubjectKind::Node
                    && f.subject.name == "node-4"
                    && f.message.contains("publicKey")
            })
        })
        .await;
    for node in mesh {
        let mut peers = p.peers_of(node);
        peers.push(node);
        peers.sort_unstable();
        assert_eq!(peers, mesh, "{}", p.describe());
    }
    assert!(p.peers_of("node-4").is_empty(), "{}", p.describe());

    // 50 changes at once: far fewer publishes, the last one complete.
    let before = ctl.sink.count();
    let started = Instant::now();
    let creates = (0..50).map(|i| {
        let policies = policies.clone();
        async move {
            let policy = block_policy(&format!("burst-{i}"), "10.244.1.0/24", &format!("10.99.{i}.0/24"));
            policies.create(&PostParams::default(), &policy).await.expect("create a burst BlockPolicy")
        }
    });
    join_all(creates).await;
    let created = started.elapsed();
    let p =
        ctl.sink.wait_for("node-1 enforces all 50 burst blocks", |p| blocks(p, "node-1").len() == 50).await;
    let settled = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publishes = ctl.sink.count() - before;
    println!(
        "burst: 50 BlockPolicies created in {:.0} ms, settled after {:.0} ms, {publishes} publishes",
        created.as_secs_f64() * 1e3,
        settled.as_secs_f64() * 1e3
    );
    // Coalesced: at most one publish per 200 ms cap while the creates
    // arrive (a busy API server spreads them out), plus the settling ones;
    // never anywhere near one per change.
    let cap = (created.as_millis() / 200) as usize + 3;
    assert!(publishes <= cap.min(25), "50 changes gave {publishes} publishes (cap {cap})");
    let last = ctl.sink.latest().expect("published");
    assert!(std::sync::Arc::ptr_eq(&last, &p), "nothing is published after the last change settled");
    for i in 0..50 {
        assert!(blocks(&last, "node-1").contains(&rule("10.244.1.0/24", &format!("10.99.{i}.0/24"))));
    }

    // Sustained churn (a change every ~20 ms, never a 50 ms pause) still
    // publishes along the way: the 200 ms cap, not only at the end.
    policies
        .create(&PostParams::default(), &block_policy("churn", "10.244.3.0/24", "10.98.0.0/24"))
        .await
        .expect("create BlockPolicy churn");
    ctl.sink.wait_for("node-3 enforces churn", |p| blocks(p, "node-3").len() == 1).await;
    let before = ctl.sink.count();
    let started = Instant::now();
    for i in 1..=50 {
        let patch =
            json!({ "spec": { "blocks": [{ "from": "10.244.3.0/24", "to": format!("10.98.{i}.0/24") }] } });
        policies.patch("churn", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch churn");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let churned = started.elapsed();
    let last = rule("10.244.3.0/24", "10.98.50.0/24");
    ctl.sink.wait_for("node-3 enforces the last churn block", |p| blocks(p, "node-3").contains(&last)).await;
    let publishes = ctl.sink.count() - before;
    println!("churn: 50 updates over {:.0} ms, {publishes} publishes", churned.as_secs_f64() * 1e3);
    assert!(publishes >= 3, "sustained churn must publish along the way, not only at its end ({publishes})");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informers_recover_when_the_api_server_restarts() {
    let mut cluster = cluster().await;
    let ctl = Controller::start(cluster.client(), RecomputeConfig::default()).await;
    for i in 1..=2 {
        join(&cluster, i).await;
    }
    ctl.sink.wait_for("a full mesh of 2", |p| p.is_full_mesh_of(&["node-1", "node-2"])).await;
    let informer = ctl.child("informer-Node").await.get_id();
    let recompute = ctl.child("recompute").await.get_id();

    let outage = cluster.restart_apiserver(Duration::from_secs(2)).await;
    let back = Instant::now();
    // Every watch noticed, and retried by itself: the actors never restarted.
    eventually(WAIT, "every informer counted a watch error", || {
        Kind::ALL.iter().all(|&k| ctl.informer_metrics.watch_errors(k) > 0)
    })
    .await;
    assert_eq!(ctl.child("informer-Node").await.get_id(), informer, "informer-Node was restarted");
    assert_eq!(ctl.child("recompute").await.get_id(), recompute, "recompute was restarted");

    // A change made after the API server came back reaches the sink. The
    // watchers' backoff may be at several seconds by now.
    join(&cluster, 3).await;
    ctl.sink
        .wait_within(Duration::from_secs(60), "node-3 joined after the restart", |p| {
            p.is_full_mesh_of(&["node-1", "node-2", "node-3"])
        })
        .await;
    println!(
        "api server down {:.1} s; change after restart published {:.1} s after /readyz",
        outage.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    let errors: Vec<(Kind, u64)> =
        Kind::ALL.iter().map(|&k| (k, ctl.informer_metrics.watch_errors(k))).collect();
    println!("watch errors during the outage: {errors:?}");
    // The caches hold the objects as the API server has them after the relist.
    let nodes: Api<Node> = Api::all(cluster.client());
    let listed = nodes.list(&Default::default()).await.expect("list Nodes").items.len();
    assert_eq!(ctl.caches.nodes.store().state().len(), listed);
    ctl.stop().await;
}

/// The informers as the controller's own service account runs them, under
/// k8s/deploy's RBAC: every cache syncs (the Role grants each list and
/// watch), RotationPolicies are cached, and the Pod cache holds the
/// daemon's pods in the controller's namespace and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cache_syncs_under_the_controllers_own_rbac() {
    let cluster = cluster().await;
    for manifest in ["k8s/deploy/namespace.yaml", "k8s/deploy/controller-rbac.yaml"] {
        cluster.apply_manifest(&cluster.repo_root().join(manifest)).await;
    }
    cluster.register_node("node-1", "172.18.0.1", &["10.244.1.0/24"], true).await;
    let daemon_label = [("app.kubernetes.io/name", "vpblu-daemon")];
    cluster
        .register_pod(LEASE_NAMESPACE, "vpblu-daemon-a", "node-1", "172.18.0.1", None, &daemon_label)
        .await;
    cluster.register_pod(LEASE_NAMESPACE, "something-else", "node-1", "10.244.1.5", None, &[]).await;
    cluster
        .register_pod("default", "vpblu-daemon-elsewhere", "node-1", "10.244.1.6", None, &daemon_label)
        .await;
    let rotation: RotationPolicy = serde_json::from_value(json!({
        "apiVersion": "vpblu.dev/v1alpha1", "kind": "RotationPolicy",
        "metadata": { "name": "weekly" },
        "spec": { "schedule": "0 0 3 * * Sun" },
    }))
    .expect("a valid RotationPolicy");
    Api::<RotationPolicy>::all(cluster.client())
        .create(&PostParams::default(), &rotation)
        .await
        .expect("create the RotationPolicy");

    let client = cluster.client_as(LEASE_NAMESPACE, "vpblu-controller", &[], None).await;
    let ctl = Controller::start(client, RecomputeConfig::default()).await;
    eventually(WAIT, "every cache synced as vpblu-controller", || ctl.caches.synced()).await;
    assert_eq!(Kind::ALL.len(), 7);
    let pods: Vec<String> = ctl.caches.daemon_pods.objects().iter().map(|p| p.name_any()).collect();
    assert_eq!(pods, vec!["vpblu-daemon-a".to_owned()], "only the daemon's pods, only in its namespace");
    let policies: Vec<String> = ctl.caches.rotation_policies.objects().iter().map(|p| p.name_any()).collect();
    assert_eq!(policies, vec!["weekly".to_owned()]);
    for kind in Kind::ALL {
        assert_eq!(ctl.informer_metrics.watch_errors(kind), 0, "{kind}: the RBAC let every watch through");
    }
    ctl.stop().await;
}
