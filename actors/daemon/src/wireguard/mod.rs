//! The node's WireGuard device: created or adopted, read back, and brought
//! to the desired peer set with the smallest change.
//!
//! Two backends behind one [`WireGuardDevice`]:
//!
//! - **Kernel** — the in-kernel WireGuard over generic netlink
//!   (`wireguard-control`'s kernel backend). The link lives in the kernel and
//!   outlives the daemon by itself.
//! - **Userspace** — a `wireguard-go -f NAME` process, configured over its
//!   UAPI socket `/var/run/wireguard/NAME.sock` with our own small client
//!   (`uapi.rs`); `wireguard-control`'s userspace backend is not used because
//!   it execs `wireguard-go` (daemonized, unsupervised) when the socket is
//!   missing.
//!
//! [`detect_backend`] picks the kernel when the module is there, and says
//! why ([`BackendReason`]).
//!
//! # The userspace process outlives the daemon
//!
//! The data plane must not depend on the daemon being up. So when no device
//! answers, the daemon starts wireguard-go *detached from its own lifetime*:
//! in its own process group (SIGTERM to the daemon, or SIGINT from a
//! terminal, does not reach it), with stdin closed and output appended to
//! `/run/vpblu/wireguard-go-NAME.log` (no pipe back to the daemon that could
//! break). Dropping the [`WireGuardDevice`] handle leaves the process running;
//! while the daemon lives, [`WireGuardDevice::check`] reaps and reports it if
//! it dies. The next daemon calls [`WireGuard::ensure_device`] again, which
//! finds the socket, checks that it answers `get=1` and that the process
//! serving it (SO_PEERCRED) is in the daemon's network namespace, and adopts
//! it: same sessions, same counters, nothing reconfigured unless something
//! differs.
//!
//! UAPI sockets live in one directory shared by every network namespace on
//! the machine, so device names must be unique per machine; a socket served
//! from another namespace is refused ([`WireGuardError::ForeignNamespace`]).
//! The process is started in the network namespace of the calling thread.
//!
//! # In a pod: wireguard-go as a sidecar
//!
//! In the DaemonSet the same split maps onto two containers of the daemon's
//! pod (both `hostNetwork: true`, `NET_ADMIN`, `/dev/net/tun`, and a shared
//! `hostPath` volume at `/var/run/wireguard`):
//!
//! - a `wireguard` sidecar runs `wireguard-go -f wg-mesh` in the foreground
//!   (kubelet supervises and restarts it; its logs go to the container log);
//! - the daemon runs with [`WireGuardGo::External`]: it never starts
//!   wireguard-go, it waits for the socket and adopts it.
//!
//! A daemon container restart (crash, upgrade of the daemon image alone)
//! then leaves the sidecar, and the traffic, untouched, which is what the
//! detached child gives outside Kubernetes. On a node with the kernel module
//! the sidecar is not needed.
//!
//! # Calls block
//!
//! Every operation is a plain blocking call (netlink or a unix socket, with
//! timeouts); the actor that owns the device runs them on `spawn_blocking`.
//! None of them ever formats a key: private keys travel as [`PrivateKey`]
//! and are encoded only into zeroizing buffers.

mod diff;
mod error;
mod kernel;
mod uapi;
mod userspace;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use diff::{PeerDiff, PeerUpdate, diff_peers};
pub use error::WireGuardError;
/// The UAPI `get=1` reply parser (public for the fuzz target).
pub use uapi::parse_get as parse_uapi_get;
pub use userspace::{
    DEFAULT_LOG_DIR, DEFAULT_SOCKET_DIR, UserspaceOptions, WireGuardGo, find_wireguard_go,
    stop as stop_wireguard_go,
};
use vpblu_messages::PeerMap;
use vpblu_messages::{Backend, Cidr, NodeName, Peer, PublicKey};

use crate::keys::PrivateKey;
use kernel::KernelDevice;
use uapi::SetRequest;
use userspace::UserspaceDevice;

/// A device as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    /// The device's public key; `None` while it has no private key.
    pub public_key: Option<PublicKey>,
    /// Its UDP port (0: none yet).
    pub listen_port: u16,
    /// Its peers, in the device's order.
    pub peers: Vec<PeerState>,
}

