//! The rotation scheduler: runs RotationPolicies and drives one node's key
//! rotation at a time, keeping every decision in the Kubernetes API.
//!
//! Level-triggered: every tick it reads the caches (RotationPolicies,
//! Nodes, VpbluNodes) and the published desired states, and takes at most
//! one step:
//!
//! - a rotation recorded in a VpbluNode's status (the first by name; any
//!   other is ended at once) advances, dwells, rolls back or finishes
//!   ([`progress`](super::progress)), from the daemons' RotationReports;
//! - with none running: a VpbluNode whose `vpblu.dev/rotate-now` differs
//!   from `status.rotation.handledRotateNow` starts rotating; else each
//!   policy in name order starts a run or rotates its next pending node
//!   ([`runs`](super::runs));
//! - every policy's status (conditions, next and last schedule time,
//!   current node) is written when it changed, with a Warning Event when
//!   it newly turns Invalid or Conflict.
//!
//! After a write it waits until the informer's cache shows it before the
//! next step, so a stale cache never starts a second rotation. A new leader
//! resumes from the status; the daemons, reconnecting to it, report their
//! current phase again, and the phase gets at least a full timeout from the
//! takeover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use vpblu_k8s::rotation_policy::{DEFAULT_OVERLAP_SECONDS, DEFAULT_PHASE_TIMEOUT_SECONDS};
use vpblu_k8s::{IDLE_PHASE, ROTATE_NOW_ANNOTATION, RotationPolicy, VpbluNode};
use vpblu_messages::{NodeName, RotationPhase};
use vpblu_runtime::ChildSpec;

use super::handoff::KeyHandoff;
use super::metrics::{RotationMetrics, RotationResult};
use super::policies::{Judged, NodeLabels, judge, owner_of};
use super::reports::ReportBook;
use super::runs::{Member, RunFacts, RunStep, Trigger};
use super::writes::record;
use crate::from_k8s::rotation_of;
use crate::informers::{Cache, Caches, Watched};
use crate::stream::Desired;
use vpblu_engine::RotationInput;

mod phases;
mod policy_status;

/// A write the cache has not shown within this long no longer holds the
/// scheduler back (the next step then reads whatever the cache has).
const EXPECTATION_LIMIT: Duration = Duration::from_secs(10);

/// How long the status writer may take to publish a handed-over key
/// before the rotation's status says it is waiting for that.
const HANDOFF_PATIENCE: TimeDelta = TimeDelta::seconds(10);

/// Tunables of the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How often it looks at the world.
    pub tick: Duration,
    /// How long a rotation due on a node waits for the node's daemon to
    /// have a stream to this leader (after a failover the daemons take a
    /// few reconnects to find the new leader) before it is skipped.
    pub stream_wait: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { tick: Duration::from_millis(250), stream_wait: Duration::from_secs(60) }
    }
}

/// What the scheduler starts with. Cheap to clone: a restart gets a copy.
#[derive(Clone)]
pub struct RotationSchedulerArgs {
    /// The API client.
    pub client: kube::Client,
    /// The informers' caches (RotationPolicies, Nodes, VpbluNodes).
    pub caches: Caches,
    /// The published desired states: which nodes hold the rotation.
    pub desired: Desired,
    /// The daemons' RotationReports, recorded outside the scheduler so a
    /// restarted one finds those of the phase under way.
    pub reports: ReportBook,
    /// Where new keys go to the status writer.
    pub handoff: KeyHandoff,
    /// Metrics, registered once by the caller.
    pub metrics: RotationMetrics,
    /// Tunables.
    pub config: SchedulerConfig,
}

impl std::fmt::Debug for RotationSchedulerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationSchedulerArgs").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Messages the scheduler takes.
#[derive(Debug)]
pub enum RotationSchedulerMsg {
    /// Look at the world and take the next step (sent to itself).
    Tick,
}

/// Runs rotations. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct RotationScheduler;

