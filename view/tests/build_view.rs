//! The read model from objects: what each view is told, and the verdict.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use vpblu_k8s::{
    BlockPolicy, BlockPolicySpec, BlockPolicyStatus, BlockRule, RotationStatus, VpbluNode, VpbluNodeSpec,
    VpbluNodeStatus,
};
use vpblu_view::{Inputs, LeaseState, MeshView, Served, build};

const NOW: &str = "2026-12-04T12:00:00Z";
const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn ago(seconds: i64) -> Timestamp {
    now() - SignedDuration::from_secs(seconds)
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(ago(30)),
        observed_generation: None,
    }
}

fn node(name: &str, ready: bool) -> VpbluNode {
    let mut node = VpbluNode::new(name, VpbluNodeSpec::default());
    node.metadata.creation_timestamp = Some(Time(ago(3600)));
    let ready = if ready {
        cond("Ready", "True", "Applied", "generation 3 applied; 2 peers up")
    } else {
        cond("Ready", "False", "PeersDown", "peers down: node-3")
    };
    node.status = Some(VpbluNodeStatus {
        public_key: Some(KEY.into()),
        endpoint: Some("10.0.0.1:51820".into()),
        peers: Some(2),
        peers_up: Some(2),
        applied_generation: Some(3),
        desired_generation: Some(3),
        conditions: vec![ready, cond("Connected", "True", "StreamOpen", "stream open")],
        ..VpbluNodeStatus::default()
    });
    node
}

fn lease(holder: &str, renewed_ago: i64) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some("vpblu-controller".into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(ago(renewed_ago))),
            ..LeaseSpec::default()
        }),
    }
}

fn view(nodes: &[VpbluNode], lease: Option<&Lease>, blocks: &[BlockPolicy], events: &[Event]) -> MeshView {
    build(Inputs {
        now: now(),
        served: Served { by: Some("controller-1".into()), leading: false },
        lease_name: "vpblu-system/vpblu-controller".into(),
        lease,
        vpblu_nodes: nodes.iter().collect(),
        block_policies: blocks.iter().collect(),
        events: events.iter().collect(),
        ..Inputs::default()
    })
}

#[test]
fn a_ready_mesh_with_a_leader_is_healthy_and_shows_only_key_prefixes() {
    let nodes = [node("node-2", true), node("node-1", true)];
    let lease = lease("controller-0", 2);
    let view = view(&nodes, Some(&lease), &[], &[]);
    assert!(view.verdict.healthy, "{:?}", view.verdict);
    assert_eq!(view.leader.state, LeaseState::Held);
    assert_eq!(view.leader.holder.as_deref(), Some("controller-0"));
    assert_eq!(view.leader.standby, vec!["controller-1".to_owned()], "the serving standby names itself");
    let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2"], "nodes by name");
    assert_eq!(view.nodes[0].short_key.as_deref(), Some("xTIBA5rb"));
    assert_eq!(view.nodes[0].key_age_seconds, Some(3600), "never rotated: as old as the VpbluNode");
    let json = serde_json::to_string(&view).unwrap();
    assert!(!json.contains(KEY), "the whole public key is not needed and not served: {json}");
}

#[test]
fn no_leader_and_nodes_not_ready_are_problems_naming_what() {
    let nodes = [node("node-1", true), node("node-2", false)];
    let expired = lease("controller-0", 40);
    let view = view(&nodes, Some(&expired), &[], &[]);
    assert_eq!(view.leader.state, LeaseState::Expired);
    assert!(!view.verdict.healthy);
    let problems = view.verdict.problems.join("\n");
    assert!(problems.contains("no leader") && problems.contains("controller-0"), "{problems}");
    assert!(problems.contains("node node-2 not Ready (PeersDown): peers down: node-3"), "{problems}");
    assert!(!problems.contains("node-1"), "{problems}");

    let missing = view_without_lease(&nodes);
    assert_eq!(missing.leader.state, LeaseState::Missing);
    assert!(missing.verdict.problems[0].contains("does not exist"), "{:?}", missing.verdict);
}

fn view_without_lease(nodes: &[VpbluNode]) -> MeshView {
    view(nodes, None, &[], &[])
}

#[test]
fn a_policy_not_ready_is_listed_with_its_reason_and_a_rotation_shows_its_phase() {
    let mut rotating = node("node-1", true);
    if let Some(status) = rotating.status.as_mut() {
        status.rotation = Some(RotationStatus {
            phase: Some("Distribute".into()),
            phase_started_at: Some(ago(4).to_string()),
            ..RotationStatus::default()
        });
    }
    let mut block = BlockPolicy::new(
        "no-1-to-2",
        BlockPolicySpec {
            blocks: vec![BlockRule {
                from: "10.244.1.0/24".into(),
                to: "10.244.2.0/24".into(),
                bidirectional: false,
            }],
            ..BlockPolicySpec::default()
        },
    );
    block.status = Some(BlockPolicyStatus {
        observed_generation: None,
        conditions: vec![cond("Ready", "False", "Pending", "not yet applied on node-2")],
    });
    let lease = lease("controller-0", 1);
    let view = view(&[rotating], Some(&lease), &[block], &[]);
    let policy = &view.policies[0];
    assert_eq!(policy.summary, "10.244.1.0/24 -> 10.244.2.0/24");
    assert_eq!(policy.state.as_ref().map(|s| s.reason.as_str()), Some("Pending"));
    assert!(view.verdict.problems.iter().any(|p| p.contains("BlockPolicy no-1-to-2: Ready=False (Pending)")));
    assert_eq!(view.rotations[0].phase, "Distribute");
    assert!(view.rotations[0].running);
    assert_eq!(view.rotations[0].phase_seconds, Some(4));
    assert_eq!(view.nodes[0].rotation_phase.as_deref(), Some("Distribute"));
}

#[test]
fn only_vpblu_events_are_kept_newest_first() {
    let event = |name: &str, api_version: &str, age: i64| Event {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        involved_object: ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some("VpbluNode".into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        },
        reason: Some("RotationSucceeded".into()),
        last_timestamp: Some(Time(ago(age))),
        ..Event::default()
    };
    let events = [
        event("old", "vpblu.dev/v1alpha1", 50),
        event("pod", "v1", 1),
        event("new", "vpblu.dev/v1alpha1", 5),
    ];
    let lease = lease("controller-0", 1);
    let view = view(&[], Some(&lease), &[], &events);
    let objects: Vec<&str> = view.events.iter().map(|e| e.object.as_str()).collect();
    assert_eq!(objects, ["VpbluNode/new", "VpbluNode/old"]);
    assert_eq!(view.events[0].age_seconds, Some(5));
    assert!(view.verdict.problems.iter().any(|p| p.contains("no VpbluNodes")));
}

#[test]
fn links_of_a_node_that_left_are_not_shown() {
    let link = |from: &str, to: &str| vpblu_view::LinkView {
        from: from.into(),
        to: to.into(),
        state: vpblu_view::LinkState::Up,
        ..vpblu_view::LinkView::default()
    };
    let nodes = [node("node-1", true), node("node-2", true)];
    let view = build(Inputs {
        now: now(),
        vpblu_nodes: nodes.iter().collect(),
        // node-3's Node and VpbluNode are gone; its daemon still reports.
        links: vec![link("node-1", "node-2"), link("node-3", "node-1"), link("node-2", "node-3")],
        ..Inputs::default()
    });
    let shown: Vec<(&str, &str)> = view.links.iter().map(|l| (l.from.as_str(), l.to.as_str())).collect();
    assert_eq!(shown, [("node-1", "node-2")]);
}
