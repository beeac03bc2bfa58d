//! One step of the rotation in progress: drive it through its phases
//! ([`next_step`]) and write what it decided into the VpbluNode's status.

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use vpblu_engine::RotationInput;
use vpblu_k8s::vpblu_node::short_key;
use vpblu_k8s::{IDLE_PHASE, RotationPolicy, VpbluNode};
use vpblu_messages::{NodeName, RotationPhase};

use super::{HANDOFF_PATIENCE, SchedulerState, parse_time, stamp, timings};
use crate::rotation::metrics::RotationResult;
use crate::rotation::progress::{Outcome, Running, Seen, Step, next_step};
use crate::rotation::writes::{patch_vpblu_node, record};

impl SchedulerState {
    /// Takes the next step of the rotation recorded in `v`.
    pub(super) async fn drive(
        &mut self,
        v: &VpbluNode,
        rotation: &RotationInput,
        policies: &[RotationPolicy],
        now: DateTime<Utc>,
    ) {
        let name = v.name_any();
        let status = v.status.clone().unwrap_or_default();
        let recorded = status.rotation.clone().unwrap_or_default();
        let (overlap, timeout) = timings(policies, recorded.policy.as_deref());
        let key = (rotation.id, rotation.phase);
        let taken_over = match self.taken_over {
            Some((seen, at)) if seen == key => at,
            _ => {
                self.taken_over = Some((key, now));
                now
            }
        };
        self.reports.keep_only(rotation.id);
        let phase_started = parse_time(recorded.phase_started_at.as_deref()).unwrap_or(taken_over);
        self.metrics.in_phase(phase_started.timestamp_millis() as f64 / 1000.0);
        let deadline = phase_started.max(taken_over) + timeout;
        let (id, phase) = key;
        let holders =
            self.desired.nodes_where(|s| s.rotation.as_ref().is_some_and(|r| r.id == id && r.phase == phase));
        let reports = self.reports.of(id, phase);
        let all_ok_since = self.dwelling.filter(|(dwelling, _)| *dwelling == id).map(|(_, since)| since);
        let running = Running { node: rotation.node.clone(), id, phase, overlap, timeout };
        let step =
            next_step(&running, &Seen { now, deadline, holders: &holders, reports: &reports, all_ok_since });
        let took = (now - phase_started).as_seconds_f64();
        match step {
            Step::Wait(message) => {
                if message != recorded.message {
                    if let Some(message) = &message {
                        tracing::warn!(node = %name, rotation = id, %phase, %message, "rotation is waiting");
                    }
                    self.patch(&name, json!({ "rotation": { "message": message } })).await;
                }
            }
            Step::Dwell { since } => {
                if all_ok_since.is_none() {
                    tracing::info!(node = %name, rotation = id, overlap = overlap.num_seconds(), "traffic rides the lanes");
                }
                self.dwelling = Some((id, since));
            }
            Step::Advance { to, staged } => {
                let mut patch = json!({ "rotation": {
                    "phase": to.as_str(), "phaseStartedAt": stamp(now), "message": null,
                }});
                if let Some(key) = staged {
                    patch["stagedPublicKey"] = json!(key.to_base64());
                }
                if self.patch(&name, patch).await {
                    self.metrics.phase_took(phase, took);
                    tracing::info!(node = %name, rotation = id, from = %phase, %to, "rotation advanced");
                }
            }
            Step::RollBack(why) => {
                let patch = json!({ "rotation": {
                    "phase": RotationPhase::Rollback.as_str(), "phaseStartedAt": stamp(now), "message": null,
                    "rollbackReason": why,
                }});
                if self.patch(&name, patch).await {
                    self.metrics.phase_took(phase, took);
                    tracing::warn!(node = %name, rotation = id, %phase, reason = %why, "rotation rolls back");
                }
            }
            Step::Finish(Outcome::Succeeded) => self.succeed(v, id, phase, took, now).await,
            Step::Finish(Outcome::RolledBack) => {
                let why = recorded.rollback_reason.unwrap_or_else(|| "no reason was recorded".to_owned());
                self.rolled_back(v, id, phase, took, &why).await;
            }
        }
    }

