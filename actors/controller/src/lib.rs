//! vpblu controller: turns vpblu Custom Resources into per-node desired
//! state and pushes it to every node's daemon over a warm gRPC stream.
//!
//! The pure heart, desired state, is the `vpblu-engine` crate (no I/O);
//! `from_k8s` turns the Kubernetes objects into its inputs (also pure);
//! `tree` is the ractor supervision tree around them.

mod args;
pub mod dashboard;
pub mod decided;
pub mod from_k8s;
pub mod informers;
pub mod leader;
pub mod metrics;
pub mod policy_status;
pub mod recompute;
pub mod rotation;
pub mod status_writer;
pub mod stream;
mod tree;
pub mod uninstall;

pub use args::{Args, Job, parse_duration};
pub use tree::{run, run_until};
