//! vpblu daemon: runs on every node, owns its WireGuard device, routes and
//! eBPF programs, and applies what the controller sends over the stream.

mod args;
pub mod bpf;
pub mod data_plane;
pub mod keys;
pub mod pod_interfaces;
pub mod routing;
pub mod stream;
mod tree;
pub mod uninstall;
pub mod wireguard;

pub use args::Args;
pub use tree::{metrics_examples, run};
