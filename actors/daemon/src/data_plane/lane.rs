//! The lane device: the node's second WireGuard device, on its own listen
//! port, that carries traffic while a key rotates (see [`super::rotation`]).
//! Same backend as the main device, same MTU, same address and loose
//! `rp_filter` (decrypted traffic arrives on it too), `deliver` at its
//! ingress; outside a rotation it holds the active key and no peers.
//!
//! It remembers when it last set each peer, and its own key, so a rotation
//! phase can wait for a handshake newer than that ([`Lane::configured_at`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use vpblu_messages::PeerMap;
use vpblu_messages::PublicKey;

use super::DataPlaneError;
use super::mesh_link::MeshLink;
use super::rotation::LaneKey;
use super::{blocking, lock};
use crate::keys::KeyStore;
use crate::wireguard::{WireGuard, WireGuardDevice};

/// The lane device and what this process set on it.
#[derive(Debug)]
pub struct Lane {
    name: String,
    device: Arc<Mutex<WireGuardDevice>>,
    link: MeshLink,
    /// The key it holds, as far as this process knows (`None` after an
    /// adoption, until the first converge reads it back).
    key: Option<PublicKey>,
    /// The peers it was last brought to (`None`: unknown, redo).
    peers: Option<PeerMap>,
    /// When this process added each peer or changed the key under it.
    configured: BTreeMap<PublicKey, SystemTime>,
    /// The listen port and address it was last given.
    port: Option<u16>,
    address: Option<Option<Ipv4Addr>>,
}

impl Lane {
    /// Adopts the device `name` as it is (a daemon restarted mid-rotation
    /// must not reset a lane that carries traffic), or creates it with the
    /// active key; brings it up. Runs in the node's network namespace.
    pub async fn open(
        wireguard: WireGuard,
        name: String,
        keys: Arc<Mutex<KeyStore>>,
    ) -> Result<Lane, DataPlaneError> {
        let device = {
            let name = name.clone();
            blocking("wireguard (lane)", move || {
                match wireguard.adopt_device(&name).map_err(DataPlaneError::WireGuard)? {
                    Some(device) => Ok(device),
                    None => wireguard
                        .ensure_device(&name, 0, lock(&keys).active())
                        .map_err(DataPlaneError::WireGuard),
                }
            })
            .await?
        };
        let link = MeshLink::connect(&name)?;
        link.ensure_up().await?;
        Ok(Lane {
            name,
            device: Arc::new(Mutex::new(device)),
            link,
            key: None,
            peers: None,
            configured: BTreeMap::new(),
            port: None,
            address: None,
        })
    }

    /// The device, for reading back and kicking handshakes.
    pub fn device(&self) -> Arc<Mutex<WireGuardDevice>> {
        Arc::clone(&self.device)
    }

    /// The wireguard-go process (userspace backend only).
    pub fn pid(&self) -> Option<u32> {
        lock(&self.device).pid()
    }

    /// When this process last added the peer with `key` or changed the
    /// lane's own key under it; the epoch for a peer it found configured.
    pub fn configured_at(&self, key: &PublicKey) -> SystemTime {
        self.configured.get(key).copied().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Brings the lane to `port`, the `which` key of `keys`, exactly
    /// `peers`, and `address` (like the main device, for `rp_filter`).
    /// `everything` re-reads and rewrites what may have drifted.
    pub async fn converge(
        &mut self,
        keys: &Arc<Mutex<KeyStore>>,
        which: LaneKey,
        port: u16,
        peers: &PeerMap,
        address: Option<Ipv4Addr>,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        if everything {
            self.link.ensure_up().await?;
        }
        if everything || self.address != Some(address) {
            self.link.ensure_source_check(address).await?;
            self.address = Some(address);
        }
        let wanted = {
            let keys = lock(keys);
            match which {
                LaneKey::Active => keys.public_key(),
                LaneKey::New => keys.staged_public_key().unwrap_or_else(|| keys.public_key()),
            }
        };
        let before = SystemTime::now();
        let key_unknown = self.key != Some(wanted);
        let peers_differ = self.peers.as_ref() != Some(peers);
        let port_differs = port != 0 && self.port != Some(port);
        if everything || key_unknown || peers_differ || port_differs {
            let (device, keys, peers_wanted) = (Arc::clone(&self.device), Arc::clone(keys), peers.clone());
            let check_key = everything || key_unknown;
            let check_peers = everything || peers_differ;
            let (key_changed, added) = blocking("wireguard (lane)", move || {
                let mut device = lock(&device);
                if port != 0 && (everything || port_differs) {
                    device.set_listen_port(port).map_err(DataPlaneError::WireGuard)?;
                }
                let key_changed = if check_key {
                    let keys = lock(&keys);
                    let key = match which {
                        LaneKey::Active => keys.active(),
                        LaneKey::New => keys.staged().unwrap_or_else(|| keys.active()),
                    };
                    device.set_private_key(key).map_err(DataPlaneError::WireGuard)?
                } else {
                    false
                };
                let added = if check_peers {
                    let diff = device.apply_peers(&peers_wanted).map_err(DataPlaneError::WireGuard)?;
                    diff.add.iter().map(|p| p.public_key).collect()
                } else {
                    Vec::new()
                };
                Ok((key_changed, added))
            })
            .await?;
            if key_changed {
                tracing::info!(device = %self.name, key = %super::rotation::short(&wanted), "lane key set");
                for peer in peers.values() {
                    self.configured.insert(peer.public_key, before);
                }
            }
            for key in added {
                self.configured.insert(key, before);
            }
            self.configured.retain(|key, _| peers.values().any(|p| p.public_key == *key));
            self.key = Some(wanted);
            self.peers = Some(peers.clone());
            if port != 0 {
                self.port = Some(port);
            }
        }
        Ok(())
    }
}
