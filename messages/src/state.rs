//! The desired state of one node: what its WireGuard device, routes and eBPF
//! maps should hold. Computed by the controller, applied by the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Cidr, Command, NodeName, NodeRotation, PublicKey};

/// One WireGuard peer as a node should configure it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer node.
    pub node: NodeName,
    /// Its active public key.
    pub public_key: PublicKey,
    /// Its WireGuard listener on the underlay (node IP and listen port).
    pub endpoint: SocketAddr,
    /// What this peer is the tunnel for: its pod CIDRs plus CIDRs a route
    /// policy sends through it. Sorted, no duplicates. These are also the
    /// node's routes into the mesh device.
    pub allowed_ips: Vec<Cidr>,
    /// Persistent keepalive in seconds, `None` for off.
    pub persistent_keepalive: Option<u16>,
}

/// A directional drop: packets from `from` to `to` never cross the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockRule {
    /// Source block.
    pub from: Cidr,
    /// Destination block.
    pub to: Cidr,
}

/// Why a cluster CIDR has no usable tunnel from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UnreachableReason {
    /// The owning node has published no public key yet.
    NoKey,
    /// The tunnel policy does not peer the two nodes.
    NotPeered,
    /// The owning node, or this node, is isolated.
    Isolated,
    /// The owning node is not Ready or is being deleted.
    NotReady,
    /// A route policy names a drained node as the target.
    Drained,
}

/// A cluster CIDR with no usable tunnel from this node. Strict mode drops
/// traffic to it rather than send it in clear on the underlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unreachable {
    /// The CIDR.
    pub cidr: Cidr,
    /// Why there is no tunnel.
    pub reason: UnreachableReason,
}

/// The node's own settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfSettings {
    /// WireGuard listen port of the main device.
    pub listen_port: u16,
    /// Listen port of the lane device, the spare that carries traffic
    /// while a key rotates.
    pub lane_port: u16,
    /// Cut from every peer set; all remote traffic dropped.
    pub isolated: bool,
    /// No longer a route target for other nodes.
    pub drained: bool,
    /// This node's own pod CIDRs.
    pub pod_cidrs: Vec<Cidr>,
}

/// Peers by node name: a persistent (structurally shared) B-tree. A clone
/// is a reference-count bump and an insert or remove copies one path, so
/// 5000 nodes' maps of 4999 peers each cost about one map, not 25 million
/// entries.
pub type PeerMap = imbl::OrdMap<NodeName, Arc<Peer>>;

/// Everything one node should hold. `compute` produces one per node; `diff`
/// turns two of them into the commands between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDesiredState {
    /// The node this state is for.
    pub node: NodeName,
    /// Its own settings.
    pub settings: SelfSettings,
    /// Its peers, by peer node name. Shared twice over: in a full mesh
    /// every node holds the same `Peer` for a given peer node, and every
    /// node's map shares the mesh's tree but for the path to its own name.
    pub peers: PeerMap,
    /// Blocks this node enforces (as sender or as receiver).
    pub blocks: BTreeSet<BlockRule>,
    /// Cluster CIDRs it has no tunnel to, for strict mode.
    pub unreachable: BTreeSet<Unreachable>,
    /// The key rotation this node takes part in, if one is running.
    pub rotation: Option<NodeRotation>,
}

impl NodeDesiredState {
    /// An empty state for `node`: no peers, no blocks.
    pub fn empty(node: NodeName) -> Self {
        NodeDesiredState {
            node,
            settings: SelfSettings::default(),
            peers: PeerMap::new(),
            blocks: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            rotation: None,
        }
    }

    /// Every CIDR routed into the mesh, with the peer it goes to.
    pub fn routes(&self) -> impl Iterator<Item = (&Cidr, &NodeName)> {
        self.peers.values().flat_map(|p| p.allowed_ips.iter().map(move |c| (c, &p.node)))
    }

    /// Checks what WireGuard and the kernel would silently get wrong: the
    /// node as its own peer, two peers sharing an allowed IP (the last one
    /// would win), a peer keyed under a different name, an allowed IP list
    /// that is not sorted and unique.
    pub fn validate(&self) -> Result<(), InvalidState> {
        self.validate_peers(&self.peers)?;
        if let Some(rotation) = &self.rotation {
            self.validate_peers(&rotation.lane)?;
            if !rotation.rotates(&self.node) && rotation.lane.keys().any(|n| *n != rotation.node) {
                return Err(InvalidState::StrayLanePeer { rotating: rotation.node.clone() });
            }
        }
        if self.settings.lane_port == self.settings.listen_port {
            return Err(InvalidState::LanePortClash { port: self.settings.listen_port });
        }
        Ok(())
    }

