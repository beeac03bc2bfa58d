//! Key rotation on the lab: run a RotationPolicy now (the
//! `vpblu.dev/rotate-now` annotation) and follow the nodes' rotation status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use vpblu_k8s::{RotationPolicy, RotationPolicySpec, VpbluNodeStatus};

use super::Lab;
use crate::cluster::TestCluster;

/// How long a whole run of a few nodes may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(180);
const ROTATE_NOW: &str = "vpblu.dev/rotate-now";

/// Creates (or updates) RotationPolicy `name` (Sundays at 03:00, the given
/// overlap, all nodes or only `only`) and runs it now with `token`.
pub async fn rotate_now(lab: &Lab, name: &str, overlap_seconds: i32, only: Option<&str>, token: &str) {
    rotate_now_in(&lab.cluster, name, overlap_seconds, only, token).await;
}

/// [`rotate_now`] on any cluster (the guests of `crate::kvm`).
pub async fn rotate_now_in(
    cluster: &TestCluster,
    name: &str,
    overlap_seconds: i32,
    only: Option<&str>,
    token: &str,
) {
    let api: Api<RotationPolicy> = Api::all(cluster.client());
    let selector = only.map(|node| LabelSelector {
        match_labels: Some(BTreeMap::from([("kubernetes.io/hostname".to_owned(), node.to_owned())])),
        ..LabelSelector::default()
    });
    if api.get_opt(name).await.expect("read the RotationPolicy").is_none() {
        let mut policy = RotationPolicy::new(
            name,
            RotationPolicySpec {
                overlap_seconds,
                node_selector: selector.clone(),
                ..RotationPolicySpec::default()
            },
        );
        policy.metadata.annotations = Some(BTreeMap::from([(ROTATE_NOW.to_owned(), token.to_owned())]));
        api.create(&PostParams::default(), &policy).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
        return;
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {ROTATE_NOW: token}},
        "spec": {"overlapSeconds": overlap_seconds, "nodeSelector": selector},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
}

/// Each node's published public key.
pub async fn published_keys(lab: &Lab) -> BTreeMap<String, String> {
    lab.statuses()
        .await
        .into_iter()
        .map(|(name, status)| {
            let key = status.public_key.unwrap_or_else(|| panic!("{name} has no published key"));
            (name, key)
        })
        .collect()
}

/// The rotation part of a status, for messages.
pub fn rotation_of(status: &VpbluNodeStatus) -> String {
    match &status.rotation {
        Some(r) => format!(
            "phase={} started={} result={} rotated={}",
            r.phase.as_deref().unwrap_or("-"),
            r.started_at.as_deref().unwrap_or("-"),
            r.last_result.as_deref().unwrap_or("-"),
            r.last_rotated_at.as_deref().unwrap_or("-"),
        ),
        None => "no rotation yet".to_owned(),
    }
}

/// Whether the node's last rotation started at or after `since` (RFC 3339,
/// second precision) and has finished.
pub fn finished_since(status: &VpbluNodeStatus, since: &str) -> bool {
    status.rotation.as_ref().is_some_and(|r| {
        let idle = matches!(r.phase.as_deref(), None | Some("Idle"));
        let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        let started = r.started_at.as_deref().and_then(time).zip(time(since)).is_some_and(|(t, s)| t >= s);
        idle && started && r.last_result.is_some()
    })
}

/// Waits until every node in `nodes` finished a rotation started at or
/// after `since` (see [`now_rfc3339`]).
pub async fn wait_rotated(lab: &Lab, nodes: &[String], since: &str) {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let statuses = lab.statuses().await;
        let done =
            statuses.iter().filter(|(name, _)| nodes.contains(name)).all(|(_, s)| finished_since(s, since));
        if done {
            return;
        }
        if Instant::now() > deadline {
            lab.dump_logs();
            let lines: Vec<String> =
                statuses.iter().map(|(n, s)| format!("{n}: {}", rotation_of(s))).collect();
            panic!("rotations did not finish within {RUN_LIMIT:?}:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Now minus a second, as RFC 3339 with second precision (how the
/// controller writes times), for [`finished_since`].
pub fn now_rfc3339() -> String {
    // Second precision, as the controller writes it; one second of slack
    // for the clock between here and there.
    let t = chrono::Utc::now() - chrono::Duration::seconds(1);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Waits until `node` is in `phase`.
pub async fn wait_phase(lab: &Lab, node: &str, phase: &str) {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let statuses = lab.statuses().await;
        let (_, status) = statuses.iter().find(|(n, _)| n == node).expect("the node has a status");
        if status.rotation.as_ref().and_then(|r| r.phase.as_deref()) == Some(phase) {
            return;
        }
        if Instant::now() > deadline {
            lab.dump_logs();
            panic!("{node} never reached phase {phase}: {}", rotation_of(status));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
