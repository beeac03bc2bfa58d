//! The BPF data plane: the committed `classify` and `deliver` objects
//! (ebpf-programs/), loaded with aya, attached at tc ingress, their maps
//! pinned under bpffs so that forwarding and drops outlive the daemon.
//!
//! - [`layout`]: the Rust mirror of `mesh_maps.h`.
//! - [`blocks`]: block rules flattened into destination classes and their
//!   sources (pure).
//! - [`dst_table`]: mesh and block destinations merged into the one trie
//!   the programs walk per packet, and read back apart (pure).
//! - [`dataplane`]: load, attach, detach, diff-and-apply writers, counters.

pub mod blocks;
pub mod bpffs;
pub mod dataplane;
pub mod dst_table;
mod error;
pub mod layout;

pub use dataplane::{AttachMode, Attached, Dataplane, ProgramKind, SyncStats, TestRunOutcome};
pub use error::BpfError;
pub use layout::{DstEntry, DstValue, MeshConfig, Verdict};
