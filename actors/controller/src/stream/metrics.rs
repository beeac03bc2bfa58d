//! The stream server's metrics, under `vpblu_controller_stream_`, and the
//! convergence histogram `vpblu_controller_convergence_seconds`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vpblu_runtime::Health;

use super::RejectReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// 1 ms to about 33 s: a targeted change reaches a node and is applied in
/// milliseconds; a full state of a large cluster, or a daemon busy
/// restarting, takes seconds.
fn convergence_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Counters and gauges of the stream server. Registered once per process
/// (a restarted server reuses them; registering twice would print every
/// series twice).
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    rejected: Family<RejectLabels, Counter>,
    connected: Gauge,
    convergence: Histogram,
}

impl StreamMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_controller_stream_rejected_total{reason}`,
    /// `vpblu_controller_stream_connections` and
    /// `vpblu_controller_convergence_seconds`.
    pub fn register(health: &Health) -> Self {
        let metrics = StreamMetrics {
            rejected: Family::default(),
            connected: Gauge::default(),
            convergence: convergence_histogram(),
        };
        health.register_component("controller_stream", |registry| {
            registry.register(
                "rejected",
                "Daemon streams refused (TLS, identity) or closed for bad input, by reason",
                metrics.rejected.clone(),
            );
            registry.register(
                "connections",
                "Daemon streams currently connected to this replica (0 on a standby)",
                metrics.connected.clone(),
            );
        });
        health.register_component("controller", |registry| {
            registry.register(
                "convergence_seconds",
                "Time from sending a generation of a node's desired state down its stream to the daemon's \
                 ack that it is applied",
                metrics.convergence.clone(),
            );
        });
        metrics
    }

    /// Counts one stream closed for `reason`.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// How many streams were closed for `reason` so far.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected.get_or_create(&RejectLabels { reason }).get()
    }

    pub(crate) fn set_connected(&self, streams: usize) {
        self.connected.set(i64::try_from(streams).unwrap_or(i64::MAX));
    }

    /// A daemon acked as applied a generation sent `took` ago.
    pub(crate) fn converged(&self, took: Duration) {
        self.convergence.observe(took.as_secs_f64());
    }

    /// One series of each family, for the metrics reference.
    pub(crate) fn touch_examples(&self) {
        self.rejected.get_or_create(&RejectLabels { reason: RejectReason::NoToken }).inc_by(0);
    }
}
