//! [`build`]: Kubernetes objects (and what the controller adds) in, one
//! [`MeshView`] out. Pure: the clock is an argument.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use vpblu_k8s::conditions::{CONNECTED, READY};
use vpblu_k8s::{BlockPolicy, IDLE_PHASE, RotationPolicy, RoutePolicy, TunnelPolicy, VpbluNode};

use crate::model::{
    ConditionView, DaemonSeen, EventView, LeaderView, LeaseState, LinkView, MeshView, NodeView, RotationStep,
    RotationView, Served,
};
use crate::{Verdict, policies};

/// Most Events a view carries (the newest).
const MAX_EVENTS: usize = 30;

/// What a view is made of. Objects are borrowed: the controller passes its
/// caches' objects, `vpblu status` what it listed.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// The clock.
    pub now: Timestamp,
    /// Who makes the view.
    pub served: Served,
    /// `namespace/name` of the leader Lease.
    pub lease_name: String,
    /// The Lease, if it exists.
    pub lease: Option<&'a Lease>,
    /// Every VpbluNode.
    pub vpblu_nodes: Vec<&'a VpbluNode>,
    /// Every TunnelPolicy.
    pub tunnel_policies: Vec<&'a TunnelPolicy>,
    /// Every RoutePolicy.
    pub route_policies: Vec<&'a RoutePolicy>,
    /// Every BlockPolicy.
    pub block_policies: Vec<&'a BlockPolicy>,
    /// Every RotationPolicy.
    pub rotation_policies: Vec<&'a RotationPolicy>,
    /// Events; only those about vpblu objects are kept.
    pub events: Vec<&'a Event>,
    /// The peer matrix, when the daemons' reports are known.
    pub links: Vec<LinkView>,
    /// Daemons seen on their streams, by node name.
    pub daemons: BTreeMap<String, DaemonSeen>,
    /// Rotation phase changes seen.
    pub rotation_history: Vec<RotationStep>,
    /// What could not be read.
    pub notes: Vec<String>,
}

/// Makes the view.
pub fn build(inputs: Inputs<'_>) -> MeshView {
    let now = inputs.now;
    let mut nodes: Vec<NodeView> =
        inputs.vpblu_nodes.iter().map(|n| node_view(n, now, inputs.daemons.get(&name_of(n)))).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rotations: Vec<RotationView> =
        inputs.vpblu_nodes.iter().filter_map(|n| rotation_view(n, now)).collect();
    rotations.sort_by(|a, b| a.node.cmp(&b.node));
    let mut policies = Vec::new();
    policies.extend(inputs.tunnel_policies.iter().map(|p| policies::tunnel(p, now)));
    policies.extend(inputs.route_policies.iter().map(|p| policies::route(p, now)));
    policies.extend(inputs.block_policies.iter().map(|p| policies::block(p, now)));
    policies.extend(inputs.rotation_policies.iter().map(|p| policies::rotation(p, now)));
    policies.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    let mut leader = leader_view(&inputs.lease_name, inputs.lease, now);
    if let Some(me) = inputs.served.by.as_ref().filter(|_| !inputs.served.leading) {
        leader.standby.push(me.clone());
    }
    let mut links = inputs.links;
    // A node that left the cluster (its VpbluNode is gone) may still have a
    // daemon reporting, or peers that still hold it until they converge:
    // the matrix shows the cluster's nodes only.
    let known = |name: &str| nodes.iter().any(|n| n.name == name);
    links.retain(|l| known(&l.from) && known(&l.to));
    links.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    // A daemon reports keys and counters; where the peer is comes from its VpbluNode.
    for link in links.iter_mut().filter(|l| l.endpoint.is_none()) {
        link.endpoint = nodes.iter().find(|n| n.name == link.to).and_then(|n| n.endpoint.clone());
    }
    let verdict = Verdict::judge(&leader, &nodes, &policies, &rotations);
    MeshView {
        generated_at: now.to_string(),
        served: inputs.served,
        leader,
        nodes,
        links,
        policies,
        rotations,
        rotation_history: inputs.rotation_history,
        events: events(&inputs.events, now),
        notes: inputs.notes,
        verdict,
    }
}

fn name_of(node: &VpbluNode) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// Whole seconds from `then` to `now` (0 when `then` is ahead).
pub(crate) fn seconds_since(then: Timestamp, now: Timestamp) -> i64 {
    now.duration_since(then).as_secs().max(0)
}

fn seconds_since_text(then: Option<&str>, now: Timestamp) -> Option<i64> {
    then.and_then(|t| t.parse::<Timestamp>().ok()).map(|t| seconds_since(t, now))
}

