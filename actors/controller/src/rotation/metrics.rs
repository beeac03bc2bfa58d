//! The rotation scheduler's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vpblu_messages::RotationPhase;
use vpblu_runtime::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// How a rotation ended, as the `result` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationResult {
    /// The new key is in use.
    Succeeded,
    /// Rolled back; the old key is in use.
    RolledBack,
    /// Not started (no key published yet, or another rotation recorded).
    Skipped,
}

impl RotationResult {
    fn label(self) -> &'static str {
        match self {
            RotationResult::Succeeded => "succeeded",
            RotationResult::RolledBack => "rolled_back",
            RotationResult::Skipped => "skipped",
        }
    }
}

fn phase_histogram() -> Histogram {
    // 0.1 s … about 27 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// Counters and histograms of the scheduler. Registered once per process
/// (a restarted scheduler reuses them).
#[derive(Clone, Debug)]
pub struct RotationMetrics {
    rotations: Family<ResultLabels, Counter>,
    phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
}

impl RotationMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_rotations_total{result}` and
    /// `vpblu_rotation_phase_duration_seconds{phase}`.
    pub fn register(health: &Health) -> Self {
        let metrics = RotationMetrics {
            rotations: Family::default(),
            phase_duration: Family::new_with_constructor(phase_histogram),
        };
        health.register(|registry| {
            registry.register(
                "rotations",
                "Key rotations ended, by result (succeeded, rolled_back, skipped)",
                metrics.rotations.clone(),
            );
            registry.register(
                "rotation_phase_duration_seconds",
                "Time from the start of a rotation phase to the step that ended it, by phase",
                metrics.phase_duration.clone(),
            );
        });
        metrics
    }

    /// Counts one rotation ended with `result`.
    pub fn ended(&self, result: RotationResult) {
        self.rotations.get_or_create(&ResultLabels { result: result.label() }).inc();
    }

    /// Rotations ended with `result` so far.
    pub fn count(&self, result: RotationResult) -> u64 {
        self.rotations.get_or_create(&ResultLabels { result: result.label() }).get()
    }

    /// Records that `phase` took `seconds`.
    pub fn phase_took(&self, phase: RotationPhase, seconds: f64) {
        self.phase_duration.get_or_create(&PhaseLabels { phase: phase.as_str() }).observe(seconds.max(0.0));
    }
}
