//! What both vpblu binaries stand on: a one-for-one [`Supervisor`] for their
//! ractor trees, the root runner that turns SIGTERM into an orderly stop and
//! an escalated failure into a non-zero exit, logging set-up, and the one
//! backoff and error-chain helper every retry and log line uses.

mod backoff;
mod duration;
mod error_chain;
pub mod exposition;
pub mod fault;
mod forward;
mod gate;
mod health;
mod logging;
mod root;
mod slot;
mod supervisor;

pub use backoff::Backoff;
pub use duration::parse_duration;
pub use error_chain::error_chain;
pub use forward::{Forward, broadcast_messages, forward, watch_changes};
pub use gate::{Gate, GateArgs, GateMsg, GateState};
pub use health::{Health, HealthServer, HealthServerArgs, HealthServerMsg, HealthServerState};
pub use logging::{LogFormat, init_logging};
pub use root::{RootExit, run_binary, run_root, run_root_observed, shutdown_signal};
pub use slot::{Slot, SlotError};
pub use supervisor::{ChildSpec, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg};

/// `tokio::spawn`, with the task in the caller's tracing span: what it
/// logs names the binary's node or replica and the actor that started it.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    tokio::spawn(task.in_current_span())
}
