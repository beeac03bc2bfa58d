//! The loaded data plane: both committed objects loaded with aya, their
//! maps pinned by name under one bpffs directory and reused by every later
//! load, the programs attached at tc ingress, and typed writers that diff
//! against what the maps hold and apply only the difference.
//!
//! Everything here blocks (bpf(2), netlink): the actor owning a
//! [`Dataplane`] calls it from `spawn_blocking`.
//!
//! # Outliving the daemon
//!
//! Maps are pinned, so their entries survive the process. Attachments too:
//! - [`AttachMode::Tcx`] (kernel ≥ 6.6, the default there): a tcx link,
//!   pinned at `<pin_dir>/link_<program>_<interface>`. A restarted daemon
//!   opens the pin and swaps its freshly loaded program into the same link
//!   with `BPF_LINK_UPDATE`: atomic, no packet sees no program.
//! - [`AttachMode::Netlink`]: a classic cls_bpf filter on clsact, at a fixed
//!   priority and handle per program. Filters stay until removed; a restart
//!   replaces the program of that same filter in place.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray};
use aya::programs::links::{FdLink, LinkError, LinkOrder, PinnedLink};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle};
use aya::programs::{Link as _, ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions};
use aya::sys::SyscallError;
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};

use super::BpfError;
use super::bpffs;
use super::layout::{
    self, BlockFromV4, BlockFromV6, DstLens, DstValue, MapShape, MeshConfig, PrefixKey, Verdict,
};

pub use self::sync::SyncStats;

mod sync;

static CLASSIFY_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../../../ebpf-programs/classify.bpf.o");
static DELIVER_OBJECT: &[u8] = aya::include_bytes_aligned!("../../../../../ebpf-programs/deliver.bpf.o");

/// tc priority of the classify filter in [`AttachMode::Netlink`].
pub const CLASSIFY_NETLINK_PRIORITY: u16 = 0x5650;
/// tc priority of the deliver filter in [`AttachMode::Netlink`].
pub const DELIVER_NETLINK_PRIORITY: u16 = 0x5651;
/// tc handle of both filters in [`AttachMode::Netlink`].
const NETLINK_HANDLE: TcHandle = TcHandle::new(0, 1);

/// One of the two programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    /// At tc ingress of pod-facing veths: blocks, marks, strict drops.
    Classify,
    /// At tc ingress of the WireGuard device: blocks on the receiving side.
    Deliver,
}

impl ProgramKind {
    /// The program's (and object's) name.
    pub const fn name(self) -> &'static str {
        match self {
            ProgramKind::Classify => "classify",
            ProgramKind::Deliver => "deliver",
        }
    }

    const fn netlink_priority(self) -> u16 {
        match self {
            ProgramKind::Classify => CLASSIFY_NETLINK_PRIORITY,
            ProgramKind::Deliver => DELIVER_NETLINK_PRIORITY,
        }
    }
}

/// How programs are attached to tc ingress. Both outlive the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// A tcx link pinned in the pin directory (kernel ≥ 6.6).
    Tcx,
    /// A cls_bpf filter on the clsact qdisc at a fixed priority.
    Netlink,
}

impl AttachMode {
    /// Tcx where the kernel has it (≥ 6.6), else netlink.
    pub fn for_running_kernel() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
            _ => AttachMode::Netlink,
        }
    }
}

/// What an attach did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Nothing of ours was there; attached anew.
    Created,
    /// Our earlier attachment (from this or a previous daemon) now runs the
    /// program loaded by this [`Dataplane`].
    Replaced,
}

/// One BPF_PROG_TEST_RUN of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (TC_ACT_OK = 0, TC_ACT_SHOT = 2).
    pub return_value: u32,
    /// Average time per run, as the kernel measured it.
    pub per_run: std::time::Duration,
}

