use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a WireGuard device could not be created, adopted, read or changed.
/// Messages name the device and the socket or binary involved, and what to
/// do; none of them carries key material.
#[derive(Debug, thiserror::Error)]
pub enum WireGuardError {
    /// The name cannot be a WireGuard interface (or UAPI socket) name.
    #[error("{name:?} is not a usable WireGuard device name: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No wireguard-go binary was found where the options said to look.
    #[error(
        "no wireguard-go binary found (looked for {tried}); build one with \
         `tools/wireguard-go/build.sh`, or pass the path of a wireguard-go binary"
    )]
    NoWireGuardGo {
        /// The places looked at, for the message.
        tried: String,
    },
    /// wireguard-go could not be executed.
    #[error(
        "starting `{program} -f {name}` failed: {source}; check that {program} is an executable wireguard-go"
    )]
    Spawn {
        /// The device.
        name: String,
        /// The binary.
        program: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The log file for wireguard-go could not be opened.
    #[error("opening wireguard-go's log {path} for {name}: {source}; check that its directory is writable")]
    Log {
        /// The device.
        name: String,
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// wireguard-go could not be signalled to stop.
    #[error("stopping wireguard-go for {name} (pid {pid}) failed: {source}; stop it by hand (`kill {pid}`)")]
    Stop {
        /// The device.
        name: String,
        /// Its process id.
        pid: u32,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// wireguard-go exited (at start-up, or later while supervised).
    #[error(
        "wireguard-go for {name} (pid {pid}) exited ({status}); its UAPI socket was {socket}. \
         Last lines of its log {log}:\n{tail}"
    )]
    Exited {
        /// The device.
        name: String,
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// Its UAPI socket.
        socket: PathBuf,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// The UAPI socket did not start answering in time.
    #[error(
        "{socket} did not answer within {waited:?}: {what}. Check that wireguard-go for {name} \
         runs in this network namespace and is not stuck"
    )]
    NotReady {
        /// The device.
        name: String,
        /// The socket waited for.
        socket: PathBuf,
        /// How long.
        waited: Duration,
        /// What was seen instead.
        what: String,
    },
    /// The socket for this name is served by a process in another network
    /// namespace: the UAPI directory is shared by all of them.
    #[error(
        "{socket} belongs to wireguard-go pid {pid} in another network namespace; /var/run/wireguard \
         is shared by every namespace on the machine, so WireGuard device names must be unique per \
         machine: pick another name for {name}, or stop pid {pid}"
    )]
    ForeignNamespace {
        /// The device.
        name: String,
        /// The socket.
        socket: PathBuf,
        /// The process serving it.
        pid: u32,
    },
    /// A UAPI request failed on the socket (connect, write, read, timeout).
    #[error("UAPI {op} on {socket} failed: {source}; check that wireguard-go for {name} is running")]
    Uapi {
        /// The device.
        name: String,
        /// The socket.
        socket: PathBuf,
        /// `get` or `set`.
        op: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The userspace WireGuard answered a request with a non-zero errno.
    #[error(
        "wireguard-go for {name} at {socket} refused UAPI {op} with errno {errno}; nothing of that \
         request may be assumed applied (see its log)"
    )]
    UapiRefused {
        /// The device.
        name: String,
        /// The socket.
        socket: PathBuf,
        /// `get` or `set`.
        op: &'static str,
        /// The errno it answered (wireguard-go sends negative values).
        errno: i64,
    },
    /// A UAPI reply could not be understood.
    #[error("unexpected UAPI {op} reply from {socket} for {name}: {detail}")]
    UapiProtocol {
        /// The device.
        name: String,
        /// The socket.
        socket: PathBuf,
        /// `get` or `set`.
        op: &'static str,
        /// What was wrong.
        detail: super::uapi::ReplyError,
    },
    /// The kernel refused a link of kind wireguard: it has no WireGuard.
    #[error(
        "cannot create WireGuard device {name}: this kernel has no WireGuard (module `wireguard` \
         not loaded and not loadable: {source}); run `modprobe wireguard` (the module ships with \
         Linux >= 5.6, e.g. Debian's linux-image-amd64), or start the daemon with \
         --backend userspace (or --backend auto, which falls back to it)"
    )]
    KernelModuleMissing {
        /// The device.
        name: String,
        /// What the kernel said (EOPNOTSUPP).
        #[source]
        source: io::Error,
    },
    /// A netlink request to the kernel WireGuard failed.
    #[error(
        "netlink {op} on WireGuard device {name} failed: {source}; check that the wireguard kernel \
         module is available and the daemon has CAP_NET_ADMIN in this network namespace"
    )]
    Netlink {
        /// The device.
        name: String,
        /// What was being done.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// `ENODEV`: no such device.
const ENODEV: i32 = 19;

impl WireGuardError {
    /// Whether the device is gone for good, not just slow to answer: the
    /// wireguard-go serving it exited, nothing listens on its socket any
    /// more, or the kernel has no such device.
    pub fn is_device_gone(&self) -> bool {
        match self {
            WireGuardError::Exited { .. } => true,
            WireGuardError::Uapi { source, .. } => {
                matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
            }
            WireGuardError::Netlink { source, .. } => source.raw_os_error() == Some(ENODEV),
            _ => false,
        }
    }
}
