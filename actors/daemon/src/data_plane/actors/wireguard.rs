//! The WireGuard actor: owns the key store, the main device and the lane
//! device, and what this incarnation set on them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ractor::RpcReplyPort;
use vpblu_messages::PeerMap;
use vpblu_messages::{NodeName, PublicKey};

use super::Part;
use crate::data_plane::handshake_wait::Awaiting;
use crate::data_plane::lane::Lane;
use crate::data_plane::rotation::{self, Device, LaneKey};
use crate::data_plane::{DataPlaneError, DeviceLost, blocking, lock};
use crate::keys::KeyStore;
use crate::wireguard::{DeviceState, WireGuard, WireGuardDevice};

type Reply<T> = RpcReplyPort<Result<T, DataPlaneError>>;

/// What the WireGuard actor opens, and re-adopts after a restart.
#[derive(Debug)]
pub struct WireGuardOpener {
    /// The backend, as found when the daemon started.
    pub wireguard: WireGuard,
    /// The key directory.
    pub key_dir: PathBuf,
    /// The main device.
    pub interface: String,
    /// The lane device, when the daemon has one.
    pub lane_interface: Option<String>,
    /// Where a device gone for good is reported.
    pub lost: DeviceLost,
}

/// The node's public keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    /// The active key.
    pub public_key: PublicKey,
    /// The staged key, while a rotation of this node is under way.
    pub staged_public_key: Option<PublicKey>,
}

/// The wireguard-go processes and the main device's UAPI socket
/// (userspace backend only).
#[derive(Clone, Debug, Default)]
pub struct Processes {
    /// The main device's wireguard-go.
    pub main: Option<u32>,
    /// The lane's wireguard-go.
    pub lane: Option<u32>,
    /// The main device's UAPI socket.
    pub socket: Option<PathBuf>,
}

/// The main device brought to a plan.
#[derive(Debug)]
pub struct MainDevice {
    /// The listen port to set (`None`: leave it).
    pub listen_port: Option<u16>,
    /// The desired peers.
    pub peers: PeerMap,
    /// Whether to bring the device's peers to them (they changed, or
    /// everything is redone).
    pub apply_peers: bool,
    /// Redo everything (a full state, or after a failure).
    pub everything: bool,
}

/// The lane device brought to a plan.
#[derive(Debug)]
pub struct LaneDevice {
    /// Which key it holds.
    pub which: LaneKey,
    /// Its listen port (0: leave it).
    pub port: u16,
    /// Its peers.
    pub peers: PeerMap,
    /// Its address (like the main device's, for `rp_filter`).
    pub address: Option<Ipv4Addr>,
    /// Redo everything.
    pub everything: bool,
}

/// One attempt at starting the handshakes still missing on a device.
#[derive(Debug)]
pub struct HandshakeAttempt {
    /// The device.
    pub which: Device,
    /// Each peer: its node, its key, its persistent keepalive, and the
    /// moment a handshake must be newer than.
    pub tries: Vec<(NodeName, PublicKey, Option<u16>, SystemTime)>,
    /// The first attempt kicks; later ones renew.
    pub first: bool,
}

/// What the WireGuard actor does.
#[derive(Debug)]
pub enum WireGuardMsg {
    /// The public keys.
    Keys(RpcReplyPort<KeyFacts>),
    /// Stages a new key (a rotation's Prepare); the staged public key.
    Stage(Reply<PublicKey>),
    /// Promotes the staged key (Retire, Settle); the new active key.
    Activate(Reply<PublicKey>),
    /// Discards a staged key; whether there was one.
    DiscardStaged(Reply<bool>),
    /// Brings the main device to a plan.
    ConvergeMain(MainDevice, Reply<()>),
    /// Brings the lane to a plan (nothing without a lane).
    ConvergeLane(LaneDevice, Reply<()>),
    /// The peers to wait for on a device, with the moment each was
    /// configured.
    Awaiting(Device, Vec<(NodeName, PublicKey)>, RpcReplyPort<Vec<Awaiting>>),
    /// A device read back (the lane without a lane: the main device).
    ReadBack(Device, Reply<DeviceState>),
    /// Starts the handshakes still missing.
    Attempt(HandshakeAttempt, Reply<()>),
    /// The wireguard-go processes.
    Processes(RpcReplyPort<Processes>),
}