/// One peer as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's key.
    pub public_key: PublicKey,
    /// Where the device sends to it (configured, or learned by roaming).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs, sorted.
    pub allowed_ips: Vec<Cidr>,
    /// When the last handshake completed; `None` if none did.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds; `None` when off.
    pub persistent_keepalive: Option<u16>,
}

/// How many reads and writes a handle sent to its device: a write that did
/// not happen is the proof that nothing was reconfigured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Read-backs (UAPI `get`, netlink get-device).
    pub reads: u64,
    /// Changes (UAPI `set`, netlink set-device).
    pub writes: u64,
}

/// Why a daemon drives the WireGuard backend it drives: the `reason` of
/// `vpblu_daemon_wireguard_backend`, a handful of values an operator can
/// act on (never the kernel's error text, which goes to the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendReason {
    /// `--backend kernel` or `--backend userspace`: nothing was probed.
    Requested,
    /// `auto` chose the kernel: the `wireguard` module was already loaded.
    ModuleLoaded,
    /// `auto` chose the kernel: a throwaway link of type wireguard could be
    /// created (which loads the module on demand).
    LinkCreated,
    /// `auto` fell back to userspace: the kernel knows no link of type
    /// wireguard (EOPNOTSUPP: no module, or it may not be loaded).
    ModuleMissing,
    /// `auto` fell back to userspace: creating the probe link failed for
    /// another reason (EPERM without CAP_NET_ADMIN, for one).
    LinkCreateFailed,
}

impl BackendReason {
    /// Every reason.
    pub const ALL: [BackendReason; 5] = [
        BackendReason::Requested,
        BackendReason::ModuleLoaded,
        BackendReason::LinkCreated,
        BackendReason::ModuleMissing,
        BackendReason::LinkCreateFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendReason::Requested => "requested",
            BackendReason::ModuleLoaded => "module_loaded",
            BackendReason::LinkCreated => "link_created",
            BackendReason::ModuleMissing => "module_missing",
            BackendReason::LinkCreateFailed => "link_create_failed",
        }
    }
}

/// The kernel backend when the kernel has WireGuard, else userspace, and
/// why; one log line says both (with the kernel's answer on a fallback).
pub fn detect_backend() -> (Backend, BackendReason) {
    match kernel::available() {
        Ok(reason) => {
            tracing::info!(reason = reason.as_str(), "WireGuard backend: kernel");
            (Backend::Kernel, reason)
        }
        Err((reason, why)) => {
            tracing::info!(
                reason = reason.as_str(),
                detail = %why,
                "WireGuard backend: userspace (no kernel WireGuard)"
            );
            (Backend::Userspace, reason)
        }
    }
}

/// Creates and adopts devices on one backend.
#[derive(Clone, Debug)]
pub struct WireGuard {
    backend: Backend,
    reason: BackendReason,
    userspace: UserspaceOptions,
}

impl WireGuard {
    /// A fixed backend.
    pub fn new(backend: Backend, userspace: UserspaceOptions) -> Self {
        WireGuard { backend, reason: BackendReason::Requested, userspace }
    }

