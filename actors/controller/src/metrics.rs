//! Every controller metric in one place: registered once per process by
//! the tree (a restarted actor reuses its handles), and rendered with one
//! series of each family for the generated metrics reference
//! (docs/reference/metrics.md). Each component registers under its own
//! prefix, `vpblu_controller_<component>_`.

use vpblu_runtime::Health;

use crate::informers::InformerMetrics;
use crate::leader::LeaderMetrics;
use crate::recompute::RecomputeMetrics;
use crate::rotation::RotationMetrics;
use crate::status_writer::StatusMetrics;
use crate::stream::StreamMetrics;

/// The handles the tree hands its actors.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// The Lease: held, errors.
    pub leader: LeaderMetrics,
    /// Desired-state computations.
    pub recompute: RecomputeMetrics,
    /// Watches.
    pub informers: InformerMetrics,
    /// Daemon streams and convergence.
    pub stream: StreamMetrics,
    /// VpbluNode status writes.
    pub status: StatusMetrics,
    /// Key rotations.
    pub rotation: RotationMetrics,
}

impl ControllerMetrics {
    /// Creates every controller metric and registers it in `health`.
    pub fn register(health: &Health) -> Self {
        ControllerMetrics {
            leader: LeaderMetrics::register(health),
            recompute: RecomputeMetrics::register(health),
            informers: InformerMetrics::register(health),
            stream: StreamMetrics::register(health),
            status: StatusMetrics::register(health),
            rotation: RotationMetrics::register(health),
        }
    }

    /// `/metrics` pages of a controller in the states a scrape can catch
    /// it in, named: a fresh replica (what a standby serves: the
    /// leader-only families at zero), and one with a series of every
    /// labelled family, which the metrics reference
    /// (docs/reference/metrics.md) is generated from.
    pub fn examples() -> Vec<(&'static str, String)> {
        let fresh = Health::new();
        ControllerMetrics::register(&fresh);
        let every = Health::new();
        let metrics = ControllerMetrics::register(&every);
        metrics.stream.touch_examples();
        metrics.rotation.touch_examples();
        vec![("fresh or standby", fresh.render()), ("every family", every.render())]
    }
}
