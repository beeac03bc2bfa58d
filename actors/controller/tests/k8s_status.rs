//! The status writer against the real API server: a daemon's Hello, Acks
//! and Observed reports become its VpbluNode's status, the `Connected`
//! condition follows the stream opening and closing, a restarted writer
//! keeps what the last one wrote, an unchanged report writes nothing, the
//! rotation scheduler's fields survive the writer's applies, a key
//! handed over at the end of a rotation is the one the writer keeps, the
//! `Ready` condition follows the connection, the generations and the
//! peers, and a new leader's writer ends a `Connected=True` it does not
//! serve.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use ractor::{Actor, ActorRef};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use vpblu_controller::informers::{Cache, Informer, InformerArgs, InformerMetrics};
use vpblu_controller::recompute::RecomputeHandle;
use vpblu_controller::rotation::KeyHandoff;
use vpblu_controller::status_writer::{StatusMetrics, StatusWriter, StatusWriterArgs, StatusWriterMsg};
use vpblu_controller::stream::StreamEvent;
use vpblu_e2e::cluster::TestCluster;
use vpblu_k8s::conditions::{CONNECTED, READY, reasons};
use vpblu_k8s::{FIELD_MANAGER, ROTATION_FIELD_MANAGER, VpbluNode, VpbluNodeSpec, VpbluNodeStatus};
use vpblu_messages::{Backend, Generation, Hello, NodeName, PeerObservation, PublicKey, Upstream};
use vpblu_runtime::Health;

async fn status_until(
    api: &Api<VpbluNode>,
    name: &str,
    what: &str,
    ok: impl Fn(&VpbluNodeStatus) -> bool,
) -> VpbluNodeStatus {
    for _ in 0..100 {
        let node = api.get(name).await.expect("read the VpbluNode");
        if let Some(status) = node.status.filter(|s| ok(s)) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("VpbluNode {name} status never showed {what}: {:?}", api.get(name).await.map(|n| n.status));
}

fn connected(status: &VpbluNodeStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == CONNECTED)
}

fn is_connected(status: &VpbluNodeStatus, open: bool) -> bool {
    connected(status).is_some_and(|c| c.status == if open { "True" } else { "False" })
}

fn hello(node: &NodeName, key: PublicKey, generation: u64) -> StreamEvent {
    StreamEvent::Message(
        node.clone(),
        Upstream::Hello(Hello {
            node: node.clone(),
            public_key: key,
            staged_public_key: None,
            applied_generation: Generation(generation),
            backend: Backend::Userspace,
            mtu: 1420,
            version: "test".into(),
            digest_key: None,
            held: None,
        }),
    )
}

fn observed(node: &NodeName, peers: &[(&str, Option<u64>)]) -> StreamEvent {
    let peers = peers
        .iter()
        .map(|(name, age)| PeerObservation {
            node: NodeName::new(*name).unwrap(),
            public_key: PublicKey::from_bytes([1; 32]),
            last_handshake_age: age.map(Duration::from_secs),
            rx_bytes: 10,
            tx_bytes: 20,
        })
        .collect();
    StreamEvent::Message(node.clone(), Upstream::Observed(peers))
}

async fn start_writer(
    cluster: &TestCluster,
    events: &broadcast::Sender<StreamEvent>,
    vpblu_nodes: &Cache<VpbluNode>,
    handoff: &KeyHandoff,
) -> (ActorRef<StatusWriterMsg>, JoinHandle<()>) {
    start_writer_with_grace(cluster, events, vpblu_nodes, handoff, Duration::from_secs(3600)).await
}

