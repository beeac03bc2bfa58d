//! Key rotation, controller side, against the real API server and the real
//! controller binary, with daemon stream clients (recording data planes)
//! that answer each rotation phase their desired state holds with a
//! RotationReport, as a daemon does once its lanes are ready:
//!
//! - `vpblu.dev/rotate-now` on a RotationPolicy rotates its node through
//!   every phase: the desired states carry the lanes and then the new key,
//!   and the status ends `Succeeded` with the new key in `publicKey`;
//! - a daemon reporting an error at Activate rolls the rotation back: the
//!   status says why and the old key stays;
//! - a schedule or selector the controller cannot use, a selector matching
//!   no node and two policies selecting one node become conditions (and
//!   Warning Events), and the controller keeps serving;
//! - the leader killed mid-rotation: the standby takes over and finishes
//!   the same rotation from the status;
//! - a rotation due on a node whose daemon has no stream to the leader
//!   waits for it, then runs.

mod stream_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::task::JoinHandle;
use vpblu_daemon::stream::StreamClientMsg;
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::free_addr;
use vpblu_e2e::stream_pki::StreamPki;
use vpblu_k8s::{
    BlockPolicy, BlockPolicySpec, BlockRule, ROTATE_NOW_ANNOTATION, RotationPolicy, RotationPolicySpec,
    RotationStatus, VpbluNode,
};
use vpblu_messages::{NodeName, PublicKey, RotationPhase, RotationReport};

use stream_support::controller_process::ControllerProcess;
use stream_support::{Daemon, deployed_daemon, three_nodes};

/// The controllers' log filter: the scheduler's steps in detail.
const LOG: &str = "info,vpblu_controller::rotation=debug";
/// A change crosses API server, informer, recompute, stream and back.
const CONVERGE: Duration = Duration::from_secs(30);

/// Whether no daemon holds a rotation any more and every peer of node-1
/// holds it under `key`.
fn settled(daemons: &[Daemon], key: PublicKey) -> bool {
    let node_1 = NodeName::new("node-1").unwrap();
    daemons.iter().all(|d| {
        let state = d.plane.state();
        state.rotation.is_none()
            && (d.node == node_1 || state.peers.get(&node_1).is_some_and(|p| p.public_key == key))
    })
}

/// The key node `i`'s daemon stages for rotation `id`: unique per rotation.
fn staged_key(id: u64) -> PublicKey {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
    bytes[31] = 0xAA;
    PublicKey::from_bytes(bytes)
}

/// Answers, every 200 ms, the rotation phase `daemon`'s desired state holds
/// with a report (Ok, or an error in the phase `fail_at` names), the way a
/// daemon reports once its part is done; repeated, so a daemon that
/// reconnected to a new leader says it again.
fn answer_rotations(daemon: &Daemon, fail_at: Arc<Mutex<Option<RotationPhase>>>) -> JoinHandle<()> {
    let (node, plane, client) = (daemon.node.clone(), daemon.plane.clone(), daemon.client.clone());
    tokio::spawn(async move {
        loop {
            if let Some(rotation) = plane.state().rotation {
                let failing = *fail_at.lock().unwrap_or_else(PoisonError::into_inner) == Some(rotation.phase);
                let result = if failing {
                    Err(format!("lane session of {node} never handshook (test)"))
                } else {
                    Ok(())
                };
                let staged = (rotation.rotates(&node) && rotation.phase == RotationPhase::Prepare)
                    .then(|| staged_key(rotation.id));
                let report = RotationReport {
                    rotation_id: rotation.id,
                    phase: rotation.phase,
                    result,
                    staged_public_key: staged,
                };
                if client.cast(StreamClientMsg::RotationReport(report)).is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// A policy rotating only `node` (by its hostname label), with a 1 s
/// overlap unless `overlap` says otherwise, run now with `token`.
fn policy_for(name: &str, node: &str, overlap: i32, token: &str) -> RotationPolicy {
    let mut policy = RotationPolicy::new(
        name,
        RotationPolicySpec {
            overlap_seconds: overlap,
            phase_timeout_seconds: 10,
            node_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("kubernetes.io/hostname".to_owned(), node.to_owned())])),
                ..LabelSelector::default()
            }),
            ..RotationPolicySpec::default()
        },
    );
    policy.metadata.annotations =
        Some(BTreeMap::from([(ROTATE_NOW_ANNOTATION.to_owned(), token.to_owned())]));
    policy
}

