//! The rotation scheduler's metrics: `vpblu_controller_rotations_total`
//! and, under `vpblu_controller_rotation_`, the phase timings and whether
//! a rotation runs (for a "stuck" alert).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    in_progress: Gauge,
    phase_started: Gauge<f64, AtomicU64>,
}

impl RotationMetrics {
    /// Creates the metrics and registers them in `health`:
    /// `vpblu_controller_rotations_total{result}`, and under
    /// `vpblu_controller_rotation_`: `phase_duration_seconds{phase}`,
    /// `in_progress` and `phase_started_timestamp_seconds`.
    pub fn register(health: &Health) -> Self {
        let metrics = RotationMetrics {
            rotations: Family::default(),
            phase_duration: Family::new_with_constructor(phase_histogram),
            in_progress: Gauge::default(),
            phase_started: Gauge::default(),
        };
        // Every result from the start, at 0: the first rollback counted
        // into a new series would not show in increase() (nor alert).
        for result in [RotationResult::Succeeded, RotationResult::RolledBack, RotationResult::Skipped] {
            metrics.ended_by(result, 0);
        }
        health.register_component("controller", |registry| {
            registry.register(
                "rotations",
                "Key rotations ended, by result (succeeded, rolled_back, skipped)",
                metrics.rotations.clone(),
            );
        });
        health.register_component("controller_rotation", |registry| {
            registry.register(
                "phase_duration_seconds",
                "Time from the start of a rotation phase to the step that ended it, by phase",
                metrics.phase_duration.clone(),
            );
            registry.register(
                "in_progress",
                "1 while this replica drives a key rotation (one node at a time), else 0",
                metrics.in_progress.clone(),
            );
            registry.register(
                "phase_started_timestamp_seconds",
                "When the running rotation's current phase started, in seconds since the epoch; 0 when none runs",
                metrics.phase_started.clone(),
            );
        });
        metrics
    }

    /// A rotation runs, in a phase that started at `unix_seconds`.
    pub fn in_phase(&self, unix_seconds: f64) {
        self.phase_started.set(unix_seconds);
        self.in_progress.set(1);
    }

    /// No rotation runs (or this replica no longer drives them).
    pub fn idle(&self) {
        self.in_progress.set(0);
        self.phase_started.set(0.0);
    }

    /// One series of each family, for the metrics reference.
    pub(crate) fn touch_examples(&self) {
        drop(self.phase_duration.get_or_create(&PhaseLabels { phase: RotationPhase::Prepare.as_str() }));
    }

    fn ended_by(&self, result: RotationResult, n: u64) {
        self.rotations.get_or_create(&ResultLabels { result: result.label() }).inc_by(n);
    }

    /// Counts one rotation ended with `result`.
    pub fn ended(&self, result: RotationResult) {
        self.ended_by(result, 1);
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
