//! One [`PolicyView`] per policy of each kind: what it asks for in a few
//! words, its conditions, and what is wrong with it, if anything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use vpblu_k8s::conditions::{ACTIVE, CONFLICT, INVALID, READY};
use vpblu_k8s::{BlockPolicy, NodeActionKind, RotationPolicy, RoutePolicy, TunnelMode, TunnelPolicy};

use crate::build::{condition, condition_view};
use crate::model::PolicyView;

/// A TunnelPolicy: its state is `Active` (only one is in effect).
pub(crate) fn tunnel(p: &TunnelPolicy, now: Timestamp) -> PolicyView {
    let status = p.status.clone().unwrap_or_default();
    let mode = match p.spec.mode {
        TunnelMode::FullMesh => "FullMesh".to_owned(),
        TunnelMode::Explicit => format!("Explicit, {} pairs", p.spec.peers.len()),
    };
    let summary = format!("{mode}, port {}", p.spec.listen_port);
    view("TunnelPolicy", &p.metadata, summary, ACTIVE, status.observed_generation, &status.conditions, now)
}

/// A RoutePolicy.
pub(crate) fn route(p: &RoutePolicy, now: Timestamp) -> PolicyView {
    let status = p.status.clone().unwrap_or_default();
    let routes: Vec<String> =
        p.spec.routes.iter().take(3).map(|r| format!("{} via {}", r.cidr, r.via)).collect();
    let more = p.spec.routes.len().saturating_sub(routes.len());
    let summary = if more > 0 { format!("{} (+{more} more)", routes.join(", ")) } else { routes.join(", ") };
    view("RoutePolicy", &p.metadata, summary, READY, status.observed_generation, &status.conditions, now)
}

/// A BlockPolicy.
pub(crate) fn block(p: &BlockPolicy, now: Timestamp) -> PolicyView {
    let status = p.status.clone().unwrap_or_default();
    let mut parts: Vec<String> = p
        .spec
        .blocks
        .iter()
        .take(3)
        .map(|b| format!("{} {} {}", b.from, if b.bidirectional { "<->" } else { "->" }, b.to))
        .collect();
    if p.spec.blocks.len() > 3 {
        parts.push(format!("+{} more blocks", p.spec.blocks.len() - 3));
    }
    parts.extend(p.spec.nodes.iter().map(|n| {
        let action = match n.action {
            NodeActionKind::Isolate => "isolate",
            NodeActionKind::Drain => "drain",
        };
        format!("{action} {}", n.node)
    }));
    view(
        "BlockPolicy",
        &p.metadata,
        parts.join(", "),
        READY,
        status.observed_generation,
        &status.conditions,
        now,
    )
}

/// A RotationPolicy.
pub(crate) fn rotation(p: &RotationPolicy, now: Timestamp) -> PolicyView {
    let status = p.status.clone().unwrap_or_default();
    let mut summary = format!("schedule \"{}\"", p.spec.schedule);
    if p.spec.paused {
        summary.push_str(", paused");
    }
    if let Some(node) = &status.current_node {
        summary.push_str(&format!(", rotating {node}"));
    }
    view("RotationPolicy", &p.metadata, summary, READY, status.observed_generation, &status.conditions, now)
}

fn view(
    kind: &str,
    meta: &ObjectMeta,
    summary: String,
    state_type: &str,
    observed_generation: Option<i64>,
    conditions: &[Condition],
    now: Timestamp,
) -> PolicyView {
    let outdated = match (meta.generation, observed_generation) {
        (Some(want), Some(seen)) => seen < want,
        (Some(_), None) => true,
        (None, _) => false,
    };
    PolicyView {
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        summary,
        state: condition(conditions, state_type, now),
        conditions: conditions.iter().map(|c| condition_view(c, now)).collect(),
        outdated,
        problem: problem(conditions, state_type),
    }
}

/// What is wrong: an invalid spec, a conflict, or (for kinds with `Ready`)
/// not Ready. A superseded TunnelPolicy is not a problem: only one is ever
/// in effect, by design.
fn problem(conditions: &[Condition], state_type: &str) -> Option<String> {
    let is = |type_: &str, status: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == status);
    let said = |c: &Condition| format!("{}={} ({}): {}", c.type_, c.status, c.reason, c.message);
    if let Some(c) = is(INVALID, "True").or_else(|| is(CONFLICT, "True")) {
        return Some(said(c));
    }
    if state_type == READY
        && let Some(c) = conditions.iter().find(|c| c.type_ == READY && c.status != "True")
    {
        return Some(said(c));
    }
    None
}