    /// The backend [`detect_backend`] picks.
    pub fn detect(userspace: UserspaceOptions) -> Self {
        let (backend, reason) = detect_backend();
        WireGuard { backend, reason, userspace }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this backend.
    pub fn reason(&self) -> BackendReason {
        self.reason
    }

    /// The userspace options.
    pub fn userspace_options(&self) -> &UserspaceOptions {
        &self.userspace
    }

    /// Makes sure device `name` exists with this port and key, adopting an
    /// existing one (a restart) or creating it (kernel link / wireguard-go
    /// process). Idempotent: an existing device that already has this key
    /// and port is not written to; its peers are left alone either way.
    /// A `listen_port` of 0 leaves the port to the device.
    pub fn ensure_device(
        &self,
        name: &str,
        listen_port: u16,
        private_key: &PrivateKey,
    ) -> Result<WireGuardDevice, WireGuardError> {
        validate_name(name)?;
        let inner = match self.backend {
            Backend::Kernel => Inner::Kernel(KernelDevice::open(name)?),
            Backend::Userspace => Inner::Userspace(UserspaceDevice::open(name, &self.userspace)?),
        };
        let mut device = WireGuardDevice { name: name.to_owned(), inner, ops: OperationCounts::default() };
        let state = device.read_back()?;
        let request = SetRequest {
            private_key: (state.public_key != Some(private_key.public_key())).then_some(private_key),
            listen_port: (listen_port != 0 && state.listen_port != listen_port).then_some(listen_port),
            peers: None,
        };
        device.set(&request)?;
        Ok(device)
    }

    /// The existing device `name`, as it is (nothing started, created or
    /// written); `None` when there is none.
    pub fn adopt_device(&self, name: &str) -> Result<Option<WireGuardDevice>, WireGuardError> {
        validate_name(name)?;
        let inner = match self.backend {
            Backend::Kernel => KernelDevice::adopt(name)?.map(Inner::Kernel),
            Backend::Userspace => UserspaceDevice::adopt(name, &self.userspace)?.map(Inner::Userspace),
        };
        Ok(inner.map(|inner| WireGuardDevice {
            name: name.to_owned(),
            inner,
            ops: OperationCounts::default(),
        }))
    }
}

#[derive(Debug)]
enum Inner {
    Kernel(KernelDevice),
    Userspace(UserspaceDevice),
}

/// A handle on one WireGuard device. Dropping it leaves the device (and a
/// userspace process) running: the data plane outlives the daemon.
#[derive(Debug)]
pub struct WireGuardDevice {
    name: String,
    inner: Inner,
    ops: OperationCounts,
}

impl WireGuardDevice {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which backend it is on.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Kernel(_) => Backend::Kernel,
            Inner::Userspace(_) => Backend::Userspace,
        }
    }

    /// The wireguard-go process id (userspace only).
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Kernel(_) => None,
            Inner::Userspace(u) => Some(u.pid()),
        }
    }

    /// Whether this handle started the wireguard-go process, rather than
    /// adopting a running one (always false for the kernel).
    pub fn started_here(&self) -> bool {
        match &self.inner {
            Inner::Kernel(_) => false,
            Inner::Userspace(u) => u.started_here(),
        }
    }

    /// The UAPI socket (userspace only).
    pub fn socket(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Kernel(_) => None,
            Inner::Userspace(u) => Some(u.socket()),
        }
    }

    /// Reads and writes sent through this handle so far.
    pub fn operations(&self) -> OperationCounts {
        self.ops
    }

    /// Reads the device back: key, port, peers with handshakes and counters.
    pub fn read_back(&mut self) -> Result<DeviceState, WireGuardError> {
        self.ops.reads += 1;
        match &self.inner {
            Inner::Kernel(k) => k.get(),
            Inner::Userspace(u) => u.get(),
        }
    }

    /// Brings the peers to `desired`: reads the device back, diffs, and
    /// applies only the difference in one transaction (nothing at all when
    /// nothing differs). Returns what was applied.
    pub fn apply_peers(&mut self, desired: &PeerMap) -> Result<PeerDiff, WireGuardError> {
        let actual = self.read_back()?;
        let diff = diff_peers(&actual.peers, desired);
        if !diff.is_empty() {
            self.set(&SetRequest { peers: Some(&diff), ..SetRequest::default() })?;
            tracing::info!(
                device = %self.name,
                added = diff.add.len(),
                updated = diff.update.len(),
                removed = diff.remove.len(),
                "applied peer changes"
            );
        }
        Ok(diff)
    }

    /// Switches the device to `key` (peers and sessions with the old key
    /// stop working: see the rotation design). Nothing is written when the
    /// device already has it; returns whether it changed.
    pub fn set_private_key(&mut self, key: &PrivateKey) -> Result<bool, WireGuardError> {
        let state = self.read_back()?;
        if state.public_key == Some(key.public_key()) {
            return Ok(false);
        }
        self.set(&SetRequest { private_key: Some(key), ..SetRequest::default() })?;
        Ok(true)
    }

    /// Makes the device send a keepalive to peer `key` (of `node`) now,
    /// which starts a handshake when there is no session: WireGuard only
    /// handshakes on traffic. Persistent keepalive goes 0 → 25 → `keepalive`
    /// (what the peer is configured with) in three transactions: both
    /// wireguard-go and the kernel answer turning it on with an immediate
    /// keepalive, and only when it was off before.
    pub fn kick(
        &mut self,
        node: &NodeName,
        key: &PublicKey,
        keepalive: Option<u16>,
    ) -> Result<(), WireGuardError> {
        for interval in [0, 25, keepalive.unwrap_or(0)] {
            let update = PeerUpdate {
                node: node.clone(),
                public_key: *key,
                endpoint: None,
                allowed_ips: None,
                persistent_keepalive: Some(interval),
            };
            let diff = PeerDiff { update: vec![update], ..PeerDiff::default() };
            self.set(&SetRequest { peers: Some(&diff), ..SetRequest::default() })?;
        }
        Ok(())
    }

    /// Drops one peer and creates it again with the configuration it has,
    /// then [`kick`](Self::kick)s it, unless it has completed a handshake
    /// since `unless_since` (a session that came up while the caller was
    /// deciding is kept: the other end may already use it). A kick alone
    /// cannot hurry a handshake that already failed: WireGuard sends the
    /// next initiation only after its 5 s retry timer, and an initiation
    /// sent before the other end knew the new key is simply lost. A fresh
    /// peer has no such timer. Only for a peer that carries no traffic (a
    /// lane that does not carry yet, a main device whose pairs ride the
    /// lane): it has no allowed IPs for an instant. A peer that is gone, or
    /// has no endpoint, is left alone. Returns whether it renewed.
    pub fn renew(
        &mut self,
        node: &NodeName,
        key: &PublicKey,
        unless_since: SystemTime,
    ) -> Result<bool, WireGuardError> {
        let state = self.read_back()?;
        let Some(peer) = state.peers.iter().find(|p| p.public_key == *key) else { return Ok(false) };
        if peer.last_handshake.is_some_and(|at| at > unless_since) {
            return Ok(false);
        }
        let Some(endpoint) = peer.endpoint else { return Ok(false) };
        let fresh = Arc::new(Peer {
            node: node.clone(),
            public_key: *key,
            endpoint,
            allowed_ips: peer.allowed_ips.clone(),
            persistent_keepalive: None,
        });
        let keepalive = peer.persistent_keepalive;
        let remove = PeerDiff { remove: vec![*key], ..PeerDiff::default() };
        self.set(&SetRequest { peers: Some(&remove), ..SetRequest::default() })?;
        let add = PeerDiff { add: vec![fresh], ..PeerDiff::default() };
        self.set(&SetRequest { peers: Some(&add), ..SetRequest::default() })?;
        self.kick(node, key, keepalive)?;
        Ok(true)
    }

    /// Sets the listen port; nothing is written when it already has it.
    pub fn set_listen_port(&mut self, port: u16) -> Result<bool, WireGuardError> {
        let state = self.read_back()?;
        if state.listen_port == port {
            return Ok(false);
        }
        self.set(&SetRequest { listen_port: Some(port), ..SetRequest::default() })?;
        Ok(true)
    }

    /// Health: an error if the wireguard-go this handle started has exited
    /// (it is reaped) or the device no longer answers. The supervisor calls
    /// [`WireGuard::ensure_device`] again on error.
    pub fn check(&mut self) -> Result<(), WireGuardError> {
        self.ops.reads += 1;
        match &mut self.inner {
            Inner::Kernel(k) => k.get().map(drop),
            Inner::Userspace(u) => u.check(),
        }
    }

    fn set(&mut self, request: &SetRequest<'_>) -> Result<(), WireGuardError> {
        if request.is_empty() {
            return Ok(());
        }
        self.ops.writes += 1;
        match &self.inner {
            Inner::Kernel(k) => k.set(request),
            Inner::Userspace(u) => u.set(request),
        }
    }
}

/// An interface name that is also a safe socket file name: 1 to 15 bytes
/// (IFNAMSIZ less the NUL) of letters, digits, `-`, `_`, `.`.
fn validate_name(name: &str) -> Result<(), WireGuardError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("interface names are at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is a path component")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Some("use only letters, digits, '-', '_' and '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WireGuardError::InvalidName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