impl RotationScheduler {
    /// The supervised child `rotation-scheduler` that runs with `args`.
    pub fn child(args: RotationSchedulerArgs) -> ChildSpec {
        ChildSpec::new("rotation-scheduler", move || (RotationScheduler, args.clone()))
    }
}

/// Writes whose effect the cache has yet to show, by object.
#[derive(Debug, Default)]
struct Expectations {
    pending: BTreeMap<(&'static str, String), (String, Instant)>,
}

impl Expectations {
    fn expect(&mut self, kind: &'static str, object: &impl Resource) {
        if let Some(version) = object.meta().resource_version.clone() {
            self.pending.insert((kind, object.name_any()), (version, Instant::now()));
        }
    }

    /// Drops what the caches show (or what is too old to wait for); true
    /// when nothing is left.
    fn met(&mut self, caches: &Caches) -> bool {
        fn shows<K: Watched>(cache: &Cache<K>, name: &str, version: &str) -> bool {
            let Some(object) = cache.store().get(&ObjectRef::new(name)) else { return true };
            let cached = object.meta().resource_version.as_deref().unwrap_or_default();
            match (cached.parse::<u64>(), version.parse::<u64>()) {
                (Ok(cached), Ok(wanted)) => cached >= wanted,
                _ => cached == version,
            }
        }
        self.pending.retain(|(kind, name), (version, since)| {
            let shown = match *kind {
                "VpbluNode" => shows(&caches.vpblu_nodes, name, version),
                _ => shows(&caches.rotation_policies, name, version),
            };
            !shown && since.elapsed() < EXPECTATION_LIMIT
        });
        self.pending.is_empty()
    }
}

/// The scheduler's state.
pub struct SchedulerState {
    nodes_api: Api<VpbluNode>,
    policies_api: Api<RotationPolicy>,
    recorder: Recorder,
    caches: Caches,
    desired: Desired,
    handoff: KeyHandoff,
    metrics: RotationMetrics,
    /// Reports of the rotation under way (shared: they outlive a restart).
    reports: ReportBook,
    /// The phase under way and when this scheduler first saw it.
    taken_over: Option<((u64, RotationPhase), DateTime<Utc>)>,
    /// The rotation whose Activate every node reported, and since when.
    dwelling: Option<(u64, DateTime<Utc>)>,
    expectations: Expectations,
    /// After a pass that found nothing to drive, what it read: until that
    /// changes a tick does nothing.
    quiet: Option<Quiet>,
    /// The node whose rotation waits for its daemon's stream, and since when.
    waiting_for_stream: Option<(String, Instant)>,
    /// [`SchedulerConfig::stream_wait`].
    stream_wait: Duration,
}

/// The event counts of the caches a pass reads.
type CacheStamp = (u64, u64, u64);

/// What a pass that found nothing to drive read.
#[derive(Clone, Copy, Debug)]
struct Quiet {
    stamp: CacheStamp,
    /// When the pass ran, if something can come due without a change (a
    /// cron schedule, a daemon's stream): then a pass runs again
    /// [`IDLE_RESCAN`] later. `None`: only a change starts anything.
    timed: Option<Instant>,
}

/// When the scheduler must pass again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Something is under way: at the next tick.
    Again,
    /// Nothing to drive, but a schedule or a daemon's stream may come due
    /// without any cache changing: after [`IDLE_RESCAN`].
    AfterRescan,
    /// Nothing to drive until a Node, VpbluNode or RotationPolicy changes.
    OnChange,
}

/// With no rotation running and nothing changed, how often a pass still
/// runs while a valid policy has a schedule (a scheduled run starts at
/// most this late) or a rotation waits for its daemon's stream.
const IDLE_RESCAN: Duration = Duration::from_secs(5);

impl std::fmt::Debug for SchedulerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerState").field("taken_over", &self.taken_over).finish_non_exhaustive()
    }
}

