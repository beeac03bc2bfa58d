//! The status writer's metrics: how its writes end and how many wait.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vpblu_runtime::Health;

/// How a status write ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub(super) enum Outcome {
    /// Written.
    Ok,
    /// Refused or not answered; retried.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: Outcome,
}

/// Registered once per process; a restarted writer reuses them.
#[derive(Clone, Debug)]
pub struct StatusMetrics {
    writes: Family<OutcomeLabels, Counter>,
    pending: Gauge,
}

impl StatusMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_status_writes_total{result}` and `vpblu_status_writes_pending`
    /// (nodes whose status differs from what the daemon reported, queued or
    /// being written: how far VpbluNode status lags).
    pub fn register(health: &Health) -> Self {
        let metrics = StatusMetrics { writes: Family::default(), pending: Gauge::default() };
        health.register(|registry| {
            registry.register("status_writes", "VpbluNode status writes, by result", metrics.writes.clone());
            registry.register(
                "status_writes_pending",
                "VpbluNodes whose status waits for a write (queued or under way)",
                metrics.pending.clone(),
            );
        });
        metrics
    }

    pub(super) fn written(&self, result: Outcome) {
        self.writes.get_or_create(&OutcomeLabels { result }).inc();
    }

    pub(super) fn set_pending(&self, nodes: usize) {
        self.pending.set(i64::try_from(nodes).unwrap_or(i64::MAX));
    }
}
