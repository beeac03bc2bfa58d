//! The status writer's metrics: how its writes end and how many wait.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vpblu_runtime::Health;

/// How a status write ended, as the `result` label says it (`ok`,
/// `failed`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Written.
    Ok,
    /// Refused or not answered; retried.
    Failed,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        let value = match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        };
        fmt::Write::write_str(encoder, value)
    }
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
    /// `vpblu_controller_status_writes_total{result}` and
    /// `vpblu_controller_status_writes_pending` (nodes whose status differs
    /// from what the daemon reported, queued or being written: how far
    /// VpbluNode status lags).
    pub fn register(health: &Health) -> Self {
        let metrics = StatusMetrics { writes: Family::default(), pending: Gauge::default() };
        // Both results from the start, at 0: a failure counted into a new
        // series would be invisible to rate() and increase().
        for result in [Outcome::Ok, Outcome::Failed] {
            metrics.writes.get_or_create(&OutcomeLabels { result }).inc_by(0);
        }
        health.register_component("controller_status", |registry| {
            registry.register(
                "writes",
                "VpbluNode status writes, by result (ok, failed: retried)",
                metrics.writes.clone(),
            );
            registry.register(
                "writes_pending",
                "VpbluNodes whose status waits for a write (queued or under way; 0 on a standby)",
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