async fn start_writer_with_grace(
    cluster: &TestCluster,
    events: &broadcast::Sender<StreamEvent>,
    vpblu_nodes: &Cache<VpbluNode>,
    handoff: &KeyHandoff,
    connection_grace: Duration,
) -> (ActorRef<StatusWriterMsg>, JoinHandle<()>) {
    let args = StatusWriterArgs {
        client: cluster.client(),
        events: events.clone(),
        vpblu_nodes: vpblu_nodes.clone(),
        handoff: handoff.clone(),
        metrics: StatusMetrics::register(&Health::new()),
        connection_grace,
    };
    let (writer, handle) = Actor::spawn(None, StatusWriter, args).await.expect("status writer starts");
    (writer, tokio::spawn(async move { handle.await.expect("status writer joins") }))
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_reports_become_vpblunode_status() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let api: Api<VpbluNode> = Api::all(cluster.client());
    api.create(&PostParams::default(), &VpbluNode::new("node-s", VpbluNodeSpec::default()))
        .await
        .expect("create the VpbluNode");
    // The VpbluNode informer's cache, as the controller has it.
    let (cache, informer, informer_done) = vpblu_node_cache(&api).await;

    let (events, _) = broadcast::channel(16);
    let handoff = KeyHandoff::new();
    let (writer, done) = start_writer(&cluster, &events, &cache, &handoff).await;
    let node = NodeName::new("node-s").unwrap();
    let key = PublicKey::from_bytes([42; 32]);

    events.send(hello(&node, key, 3)).expect("a subscriber listens");
    let status = status_until(&api, "node-s", "the key", |s| s.public_key.is_some()).await;
    assert_eq!(status.public_key.as_deref(), Some(key.to_base64().as_str()));
    assert_eq!(status.short_key.as_deref(), Some(&key.to_base64()[..8]));
    assert_eq!(status.mtu, Some(1420));
    assert_eq!(status.applied_generation, Some(3));
    let open = connected(&status).expect("a Hello opens the stream: Connected").clone();
    assert_eq!((open.status.as_str(), open.reason.as_str()), ("True", reasons::STREAM_OPEN), "{open:?}");

    events
        .send(StreamEvent::Message(node.clone(), Upstream::Ack { generation: Generation(7), result: Ok(()) }))
        .unwrap();
    events
        .send(StreamEvent::Message(
            node.clone(),
            Upstream::Ack { generation: Generation(8), result: Err("boom".into()) },
        ))
        .unwrap();
    status_until(&api, "node-s", "generation 7", |s| s.applied_generation == Some(7)).await;

    events.send(observed(&node, &[("a", Some(5)), ("b", None)])).unwrap();
    let status = status_until(&api, "node-s", "peers", |s| s.peers == Some(2)).await;
    assert_eq!(status.peers_up, Some(1), "only the peer with a recent handshake is up");
    assert_eq!(status.applied_generation, Some(7), "a failed apply does not move the generation");

    // The stream closes: Connected=False/StreamClosed, stamped with when;
    // everything else the daemon said stays.
    let before_close = Timestamp::now();
    events.send(StreamEvent::Closed(node.clone())).unwrap();
    let status = status_until(&api, "node-s", "Connected=False", |s| is_connected(s, false)).await;
    let closed = connected(&status).expect("Connected").clone();
    assert_eq!(closed.reason, reasons::STREAM_CLOSED, "{closed:?}");
    // lastTransitionTime has whole seconds on the wire.
    assert!(closed.last_transition_time.0.as_second() >= before_close.as_second(), "{closed:?}");
    assert!(closed.message.contains("closed at"), "the message says when: {}", closed.message);
    assert_eq!(status.public_key.as_deref(), Some(key.to_base64().as_str()), "the key stays");
    assert_eq!(status.peers, Some(2));

    // A restarted writer (a crash, a new leader) starts from the status
    // as the cache holds it: its first report must not erase the key.
    writer.stop(None);
    done.await.expect("the first writer stopped");
    let (writer, done) = start_writer(&cluster, &events, &cache, &handoff).await;
    events.send(observed(&node, &[("a", Some(5)), ("b", Some(9)), ("c", None)])).unwrap();
    let status = status_until(&api, "node-s", "three peers", |s| s.peers == Some(3)).await;
    assert_eq!(status.peers_up, Some(2));
    assert_eq!(status.public_key.as_deref(), Some(key.to_base64().as_str()), "the key survives a restart");
    assert_eq!(status.applied_generation, Some(7));
    assert_eq!(connected(&status), Some(&closed), "still closed, since the same time");

    // The daemon reconnects: Connected=True again, a new transition.
    events.send(hello(&node, key, 7)).unwrap();
    let status = status_until(&api, "node-s", "Connected=True", |s| is_connected(s, true)).await;
    let reopened = connected(&status).expect("Connected");
    assert_eq!(reopened.reason, reasons::STREAM_OPEN);
    assert!(reopened.last_transition_time.0 >= closed.last_transition_time.0);

    // The same report again writes nothing: the resourceVersion stays.
    let before = api.get("node-s").await.unwrap().metadata.resource_version;
    events.send(observed(&node, &[("a", Some(5)), ("b", Some(9)), ("c", None)])).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get("node-s").await.unwrap().metadata.resource_version, before);

    // The rotation scheduler's fields, merge-patched under its own field
    // manager, survive the writer's applies, even a Hello naming no staged
    // key.
    let new_key = PublicKey::from_bytes([43; 32]).to_base64();
    let rotation = serde_json::json!({ "status": {
        "stagedPublicKey": new_key, "rotation": { "phase": "Settle", "id": 5 },
    }});
    let params = PatchParams { field_manager: Some(ROTATION_FIELD_MANAGER.into()), ..PatchParams::default() };
    api.patch_status("node-s", &params, &Patch::Merge(&rotation)).await.expect("patch the rotation");
    events.send(hello(&node, key, 7)).unwrap();
    events.send(observed(&node, &[("a", Some(5))])).unwrap();
    let status = status_until(&api, "node-s", "one peer", |s| s.peers == Some(1)).await;
    assert_eq!(
        status.staged_public_key.as_deref(),
        Some(new_key.as_str()),
        "the writer leaves the staged key"
    );
    let phase = status.rotation.as_ref().and_then(|r| r.phase.as_deref());
    assert_eq!(phase, Some("Settle"), "the writer leaves the rotation");

    // The key handed over at the end of the rotation replaces the Hello's
    // in the writer's report: written at once, and kept by later writes.
    handoff.hand(&node, new_key.clone());
    status_until(&api, "node-s", "the new key", |s| s.public_key.as_deref() == Some(new_key.as_str())).await;
    events.send(observed(&node, &[("a", Some(5)), ("b", Some(5))])).unwrap();
    let status = status_until(&api, "node-s", "two peers", |s| s.peers == Some(2)).await;
    assert_eq!(status.public_key.as_deref(), Some(new_key.as_str()), "a later write keeps the new key");
    assert_eq!(status.short_key.as_deref(), Some(&new_key[..8]));

    writer.stop(None);
    done.await.expect("status writer joins");
    informer.stop(None);
    informer_done.await.expect("informer joins");
}

