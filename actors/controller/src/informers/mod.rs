//! Informers: one actor per watched kind (Node, VpbluNode, TunnelPolicy,
//! RoutePolicy, BlockPolicy, RotationPolicy, Pod), each a kube-runtime
//! watcher filling a reflector store and telling Recompute when something
//! it reads changed.
//!
//! - Desired state is computed from the first five. RotationPolicies feed
//!   the rotation scheduler, and Pods (only the daemon's own, in the
//!   controller's namespace, by label) the check of which node a stream
//!   speaks for; a change to those two is no reason to recompute, but their
//!   caches count for readiness like the others.
//!
//! - The stores live in [`Caches`], outside the actors: a restarted informer
//!   relists into the same store, so Recompute never reads a stale one.
//! - Watch errors (API server gone, 5xx, an expired resourceVersion) are
//!   logged, counted and retried by the watcher after a [`WatchBackoff`];
//!   they do not stop the actor. On reconnect the watcher resumes or relists,
//!   and the store swaps in the new list whole (`InitDone`), never half.
//! - Applies, deletes and finished (re)lists reach Recompute as
//!   [`RecomputeMsg::Changed`](crate::recompute::RecomputeMsg::Changed), but
//!   only when they change what `from_k8s` reads: a Node heartbeat or a
//!   status condition written by the controller itself does not.
//! - Informers run on every replica, leader or not, so a standby's caches
//!   are warm when it takes over.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use futures::{StreamExt, future, stream};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use vpblu_runtime::{ChildSpec, Forward, Health, error_chain, forward};

use crate::recompute::RecomputeHandle;

pub use self::caches::{Cache, Caches, DAEMON_POD_SELECTOR, Kind, Snapshot, Watched};

mod caches;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: Kind,
}

/// Counters of the informers. Registered once per process (a restarted
/// informer reuses them; registering twice would print every series twice).
#[derive(Clone, Debug, Default)]
pub struct InformerMetrics {
    changes: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
}

