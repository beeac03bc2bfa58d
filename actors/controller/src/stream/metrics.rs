//! The stream server's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vpblu_runtime::Health;

use super::RejectReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// Counters and gauges of the stream server. Registered once per process
/// (a restarted server reuses them; registering twice would print every
/// series twice).
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    rejected: Family<RejectLabels, Counter>,
    connected: Gauge,
}

impl StreamMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_stream_rejected_total{reason}` and `vpblu_stream_connected`.
    pub fn register(health: &Health) -> Self {
        let metrics = StreamMetrics { rejected: Family::default(), connected: Gauge::default() };
        health.register(|registry| {
            registry.register(
                "stream_rejected",
                "Daemon streams refused (TLS, identity) or closed for bad input, by reason",
                metrics.rejected.clone(),
            );
            registry.register(
                "stream_connected",
                "Daemon streams currently connected",
                metrics.connected.clone(),
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
}
