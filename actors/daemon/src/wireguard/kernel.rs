//! The kernel backend: the in-kernel WireGuard, over generic netlink, through
//! `wireguard-control`'s `Backend::Kernel`.
//!
//! `wireguard-control`'s types print keys in `Debug` (private ones too): none
//! of them is ever formatted here, and their errors are only carried as
//! `io::Error`s from netlink. Its `Key` is not zeroizing: the copies of the
//! private key it holds for one request are overwritten here where we own
//! them.

use std::io;

use vpblu_messages::{Cidr, PublicKey};
use wireguard_control::{Backend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};
use zeroize::Zeroize as _;

use super::uapi::SetRequest;
use super::{BackendReason, DeviceState, PeerState, WireGuardError};

/// Linux's errno when RTM_NEWLINK names a link kind the kernel lacks.
const EOPNOTSUPP: i32 = 95;

/// One kernel WireGuard link.
#[derive(Debug)]
pub(crate) struct KernelDevice {
    name: String,
}

impl KernelDevice {
    /// Creates the link if it is missing (an existing one is left as is).
    pub fn open(name: &str) -> Result<Self, WireGuardError> {
        let device = KernelDevice { name: name.to_owned() };
        // An empty update only creates the link (wireguard-control sends the
        // RTM_NEWLINK, then no genetlink message for an empty payload).
        DeviceUpdate::new().apply(&device.iface()?, Backend::Kernel).map_err(|source| {
            match source.raw_os_error() {
                // The kernel does not know the link kind: no wireguard module.
                Some(EOPNOTSUPP) => WireGuardError::KernelModuleMissing { name: name.to_owned(), source },
                _ => device.netlink_err("create", source),
            }
        })?;
        Ok(device)
    }

    /// The device if the link exists; `None` if it does not.
    pub fn adopt(name: &str) -> Result<Option<Self>, WireGuardError> {
        let device = KernelDevice { name: name.to_owned() };
        match Device::get(&device.iface()?, Backend::Kernel) {
            Ok(mut found) => {
                scrub(&mut found);
                Ok(Some(device))
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODEV.raw_os_error()) => Ok(None),
            Err(source) => Err(device.netlink_err("get", source)),
        }
    }

    fn iface(&self) -> Result<InterfaceName, WireGuardError> {
        self.name.parse().map_err(|_| WireGuardError::InvalidName {
            name: self.name.clone(),
            reason: "wireguard-control refused it as an interface name",
        })
    }

    fn netlink_err(&self, op: &'static str, source: io::Error) -> WireGuardError {
        WireGuardError::Netlink { name: self.name.clone(), op, source }
    }