    /// Ends a rotation whose rollback every node reported: the old key
    /// stays, the staged one is forgotten.
    async fn rolled_back(&mut self, v: &VpbluNode, id: u64, phase: RotationPhase, took: f64, why: &str) {
        let name = v.name_any();
        let patch = json!({
            "stagedPublicKey": null,
            "rotation": {
                "phase": IDLE_PHASE, "phaseStartedAt": null, "message": null, "rollbackReason": null,
                "lastResult": format!("RolledBack: {why}"),
            },
        });
        if self.patch(&name, patch).await {
            self.metrics.phase_took(phase, took);
            self.metrics.ended(RotationResult::RolledBack);
            tracing::warn!(node = %name, rotation = id, reason = %why, "rotation rolled back");
            let note = format!("key rotation {id} of node {name} rolled back; the old key stays: {why}");
            record(&self.recorder, &v.object_ref(&()), true, "RotationRolledBack", "Rotate", note).await;
        }
    }

    /// Ends a rotation whose Settle every node reported: the status writer
    /// publishes the new key first (so it never writes the old one back),
    /// then the rotation is recorded as done.
    async fn succeed(&mut self, v: &VpbluNode, id: u64, phase: RotationPhase, took: f64, now: DateTime<Utc>) {
        let name = v.name_any();
        let status = v.status.clone().unwrap_or_default();
        let Some(new_key) = status.staged_public_key.clone() else {
            // Distribute was entered with the staged key, so it is there
            // unless someone removed it; past Retire there is no going
            // back, so say so and wait for a person.
            let why = "status.stagedPublicKey disappeared after Retire; set it to the key the node staged \
                       (its daemon's Hello shows it) so the rotation can finish";
            self.patch(&name, json!({ "rotation": { "message": why } })).await;
            tracing::error!(node = %name, rotation = id, why);
            return;
        };
        let Ok(node) = NodeName::new(&name) else { return };
        if status.public_key.as_deref() != Some(new_key.as_str()) {
            self.handoff.hand(&node, new_key);
            let waited = now
                - parse_time(status.rotation.as_ref().and_then(|r| r.phase_started_at.as_deref()))
                    .unwrap_or(now);
            let message = "waiting for the status writer to publish the new key in status.publicKey";
            if waited > HANDOFF_PATIENCE
                && status.rotation.as_ref().and_then(|r| r.message.as_deref()) != Some(message)
            {
                self.patch(&name, json!({ "rotation": { "message": message } })).await;
            }
            return;
        }
        let patch = json!({
            "publicKey": new_key,
            "shortKey": short_key(&new_key),
            "stagedPublicKey": null,
            "rotation": {
                "phase": IDLE_PHASE, "phaseStartedAt": null, "message": null, "rollbackReason": null,
                "lastResult": "Succeeded", "lastRotatedAt": stamp(now),
            },
        });
        if self.patch(&name, patch).await {
            self.handoff.withdraw(&node);
            self.metrics.phase_took(phase, took);
            self.metrics.ended(RotationResult::Succeeded);
            tracing::info!(node = %name, rotation = id, "rotation succeeded");
            let note = format!(
                "key rotation {id} of node {name} succeeded; its new key is {}…",
                short_key(&new_key)
            );
            record(&self.recorder, &v.object_ref(&()), false, "RotationSucceeded", "Rotate", note).await;
        }
    }

    /// Ends a rotation recorded while another one runs (only one node
    /// rotates at a time; desired state ignores this one).
    pub(super) async fn end_extra(&mut self, v: &VpbluNode, extra: &RotationInput, running: &NodeName) {
        let why = format!(
            "the rotation of node {running} was running at the same time; only one node rotates at a time"
        );
        let patch = json!({
            "stagedPublicKey": null,
            "rotation": {
                "phase": IDLE_PHASE, "phaseStartedAt": null, "message": null, "rollbackReason": null,
                "lastResult": format!("RolledBack: {why}"),
            },
        });
        if self.patch(&v.name_any(), patch).await {
            self.metrics.ended(RotationResult::RolledBack);
            tracing::warn!(node = %extra.node, rotation = extra.id, %why, "second rotation ended");
            let note = format!("key rotation {} of node {} ended: {why}", extra.id, extra.node);
            record(&self.recorder, &v.object_ref(&()), true, "RotationRolledBack", "Rotate", note).await;
        }
    }

    /// Merge-patches VpbluNode `name`'s status; true when it was written.
    pub(super) async fn patch(&mut self, name: &str, status: Value) -> bool {
        match patch_vpblu_node(&self.nodes_api, name, status).await {
            Ok(object) => {
                self.expectations.expect("VpbluNode", &object);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "rotation status not written; will retry");
                false
            }
        }
    }
}