impl Actor for RotationScheduler {
    type Msg = RotationSchedulerMsg;
    type State = SchedulerState;
    type Arguments = RotationSchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RotationSchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The interval task ends by itself once the actor is gone.
        let _ticks = myself.send_interval(args.config.tick, || RotationSchedulerMsg::Tick);
        let reporter = Reporter { controller: vpblu_k8s::FIELD_MANAGER.into(), instance: None };
        Ok(SchedulerState {
            nodes_api: Api::all(args.client.clone()),
            policies_api: Api::all(args.client.clone()),
            recorder: Recorder::new(args.client, reporter),
            caches: args.caches,
            desired: args.desired,
            handoff: args.handoff,
            metrics: args.metrics,
            reports: args.reports,
            taken_over: None,
            dwelling: None,
            expectations: Expectations::default(),
            quiet: None,
            waiting_for_stream: None,
            stream_wait: args.config.stream_wait,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A replica that lost the Lease drives no rotation any more.
        state.metrics.idle();
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RotationSchedulerMsg::Tick => state.tick().await,
        }
        Ok(())
    }
}

/// A policy's run bookkeeping, as its status records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RunRecord {
    last_schedule: Option<String>,
    handled_rotate_now: Option<String>,
    current_node: Option<String>,
}

/// The timings of the policy that started a rotation (defaults without one).
fn timings(policies: &[RotationPolicy], name: Option<&str>) -> (TimeDelta, TimeDelta) {
    let spec = name.and_then(|n| policies.iter().find(|p| p.name_any() == n)).map(|p| &p.spec);
    let overlap = spec.map_or(DEFAULT_OVERLAP_SECONDS, |s| s.overlap_seconds).max(1);
    let timeout = spec.map_or(DEFAULT_PHASE_TIMEOUT_SECONDS, |s| s.phase_timeout_seconds).max(1);
    (TimeDelta::seconds(overlap.into()), TimeDelta::seconds(timeout.into()))
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?).ok().map(|t| t.with_timezone(&Utc))
}

/// RFC 3339 with milliseconds: two steps within one second stay ordered.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn created(object: &impl Resource) -> Option<DateTime<Utc>> {
    let t = object.meta().creation_timestamp.as_ref()?;
    DateTime::from_timestamp(t.0.as_second(), 0)
}

impl SchedulerState {
    /// A pass, unless the last one found nothing to drive and nothing has
    /// changed since (a pass reads every Node and VpbluNode: at 1000 nodes
    /// four idle passes a second cost several percent of a core).
    async fn tick(&mut self) {
        let caches = &self.caches;
        let stamp = (caches.nodes.events(), caches.vpblu_nodes.events(), caches.rotation_policies.events());
        if let Some(quiet) = &self.quiet
            && quiet.stamp == stamp
            && quiet.timed.is_none_or(|at| at.elapsed() < IDLE_RESCAN)
        {
            return;
        }
        self.quiet = match self.reconcile().await {
            Next::Again => None,
            Next::AfterRescan => Some(Quiet { stamp, timed: Some(Instant::now()) }),
            Next::OnChange => Some(Quiet { stamp, timed: None }),
        };
    }

    /// One pass; when the next one is needed.
    async fn reconcile(&mut self) -> Next {
        let caches = &self.caches;
        if !(caches.nodes.synced() && caches.vpblu_nodes.synced() && caches.rotation_policies.synced()) {
            return Next::Again;
        }
        if !self.expectations.met(caches) {
            return Next::Again;
        }
        let now = Utc::now();
        let policies = caches.rotation_policies.objects();
        // Shared, not copied: Node objects are large and this runs every tick.
        let nodes = caches.nodes.store().state();
        let mut vpblu_nodes = caches.vpblu_nodes.shared();
        vpblu_nodes.sort_unstable_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        // Without a policy no Node is selected: skip naming them.
        let labels: Vec<NodeLabels<'_>> = if policies.is_empty() {
            Vec::new()
        } else {
            nodes
                .iter()
                .filter(|n| n.metadata.deletion_timestamp.is_none())
                .filter_map(|n| {
                    let name = NodeName::new(n.metadata.name.as_deref()?).ok()?;
                    Some(NodeLabels { name, labels: n.labels() })
                })
                .collect()
        };
        let judged = judge(&policies, &labels);
        let mut records: BTreeMap<String, RunRecord> = judged
            .iter()
            .map(|j| {
                let status = j.policy.status.clone().unwrap_or_default();
                let record = RunRecord {
                    last_schedule: status.last_schedule_time,
                    handled_rotate_now: status.handled_rotate_now,
                    current_node: status.current_node,
                };
                (j.name(), record)
            })
            .collect();

