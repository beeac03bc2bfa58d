//! Every RotationPolicy's status: conditions, schedule times and the
//! node it rotates now, written when they changed, with a Warning Event
//! for a condition that newly went bad.

use chrono::{DateTime, SecondsFormat, Utc};

use kube::runtime::events::Recorder;
use kube::{Resource, ResourceExt};
use serde_json::json;
use vpblu_k8s::RotationPolicy;
use vpblu_messages::{NodeName, RotationPhase};

use crate::decided::{all_in_place, is_news, to_conditions};
use crate::rotation::policies::{Decided, Judged, conditions, is_warning};
use crate::rotation::writes::{apply_policy_status, record};

use super::{RunRecord, SchedulerState, created, parse_time};

impl SchedulerState {
    /// Writes `j`'s status when it changed, with a Warning Event for each
    /// condition that newly went bad.
    pub(super) async fn write_policy_status(
        &mut self,
        j: &Judged<'_>,
        record: RunRecord,
        rotating: Option<(&NodeName, RotationPhase)>,
        now: DateTime<Utc>,
    ) {
        let policy = j.policy;
        let name = j.name();
        let generation = policy.metadata.generation;
        let current = policy.status.clone().unwrap_or_default();
        let decided = conditions(j, rotating);
        let next = match (&j.schedule, policy.spec.paused) {
            (Some(schedule), false) => {
                let since =
                    parse_time(record.last_schedule.as_deref()).or_else(|| created(policy)).unwrap_or(now);
                schedule.next_after(since).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            }
            _ => None,
        };
        let same_conditions = all_in_place(&decided, &current.conditions, generation);
        let unchanged = same_conditions
            && current.observed_generation == generation
            && current.next_schedule_time == next
            && current.last_schedule_time == record.last_schedule
            && current.handled_rotate_now == record.handled_rotate_now
            && current.current_node == record.current_node;
        if unchanged {
            return;
        }
        let list = to_conditions(&decided, &current.conditions, generation);
        let mut status = json!({ "observedGeneration": generation, "conditions": list });
        for (field, value) in [
            ("lastScheduleTime", &record.last_schedule),
            ("nextScheduleTime", &next),
            ("handledRotateNow", &record.handled_rotate_now),
            ("currentNode", &record.current_node),
        ] {
            if let Some(value) = value {
                status[field] = json!(value);
            }
        }
        match apply_policy_status(&self.policies_api, &name, status).await {
            Ok(object) => self.expectations.expect("RotationPolicy", &object),
            Err(e) => {
                tracing::warn!(error = %e, "RotationPolicy status not written; will retry");
                return;
            }
        }
        for d in decided.iter().filter(|d| is_warning(d) && is_news(d, &current.conditions)) {
            warn_policy(&self.recorder, policy, d).await;
        }
    }
}

async fn warn_policy(recorder: &Recorder, policy: &RotationPolicy, d: &Decided) {
    tracing::warn!(policy = %policy.name_any(), reason = %d.reason, message = %d.message, "RotationPolicy problem");
    record(recorder, &policy.object_ref(&()), true, &d.reason, "ApplyPolicy", d.message.clone()).await;
}