/// The key store and both devices.
#[derive(Debug)]
pub struct WireGuardPart {
    keys: Arc<Mutex<KeyStore>>,
    device: Arc<Mutex<WireGuardDevice>>,
    lane: Option<Lane>,
    /// The key the main device was last given.
    main_key: PublicKey,
    /// When this incarnation added each main peer, or switched the main
    /// key under it (a rotation's Retire waits for a newer handshake).
    main_configured: BTreeMap<PublicKey, SystemTime>,
    lost: DeviceLost,
}

impl Part for WireGuardPart {
    type Msg = WireGuardMsg;
    type Opener = WireGuardOpener;
    const NAME: &'static str = "wireguard";

    /// Opens (or creates) the key, ensures (or adopts) the main device
    /// under the active key, adopts (or creates) the lane.
    async fn open(opener: &WireGuardOpener) -> Result<Self, DataPlaneError> {
        let key_dir = opener.key_dir.clone();
        let keys = blocking("keys", move || KeyStore::open(&key_dir).map_err(DataPlaneError::Keys)).await?;
        let (name, wireguard) = (opener.interface.clone(), opener.wireguard.clone());
        // The key store goes to the blocking thread and back: the private
        // key is lent to the device by reference, never copied.
        let (device, keys) = blocking("wireguard", move || {
            let device =
                wireguard.ensure_device(&name, 0, keys.active()).map_err(DataPlaneError::WireGuard)?;
            Ok((device, keys))
        })
        .await?;
        let main_key = keys.public_key();
        let keys = Arc::new(Mutex::new(keys));
        let lane = match &opener.lane_interface {
            Some(name) => Some(Lane::open(opener.wireguard.clone(), name.clone(), Arc::clone(&keys)).await?),
            None => None,
        };
        Ok(WireGuardPart {
            keys,
            device: Arc::new(Mutex::new(device)),
            lane,
            main_key,
            main_configured: BTreeMap::new(),
            lost: opener.lost.clone(),
        })
    }

    async fn handle(&mut self, msg: WireGuardMsg) {
        match msg {
            WireGuardMsg::Keys(reply) => {
                let _ = reply.send(self.key_facts());
            }
            WireGuardMsg::Stage(reply) => {
                let _ = reply.send(self.with_keys(|keys| keys.stage()).await);
            }
            WireGuardMsg::Activate(reply) => {
                let _ = reply.send(self.with_keys(|keys| keys.activate()).await);
            }
            WireGuardMsg::DiscardStaged(reply) => {
                let had = lock(&self.keys).staged().is_some();
                let result = if had { self.with_keys(|keys| keys.discard_staged()).await } else { Ok(()) };
                let _ = reply.send(result.map(|()| had));
            }
            WireGuardMsg::ConvergeMain(main, reply) => {
                let _ = reply.send(self.converge_main(main).await);
            }
            WireGuardMsg::ConvergeLane(lane, reply) => {
                let result = match &mut self.lane {
                    Some(device) => {
                        device
                            .converge(
                                &self.keys,
                                lane.which,
                                lane.port,
                                &lane.peers,
                                lane.address,
                                lane.everything,
                            )
                            .await
                    }
                    None => Ok(()),
                };
                let _ = reply.send(result);
            }
            WireGuardMsg::Awaiting(which, peers, reply) => {
                let _ = reply.send(self.awaiting(which, peers));
            }
            WireGuardMsg::ReadBack(which, reply) => {
                let _ = reply.send(self.read_back(which).await);
            }
            WireGuardMsg::Attempt(attempt, reply) => {
                let _ = reply.send(self.attempt(attempt).await);
            }
            WireGuardMsg::Processes(reply) => {
                // One guard: a second lock in the same expression would deadlock.
                let (main, socket) = {
                    let device = lock(&self.device);
                    (device.pid(), device.socket().map(PathBuf::from))
                };
                let lane = self.lane.as_ref().and_then(Lane::pid);
                let _ = reply.send(Processes { main, lane, socket });
            }
        }
    }
}

impl WireGuardPart {
    /// The public keys.
    pub fn key_facts(&self) -> KeyFacts {
        let keys = lock(&self.keys);
        KeyFacts { public_key: keys.public_key(), staged_public_key: keys.staged_public_key() }
    }