        let running: Vec<(&VpbluNode, RotationInput)> =
            vpblu_nodes.iter().filter_map(|v| Some((v.as_ref(), rotation_of(v).ok()??))).collect();
        let rotating = match running.split_first() {
            Some(((first, rotation), others)) => {
                for (other, extra) in others {
                    self.end_extra(other, extra, &rotation.node).await;
                }
                self.drive(first, rotation, &policies, now).await;
                let policy = first.status.as_ref().and_then(|s| s.rotation.as_ref()?.policy.clone());
                Some((rotation.node.clone(), rotation.phase, policy))
            }
            None => {
                self.metrics.idle();
                self.start_next(&judged, &vpblu_nodes, &mut records, now).await;
                self.reports.clear();
                None
            }
        };
        for j in &judged {
            let rotating = rotating
                .as_ref()
                .filter(|(_, _, policy)| policy.as_deref() == Some(j.name().as_str()))
                .map(|(node, phase, _)| (node, *phase));
            let record = records.remove(&j.name()).unwrap_or_default();
            self.write_policy_status(j, record, rotating, now).await;
        }
        if rotating.is_some() || !self.expectations.pending.is_empty() {
            Next::Again
        } else if self.waiting_for_stream.is_some()
            || judged.iter().any(|j| j.valid() && j.schedule.is_some())
        {
            // A schedule comes due, or a daemon's stream arrives, without
            // any cache changing.
            Next::AfterRescan
        } else {
            Next::OnChange
        }
    }

    /// Starts what comes next when no rotation runs: a node's own
    /// rotate-now first, then each policy's run in name order. At most one
    /// write of a run start or one rotation start.
    async fn start_next(
        &mut self,
        judged: &[Judged<'_>],
        vpblu_nodes: &[Arc<VpbluNode>],
        records: &mut BTreeMap<String, RunRecord>,
        now: DateTime<Utc>,
    ) {
        for v in vpblu_nodes {
            let wanted = v.annotations().get(ROTATE_NOW_ANNOTATION);
            let handled = v.status.as_ref().and_then(|s| s.rotation.as_ref()?.handled_rotate_now.as_ref());
            if let Some(wanted) = wanted
                && Some(wanted) != handled
                && let Ok(node) = NodeName::new(v.name_any())
            {
                let owner = owner_of(judged, &node).map(Judged::name);
                tracing::info!(%node, value = %wanted, "rotate-now on the VpbluNode");
                self.start_rotation(v, owner, Some(wanted.clone()), now).await;
                return;
            }
        }
        let by_name: BTreeMap<&str, &VpbluNode> =
            vpblu_nodes.iter().filter_map(|v| Some((v.metadata.name.as_deref()?, v.as_ref()))).collect();
        for j in judged.iter().filter(|j| j.valid()) {
            let Some(schedule) = j.schedule.as_ref() else { continue };
            let name = j.name();
            let record = records.entry(name.clone()).or_default();
            let members: Vec<Member> = j
                .owned
                .iter()
                .filter_map(|node| {
                    let v = by_name.get(node.as_str())?;
                    let started = v.status.as_ref().and_then(|s| s.rotation.as_ref()?.started_at.as_deref());
                    Some(Member { node: node.clone(), created: created(*v), started_at: parse_time(started) })
                })
                .collect();
            let facts = RunFacts {
                now,
                created: created(j.policy).unwrap_or(now),
                paused: j.policy.spec.paused,
                schedule,
                last_schedule: parse_time(record.last_schedule.as_deref()),
                rotate_now: j.policy.annotations().get(ROTATE_NOW_ANNOTATION).map(String::as_str),
                handled_rotate_now: record.handled_rotate_now.as_deref(),
                members: &members,
            };
            match super::runs::next_step(&facts) {
                RunStep::Start(trigger) => {
                    tracing::info!(policy = %name, ?trigger, "rotation run starts");
                    record.last_schedule = Some(stamp(now));
                    if let Trigger::RotateNow(value) = trigger {
                        record.handled_rotate_now = Some(value);
                    }
                    return;
                }
                RunStep::Rotate(node) => {
                    record.current_node = Some(node.to_string());
                    if let Some(v) = by_name.get(node.as_str()) {
                        self.start_rotation(v, Some(name), None, now).await;
                    }
                    return;
                }
                RunStep::Idle => record.current_node = None,
            }
        }
    }

    /// Starts rotating `v`'s key (or records why it cannot), for `policy`
    /// or for the node's own annotation `handled`.
    async fn start_rotation(
        &mut self,
        v: &VpbluNode,
        policy: Option<String>,
        handled: Option<String>,
        now: DateTime<Utc>,
    ) {
        let name = v.name_any();
        let status = v.status.clone().unwrap_or_default();
        let previous = status.rotation.clone().unwrap_or_default();
        let handled = handled.or(previous.handled_rotate_now);
        let in_desired = NodeName::new(&name).ok().is_some_and(|n| self.desired.get_shared(&n).is_some());
        let mut skip = if status.public_key.is_none() {
            Some("the node has published no public key yet (is its daemon connected?)")
        } else if !in_desired {
            Some("the node has no desired state (is it Ready, with a pod CIDR and an internal IP?)")
        } else {
            None
        };
        // Its daemon must take part from Prepare on: wait for its stream
        // (a new leader's daemons reconnect one by one), then skip.
        let connected = NodeName::new(&name).ok().is_some_and(|n| self.reports.has_stream(&n));
        if skip.is_none() && !connected {
            let since = match &self.waiting_for_stream {
                Some((waiting, since)) if *waiting == name => *since,
                _ => {
                    tracing::info!(node = %name, "rotation due: waiting for the node's daemon to reach this leader");
                    self.waiting_for_stream = Some((name.clone(), Instant::now()));
                    return;
                }
            };
            if since.elapsed() < self.stream_wait {
                return;
            }
            skip = Some("its daemon has no stream to the leader");
        }
        self.waiting_for_stream = None;
        if let Some(why) = skip {
            let patch = json!({ "rotation": {
                "phase": IDLE_PHASE, "policy": policy, "startedAt": stamp(now), "phaseStartedAt": null,
                "message": null, "rollbackReason": null, "lastResult": format!("Skipped: {why}"),
                "handledRotateNow": handled,
            }});
            if self.patch(&name, patch).await {
                tracing::warn!(node = %name, why, "rotation skipped");
                self.metrics.ended(RotationResult::Skipped);
                let note = format!("key rotation of node {name} skipped: {why}");
                record(&self.recorder, &v.object_ref(&()), true, "RotationSkipped", "Rotate", note).await;
            }
            return;
        }
        // Ids only grow, also across a VpbluNode that was recreated.
        let id = previous
            .id
            .and_then(|id| u64::try_from(id).ok())
            .map_or(0, |id| id + 1)
            .max(u64::try_from(now.timestamp_millis()).unwrap_or(0));
        let patch = json!({
            "stagedPublicKey": null,
            "rotation": {
                "phase": RotationPhase::Prepare.as_str(), "id": id, "policy": policy,
                "startedAt": stamp(now), "phaseStartedAt": stamp(now), "message": null, "rollbackReason": null,
                "handledRotateNow": handled,
            },
        });
        if self.patch(&name, patch).await {
            tracing::info!(node = %name, rotation = id, policy = ?policy, "rotation started");
            let by = policy.map_or_else(
                || "its vpblu.dev/rotate-now annotation".to_owned(),
                |p| format!("RotationPolicy {p}"),
            );
            let note = format!("key rotation {id} of node {name} started by {by}");
            record(&self.recorder, &v.object_ref(&()), false, "RotationStarted", "Rotate", note).await;
        }
    }
}