struct Maps {
    dst_v4: LpmTrie<MapData, [u8; 4], DstValue>,
    dst_v6: LpmTrie<MapData, [u8; 16], DstValue>,
    dst_hash_v4: HashMap<MapData, PrefixKey<[u8; 4]>, DstValue>,
    dst_hash_v6: HashMap<MapData, PrefixKey<[u8; 16]>, DstValue>,
    dst_lens: Array<MapData, DstLens>,
    block_from_v4: HashMap<MapData, BlockFromV4, u8>,
    block_from_v6: HashMap<MapData, BlockFromV6, u8>,
    config: Array<MapData, MeshConfig>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // aya's Array types have no Debug; the names say which maps these are.
        f.debug_struct("Maps").field("names", &layout::ALL_MAPS.map(|m| m.name)).finish()
    }
}

/// Both programs loaded, maps pinned. Dropping it detaches nothing and
/// unpins nothing: the kernel keeps forwarding and dropping as configured.
#[derive(Debug)]
pub struct Dataplane {
    pin_dir: PathBuf,
    mode: AttachMode,
    classify: Ebpf,
    deliver: Ebpf,
    maps: Maps,
}

impl Dataplane {
    /// Loads both programs, creating the maps pinned under `pin_dir` or
    /// reusing the ones pinned there by an earlier load. Mounts bpffs at
    /// /sys/fs/bpf first when `pin_dir` is under it and nothing is mounted.
    /// Pinned maps whose shape does not match this build are refused.
    pub fn load(pin_dir: &Path, mode: AttachMode) -> Result<Self, BpfError> {
        bpffs::ensure_pin_dir(pin_dir)?;
        check_pinned_shapes(pin_dir, false)?;
        let mut classify = load_object(ProgramKind::Classify, CLASSIFY_OBJECT, pin_dir)?;
        let deliver = load_object(ProgramKind::Deliver, DELIVER_OBJECT, pin_dir)?;
        check_pinned_shapes(pin_dir, true)?;

        let object = ProgramKind::Classify.name();
        let maps = Maps {
            dst_v4: take_map(&mut classify, object, &layout::DST_V4)?,
            dst_v6: take_map(&mut classify, object, &layout::DST_V6)?,
            dst_hash_v4: take_map(&mut classify, object, &layout::DST_HASH_V4)?,
            dst_hash_v6: take_map(&mut classify, object, &layout::DST_HASH_V6)?,
            dst_lens: take_map(&mut classify, object, &layout::DST_LENS_MAP)?,
            block_from_v4: take_map(&mut classify, object, &layout::BLOCK_FROM_V4)?,
            block_from_v6: take_map(&mut classify, object, &layout::BLOCK_FROM_V6)?,
            config: take_map(&mut classify, object, &layout::CONFIG)?,
            counters: take_map(&mut classify, object, &layout::COUNTERS)?,
        };
        Ok(Dataplane { pin_dir: pin_dir.to_owned(), mode, classify, deliver, maps })
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The attach mode.
    pub fn attach_mode(&self) -> AttachMode {
        self.mode
    }

    /// Where a map is pinned.
    pub fn map_pin_path(&self, shape: &MapShape) -> PathBuf {
        self.pin_dir.join(shape.name)
    }

    /// Where the tcx link of `program` on `interface` is pinned.
    pub fn link_pin_path(&self, program: ProgramKind, interface: &str) -> PathBuf {
        self.pin_dir.join(format!("link_{}_{interface}", program.name()))
    }

    /// Attaches classify at tc ingress of `interface` (the host side of a
    /// pod veth), in the calling thread's network namespace.
    pub fn attach_classify(&mut self, interface: &str) -> Result<Attached, BpfError> {
        self.attach(ProgramKind::Classify, interface)
    }

    /// Attaches deliver at tc ingress of `interface` (the WireGuard device).
    pub fn attach_deliver(&mut self, interface: &str) -> Result<Attached, BpfError> {
        self.attach(ProgramKind::Deliver, interface)
    }

    /// Attaches `program` at tc ingress of `interface`, replacing our
    /// earlier attachment there if there is one.
    pub fn attach(&mut self, program: ProgramKind, interface: &str) -> Result<Attached, BpfError> {
        match self.mode {
            AttachMode::Tcx => self.attach_tcx(program, interface),
            AttachMode::Netlink => self.attach_netlink(program, interface),
        }
    }

    /// Detaches `program` from tc ingress of `interface`. Returns false
    /// when nothing of ours was attached there.
    pub fn detach(&mut self, program: ProgramKind, interface: &str) -> Result<bool, BpfError> {
        match self.mode {
            AttachMode::Tcx => {
                let path = self.link_pin_path(program, interface);
                match PinnedLink::from_pin(&path) {
                    // Unpinning drops the last reference: the kernel detaches.
                    Ok(pinned) => {
                        pinned.unpin().map_err(|e| link_pin_error(&path, e))?;
                        Ok(true)
                    }
                    Err(e) if link_not_found(&e) => Ok(false),
                    Err(e) => Err(link_pin_error(&path, e)),
                }
            }
            AttachMode::Netlink => detach_netlink(program, interface),
        }
    }

    fn attach_tcx(&mut self, program: ProgramKind, interface: &str) -> Result<Attached, BpfError> {
        let path = self.link_pin_path(program, interface);
        let attach_error =
            |source| BpfError::Attach { program: program.name(), interface: interface.into(), source };
        let prog = self.program_mut(program)?;
        match PinnedLink::from_pin(&path) {
            Ok(pinned) => match SchedClassifierLink::try_from(FdLink::from(pinned)) {
                Ok(link) => match prog.attach_to_link(link) {
                    Ok(id) => {
                        // The pin keeps the link; our fd is not needed.
                        drop(prog.take_link(id).map_err(attach_error)?);
                        return Ok(Attached::Replaced);
                    }
                    // The link outlived its device (the interface was
                    // deleted, perhaps recreated): start over.
                    Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                        if io_error.raw_os_error() == Some(ENOLINK) =>
                    {
                        bpffs::remove_pin(&path).map_err(|e| link_pin_error(&path, e))?;
                    }
                    Err(e) => return Err(attach_error(e)),
                },
                // Not a tcx link: nothing we pinned.
                Err(_) => bpffs::remove_pin(&path).map_err(|e| link_pin_error(&path, e))?,
            },
            Err(e) if link_not_found(&e) => {}
            Err(e) => return Err(link_pin_error(&path, e)),
        }
        check_interface(interface)?;
        let id = prog
            .attach_with_options(
                interface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_error)?;
        let link = prog.take_link(id).map_err(attach_error)?;
        let fd_link = FdLink::try_from(link).map_err(|e| link_pin_error(&path, e))?;
        // Dropping the returned PinnedLink closes our fd; the pin holds the link.
        fd_link.pin(&path).map_err(|e| link_pin_error(&path, e))?;
        Ok(Attached::Created)
    }

    fn attach_netlink(&mut self, program: ProgramKind, interface: &str) -> Result<Attached, BpfError> {
        check_interface(interface)?;
        match tc::qdisc_add_clsact(interface) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            // "Exclusivity flag on": clsact is already there.
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(EEXIST) => {}
            Err(source) => return Err(BpfError::Clsact { interface: interface.into(), source }),
        }
        let attach_error =
            |source| BpfError::Attach { program: program.name(), interface: interface.into(), source };
        let existing = netlink_link(program, interface)?;
        let prog = self.program_mut(program)?;
        let (id, outcome) = match prog.attach_to_link(existing) {
            Ok(id) => (id, Attached::Replaced),
            Err(ProgramError::TcError(TcError::NetlinkError(e))) if e.raw_os_error() == Some(ENOENT) => {
                let options =
                    NlOptions { priority: program.netlink_priority(), handle: NETLINK_HANDLE, classid: None };
                let id = prog
                    .attach_with_options(interface, TcAttachType::Ingress, TcAttachOptions::Netlink(options))
                    .map_err(attach_error)?;
                (id, Attached::Created)
            }
            Err(e) => return Err(attach_error(e)),
        };
        let link = prog.take_link(id).map_err(attach_error)?;
        // A netlink link detaches the filter when dropped, but the filter is
        // meant to outlive this process. The link holds no fd or memory
        // (interface index, priority, handle), so forgetting it leaks nothing.
        std::mem::forget(link);
        Ok(outcome)
    }

