//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does it.
//!
//! - **Acquire** when the Lease is missing, released (no holder), or
//!   expired. Expired means both: `renewTime + leaseDurationSeconds` is in
//!   the past by our clock, *and* we have watched the Lease go unchanged for
//!   that long (so a clock running ahead cannot steal a live Lease). Every
//!   write is a create or a resourceVersion-guarded replace, so of two
//!   candidates only one can win.
//! - **Renew** every `renew`. A leader that has not renewed for
//!   `lease_duration - renew` steps down (tells its subscribers) before
//!   anyone else can acquire; a leader that sees another holder steps down
//!   at once.
//! - **Outage.** When the renewals fail because the API server cannot be
//!   reached (no answer, 5xx, 429), stepping down would close every
//!   daemon's stream for nothing: no replica can take the Lease without the
//!   API server, and without it nothing this leader sends can change. So
//!   it keeps leading for `outage_grace` past the renew deadline, and steps
//!   down at once when it sees another holder. The cost, when only this
//!   replica lost the API server: for at most that grace, a replica that
//!   took the expired Lease serves streams too (each daemon has one stream;
//!   those on this replica get no news until it steps down).
//! - **Release** on a clean stop: subscribers hear `false` first, then the
//!   Lease gets no holder and a 1 s duration, so the standby takes over on
//!   its next poll instead of waiting for expiry.
//!
//! Subscribers watch a `tokio::sync::watch<bool>`: `true` while this
//! replica leads. It goes `false` also when the actor dies without its
//! `post_stop` (killed, panicked): a dead Leader never leaves a replica
//! believing it leads.

use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use vpblu_runtime::{ChildSpec, Health};

pub use self::config::{LeaderConfig, LeaderError};

mod config;

/// How long releasing the Lease on a clean stop may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The Leader's metrics. Registered once per process.
#[derive(Clone, Debug, Default)]
pub struct LeaderMetrics {
    leading: Gauge,
    errors: Counter,
}