async fn rotation_of(api: &Api<VpbluNode>, node: &str) -> (RotationStatus, Option<String>, Option<String>) {
    let object = api.get(node).await.expect("read the VpbluNode");
    let status = object.status.unwrap_or_default();
    (status.rotation.unwrap_or_default(), status.public_key, status.staged_public_key)
}

/// What was seen while following one rotation of `node` to its end.
#[derive(Debug, Default)]
struct Followed {
    /// Phases in the order the status showed them (each once).
    phases: Vec<String>,
    /// The ids the status showed while it ran (one, unless it restarted).
    ids: Vec<i64>,
    /// A peer's lane held the rotating node under its new key, at its lane port.
    peer_lane_seen: bool,
    /// A peer's main entry for the rotating node carried the new key
    /// before the rotation ended.
    peer_main_renewed: bool,
    /// The final status.
    last: RotationStatus,
    public_key: Option<String>,
    staged: Option<String>,
}

/// Follows `node`'s rotation until it is Idle again (after having run),
/// watching `peer`'s data plane too; `on_phase` is called with each new phase.
async fn follow(api: &Api<VpbluNode>, node: &str, peer: &Daemon, mut on_phase: impl FnMut(&str)) -> Followed {
    let start = Instant::now();
    let mut seen = Followed::default();
    let rotating = NodeName::new(node).expect("valid");
    loop {
        assert!(start.elapsed() < Duration::from_secs(90), "rotation of {node} never ended: {seen:?}");
        let (rotation, public_key, staged) = rotation_of(api, node).await;
        let phase = rotation.phase.clone().unwrap_or_default();
        if !phase.is_empty() && seen.phases.last() != Some(&phase) {
            on_phase(&phase);
            seen.phases.push(phase.clone());
        }
        if phase != "Idle"
            && let Some(id) = rotation.id
            && seen.ids.last() != Some(&id)
        {
            seen.ids.push(id);
        }
        let state = peer.plane.state();
        if let Some(held) = state.rotation.as_ref().filter(|r| r.node == rotating)
            && let (Some(new), Some(lane)) = (held.new_public_key, held.lane.get(&rotating))
        {
            seen.peer_lane_seen |= lane.public_key == new && lane.endpoint.port() == 51821;
            seen.peer_main_renewed |= state.peers.get(&rotating).is_some_and(|p| p.public_key == new);
        }
        if phase == "Idle" && seen.phases.len() > 1 {
            seen.last = rotation;
            seen.public_key = public_key;
            seen.staged = staged;
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// node-1..3's daemons, each answering its rotations, once they hold the
/// full mesh.
/// A stream PKI, a stream address and controller-0 started on them.
fn first_replica(cluster: &TestCluster) -> (Arc<StreamPki>, String, ControllerProcess) {
    let pki = Arc::new(StreamPki::new());
    let grpc = free_addr().to_string();
    let controller =
        tokio::task::block_in_place(|| ControllerProcess::start(cluster, "controller-0", &grpc, &pki, LOG));
    (pki, grpc, controller)
}

async fn answering_daemons(
    cluster: &TestCluster,
    pki: &Arc<StreamPki>,
    grpc: &str,
) -> (Vec<Daemon>, Vec<JoinHandle<()>>) {
    let mut daemons = Vec::new();
    let mut answerers = Vec::new();
    for i in 1..=3 {
        let daemon = deployed_daemon(cluster, pki, grpc, i).await;
        answerers.push(answer_rotations(&daemon, Arc::new(Mutex::new(None))));
        daemons.push(daemon);
    }
    full_mesh(&daemons).await;
    (daemons, answerers)
}

async fn converge(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < CONVERGE, "timed out after {CONVERGE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn full_mesh(daemons: &[Daemon]) {
    converge("a full mesh", async || {
        daemons.iter().all(|d| d.plane.state().peers.len() == daemons.len() - 1)
    })
    .await;
}

/// The Events regarding `name` with `reason`.
async fn events(cluster: &TestCluster, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(cluster.client(), "default");
    let list = api.list(&Default::default()).await.expect("list Events");
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

async fn wait_event(cluster: &TestCluster, name: &str, reason: &str) -> Event {
    let start = Instant::now();
    loop {
        if let Some(event) = events(cluster, name, reason).await.into_iter().next() {
            return event;
        }
        assert!(start.elapsed() < CONVERGE, "no {reason} Event regarding {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn condition(api: &Api<RotationPolicy>, name: &str, type_: &str, reason: &str) -> Condition {
    let start = Instant::now();
    loop {
        let policy = api.get(name).await.expect("read the RotationPolicy");
        let found =
            policy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_).cloned());
        if let Some(c) = found.as_ref().filter(|c| c.reason == reason) {
            return c.clone();
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{name}: no {type_} condition with reason {reason}, last {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rotate_now(api: &Api<RotationPolicy>, name: &str, token: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { ROTATE_NOW_ANNOTATION: token } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate the policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_now_rotates_a_node_and_an_error_at_activate_rolls_back() {
    let cluster = three_nodes().await;
    let (pki, grpc, _controller) = first_replica(&cluster);
    let mut daemons = Vec::new();
    let mut failing = Vec::new();
    let mut answerers = Vec::new();
    for i in 1..=3 {
        let daemon = deployed_daemon(&cluster, &pki, &grpc, i).await;
        let fail_at = Arc::new(Mutex::new(None));
        answerers.push(answer_rotations(&daemon, Arc::clone(&fail_at)));
        failing.push(fail_at);
        daemons.push(daemon);
    }
    full_mesh(&daemons).await;
    let nodes: Api<VpbluNode> = Api::all(cluster.client());
    let policies: Api<RotationPolicy> = Api::all(cluster.client());

    // (a) rotate-now on the policy: node-1 walks every phase.
    let started = Instant::now();
    policies
        .create(&PostParams::default(), &policy_for("rotate-node-1", "node-1", 1, "first"))
        .await
        .expect("create the RotationPolicy");
    let first = follow(&nodes, "node-1", &daemons[1], |_| {}).await;
    println!("rotation of node-1 took {:.2?}: {:?}", started.elapsed(), first.phases);
    assert_eq!(first.phases, ["Prepare", "Distribute", "Activate", "Retire", "Settle", "Idle"], "{first:?}");
    assert_eq!(first.last.last_result.as_deref(), Some("Succeeded"), "{first:?}");
    assert_eq!(first.ids.len(), 1, "{first:?}");
    let id = u64::try_from(first.ids[0]).expect("a positive id");
    let new_key = staged_key(id).to_base64();
    assert_eq!(first.public_key.as_deref(), Some(new_key.as_str()), "the new key is published");
    assert_eq!(first.staged, None, "no staged key once done");
    assert!(first.last.last_rotated_at.is_some() && first.last.started_at.is_some(), "{first:?}");
    assert!(first.peer_lane_seen, "node-2's lane held node-1 under its new key at port 51821");
    assert!(first.peer_main_renewed, "node-2's main entry for node-1 took the new key before the end");
    // Every daemon ends with the new key for node-1 and no rotation.
    let new = staged_key(id);
    converge("node-1's new key everywhere, the rotation gone", async || settled(&daemons, new)).await;
    let policy = policies.get("rotate-node-1").await.expect("read the policy");
    let status = policy.status.expect("the policy has a status");
    assert_eq!(status.handled_rotate_now.as_deref(), Some("first"));
    assert!(status.last_schedule_time.is_some() && status.next_schedule_time.is_some(), "{status:?}");
    condition(&policies, "rotate-node-1", "Rotating", "Idle").await;
    let ready = condition(&policies, "rotate-node-1", "Ready", "Scheduled").await;
    assert!(ready.message.contains("node-1"), "{ready:?}");
    wait_event(&cluster, "node-1", "RotationStarted").await;
    let succeeded = wait_event(&cluster, "node-1", "RotationSucceeded").await;
    assert_eq!(succeeded.type_.as_deref(), Some("Normal"));

    // (b) node-2 fails its part of Activate: the rotation rolls back, the
    // status says who and why, and the key from (a) stays.
    *failing[1].lock().unwrap_or_else(PoisonError::into_inner) = Some(RotationPhase::Activate);
    rotate_now(&policies, "rotate-node-1", "second").await;
    let second = follow(&nodes, "node-1", &daemons[1], |_| {}).await;
    println!("second rotation: {:?}, {:?}", second.phases, second.last.last_result);
    assert_eq!(second.phases.first().map(String::as_str), Some("Idle"), "starts from the first one's end");
    assert!(second.phases.contains(&"RollingBack".to_owned()), "{second:?}");
    assert!(!second.phases.iter().any(|p| p == "Retire"), "never past Activate: {second:?}");
    let result = second.last.last_result.clone().unwrap_or_default();
    assert!(result.starts_with("RolledBack: "), "{result}");
    assert!(
        result.contains("node-2") && result.contains("never handshook"),
        "the reason names who and why: {result}"
    );
    assert_eq!(second.public_key.as_deref(), Some(new_key.as_str()), "the old key stays");
    assert_eq!(second.staged, None);
    assert_eq!(second.last.last_rotated_at, first.last.last_rotated_at, "no new key");
    converge("the rolled-back rotation gone from every daemon, old key in place", async || {
        settled(&daemons, new)
    })
    .await;
    let rolled_back = wait_event(&cluster, "node-1", "RotationRolledBack").await;
    assert_eq!(rolled_back.type_.as_deref(), Some("Warning"));
    assert!(rolled_back.note.as_deref().unwrap_or_default().contains("never handshook"), "{rolled_back:?}");

    for answerer in answerers {
        answerer.abort();
    }
    for daemon in daemons {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_waits_for_its_nodes_daemon_to_reach_the_leader() {
    let cluster = three_nodes().await;
    let (pki, grpc, _controller) = first_replica(&cluster);
    let (mut daemons, mut answerers) = answering_daemons(&cluster, &pki, &grpc).await;
    let nodes: Api<VpbluNode> = Api::all(cluster.client());
    let policies: Api<RotationPolicy> = Api::all(cluster.client());

    // node-1's daemon is away (as after a failover, before its reconnects
    // find the new leader): its key and desired state are still there, but
    // a rotation started now could only time out and roll back.
    answerers.remove(0).abort();
    daemons.remove(0).stop().await;
    policies
        .create(&PostParams::default(), &policy_for("rotate-node-1", "node-1", 1, "while-away"))
        .await
        .expect("create the RotationPolicy");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (rotation, _, _) = rotation_of(&nodes, "node-1").await;
    assert_eq!(rotation.id, None, "no rotation starts while node-1's daemon has no stream: {rotation:?}");
    assert!(events(&cluster, "node-1", "RotationStarted").await.is_empty());

    // It comes back: the rotation starts and succeeds.
    let node1 = deployed_daemon(&cluster, &pki, &grpc, 1).await;
    answerers.push(answer_rotations(&node1, Arc::new(Mutex::new(None))));
    let followed = follow(&nodes, "node-1", &daemons[0], |_| {}).await;
    assert_eq!(followed.last.last_result.as_deref(), Some("Succeeded"), "{followed:?}");
    assert_eq!(followed.ids.len(), 1, "one rotation, started once the daemon was back: {followed:?}");

    for answerer in answerers {
        answerer.abort();
    }
    node1.stop().await;
    for daemon in daemons {
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_the_controller_cannot_use_become_conditions_and_it_keeps_serving() {
    let cluster = three_nodes().await;
    let (pki, grpc, _controller) = first_replica(&cluster);
    let daemon = deployed_daemon(&cluster, &pki, &grpc, 1).await;
    let policies: Api<RotationPolicy> = Api::all(cluster.client());
    let create = async |name: &str, schedule: &str, selector: Option<LabelSelector>| {
        let spec = RotationPolicySpec {
            schedule: schedule.into(),
            node_selector: selector,
            ..RotationPolicySpec::default()
        };
        policies
            .create(&PostParams::default(), &RotationPolicy::new(name, spec))
            .await
            .expect("the API server accepts it");
    };
    let hostname = |node: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([("kubernetes.io/hostname".to_owned(), node.to_owned())])),
        ..LabelSelector::default()
    };
    // Six fields, so the API server takes it; hour 25 does not parse.
    create("bad-cron", "0 0 25 * * *", None).await;
    create(
        "bad-selector",
        "@weekly",
        Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Near".into(),
                values: Some(vec!["a".into()]),
            }]),
            ..LabelSelector::default()
        }),
    )
    .await;
    create("no-nodes", "@weekly", Some(hostname("node-99"))).await;
    create("a-all", "@weekly", None).await;
    create("b-node-2", "@weekly", Some(hostname("node-2"))).await;

    let invalid = condition(&policies, "bad-cron", "Invalid", "InvalidSchedule").await;
    assert_eq!(invalid.status, "True");
    assert!(
        invalid.message.contains("\"0 0 25 * * *\"") && invalid.message.contains("sec min hour"),
        "{invalid:?}"
    );
    let ready = condition(&policies, "bad-cron", "Ready", "InvalidSchedule").await;
    assert_eq!(ready.status, "False");
    let warning = wait_event(&cluster, "bad-cron", "InvalidSchedule").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let bad = policies.get("bad-cron").await.expect("read bad-cron").status.expect("a status");
    assert_eq!(bad.next_schedule_time, None, "an invalid schedule has no next time");

    let selector = condition(&policies, "bad-selector", "Invalid", "InvalidSelector").await;
    assert!(selector.message.contains("Near") && selector.message.contains("zone"), "{selector:?}");

    let nothing = condition(&policies, "no-nodes", "Ready", "NoNodes").await;
    assert_eq!(nothing.status, "True");
    assert!(nothing.message.contains("matches no node"), "{nothing:?}");

    let conflict = condition(&policies, "b-node-2", "Conflict", "OverlappingSelector").await;
    assert_eq!(conflict.status, "True");
    assert!(conflict.message.contains("node-2") && conflict.message.contains("\"a-all\""), "{conflict:?}");
    let owner = condition(&policies, "a-all", "Conflict", "NoConflict").await;
    assert_eq!(owner.status, "False");
    let ready = condition(&policies, "a-all", "Ready", "Scheduled").await;
    assert!(ready.message.contains("3 node(s)"), "{ready:?}");
    let a_all = policies.get("a-all").await.expect("read a-all").status.expect("a status");
    assert!(a_all.next_schedule_time.is_some() && a_all.last_schedule_time.is_none(), "{a_all:?}");
    wait_event(&cluster, "b-node-2", "OverlappingSelector").await;

    // The controller still serves: a BlockPolicy reaches node-1's daemon.
    let blocks: Api<BlockPolicy> = Api::all(cluster.client());
    let block = BlockPolicy::new(
        "one-to-two",
        BlockPolicySpec {
            blocks: vec![BlockRule {
                from: "10.244.1.0/24".into(),
                to: "10.244.2.0/24".into(),
                bidirectional: false,
            }],
            ..BlockPolicySpec::default()
        },
    );
    blocks.create(&PostParams::default(), &block).await.expect("create the BlockPolicy");
    converge("the block on node-1", async || daemon.plane.state().blocks.len() == 1).await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_finishes_the_rotation_the_old_one_started() {
    let cluster = three_nodes().await;
    let (pki, grpc, first) = first_replica(&cluster);
    let (daemons, answerers) = answering_daemons(&cluster, &pki, &grpc).await;
    // The standby: same stream address (it listens only once it leads).
    let _second =
        tokio::task::block_in_place(|| ControllerProcess::start(&cluster, "controller-1", &grpc, &pki, LOG));
    let nodes: Api<VpbluNode> = Api::all(cluster.client());
    let policies: Api<RotationPolicy> = Api::all(cluster.client());
    // A long overlap: the leader dies while traffic rides the lanes.
    policies
        .create(&PostParams::default(), &policy_for("rotate-node-3", "node-3", 8, "now"))
        .await
        .expect("create the RotationPolicy");
    let mut first = Some(first);
    let mut killed = None;
    let followed = follow(&nodes, "node-3", &daemons[0], |phase| {
        if phase == "Activate"
            && let Some(leader) = first.take()
        {
            drop(leader);
            killed = Some(Instant::now());
        }
    })
    .await;
    let killed = killed.expect("the leader was killed during Activate");
    println!("after the kill the new leader finished in {:.2?}: {:?}", killed.elapsed(), followed.phases);
    assert_eq!(
        followed.phases,
        ["Prepare", "Distribute", "Activate", "Retire", "Settle", "Idle"],
        "{followed:?}"
    );
    assert_eq!(followed.last.last_result.as_deref(), Some("Succeeded"), "{followed:?}");
    assert_eq!(followed.ids.len(), 1, "the same rotation, resumed rather than started again: {followed:?}");
    let id = u64::try_from(followed.ids[0]).expect("positive");
    assert_eq!(followed.last.id, Some(followed.ids[0]));
    assert_eq!(followed.public_key, Some(staged_key(id).to_base64()));
    let new = staged_key(id);
    converge("node-3's new key everywhere", async || {
        daemons[..2].iter().all(|d| {
            let state = d.plane.state();
            state.rotation.is_none()
                && state.peers.get(&NodeName::new("node-3").unwrap()).is_some_and(|p| p.public_key == new)
        })
    })
    .await;
    for answerer in answerers {
        answerer.abort();
    }
    for daemon in daemons {
        daemon.stop().await;
    }
}