    fn program_mut(&mut self, program: ProgramKind) -> Result<&mut SchedClassifier, BpfError> {
        let ebpf = match program {
            ProgramKind::Classify => &mut self.classify,
            ProgramKind::Deliver => &mut self.deliver,
        };
        program_of(ebpf, program)
    }

    fn program(&self, program: ProgramKind) -> Result<&SchedClassifier, BpfError> {
        let ebpf = match program {
            ProgramKind::Classify => &self.classify,
            ProgramKind::Deliver => &self.deliver,
        };
        let missing =
            || BpfError::MissingInObject { object: program.name(), what: "program", name: program.name() };
        ebpf.program(program.name()).ok_or_else(missing)?.try_into().map_err(|_| missing())
    }

    /// Writes the mesh mark and strict mode. Write it before the first
    /// destinations: a PEER entry marks with whatever mark is configured.
    pub fn set_config(&mut self, mesh_mark: u32, strict: bool) -> Result<(), BpfError> {
        let config = MeshConfig { mesh_mark, strict: u32::from(strict) };
        self.maps.config.set(0, config, 0).map_err(|source| BpfError::Map {
            action: "write",
            map: layout::CONFIG.name,
            source,
        })
    }

    /// The configuration the programs read now.
    pub fn config(&self) -> Result<MeshConfig, BpfError> {
        self.maps.config.get(&0, 0).map_err(|source| BpfError::Map {
            action: "read",
            map: layout::CONFIG.name,
            source,
        })
    }