    /// Runs a key store operation on a blocking thread.
    async fn with_keys<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut KeyStore) -> Result<T, crate::keys::KeyStoreError> + Send + 'static,
    ) -> Result<T, DataPlaneError> {
        let keys = Arc::clone(&self.keys);
        blocking("keys", move || f(&mut lock(&keys)).map_err(DataPlaneError::Keys)).await
    }

    /// Brings the main device to `main`: listen port, the active key, and
    /// the peers. Remembers when each peer was configured.
    async fn converge_main(&mut self, main: MainDevice) -> Result<(), DataPlaneError> {
        if let Some(port) = main.listen_port {
            let device = Arc::clone(&self.device);
            blocking("wireguard", move || {
                lock(&device).set_listen_port(port).map_err(DataPlaneError::WireGuard)
            })
            .await?;
        }
        // The main device holds the active key (a rotation's Retire
        // promoted a new one); every session under the old one is gone.
        let active = lock(&self.keys).public_key();
        if main.everything || active != self.main_key {
            let before = SystemTime::now();
            let (device, keys) = (Arc::clone(&self.device), Arc::clone(&self.keys));
            let switched = blocking("wireguard", move || {
                lock(&device).set_private_key(lock(&keys).active()).map_err(DataPlaneError::WireGuard)
            })
            .await?;
            if switched {
                tracing::info!(key = %rotation::short(&active), "main device switched to the active key");
                for peer in main.peers.values() {
                    self.main_configured.insert(peer.public_key, before);
                }
            }
            self.main_key = active;
        }
        if !main.apply_peers {
            return Ok(());
        }
        let peers = main.peers;
        let before = SystemTime::now();
        let (device, wanted) = (Arc::clone(&self.device), peers.clone());
        let diff = blocking("wireguard", move || {
            lock(&device).apply_peers(&wanted).map_err(DataPlaneError::WireGuard)
        })
        .await?;
        if !diff.is_empty() {
            tracing::debug!(
                added = diff.add.len(),
                updated = diff.update.len(),
                removed = diff.remove.len(),
                "peers"
            );
        }
        for peer in &diff.add {
            self.main_configured.insert(peer.public_key, before);
        }
        self.main_configured.retain(|key, _| peers.values().any(|p| p.public_key == *key));
        Ok(())
    }

    /// The device `which` is (the main one when there is no lane).
    fn device(&self, which: Device) -> Arc<Mutex<WireGuardDevice>> {
        match (which, &self.lane) {
            (Device::Lane, Some(lane)) => lane.device(),
            (Device::Lane, None) | (Device::Main, _) => Arc::clone(&self.device),
        }
    }

    fn awaiting(&self, which: Device, peers: Vec<(NodeName, PublicKey)>) -> Vec<Awaiting> {
        peers
            .into_iter()
            .map(|(node, key)| {
                let after = match (which, &self.lane) {
                    (Device::Lane, Some(lane)) => lane.configured_at(&key),
                    _ => self.main_configured.get(&key).copied().unwrap_or(SystemTime::UNIX_EPOCH),
                };
                Awaiting { node, key, after }
            })
            .collect()
    }

    /// Reads `which` back. When that fails and the device is gone for
    /// good (its wireguard-go exited, its socket or the kernel device
    /// went), reports it lost: nothing here can bring its peers back.
    async fn read_back(&self, which: Device) -> Result<DeviceState, DataPlaneError> {
        let (device, lost) = (self.device(which), self.lost.clone());
        blocking("wireguard", move || {
            let mut device = lock(&device);
            let error = match device.read_back() {
                Ok(state) => return Ok(state),
                Err(e) => e,
            };
            match device.check() {
                Err(gone) if gone.is_device_gone() => lost.report(gone.to_string()),
                _ if error.is_device_gone() => lost.report(error.to_string()),
                _ => {}
            }
            Err(DataPlaneError::WireGuard(error))
        })
        .await
    }

    async fn attempt(&self, attempt: HandshakeAttempt) -> Result<(), DataPlaneError> {
        let device = self.device(attempt.which);
        blocking("wireguard", move || {
            let mut device = lock(&device);
            for (node, key, keepalive, after) in &attempt.tries {
                if attempt.first {
                    device.kick(node, key, *keepalive).map_err(DataPlaneError::WireGuard)?;
                } else if device.renew(node, key, *after).map_err(DataPlaneError::WireGuard)? {
                    tracing::debug!(%node, "no handshake yet: peer renewed");
                }
            }
            Ok(())
        })
        .await
    }
}