    /// Reads the device back.
    pub fn get(&self) -> Result<DeviceState, WireGuardError> {
        let mut device =
            Device::get(&self.iface()?, Backend::Kernel).map_err(|source| self.netlink_err("get", source))?;
        scrub(&mut device);
        let mut peers = Vec::with_capacity(device.peers.len());
        for info in &device.peers {
            let mut allowed_ips = Vec::with_capacity(info.config.allowed_ips.len());
            for ip in &info.config.allowed_ips {
                let cidr = Cidr::containing(ip.address, ip.cidr).map_err(|e| {
                    self.netlink_err("get", io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                })?;
                allowed_ips.push(cidr);
            }
            allowed_ips.sort();
            peers.push(PeerState {
                public_key: PublicKey::from_bytes(info.config.public_key.0),
                endpoint: info.config.endpoint,
                allowed_ips,
                last_handshake: info.stats.last_handshake_time,
                rx_bytes: info.stats.rx_bytes,
                tx_bytes: info.stats.tx_bytes,
                persistent_keepalive: info.config.persistent_keepalive_interval.filter(|&k| k != 0),
            });
        }
        Ok(DeviceState {
            public_key: device.public_key.as_ref().map(|k| PublicKey::from_bytes(k.0)),
            listen_port: device.listen_port.unwrap_or(0),
            peers,
        })
    }

    /// Applies one change set (netlink splits it into as many messages as
    /// it needs; each is applied by the kernel as a unit).
    pub fn set(&self, request: &SetRequest<'_>) -> Result<(), WireGuardError> {
        let mut update = DeviceUpdate::new();
        if let Some(key) = request.private_key {
            update = update.set_private_key(Key(*key.secret_bytes()));
        }
        if let Some(port) = request.listen_port {
            update = update.set_listen_port(port);
        }
        if let Some(diff) = request.peers {
            for key in &diff.remove {
                update = update.remove_peer_by_key(&Key(*key.as_bytes()));
            }
            for change in &diff.update {
                // No update-only flag in wireguard-control; the peer exists
                // (we just read it), and setting it keeps its session.
                let mut peer = PeerConfigBuilder::new(&Key(*change.public_key.as_bytes()));
                if let Some(endpoint) = change.endpoint {
                    peer = peer.set_endpoint(endpoint);
                }
                if let Some(keepalive) = change.persistent_keepalive {
                    peer = peer.set_persistent_keepalive_interval(keepalive);
                }
                if let Some(ips) = &change.allowed_ips {
                    peer = with_allowed_ips(peer.replace_allowed_ips(), ips);
                }
                update = update.add_peer(peer);
            }
            for add in &diff.add {
                let mut peer = PeerConfigBuilder::new(&Key(*add.public_key.as_bytes()))
                    .set_endpoint(add.endpoint)
                    .replace_allowed_ips();
                if let Some(keepalive) = add.persistent_keepalive.filter(|&k| k != 0) {
                    peer = peer.set_persistent_keepalive_interval(keepalive);
                }
                update = update.add_peer(with_allowed_ips(peer, &add.allowed_ips));
            }
        }
        // `apply` consumes the update (and its copy of the private key,
        // which wireguard-control does not zeroize: a known limitation).
        update.apply(&self.iface()?, Backend::Kernel).map_err(|source| self.netlink_err("set", source))
    }
}

fn with_allowed_ips(mut peer: PeerConfigBuilder, ips: &[Cidr]) -> PeerConfigBuilder {
    for ip in ips {
        peer = peer.add_allowed_ip(ip.addr(), ip.prefix_len());
    }
    peer
}

/// Overwrites the private key wireguard-control read back.
fn scrub(device: &mut Device) {
    if let Some(key) = device.private_key.as_mut() {
        key.0.zeroize();
    }
}

/// Whether the kernel has WireGuard: the module is loaded, or creating a
/// throwaway link of type wireguard works (which loads it on demand). On
/// `Err`, why not and the kernel's answer.
pub(crate) fn available() -> Result<BackendReason, (BackendReason, String)> {
    if std::path::Path::new("/sys/module/wireguard").exists() {
        return Ok(BackendReason::ModuleLoaded);
    }
    let probe: InterfaceName = format!("vpbluprobe{}", std::process::id() % 100_000)
        .parse()
        .map_err(|_| (BackendReason::LinkCreateFailed, "probe interface name refused".to_owned()))?;
    let created = DeviceUpdate::new().apply(&probe, Backend::Kernel);
    if created.is_ok() {
        let _ = wireguard_control::backends::kernel::delete_interface(&probe);
    }
    probe_outcome(created)
}

/// What creating the probe link said about the kernel's WireGuard.
fn probe_outcome(created: io::Result<()>) -> Result<BackendReason, (BackendReason, String)> {
    match created {
        Ok(()) => Ok(BackendReason::LinkCreated),
        // As in `KernelDevice::open`: the kernel does not know the link kind.
        Err(e) if e.raw_os_error() == Some(EOPNOTSUPP) => {
            Err((BackendReason::ModuleMissing, format!("creating a wireguard link failed: {e}")))
        }
        Err(e) => Err((BackendReason::LinkCreateFailed, format!("creating a wireguard link failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_says_module_missing_only_for_an_unknown_link_kind() {
        assert_eq!(probe_outcome(Ok(())), Ok(BackendReason::LinkCreated));
        let (reason, detail) = probe_outcome(Err(io::Error::from_raw_os_error(EOPNOTSUPP))).unwrap_err();
        assert_eq!(reason, BackendReason::ModuleMissing);
        assert!(detail.contains("creating a wireguard link failed"), "{detail}");
        // EPERM: no CAP_NET_ADMIN here; the module may well be there.
        let (reason, detail) = probe_outcome(Err(io::Error::from_raw_os_error(1))).unwrap_err();
        assert_eq!(reason, BackendReason::LinkCreateFailed);
        assert!(detail.contains("not permitted"), "{detail}");
    }
}