    /// Packets per verdict since the maps were created, summed over CPUs.
    /// Every verdict is present, zeros included.
    pub fn counters(&self) -> Result<BTreeMap<Verdict, u64>, BpfError> {
        let mut out = BTreeMap::new();
        for verdict in Verdict::ALL {
            let per_cpu = self.maps.counters.get(&verdict.index(), 0).map_err(|source| BpfError::Map {
                action: "read",
                map: layout::COUNTERS.name,
                source,
            })?;
            out.insert(verdict, per_cpu.iter().copied().fold(0u64, u64::wrapping_add));
        }
        Ok(out)
    }

    /// Runs `program` on `packet` `repeat` times with BPF_PROG_TEST_RUN
    /// (no attachment needed). classify expects an Ethernet frame. Counters
    /// count these runs like real packets.
    pub fn test_run(
        &self,
        program: ProgramKind,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, BpfError> {
        let prog = self.program(program)?;
        let options = TestRunOptions { data_in: Some(packet), repeat, ..TestRunOptions::default() };
        let result =
            prog.test_run(options).map_err(|source| BpfError::TestRun { program: program.name(), source })?;
        Ok(TestRunOutcome { return_value: result.return_value, per_run: result.duration })
    }
}

/// `ENOLINK`: bpf_link_update on a tcx link whose device is gone.
const ENOLINK: i32 = 67;
/// `EEXIST`.
const EEXIST: i32 = 17;

/// `ENOENT`: no filter at our priority and handle.
const ENOENT: i32 = 2;
/// `EINVAL`: deleting a filter from a device without a clsact qdisc.
const EINVAL: i32 = 22;
/// `ENODEV`: the device went.
const ENODEV: i32 = 19;

fn load_object(program: ProgramKind, bytes: &[u8], pin_dir: &Path) -> Result<Ebpf, BpfError> {
    let mut ebpf = EbpfLoader::new().default_map_pin_directory(pin_dir).load(bytes).map_err(|source| {
        BpfError::LoadObject { object: program.name(), pin_dir: pin_dir.into(), source: Box::new(source) }
    })?;
    program_of(&mut ebpf, program)?
        .load()
        .map_err(|source| BpfError::LoadProgram { program: program.name(), source })?;
    Ok(ebpf)
}

fn program_of(ebpf: &mut Ebpf, program: ProgramKind) -> Result<&mut SchedClassifier, BpfError> {
    let missing =
        || BpfError::MissingInObject { object: program.name(), what: "program", name: program.name() };
    ebpf.program_mut(program.name()).ok_or_else(missing)?.try_into().map_err(|_| missing())
}

fn take_map<M>(ebpf: &mut Ebpf, object: &'static str, shape: &MapShape) -> Result<M, BpfError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(shape.name).ok_or(BpfError::MissingInObject {
        object,
        what: "map",
        name: shape.name,
    })?;
    M::try_from(map).map_err(|source| BpfError::Map { action: "open", map: shape.name, source })
}

