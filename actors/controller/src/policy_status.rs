//! Policy status: what the engine found about each TunnelPolicy,
//! RoutePolicy and BlockPolicy becomes standard conditions on it, so
//! `kubectl get rp` says whether a policy is in effect and why not.
//!
//! - `Ready`: True (`Applied`) when nothing about the policy was skipped;
//!   False with the first finding's reason (`UnknownNode`, `Invalid`,
//!   `FamilyMismatch`, `TargetDrained`, ...) and every finding's message.
//! - `Conflict`: True when the policy lost a conflict (`Conflict`), else
//!   False (`NoConflict`).
//! - TunnelPolicy only, `Active`: True (`Accepted`) for the policy in
//!   effect, False (`Superseded`) for the others.
//!
//! Runs on the leader only. `observedGeneration` is the spec generation the
//! findings describe; a condition keeps its `lastTransitionTime` while its
//! status stays, and nothing is written when nothing would change. When a
//! policy stops being Ready (or starts losing a conflict) a Warning Event
//! says why, so `kubectl describe` and `kubectl get events` show it too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::sync::watch;
use vpblu_k8s::conditions::{ACTIVE, CONFLICT, READY, reasons};
use vpblu_k8s::{BlockPolicy, FIELD_MANAGER, RoutePolicy, TunnelPolicy};
use vpblu_runtime::{Forward, forward, watch_changes};

use crate::decided::{Decided, all_in_place, fit_message, is_news, to_conditions};
use crate::informers::Caches;
use vpblu_engine::{Finding, FindingReason, SubjectKind};

/// Rescan this often even without new findings (a policy with no effect
/// on any node does not trigger a publish).
const RESCAN: Duration = Duration::from_secs(30);

/// What the policy status writer starts with.
#[derive(Clone)]
pub struct PolicyStatusArgs {
    /// The API client.
    pub client: kube::Client,
    /// The informers' caches (which policies exist, their generations and
    /// current status).
    pub caches: Caches,
    /// The latest findings, from Recompute.
    pub findings: watch::Receiver<Vec<Finding>>,
}

impl std::fmt::Debug for PolicyStatusArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStatusArgs").finish_non_exhaustive()
    }
}

/// Messages the policy status writer takes.
#[derive(Debug)]
pub enum PolicyStatusMsg {
    /// Findings changed, or it is time to rescan: bring every policy's
    /// conditions up to date.
    Sync,
}

/// Writes policy conditions. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct PolicyStatus;

/// The policy status writer's state.
pub struct PolicyStatusState {
    client: kube::Client,
    recorder: Recorder,
    caches: Caches,
    findings: watch::Receiver<Vec<Finding>>,
    _changes: Forward,
}

impl std::fmt::Debug for PolicyStatusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStatusState").finish_non_exhaustive()
    }
}

impl PolicyStatus {
    /// The supervised child `policy-status` that runs with `args`.
    pub fn child(args: PolicyStatusArgs) -> vpblu_runtime::ChildSpec {
        vpblu_runtime::ChildSpec::new("policy-status", move || (PolicyStatus, args.clone()))
    }
}

impl Actor for PolicyStatus {
    type Msg = PolicyStatusMsg;
    type State = PolicyStatusState;
    type Arguments = PolicyStatusArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PolicyStatusArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(PolicyStatusMsg::Sync)?;
        // The interval task ends by itself once the actor is gone.
        let _rescan = myself.send_interval(RESCAN, || PolicyStatusMsg::Sync);
        let changes = forward(watch_changes(args.findings.clone()).map(|_| PolicyStatusMsg::Sync), myself);
        let reporter = Reporter { controller: vpblu_k8s::FIELD_MANAGER.into(), instance: None };
        let recorder = Recorder::new(args.client.clone(), reporter);
        Ok(PolicyStatusState {
            client: args.client,
            recorder,
            caches: args.caches,
            findings: args.findings,
            _changes: changes,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PolicyStatusMsg::Sync => {
                let findings = state.findings.borrow().clone();
                let mut by_subject: BTreeMap<(SubjectKind, String), Vec<Finding>> = BTreeMap::new();
                for f in findings {
                    by_subject.entry((f.subject.kind, f.subject.name.clone())).or_default().push(f);
                }
                let snapshot = state.caches.snapshot();
                let writer = (&state.client, &state.recorder);
                sync_kind(writer, &snapshot.tunnel_policies, SubjectKind::TunnelPolicy, &by_subject).await;
                sync_kind(writer, &snapshot.route_policies, SubjectKind::RoutePolicy, &by_subject).await;
                sync_kind(writer, &snapshot.block_policies, SubjectKind::BlockPolicy, &by_subject).await;
            }
        }
        Ok(())
    }
}

/// The parts of a policy's status this writer owns.
trait PolicyObject:
    Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
{
    fn status_parts(&self) -> (Option<i64>, &[Condition]);
}

impl PolicyObject for TunnelPolicy {
    fn status_parts(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[]), |s| (s.observed_generation, &s.conditions))
    }
}

impl PolicyObject for RoutePolicy {
    fn status_parts(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[]), |s| (s.observed_generation, &s.conditions))
    }
}

impl PolicyObject for BlockPolicy {
    fn status_parts(&self) -> (Option<i64>, &[Condition]) {
        self.status.as_ref().map_or((None, &[]), |s| (s.observed_generation, &s.conditions))
    }
}