impl LeaderMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_controller_lease_held` (1 while this replica leads, 0 on a
    /// standby) and `vpblu_controller_lease_errors_total`.
    pub fn register(health: &Health) -> Self {
        let metrics = LeaderMetrics::default();
        health.register_component("controller_lease", |registry| {
            registry.register(
                "held",
                "1 while this replica holds the leader Lease and runs the streams, status writes and \
                 rotations; 0 on a standby",
                metrics.leading.clone(),
            );
            registry.register("errors", "Failed Lease reads and writes (retried)", metrics.errors.clone());
        });
        metrics
    }

    /// Failed Lease calls so far.
    pub fn errors(&self) -> u64 {
        self.errors.get()
    }
}

/// What the Leader starts with. Cheap to clone: a restart gets a copy.
#[derive(Clone)]
pub struct LeaderArgs {
    /// The API client.
    pub client: Client,
    /// Which Lease and the timings.
    pub config: LeaderConfig,
    /// Set to `true` while this replica leads; subscribe with
    /// `watch::Sender::subscribe`.
    pub leading: watch::Sender<bool>,
    /// Metrics, registered once by the caller.
    pub metrics: LeaderMetrics,
}

impl fmt::Debug for LeaderArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderArgs").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Messages the Leader takes.
#[derive(Debug)]
pub enum LeaderMsg {
    /// Acquire or renew the Lease now (sent to itself every `renew`).
    Tick,
    /// Whether this replica leads.
    IsLeader(RpcReplyPort<bool>),
}

/// Holds (or waits for) the Lease. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct Leader;

impl Leader {
    /// The supervised child `leader` that runs with `args`.
    pub fn child(args: LeaderArgs) -> ChildSpec {
        ChildSpec::new("leader", move || (Leader, args.clone()))
    }
}

/// The `leading` flag; dropping it (however the actor ends) clears it.
#[derive(Debug)]
struct Leading {
    flag: watch::Sender<bool>,
    metrics: LeaderMetrics,
}

impl Leading {
    fn get(&self) -> bool {
        *self.flag.borrow()
    }

    fn set(&self, leading: bool) {
        self.metrics.leading.set(i64::from(leading));
        self.flag.send_if_modified(|now| std::mem::replace(now, leading) != leading);
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// The Lease as we last saw it change.
#[derive(Debug)]
struct Observed {
    version: String,
    at: Instant,
}

/// A running Leader.
pub struct LeaderState {
    api: Api<Lease>,
    config: LeaderConfig,
    leading: Leading,
    // When the last successful acquire or renew was sent; `Some` while leading.
    renewed_at: Option<Instant>,
    // Leading past the renew deadline through an API server outage.
    riding_out: bool,
    observed: Option<Observed>,
}

impl fmt::Debug for LeaderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderState")
            .field("config", &self.config)
            .field("leading", &self.leading.get())
            .finish_non_exhaustive()
    }
}

/// What one attempt found.
#[derive(Debug)]
enum Outcome {
    /// We hold the Lease (acquired or renewed).
    Holding,
    /// Someone else holds it.
    Following(String),
}

impl Actor for Leader {
    type Msg = LeaderMsg;
    type State = LeaderState;
    type Arguments = LeaderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LeaderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.config.check()?;
        let leading = Leading { flag: args.leading, metrics: args.metrics };
        leading.set(false);
        myself.cast(LeaderMsg::Tick)?;
        tracing::info!(
            lease = %format!("{}/{}", args.config.namespace, args.config.name),
            identity = %args.config.identity,
            "leader election started"
        );
        Ok(LeaderState {
            api: Api::namespaced(args.client, &args.config.namespace),
            config: args.config,
            leading,
            renewed_at: None,
            riding_out: false,
            observed: None,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.renewed_at.take().is_none() {
            return Ok(());
        }
        // Subscribers stop acting before anyone else can start.
        state.leading.set(false);
        match tokio::time::timeout(RELEASE_TIMEOUT, release(state)).await {
            Ok(Ok(())) => tracing::info!(identity = %state.config.identity, "released the Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease; it expires by itself"),
            Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LeaderMsg::Tick => {
                tick(state).await;
                myself.send_after(state.config.renew, || LeaderMsg::Tick);
            }
            LeaderMsg::IsLeader(reply) => {
                let _caller_gone = reply.send(state.leading.get());
            }
        }
        Ok(())
    }
}

/// One acquire-or-renew attempt and what follows from it.
async fn tick(state: &mut LeaderState) {
    let sent = Instant::now();
    let timeout = state.config.renew;
    let outcome = match tokio::time::timeout(timeout, attempt(state)).await {
        Ok(result) => result,
        Err(_) => Err(LeaderError::Timeout(timeout)),
    };
    let identity = state.config.identity.clone();
    match outcome {
        Ok(Outcome::Holding) => {
            state.renewed_at = Some(sent);
            if std::mem::take(&mut state.riding_out) {
                tracing::info!(%identity, "the API server answers again: Lease renewed, still leading");
            }
            if !state.leading.get() {
                tracing::info!(%identity, "elected: this replica leads");
                state.leading.set(true);
            }
        }
        Ok(Outcome::Following(holder)) => {
            if state.renewed_at.take().is_some() {
                tracing::warn!(%identity, %holder, "lost the Lease to another replica: stepping down");
            }
            state.riding_out = false;
            state.leading.set(false);
        }
        Err(error) => {
            state.leading.metrics.errors.inc();
            tracing::warn!(%identity, %error, "Lease call failed; retrying");
            let Some(renewed) = state.renewed_at else { return };
            let since = renewed.elapsed();
            let deadline = state.config.renew_deadline();
            if since < deadline {
                return;
            }
            if error.is_outage() && since < deadline + state.config.outage_grace {
                if !std::mem::replace(&mut state.riding_out, true) {
                    tracing::warn!(
                        %identity,
                        grace_ms = state.config.outage_grace.as_millis() as u64,
                        "the API server cannot be reached to renew the Lease: still leading (daemon streams \
                         stay open) for up to the outage grace, or until another holder shows"
                    );
                }
                return;
            }
            tracing::warn!(
                %identity,
                since_renew_ms = since.as_millis() as u64,
                "could not renew the Lease in time: stepping down"
            );
            state.renewed_at = None;
            state.riding_out = false;
            state.leading.set(false);
        }
    }
}

/// Reads the Lease and creates, renews or takes it over when it is ours to take.
async fn attempt(state: &mut LeaderState) -> Result<Outcome, LeaderError> {
    let lease_name = format!("{}/{}", state.config.namespace, state.config.name);
    let api_error = |source| LeaderError::Api { lease: lease_name.clone(), source };
    let now = Timestamp::now();
    let me = state.config.identity.clone();
    let Some(lease) = state.api.get_opt(&state.config.name).await.map_err(api_error)? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(state.config.name.clone()), ..ObjectMeta::default() },
            spec: Some(held_spec(&state.config, now, 0)),
        };
        return match state.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Outcome::Holding),
            Err(e) if is_conflict(&e) => {
                Ok(Outcome::Following("another replica (it created the Lease)".into()))
            }
            Err(e) => Err(api_error(e)),
        };
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    if state.observed.as_ref().is_none_or(|o| o.version != version) {
        state.observed = Some(Observed { version, at: Instant::now() });
    }
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let new_spec = match &holder {
        Some(h) if *h == me => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(state.config.duration_seconds()),
            ..spec
        },
        Some(h) if !expired(&spec, now, state.observed.as_ref()) => return Ok(Outcome::Following(h.clone())),
        _ => held_spec(&state.config, now, spec.lease_transitions.unwrap_or(0).saturating_add(1)),
    };
    let taking_over = holder.as_deref() != Some(me.as_str());
    // `lease.metadata` keeps the resourceVersion we read: a write in between fails.
    let update = Lease { metadata: lease.metadata, spec: Some(new_spec) };
    match state.api.replace(&state.config.name, &PostParams::default(), &update).await {
        Ok(_) => {
            if taking_over {
                tracing::info!(identity = %me, previous = ?holder, "took over the Lease");
            }
            Ok(Outcome::Holding)
        }
        Err(e) if is_conflict(&e) && taking_over => {
            Ok(Outcome::Following("another replica (it took the Lease first)".into()))
        }
        Err(e) if is_conflict(&e) => Err(LeaderError::Conflict { lease: lease_name }),
        Err(e) => Err(api_error(e)),
    }
}

/// Clears the holder (if it is still us) and shortens the duration.
async fn release(state: &LeaderState) -> Result<(), LeaderError> {
    let lease_name = format!("{}/{}", state.config.namespace, state.config.name);
    let api_error = |source| LeaderError::Api { lease: lease_name.clone(), source };
    let Some(lease) = state.api.get_opt(&state.config.name).await.map_err(api_error)? else {
        return Ok(());
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(state.config.identity.as_str()) {
        return Ok(());
    }
    let released = LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..spec
    };
    let update = Lease { metadata: lease.metadata, spec: Some(released) };
    match state.api.replace(&state.config.name, &PostParams::default(), &update).await {
        Ok(_) => Ok(()),
        // Someone took it over meanwhile: nothing left to release.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(api_error(e)),
    }
}

/// The spec of a Lease we just acquired.
fn held_spec(config: &LeaderConfig, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration_seconds()),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Whether the holder's term is over, by its own duration: past
/// `renewTime + leaseDurationSeconds` by our clock and unchanged for that
/// long by our own observation.
fn expired(spec: &LeaseSpec, now: Timestamp, observed: Option<&Observed>) -> bool {
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
    let duration = Duration::from_secs(seconds.unsigned_abs().into());
    let by_clock = match &spec.renew_time {
        Some(MicroTime(renewed)) => {
            renewed.checked_add(SignedDuration::from_secs(seconds.into())).is_ok_and(|end| end < now)
        }
        None => true,
    };
    let by_observation = observed.is_some_and(|o| o.at.elapsed() >= duration);
    by_clock && by_observation
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests;