/// Compares every pinned map with the shape this build needs. With
/// `require_all`, a missing pin is an error too (after loading, all must be
/// there: that also proves the C and Rust layouts agree).
fn check_pinned_shapes(pin_dir: &Path, require_all: bool) -> Result<(), BpfError> {
    for shape in layout::ALL_MAPS {
        let path = pin_dir.join(shape.name);
        if !require_all && !path.exists() {
            continue;
        }
        let info =
            MapInfo::from_pin(&path).map_err(|source| BpfError::OpenPin { path: path.clone(), source })?;
        let found = MapShape {
            name: shape.name,
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        if found != shape {
            return Err(BpfError::IncompatiblePin {
                path,
                expected: describe(&shape),
                found: describe(&found),
            });
        }
    }
    Ok(())
}

fn describe(s: &MapShape) -> String {
    format!(
        "type {} key {} B value {} B max_entries {} flags {:#x}",
        s.map_type, s.key_size, s.value_size, s.max_entries, s.flags
    )
}

fn check_interface(interface: &str) -> Result<(), BpfError> {
    // /sys/class/net shows the namespace /sys was mounted in, not the
    // calling thread's: ask through a socket, which lives in the thread's.
    let socket = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None)
        .map_err(|e| BpfError::NoInterface { interface: interface.into(), source: e.into() })?;
    rustix::net::netdevice::name_to_index(&socket, interface)
        .map(|_| ())
        .map_err(|e| BpfError::NoInterface { interface: interface.into(), source: e.into() })
}

/// Removes our cls_bpf filter for `program` (its priority and handle)
/// from tc ingress of `interface`, whoever loaded it: no loaded program or
/// pinned map is needed, so removing vpblu from a node can call it. False
/// when there was none.
pub fn detach_netlink(program: ProgramKind, interface: &str) -> Result<bool, BpfError> {
    let link = netlink_link(program, interface)?;
    match link.detach() {
        Ok(()) => Ok(true),
        // No such filter; no clsact qdisc (never attached); the device went.
        Err(ProgramError::NetlinkError(e)) if matches!(e.raw_os_error(), Some(ENOENT | EINVAL | ENODEV)) => {
            Ok(false)
        }
        Err(e) => Err(BpfError::Detach {
            program: program.name(),
            interface: interface.to_owned(),
            source: Box::new(e),
        }),
    }
}

fn netlink_link(program: ProgramKind, interface: &str) -> Result<SchedClassifierLink, BpfError> {
    SchedClassifierLink::attached(
        interface,
        TcAttachType::Ingress,
        program.netlink_priority(),
        NETLINK_HANDLE,
        None,
    )
    .map_err(|source| BpfError::NoInterface { interface: interface.into(), source })
}

fn link_not_found(e: &LinkError) -> bool {
    matches!(e, LinkError::SyscallError(SyscallError { io_error, .. }) if io_error.kind() == io::ErrorKind::NotFound)
}

fn link_pin_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> BpfError {
    BpfError::LinkPin { path: path.into(), source: Box::new(e) }
}