/// A condition of `conditions` by type, as the views show it.
pub(crate) fn condition(conditions: &[Condition], type_: &str, now: Timestamp) -> Option<ConditionView> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| condition_view(c, now))
}

pub(crate) fn condition_view(c: &Condition, now: Timestamp) -> ConditionView {
    ConditionView {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        since_seconds: Some(seconds_since(c.last_transition_time.0, now)),
    }
}

fn node_view(node: &VpbluNode, now: Timestamp, daemon: Option<&DaemonSeen>) -> NodeView {
    let status = node.status.clone().unwrap_or_default();
    let rotation = status.rotation.clone().unwrap_or_default();
    // A key is as old as its last rotation; never rotated, as old as the node.
    let key_age_seconds = seconds_since_text(rotation.last_rotated_at.as_deref(), now)
        .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| seconds_since(t.0, now)))
        .filter(|_| status.public_key.is_some());
    NodeView {
        name: name_of(node),
        short_key: status.public_key.as_deref().map(vpblu_k8s::vpblu_node::short_key),
        key_age_seconds,
        staged_short_key: status.staged_public_key.as_deref().map(vpblu_k8s::vpblu_node::short_key),
        endpoint: status.endpoint.clone(),
        backend: status.backend.map(|b| match b {
            vpblu_k8s::WireGuardBackend::Kernel => "kernel".to_owned(),
            vpblu_k8s::WireGuardBackend::Userspace => "userspace".to_owned(),
        }),
        mtu: status.mtu,
        version: daemon.map(|d| d.version.clone()),
        desired_generation: status.desired_generation,
        applied_generation: status.applied_generation,
        peers: status.peers,
        peers_up: status.peers_up,
        last_handshake_seconds: status.last_handshake_seconds,
        ready: condition(&status.conditions, READY, now),
        connected: condition(&status.conditions, CONNECTED, now),
        rotation_phase: rotation.phase.filter(|p| p != IDLE_PHASE),
    }
}

fn rotation_view(node: &VpbluNode, now: Timestamp) -> Option<RotationView> {
    let rotation = node.status.as_ref()?.rotation.clone()?;
    let phase = rotation.phase.unwrap_or_else(|| IDLE_PHASE.to_owned());
    let running = phase != IDLE_PHASE;
    Some(RotationView {
        node: name_of(node),
        running,
        policy: rotation.policy,
        started_at: rotation.started_at,
        phase_seconds: seconds_since_text(rotation.phase_started_at.as_deref(), now).filter(|_| running),
        message: rotation.rollback_reason.or(rotation.message),
        last_result: rotation.last_result,
        last_rotated_at: rotation.last_rotated_at,
        phase,
    })
}

fn leader_view(lease_name: &str, lease: Option<&Lease>, now: Timestamp) -> LeaderView {
    let mut view = LeaderView { lease: lease_name.to_owned(), ..LeaderView::default() };
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return view;
    };
    view.holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    view.duration_seconds = spec.lease_duration_seconds.map(i64::from);
    view.renewed_seconds_ago = spec.renew_time.as_ref().map(|t| seconds_since(t.0, now));
    view.state = match (&view.holder, view.renewed_seconds_ago, view.duration_seconds) {
        (None, _, _) => LeaseState::Released,
        (Some(_), Some(ago), Some(duration)) if ago <= duration => LeaseState::Held,
        (Some(_), _, _) => LeaseState::Expired,
    };
    view
}

/// Whether `event` is about vpblu: regarding a vpblu.dev object, or
/// reported by the controller (stream refusals regard its own Pod).
fn is_vpblu(event: &Event) -> bool {
    let about_vpblu =
        event.involved_object.api_version.as_deref().is_some_and(|v| v.starts_with("vpblu.dev/"));
    let from_controller =
        [event.reporting_component.as_deref(), event.source.as_ref().and_then(|s| s.component.as_deref())]
            .into_iter()
            .flatten()
            .any(|c| c.starts_with("vpblu"));
    about_vpblu || from_controller
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn events(events: &[&Event], now: Timestamp) -> Vec<EventView> {
    let mut kept: Vec<(Option<Timestamp>, &Event)> =
        events.iter().filter(|e| is_vpblu(e)).map(|e| (last_seen(e), *e)).collect();
    kept.sort_by_key(|e| std::cmp::Reverse(e.0));
    kept.into_iter()
        .take(MAX_EVENTS)
        .map(|(at, e)| EventView {
            age_seconds: at.map(|t| seconds_since(t, now)),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or("?"),
                e.involved_object.name.as_deref().unwrap_or("?")
            ),
            message: e.message.clone().unwrap_or_default(),
            count: e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1),
        })
        .collect()
}