/// What the findings say about one policy (pure).
fn decide(kind: SubjectKind, findings: &[Finding]) -> Vec<Decided> {
    let lost = findings.iter().filter(|f| f.reason == FindingReason::Conflict).collect::<Vec<_>>();
    let problems = findings
        .iter()
        .filter(|f| !matches!(f.reason, FindingReason::Conflict | FindingReason::Overridden))
        .collect::<Vec<_>>();
    let join = |list: &[&Finding]| {
        fit_message(list.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; "))
    };
    let superseded = kind == SubjectKind::TunnelPolicy && !lost.is_empty();
    let ready = if let Some(first) = problems.first() {
        Decided {
            type_: READY,
            status: false,
            reason: first.reason.as_str().into(),
            message: join(&problems),
        }
    } else if superseded {
        Decided { type_: READY, status: false, reason: reasons::SUPERSEDED.into(), message: join(&lost) }
    } else {
        Decided { type_: READY, status: true, reason: reasons::APPLIED.into(), message: "in effect".into() }
    };
    let conflict = if lost.is_empty() {
        Decided {
            type_: CONFLICT,
            status: false,
            reason: reasons::NO_CONFLICT.into(),
            message: String::new(),
        }
    } else {
        Decided {
            type_: CONFLICT,
            status: true,
            reason: FindingReason::Conflict.as_str().into(),
            message: join(&lost),
        }
    };
    let mut out = vec![ready, conflict];
    if kind == SubjectKind::TunnelPolicy {
        out.push(if superseded {
            Decided { type_: ACTIVE, status: false, reason: reasons::SUPERSEDED.into(), message: join(&lost) }
        } else {
            Decided {
                type_: ACTIVE,
                status: true,
                reason: reasons::ACCEPTED.into(),
                message: "in effect".into(),
            }
        });
    }
    out
}

async fn sync_kind<K: PolicyObject>(
    (client, recorder): (&kube::Client, &Recorder),
    objects: &[Arc<K>],
    kind: SubjectKind,
    findings: &BTreeMap<(SubjectKind, String), Vec<Finding>>,
) {
    let api: Api<K> = Api::all(client.clone());
    for object in objects {
        let name = object.name_any();
        let generation = object.meta().generation;
        let decided = decide(kind, findings.get(&(kind, name.clone())).map_or(&[], Vec::as_slice));
        let (observed, current) = object.status_parts();
        let unchanged = observed == generation && all_in_place(&decided, current, generation);
        if unchanged {
            continue;
        }
        let conditions = to_conditions(&decided, current, generation);
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": { "observedGeneration": generation, "conditions": conditions },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = api.patch_status(&name, &params, &Patch::Apply(&patch)).await {
            tracing::warn!(kind = kind.as_str(), %name, error = %e, "could not write policy status; will retry");
            continue;
        }
        // A Warning for every condition that newly went bad.
        for d in decided.iter().filter(|d| d.status == (d.type_ == CONFLICT)) {
            if !is_news(d, current) {
                continue;
            }
            let event = Event {
                type_: EventType::Warning,
                reason: d.reason.clone().into_owned(),
                note: Some(d.message.clone()),
                action: "ApplyPolicy".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
                tracing::warn!(kind = kind.as_str(), %name, error = %e, "could not record an Event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decided::MAX_MESSAGE;
    use vpblu_engine::PolicyRef;

    fn finding(kind: SubjectKind, reason: FindingReason, message: &str) -> Finding {
        Finding { subject: PolicyRef::new(kind, "p"), reason, message: message.into() }
    }

    #[test]
    fn a_clean_policy_is_ready_without_conflict() {
        let d = decide(SubjectKind::RoutePolicy, &[]);
        assert_eq!(d.len(), 2);
        assert!(d[0].status && d[0].reason == reasons::APPLIED);
        assert!(!d[1].status && d[1].reason == reasons::NO_CONFLICT);
    }

    #[test]
    fn problems_make_it_not_ready_with_every_message() {
        let d = decide(
            SubjectKind::BlockPolicy,
            &[
                finding(SubjectKind::BlockPolicy, FindingReason::UnknownNode, "node x is unknown"),
                finding(SubjectKind::BlockPolicy, FindingReason::FamilyMismatch, "v4 to v6"),
                finding(SubjectKind::BlockPolicy, FindingReason::Overridden, "informational"),
            ],
        );
        assert!(!d[0].status);
        assert_eq!(d[0].reason, "UnknownNode");
        assert_eq!(d[0].message, "node x is unknown; v4 to v6");
    }

    #[test]
    fn a_losing_tunnel_policy_is_superseded() {
        let d = decide(
            SubjectKind::TunnelPolicy,
            &[finding(SubjectKind::TunnelPolicy, FindingReason::Conflict, "older policy a wins")],
        );
        assert_eq!((d[0].status, d[0].reason.as_ref()), (false, reasons::SUPERSEDED));
        assert_eq!((d[1].status, d[1].reason.as_ref()), (true, "Conflict"));
        assert_eq!((d[2].type_, d[2].status, d[2].reason.as_ref()), (ACTIVE, false, reasons::SUPERSEDED));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let d = decide(
            SubjectKind::RoutePolicy,
            &[finding(SubjectKind::RoutePolicy, FindingReason::Invalid, &long)],
        );
        assert!(d[0].message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