impl InformerMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_controller_informer_changes_total{kind}` and
    /// `vpblu_controller_informer_watch_errors_total{kind}`.
    pub fn register(health: &Health) -> Self {
        let metrics = InformerMetrics::default();
        // Every kind's series from the start, at 0: a series born at 1
        // would hide its first increase from rate() and increase().
        for kind in Kind::ALL {
            metrics.changes.get_or_create(&KindLabels { kind }).inc_by(0);
            metrics.errors.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        health.register_component("controller_informer", |registry| {
            registry.register(
                "changes",
                "Watch events that changed desired-state inputs, by Kubernetes kind",
                metrics.changes.clone(),
            );
            registry.register(
                "watch_errors",
                "Watch errors, retried with backoff, by Kubernetes kind",
                metrics.errors.clone(),
            );
        });
        metrics
    }

    /// Watch errors seen for `kind` so far.
    pub fn watch_errors(&self, kind: Kind) -> u64 {
        self.errors.get_or_create(&KindLabels { kind }).get()
    }

    /// Input-changing events seen for `kind` so far.
    pub fn changes(&self, kind: Kind) -> u64 {
        self.changes.get_or_create(&KindLabels { kind }).get()
    }
}

/// What an informer starts with. Cheap to clone: a restart gets a copy.
pub struct InformerArgs<K: Watched> {
    /// Where to watch: cluster-wide, or one namespace.
    pub api: Api<K>,
    /// Which objects (label and field selectors) and how to list.
    pub config: watcher::Config,
    /// The store to fill.
    pub cache: Cache<K>,
    /// Where changes go.
    pub recompute: RecomputeHandle,
    /// Counters, registered once by the caller.
    pub metrics: InformerMetrics,
}

impl<K: Watched> Clone for InformerArgs<K> {
    fn clone(&self) -> Self {
        InformerArgs {
            api: self.api.clone(),
            config: self.config.clone(),
            cache: self.cache.clone(),
            recompute: self.recompute.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<K: Watched> fmt::Debug for InformerArgs<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformerArgs").field("kind", &K::KIND).finish_non_exhaustive()
    }
}

/// Messages an informer takes.
#[derive(Debug)]
pub enum InformerMsg {
    /// The watch applied an event that changes desired-state inputs (the
    /// cache already holds it): tell Recompute.
    Changed,
    /// The watch failed with this error; the watcher retries by itself
    /// after a backoff.
    WatchError(String),
    /// The watch stream ended, which a watcher never does by itself:
    /// restart the informer.
    Ended,
    /// Whether the cache has held a complete list.
    Synced(RpcReplyPort<bool>),
}

/// Watches one kind. Empty: the watch task and the cache are its state.
pub struct Informer<K>(PhantomData<fn() -> K>);

impl<K> Default for Informer<K> {
    fn default() -> Self {
        Informer(PhantomData)
    }
}

impl<K: Watched> fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Informer<{}>", K::KIND)
    }
}

impl<K: Watched> Informer<K> {
    /// The supervised child `informer-<Kind>` that runs with `args`.
    pub fn child(args: InformerArgs<K>) -> ChildSpec {
        ChildSpec::new(format!("informer-{}", K::KIND), move || (Informer::<K>::default(), args.clone()))
    }
}

/// A running informer.
pub struct InformerState<K: Watched> {
    cache: Cache<K>,
    recompute: RecomputeHandle,
    metrics: InformerMetrics,
    _watch: Forward,
}

impl<K: Watched> fmt::Debug for InformerState<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformerState").field("cache", &self.cache).finish_non_exhaustive()
    }
}

impl<K: Watched> Actor for Informer<K> {
    type Msg = InformerMsg;
    type State = InformerState<K>;
    type Arguments = InformerArgs<K>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: InformerArgs<K>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cache = args.cache.clone();
        let messages = watcher(args.api, args.config)
            .backoff(WatchBackoff::default())
            .filter_map(move |event| {
                future::ready(match event {
                    // Nobody here reads managedFields; at thousands of
                    // Nodes they are a large share of what the cache holds.
                    Ok(event) => cache
                        .apply(&event.modify(|object| object.managed_fields_mut().clear()))
                        .then_some(InformerMsg::Changed),
                    Err(e) => Some(InformerMsg::WatchError(error_chain(&e))),
                })
            })
            .chain(stream::once(future::ready(InformerMsg::Ended)));
        tracing::debug!(kind = %K::KIND, "watching");
        Ok(InformerState {
            cache: args.cache,
            recompute: args.recompute,
            metrics: args.metrics,
            _watch: forward(messages, myself),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let labels = KindLabels { kind: K::KIND };
        match msg {
            InformerMsg::Changed => {
                state.metrics.changes.get_or_create(&labels).inc();
                state.recompute.changed(K::KIND);
            }
            InformerMsg::WatchError(error) => {
                state.metrics.errors.get_or_create(&labels).inc();
                tracing::warn!(kind = %K::KIND, %error, "watch failed; retrying with backoff");
            }
            InformerMsg::Ended => {
                return Err(format!("the {} watch stream ended", K::KIND).into());
            }
            InformerMsg::Synced(reply) => {
                let _caller_gone = reply.send(state.cache.synced());
            }
        }
        Ok(())
    }
}

impl Caches {
    /// One supervised informer per kind, all feeding `recompute`; the
    /// daemon's pods are watched in `namespace` (the controller's own).
    pub fn informers(
        &self,
        client: &Client,
        namespace: &str,
        recompute: &RecomputeHandle,
        metrics: &InformerMetrics,
    ) -> Vec<ChildSpec> {
        fn child<K: Watched>(
            api: Api<K>,
            cache: &Cache<K>,
            config: watcher::Config,
            recompute: &RecomputeHandle,
            metrics: &InformerMetrics,
        ) -> ChildSpec {
            let (cache, recompute, metrics) = (cache.clone(), recompute.clone(), metrics.clone());
            Informer::child(InformerArgs { api, config, cache, recompute, metrics })
        }
        let all = watcher::Config::default;
        let daemon_pods = watcher::Config::default().labels(DAEMON_POD_SELECTOR);
        let (r, m) = (recompute, metrics);
        vec![
            child(Api::all(client.clone()), &self.nodes, all(), r, m),
            child(Api::all(client.clone()), &self.vpblu_nodes, all(), r, m),
            child(Api::all(client.clone()), &self.tunnel_policies, all(), r, m),
            child(Api::all(client.clone()), &self.route_policies, all(), r, m),
            child(Api::all(client.clone()), &self.block_policies, all(), r, m),
            child(Api::all(client.clone()), &self.rotation_policies, all(), r, m),
            child(Api::namespaced(client.clone(), namespace), &self.daemon_pods, daemon_pods, r, m),
        ]
    }
}

/// How long a failed watch waits before it tries again: 250 ms, doubling
/// up to 5 s, each delay cut by up to half at random (equal jitter) so
/// replicas spread out; back to the start once the watch delivers again. kube's default
/// grows to 30 s, so after a 30 s API server outage a watch could stay
/// blind (and the mesh unchanged) for up to a minute: two retries of up
/// to 30 s each, the second one for the relist after "resourceVersion too
/// old". Seven watches a replica retrying every 5 s are no load.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    attempt: u32,
}

impl WatchBackoff {
    const DELAYS: vpblu_runtime::Backoff =
        vpblu_runtime::Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(5) };
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = WatchBackoff::DELAYS.equal_jitter(self.attempt, &mut rand::rng());
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_back_off_to_five_seconds_and_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(8).collect();
        for (delay, full) in delays.iter().zip([250, 500, 1000, 2000, 4000, 5000, 5000, 5000]) {
            let full = Duration::from_millis(full);
            assert!(*delay <= full && *delay >= full / 2, "{delays:?}");
        }
        backoff.reset();
        assert!(backoff.next().expect("endless") <= Duration::from_millis(250));
    }
}
