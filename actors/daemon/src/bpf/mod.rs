//! The BPF data plane: the committed `classify` and `deliver` objects
//! (ebpf-programs/), loaded with aya, attached at tc ingress, their maps
//! pinned under bpffs so that forwarding and drops outlive the daemon.
//!
//! - [`layout`]: the Rust mirror of `mesh_maps.h`.
//! - [`blocks`]: block rules flattened into two LPM lookups (pure).
//! - [`dataplane`]: load, attach, detach, diff-and-apply writers, counters.

pub mod blocks;
pub mod bpffs;
pub mod dataplane;
mod error;
pub mod layout;

pub use dataplane::{AttachMode, Attached, Dataplane, ProgramKind, SyncStats, TestRunOutcome};
pub use error::BpfError;
pub use layout::{DstEntry, MeshConfig, Verdict};
