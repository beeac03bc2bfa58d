//! The human form of `vpblu status`: a summary, a per-node table, the
//! policies that are not Ready, rotations in progress, and the problems.

use std::fmt::Write as _;

use vpblu_view::{LeaseState, MeshView, NodeView};

/// The whole report as text.
pub fn render(view: &MeshView) -> String {
    let mut out = String::new();
    summary(&mut out, view);
    out.push('\n');
    nodes(&mut out, &view.nodes);
    let troubled: Vec<_> = view.policies.iter().filter(|p| p.problem.is_some()).collect();
    if !troubled.is_empty() {
        out.push_str("\nPolicies not Ready:\n");
        for policy in troubled {
            let problem = policy.problem.as_deref().unwrap_or_default();
            let _ = writeln!(out, "  {} {}: {problem}", policy.kind, policy.name);
        }
    }
    let running: Vec<_> = view.rotations.iter().filter(|r| r.running).collect();
    if !running.is_empty() {
        out.push_str("\nRotation in progress:\n");
        for r in running {
            let _ = writeln!(
                out,
                "  {}: {} for {} s{}{}",
                r.node,
                r.phase,
                r.phase_seconds.unwrap_or_default(),
                r.policy.as_deref().map(|p| format!(" (RotationPolicy {p})")).unwrap_or_default(),
                r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
            );
        }
    }
    for note in &view.notes {
        let _ = writeln!(out, "\nnote: {note}");
    }
    if !view.verdict.problems.is_empty() {
        out.push_str("\nProblems:\n");
        for problem in &view.verdict.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

fn summary(out: &mut String, view: &MeshView) {
    let leader = &view.leader;
    let lease = match leader.state {
        LeaseState::Held => format!(
            "{} (Lease {}, renewed {} s ago)",
            leader.holder.as_deref().unwrap_or("?"),
            leader.lease,
            leader.renewed_seconds_ago.unwrap_or_default()
        ),
        LeaseState::Expired => format!(
            "NONE: Lease {} held by {} expired",
            leader.lease,
            leader.holder.as_deref().unwrap_or("?")
        ),
        LeaseState::Released => format!("NONE: Lease {} has no holder", leader.lease),
        LeaseState::Missing => format!("NONE: no Lease {}", leader.lease),
    };
    let ready = view.nodes.iter().filter(|n| n.ready.as_ref().is_some_and(|c| c.status == "True")).count();
    let mut backends: Vec<&str> = view.nodes.iter().filter_map(|n| n.backend.as_deref()).collect();
    backends.sort_unstable();
    backends.dedup();
    let _ = writeln!(out, "Leader:   {lease}");
    let _ = writeln!(out, "Daemons:  {ready}/{} ready", view.nodes.len());
    if !backends.is_empty() {
        let _ = writeln!(out, "Backend:  {}", backends.join(", "));
    }
    let verdict = if view.verdict.healthy {
        "healthy".to_owned()
    } else {
        format!("DEGRADED ({} problems)", view.verdict.problems.len())
    };
    let _ = writeln!(out, "Mesh:     {verdict}");
}

fn nodes(out: &mut String, nodes: &[NodeView]) {
    let _ = writeln!(
        out,
        "{:<12} {:<6} {:<9} {:>8} {:>14} {:>15} {:<10} {:>5} {:<10} {:<9}",
        "NODE",
        "READY",
        "KEY",
        "PEERS UP",
        "LAST HANDSHAKE",
        "APPLIED/DESIRED",
        "BACKEND",
        "MTU",
        "CONNECTED",
        "ROTATION"
    );
    let dash = || "-".to_owned();
    for n in nodes {
        let generation = |g: Option<i64>| g.map_or_else(dash, |g| g.to_string());
        let _ = writeln!(
            out,
            "{:<12} {:<6} {:<9} {:>8} {:>14} {:>15} {:<10} {:>5} {:<10} {:<9}",
            n.name,
            n.ready.as_ref().map_or("-", |c| c.status.as_str()),
            n.short_key.as_deref().unwrap_or("-"),
            format!("{}/{}", n.peers_up.unwrap_or(0), n.peers.unwrap_or(0)),
            n.last_handshake_seconds.map_or_else(dash, |s| format!("{s} s ago")),
            format!("{}/{}", generation(n.applied_generation), generation(n.desired_generation)),
            n.backend.as_deref().unwrap_or("-"),
            n.mtu.map_or_else(dash, |m| m.to_string()),
            n.connected.as_ref().map_or("-", |c| c.status.as_str()),
            n.rotation_phase.as_deref().unwrap_or("-"),
        );
        // The Ready message names what is wrong (which peers are down).
        if let Some(ready) = n.ready.as_ref().filter(|c| c.status != "True") {
            let _ = writeln!(out, "  {}: {}", ready.reason, ready.message);
        }
        if let Some(connected) = n.connected.as_ref().filter(|c| c.status != "True") {
            let _ = writeln!(out, "  {}: {}", connected.reason, connected.message);
        }
    }
}
