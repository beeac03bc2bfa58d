//! What can go wrong loading, attaching and writing the data plane.

use std::io;
use std::path::PathBuf;

use vpblu_messages::Cidr;

/// An error from the BPF data plane. Each says what failed, on which path
/// or interface, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// bpffs is not mounted at /sys/fs/bpf and mounting it failed.
    #[error(
        "bpffs is not mounted at {mount_point} and mounting it failed: {source}; \
         mount it (`mount -t bpf bpf {mount_point}`), or in a pod mount the host's /sys/fs/bpf"
    )]
    MountBpffs {
        /// Where bpffs was to be mounted.
        mount_point: PathBuf,
        /// Why mount(2) failed.
        #[source]
        source: io::Error,
    },
    /// The pin directory could not be created or inspected.
    #[error("cannot create or inspect the BPF pin directory {path}: {source}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The pin directory is not on a bpffs, so nothing can be pinned there.
    #[error(
        "the BPF pin directory {path} is not on a bpffs: mount bpffs at /sys/fs/bpf \
         (`mount -t bpf bpf /sys/fs/bpf`) and put the pin directory under it"
    )]
    NotBpffs {
        /// The directory.
        path: PathBuf,
    },
    /// A pinned map left by another build has a different shape than this
    /// build's programs expect.
    #[error(
        "the pinned map {path} is {found} but this daemon needs {expected}: it was left by an \
         incompatible build; remove it (`rm {path}`) and restart the daemon, which recreates it \
         and rewrites its entries"
    )]
    IncompatiblePin {
        /// The pin.
        path: PathBuf,
        /// The shape this build needs.
        expected: String,
        /// The shape found.
        found: String,
    },
    /// A pinned map could not be opened or inspected.
    #[error("cannot open the pinned map {path}: {source}")]
    OpenPin {
        /// The pin.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Creating or reusing the maps of an object failed.
    #[error(
        "loading the {object} object with maps pinned under {pin_dir} failed: {source} \
         (run as root, or with CAP_BPF and CAP_NET_ADMIN)"
    )]
    LoadObject {
        /// `classify` or `deliver`.
        object: &'static str,
        /// The pin directory.
        pin_dir: PathBuf,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The committed object lacks a program or map this build expects: the
    /// object and the Rust side are out of step.
    #[error(
        "the embedded {object} object has no {what} `{name}`: rebuild the objects \
         (`make -C ebpf-programs`) and this crate"
    )]
    MissingInObject {
        /// `classify` or `deliver`.
        object: &'static str,
        /// "program" or "map".
        what: &'static str,
        /// The missing name.
        name: &'static str,
    },
    /// The kernel refused the program (the verifier log is in the source).
    #[error("the kernel refused to load the {program} program: {source}")]
    LoadProgram {
        /// `classify` or `deliver`.
        program: &'static str,
        /// aya's error, with the verifier log.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The interface to attach to or detach from does not exist in this
    /// network namespace.
    #[error("no interface {interface} in this network namespace: {source}")]
    NoInterface {
        /// The interface name.
        interface: String,
        /// The lookup error.
        #[source]
        source: io::Error,
    },
    /// Adding the clsact qdisc failed (an existing one is not an error).
    #[error("cannot add the clsact qdisc to {interface}: {source}")]
    Clsact {
        /// The interface.
        interface: String,
        /// aya's error.
        #[source]
        source: aya::programs::tc::TcError,
    },
    /// Attaching a program at tc ingress failed.
    #[error("cannot attach {program} at tc ingress of {interface}: {source}")]
    Attach {
        /// `classify` or `deliver`.
        program: &'static str,
        /// The interface.
        interface: String,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Detaching a program from tc ingress failed.
    #[error("cannot detach {program} from tc ingress of {interface}: {source}")]
    Detach {
        /// `classify` or `deliver`.
        program: &'static str,
        /// The interface.
        interface: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Pinning, opening or unpinning a tcx link failed.
    #[error("cannot pin or open the tc link {path}: {source}; check that {path} is on a bpffs")]
    LinkPin {
        /// The link's pin path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading or writing a map failed.
    #[error("cannot {action} the map {map}: {source}")]
    Map {
        /// "read", "write" or "delete from".
        action: &'static str,
        /// The map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// More entries than a map can hold.
    #[error(
        "{map} would need {needed} entries but holds at most {capacity}: merge CIDRs in the \
         policies, or raise the map size in ebpf-programs/mesh_maps.h and layout.rs"
    )]
    TooManyEntries {
        /// The map name.
        map: &'static str,
        /// Entries the desired state needs.
        needed: usize,
        /// The map's max_entries.
        capacity: u32,
    },
    /// The same destination CIDR was given twice with different entries.
    #[error("destination {cidr} is given twice with different entries; the controller must send one")]
    ConflictingDestination {
        /// The CIDR.
        cidr: Cidr,
    },
    /// Running a program under BPF_PROG_TEST_RUN failed.
    #[error("test run of {program} failed: {source}")]
    TestRun {
        /// `classify` or `deliver`.
        program: &'static str,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
}