fn ready(status: &VpbluNodeStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == READY)
}

fn ready_is(status: &VpbluNodeStatus, value: &str, reason: &str) -> bool {
    ready(status).is_some_and(|c| c.status == value && c.reason == reason)
}

/// Like `status_until`, for waits longer than its 10 s.
async fn status_within(
    api: &Api<VpbluNode>,
    name: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&VpbluNodeStatus) -> bool,
) -> VpbluNodeStatus {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = api.get(name).await.expect("read the VpbluNode").status.filter(|s| ok(s)) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "VpbluNode {name} status never showed {what} in {within:?}: {:?}",
        api.get(name).await.map(|n| n.status)
    );
}

/// A VpbluNode informer over `api`, as the controller runs it.
async fn vpblu_node_cache(
    api: &Api<VpbluNode>,
) -> (Cache<VpbluNode>, ActorRef<vpblu_controller::informers::InformerMsg>, JoinHandle<()>) {
    let cache = Cache::<VpbluNode>::new();
    let informer_args = InformerArgs {
        api: api.clone(),
        config: watcher::Config::default(),
        cache: cache.clone(),
        recompute: RecomputeHandle::new(),
        metrics: InformerMetrics::default(),
    };
    let (informer, done) =
        Actor::spawn(None, Informer::<VpbluNode>::default(), informer_args).await.expect("informer starts");
    (cache, informer, tokio::spawn(async move { done.await.expect("informer joins") }))
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_follows_the_stream_the_generations_and_the_peers() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let api: Api<VpbluNode> = Api::all(cluster.client());
    api.create(&PostParams::default(), &VpbluNode::new("node-r", VpbluNodeSpec::default()))
        .await
        .expect("create the VpbluNode");
    let (cache, informer, informer_done) = vpblu_node_cache(&api).await;
    let (events, _) = broadcast::channel(16);
    let (writer, done) = start_writer(&cluster, &events, &cache, &KeyHandoff::new()).await;
    let node = NodeName::new("node-r").unwrap();

    events.send(hello(&node, PublicKey::from_bytes([7; 32]), 3)).expect("a subscriber listens");
    events.send(StreamEvent::Sent(node.clone(), Generation(4))).unwrap();
    events
        .send(StreamEvent::Message(node.clone(), Upstream::Ack { generation: Generation(4), result: Ok(()) }))
        .unwrap();
    events.send(observed(&node, &[("node-a", Some(5)), ("node-b", Some(20))])).unwrap();
    let status = status_until(&api, "node-r", "Ready=True", |s| {
        ready_is(s, "True", reasons::APPLIED) && s.peers == Some(2)
    })
    .await;
    assert_eq!((status.desired_generation, status.applied_generation), (Some(4), Some(4)));
    let up = ready(&status).unwrap().clone();
    assert_eq!(up.message, "generation 4 applied; 2 peers up");

    // A change the daemon does not apply: fine for a moment, Lagging after
    // the grace, with both generations named.
    events.send(StreamEvent::Sent(node.clone(), Generation(9))).unwrap();
    let status =
        status_until(&api, "node-r", "desiredGeneration 9", |s| s.desired_generation == Some(9)).await;
    assert!(ready_is(&status, "True", reasons::APPLIED), "a fresh change is not lag: {:?}", ready(&status));
    let status = status_within(&api, "node-r", Duration::from_secs(30), "Lagging", |s| {
        ready_is(s, "False", reasons::LAGGING)
    })
    .await;
    let lagging = ready(&status).unwrap();
    assert!(lagging.message.starts_with("applied 4, desired 9"), "{}", lagging.message);
    assert!(lagging.last_transition_time.0 >= up.last_transition_time.0);

    // Applied: Ready again. Then one peer's handshake goes stale: PeersDown
    // naming it with its age in minutes.
    events
        .send(StreamEvent::Message(node.clone(), Upstream::Ack { generation: Generation(9), result: Ok(()) }))
        .unwrap();
    status_until(&api, "node-r", "Ready=True again", |s| ready_is(s, "True", reasons::APPLIED)).await;
    events.send(observed(&node, &[("node-a", Some(5)), ("node-b", Some(250))])).unwrap();
    let status =
        status_until(&api, "node-r", "PeersDown", |s| ready_is(s, "False", reasons::PEERS_DOWN)).await;
    assert_eq!(ready(&status).unwrap().message, "node-b (last handshake 4m ago)");
    assert_eq!(status.peers_up, Some(1));

    // The daemon goes away: Disconnected, at once.
    events.send(observed(&node, &[("node-a", Some(5)), ("node-b", Some(5))])).unwrap();
    status_until(&api, "node-r", "Ready=True with both peers", |s| ready_is(s, "True", reasons::APPLIED))
        .await;
    events.send(StreamEvent::Closed(node.clone())).unwrap();
    let status =
        status_until(&api, "node-r", "Disconnected", |s| ready_is(s, "False", reasons::DISCONNECTED)).await;
    assert!(ready(&status).unwrap().message.contains("since"), "{:?}", ready(&status));

    writer.stop(None);
    done.await.expect("status writer joins");
    informer.stop(None);
    informer_done.await.expect("informer joins");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_ends_connected_true_for_streams_it_does_not_serve() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let api: Api<VpbluNode> = Api::all(cluster.client());
    for name in ["node-old", "node-here", "node-never"] {
        api.create(&PostParams::default(), &VpbluNode::new(name, VpbluNodeSpec::default()))
            .await
            .expect("create the VpbluNode");
    }
    // What an old leader left: Connected=True on node-old.
    let stale = serde_json::json!({
        "apiVersion": "vpblu.dev/v1alpha1", "kind": "VpbluNode",
        "status": { "conditions": [{
            "type": CONNECTED, "status": "True", "reason": reasons::STREAM_OPEN,
            "message": "the daemon's stream to the controller is open",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]},
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status("node-old", &params, &Patch::Apply(&stale))
        .await
        .expect("write the old leader's status");
    let (cache, informer, informer_done) = vpblu_node_cache(&api).await;
    let (events, _) = broadcast::channel(16);
    let grace = Duration::from_secs(2);
    let (writer, done) = start_writer_with_grace(&cluster, &events, &cache, &KeyHandoff::new(), grace).await;
    let here = NodeName::new("node-here").unwrap();
    events.send(hello(&here, PublicKey::from_bytes([8; 32]), 1)).expect("a subscriber listens");

    for name in ["node-old", "node-never"] {
        let status = status_within(&api, name, Duration::from_secs(20), "Connected=False/NoStream", |s| {
            connected(s).is_some_and(|c| c.status == "False" && c.reason == reasons::NO_STREAM)
        })
        .await;
        assert!(ready_is(&status, "False", reasons::DISCONNECTED), "{name}: {:?}", ready(&status));
    }
    let status = api.get("node-here").await.unwrap().status.expect("node-here has a status");
    assert!(is_connected(&status, true), "the node streaming to this leader stays connected: {status:?}");

    writer.stop(None);
    done.await.expect("status writer joins");
    informer.stop(None);
    informer_done.await.expect("informer joins");
}
