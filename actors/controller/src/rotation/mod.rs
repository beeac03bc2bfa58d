//! Scheduled, zero-drop key rotation, controller side.
//!
//! RotationPolicies say when and which nodes; the [`RotationScheduler`]
//! (leader only) rotates one node at a time through Prepare → Distribute →
//! Activate → (overlap) → Retire → Settle, or rolls back before Retire,
//! recording every step in the VpbluNode's status. Desired state turns that
//! status into each node's lanes (`desired_state`), and the daemons report
//! each phase done over their streams.
//!
//! - `schedule`: cron expressions and when a run is due;
//! - `selector`: the policies' node selectors;
//! - `policies`: which policy owns which node, and their conditions;
//! - `runs`: when a run starts and which node goes next;
//! - `progress`: what one rotation does next, from the reports;
//! - `handoff`: the new key, handed to the status writer at the end;
//! - `reports`: the daemons' reports, kept across scheduler restarts;
//! - `writes`, `metrics`, and the actor, `scheduler`.

mod handoff;
mod metrics;
mod policies;
mod progress;
mod reports;
mod runs;
mod schedule;
mod scheduler;
mod selector;
mod writes;

pub use handoff::KeyHandoff;
pub use metrics::{RotationMetrics, RotationResult};
pub use reports::ReportBook;
pub use schedule::{EXPECTED_FORM, Schedule, ScheduleError};
pub use scheduler::{RotationScheduler, RotationSchedulerArgs, RotationSchedulerMsg, SchedulerConfig};
pub use selector::{Selector, SelectorError};