    /// Whether applying `command` to this state (valid itself) surely
    /// leaves a valid one, judged from what the command touches alone: a
    /// peer upserted into a 1000-peer map is checked against the others in
    /// one pass, without copying the map or indexing all of it. `false`
    /// means "not surely": build the next state and [`validate`] it, which
    /// also says what is wrong.
    ///
    /// [`validate`]: Self::validate
    pub fn stays_valid_after(&self, command: &Command) -> bool {
        match command {
            Command::PeerRemove(_)
            | Command::SetBlocks(_)
            | Command::SetUnreachable(_)
            | Command::KeepState(_) => true,
            Command::SetSettings(settings) => settings.lane_port != settings.listen_port,
            Command::PeerUpsert(peer) => {
                peer.node != self.node
                    && peer.allowed_ips.windows(2).all(|w| w[0] < w[1])
                    && self.peers.values().filter(|other| other.node != peer.node).all(|other| {
                        other.public_key != peer.public_key
                            && !other.allowed_ips.iter().any(|cidr| peer.allowed_ips.contains(cidr))
                    })
            }
            Command::SyncState(_) | Command::SetRotation(_) => false,
        }
    }

    /// Peers are checked with two sorts (a full state of 1000 peers
    /// arrives at every daemon on each reconnect); only a map that fails
    /// them is walked again to name the first culprit.
    fn validate_peers(&self, peers: &PeerMap) -> Result<(), InvalidState> {
        if self.peers_pass(peers) { Ok(()) } else { self.first_peer_fault(peers) }
    }

    /// Whether `peers` break none of the rules, without saying which.
    fn peers_pass(&self, peers: &PeerMap) -> bool {
        let mut keys = Vec::with_capacity(peers.len());
        let mut cidrs = Vec::with_capacity(peers.len());
        for (name, peer) in peers {
            if *name != peer.node
                || peer.node == self.node
                || !peer.allowed_ips.windows(2).all(|w| w[0] < w[1])
            {
                return false;
            }
            keys.push(peer.public_key);
            cidrs.extend_from_slice(&peer.allowed_ips);
        }
        keys.sort_unstable();
        cidrs.sort_unstable();
        keys.windows(2).all(|w| w[0] != w[1]) && cidrs.windows(2).all(|w| w[0] != w[1])
    }

    /// The first rule `peers` break, in name order.
    fn first_peer_fault(&self, peers: &PeerMap) -> Result<(), InvalidState> {
        let mut owners: BTreeMap<Cidr, &NodeName> = BTreeMap::new();
        let mut keys: BTreeMap<PublicKey, &NodeName> = BTreeMap::new();
        for (name, peer) in peers {
            if *name != peer.node {
                return Err(InvalidState::MisfiledPeer { key: name.clone(), peer: peer.node.clone() });
            }
            if peer.node == self.node {
                return Err(InvalidState::SelfPeer { node: self.node.clone() });
            }
            if let Some(other) = keys.insert(peer.public_key, &peer.node) {
                return Err(InvalidState::SharedKey { first: other.clone(), second: peer.node.clone() });
            }
            if !peer.allowed_ips.windows(2).all(|w| w[0] < w[1]) {
                return Err(InvalidState::UnsortedAllowedIps { peer: peer.node.clone() });
            }
            for cidr in &peer.allowed_ips {
                if let Some(other) = owners.insert(*cidr, &peer.node) {
                    return Err(InvalidState::SharedAllowedIp {
                        cidr: *cidr,
                        first: other.clone(),
                        second: peer.node.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A desired state the data plane must refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidState {
    /// A node listed as its own peer.
    #[error("node {node} is listed as its own peer")]
    SelfPeer {
        /// The node.
        node: NodeName,
    },
    /// A peer map entry whose key is not the peer's name.
    #[error("peer {peer} is filed under the name {key}")]
    MisfiledPeer {
        /// The map key.
        key: NodeName,
        /// The peer's own name.
        peer: NodeName,
    },
    /// Two peers with one public key.
    #[error("peers {first} and {second} have the same public key; WireGuard would merge them")]
    SharedKey {
        /// The first peer with the key.
        first: NodeName,
        /// The second.
        second: NodeName,
    },
    /// Two peers claim one allowed IP.
    #[error(
        "allowed IP {cidr} is claimed by peers {first} and {second}; WireGuard would silently give it to the last one"
    )]
    SharedAllowedIp {
        /// The CIDR.
        cidr: Cidr,
        /// The first peer with it.
        first: NodeName,
        /// The second.
        second: NodeName,
    },
    /// A lane on a node that is not rotating holding a peer other than the
    /// rotating node.
    #[error("the lane of a peer of rotating node {rotating} may only hold {rotating}")]
    StrayLanePeer {
        /// The rotating node.
        rotating: NodeName,
    },
    /// Main and lane device on one port.
    #[error("main and lane device both listen on port {port}")]
    LanePortClash {
        /// The port.
        port: u16,
    },
    /// Allowed IPs out of order or repeated.
    #[error("allowed IPs of peer {peer} are not sorted and unique")]
    UnsortedAllowedIps {
        /// The peer.
        peer: NodeName,
    },
}
