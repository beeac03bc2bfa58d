//! What Recompute measures: its Prometheus metrics, and the time each
//! step of a pass took (for its log line).

use std::fmt;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vpblu_runtime::Health;

/// Recompute's metrics. Registered once per process (a restarted Recompute
/// reuses them).
#[derive(Clone, Debug)]
pub struct RecomputeMetrics {
    pub(super) duration: Histogram,
    pub(super) passes: Counter,
    pub(super) publishes: Counter,
    pub(super) nodes: Gauge,
    pub(super) findings: Gauge,
    pub(super) apply_errors: Counter,
}

impl RecomputeMetrics {
    /// Creates the metrics and registers them in `health`, under
    /// `vpblu_controller_recompute_`: `duration_seconds`, `runs_total`,
    /// `publishes_total`, `nodes`, `findings` and
    /// `vpblunode_create_errors_total`.
    pub fn register(health: &Health) -> Self {
        let metrics = RecomputeMetrics {
            // 1 ms … 16 s.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            passes: Counter::default(),
            publishes: Counter::default(),
            nodes: Gauge::default(),
            findings: Gauge::default(),
            apply_errors: Counter::default(),
        };
        health.register_component("controller_recompute", |registry| {
            registry.register(
                "duration_seconds",
                "Time to read the caches and compute every node's desired state",
                metrics.duration.clone(),
            );
            registry.register("runs", "Desired-state computations", metrics.passes.clone());
            registry.register(
                "publishes",
                "Computations whose result differed from the last and was published to the streams",
                metrics.publishes.clone(),
            );
            registry.register(
                "nodes",
                "Nodes with a desired state after the last computation",
                metrics.nodes.clone(),
            );
            registry.register(
                "findings",
                "Findings (policy conflicts, unusable inputs) of the last computation",
                metrics.findings.clone(),
            );
            registry.register(
                "vpblunode_create_errors",
                "Failed attempts to create a Node's VpbluNode (retried)",
                metrics.apply_errors.clone(),
            );
        });
        metrics
    }
}

/// How long each step of a pass took, for the log.
pub(super) struct Phases {
    last: Instant,
    pub(super) laps: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub(super) fn start() -> Self {
        Phases { last: Instant::now(), laps: Vec::new() }
    }

    pub(super) fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (step, took)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{step}={}ms", took.as_millis())?;
        }
        Ok(())
    }
}
