//! What a key rotation means for this node's devices and routes, decided
//! from plain data (the rotation in the desired state and this node's
//! name); the data plane does the I/O.
//!
//! Every node has a main device and a spare *lane* device on its own port
//! (the A/B pair the design measured at zero loss). Outside a rotation the
//! lane holds the node's active key and no peers. For a rotation of node R:
//!
//! - **Lane key**: R's lane holds R's new key from Distribute on (the
//!   staged key, which becomes the active one at Retire); every other
//!   lane holds its node's active key.
//! - **Lane peers**: exactly `rotation.lane` (R: every peer under its
//!   current key; a peer: R under its new key), lane ports as endpoints.
//! - **Routes**: while `phase.lane_carries()` (Activate, Retire) every
//!   allowed IP of every lane peer is routed through the lane instead of
//!   the main device; both ends accept on both devices, so the order in
//!   which nodes flip does not matter.
//! - **Main key**: at Retire and Settle R's main device uses the new key.
//! - **Reports**: what this node must see before it reports a phase done
//!   ([`awaited`]).

use std::collections::BTreeSet;

use vpblu_messages::{Cidr, NodeDesiredState, NodeName, NodeRotation, PeerMap, PublicKey, RotationPhase};

/// Which of this node's keys its lane device holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneKey {
    /// The active key (no rotation, a rotation of another node, Prepare).
    Active,
    /// The rotating node's new key: the staged key, or the active one once
    /// Retire promoted it.
    New,
}

/// The key of the lane device for `rotation` on node `me`.
pub fn lane_key(rotation: Option<&NodeRotation>, me: &NodeName) -> LaneKey {
    match rotation {
        Some(r) if r.rotates(me) && r.phase != RotationPhase::Prepare => LaneKey::New,
        _ => LaneKey::Active,
    }
}

/// The peers of the lane device: the rotation's lane, or none.
pub fn lane_peers(rotation: Option<&NodeRotation>) -> PeerMap {
    rotation.map(|r| r.lane.clone()).unwrap_or_default()
}

/// The CIDRs routed through the lane rather than the main device: while
/// the lane carries, every allowed IP of every lane peer that is not one
/// of this node's own pod CIDRs (those are local).
pub fn lane_routes(state: &NodeDesiredState, rotation: Option<&NodeRotation>) -> BTreeSet<Cidr> {
    let Some(r) = rotation.filter(|r| r.phase.lane_carries()) else {
        return BTreeSet::new();
    };
    let own = |cidr: &Cidr| state.settings.pod_cidrs.iter().any(|o| o.contains(cidr));
    r.lane.values().flat_map(|p| p.allowed_ips.iter().copied()).filter(|c| !own(c)).collect()
}

/// Whether `me`'s main device must hold the rotating node's new key.
pub fn main_uses_new_key(rotation: Option<&NodeRotation>, me: &NodeName) -> bool {
    rotation.is_some_and(|r| r.rotates(me) && r.phase.main_uses_new_key())
}

/// Which device a phase waits on before it reports done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The main device.
    Main,
    /// The lane device.
    Lane,
}

impl Device {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Main => "main",
            Device::Lane => "lane",
        }
    }
}

/// What this node must see before it reports a phase done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// Nothing: the phase is done once the state is applied.
    Nothing,
    /// A handshake on `device` with each of these peers (node, key),
    /// newer than the moment the peer, or the device's key, was set.
    Handshakes {
        /// The device.
        device: Device,
        /// The peers, by node and the key the device holds for them.
        peers: Vec<(NodeName, PublicKey)>,
    },
}

/// What phase `rotation.phase` waits for on node `me` with desired `state`:
/// Distribute, a handshake on the lane with every lane peer; Retire, a
/// handshake on the main device under the new key (the rotating node: with
/// every lane peer's main entry; a peer: with the rotating node's).
pub fn awaited(state: &NodeDesiredState, rotation: &NodeRotation, me: &NodeName) -> Awaited {
    match rotation.phase {
        RotationPhase::Distribute => Awaited::Handshakes {
            device: Device::Lane,
            peers: rotation.lane.values().map(|p| (p.node.clone(), p.public_key)).collect(),
        },
        RotationPhase::Retire => {
            let nodes: Vec<&NodeName> =
                if rotation.rotates(me) { rotation.lane.keys().collect() } else { vec![&rotation.node] };
            let peers = nodes
                .into_iter()
                .filter_map(|n| state.peers.get(n))
                .map(|p| (p.node.clone(), p.public_key))
                .collect();
            Awaited::Handshakes { device: Device::Main, peers }
        }
        RotationPhase::Prepare
        | RotationPhase::Activate
        | RotationPhase::Settle
        | RotationPhase::Rollback => Awaited::Nothing,
    }
}

/// The first 8 characters of a key's base64, for messages.
pub fn short(key: &PublicKey) -> String {
    key.to_base64().chars().take(8).collect()
}

/// Checks, on the rotating node at Retire or Settle, that the main device
/// can take `new`: already active (nothing to do, `Ok(false)`), or staged
/// (promote it, `Ok(true)`); otherwise the reason, naming both keys.
pub fn check_promotion(
    new: Option<PublicKey>,
    active: PublicKey,
    staged: Option<PublicKey>,
) -> Result<bool, String> {
    let Some(new) = new else {
        return Err("the rotation reached the main device without a new public key; the controller must \
                    send the key this node staged at Prepare"
            .to_owned());
    };
    if new == active {
        return Ok(false);
    }
    if staged == Some(new) {
        return Ok(true);
    }
    Err(format!(
        "the rotation's new key {} is neither this node's active key {} nor its staged key {}; the \
         controller must roll back and prepare again",
        short(&new),
        short(&active),
        staged.as_ref().map_or_else(|| "(none)".to_owned(), short)
    ))
}

/// Checks, on the rotating node from Distribute on, that the lane can take
/// the new key: the staged key (or the active one, after Retire) must be
/// the one the rotation distributes.
pub fn check_lane_key(
    new: Option<PublicKey>,
    active: PublicKey,
    staged: Option<PublicKey>,
) -> Result<(), String> {
    let have = staged.unwrap_or(active);
    match new {
        Some(new) if new == have => Ok(()),
        Some(new) => Err(format!(
            "the rotation distributes key {} but this node's lane would hold {} ({}); the controller \
             must roll back and prepare again",
            short(&new),
            short(&have),
            if staged.is_some() { "its staged key" } else { "its active key: nothing is staged" }
        )),
        None => Err("the rotation reached Distribute without a new public key; the controller must send \
                     the key this node staged at Prepare"
            .to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vpblu_messages::{Peer, SelfSettings};

    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn peer(n: &str, k: u8, cidr: &str, port: u16) -> Arc<Peer> {
        Arc::new(Peer {
            node: name(n),
            public_key: key(k),
            endpoint: format!("192.0.2.{k}:{port}").parse().unwrap(),
            allowed_ips: vec![cidr.parse().unwrap()],
            persistent_keepalive: None,
        })
    }

    fn state(me: &str, peers: &[Arc<Peer>]) -> NodeDesiredState {
        let mut s = NodeDesiredState::empty(name(me));
        s.settings = SelfSettings {
            listen_port: 51820,
            lane_port: 51821,
            pod_cidrs: vec!["10.1.0.0/24".parse().unwrap()],
            ..SelfSettings::default()
        };
        s.peers = peers.iter().map(|p| (p.node.clone(), Arc::clone(p))).collect();
        s
    }

    fn rotation(node: &str, phase: RotationPhase, lane: &[Arc<Peer>]) -> NodeRotation {
        NodeRotation {
            id: 7,
            node: name(node),
            phase,
            new_public_key: Some(key(99)),
            lane: lane.iter().map(|p| (p.node.clone(), Arc::clone(p))).collect(),
        }
    }

    #[test]
    fn only_the_rotating_node_puts_the_new_key_on_its_lane_and_not_at_prepare() {
        let a = name("a");
        assert_eq!(lane_key(None, &a), LaneKey::Active);
        for phase in RotationPhase::ALL {
            let mine = rotation("a", phase, &[]);
            let want = if phase == RotationPhase::Prepare { LaneKey::Active } else { LaneKey::New };
            assert_eq!(lane_key(Some(&mine), &a), want, "{phase}");
            assert_eq!(lane_key(Some(&rotation("b", phase, &[])), &a), LaneKey::Active, "{phase}");
            assert_eq!(main_uses_new_key(Some(&mine), &a), phase.main_uses_new_key(), "{phase}");
            assert!(!main_uses_new_key(Some(&rotation("b", phase, &[])), &a));
        }
    }

    #[test]
    fn the_lane_carries_the_lane_peers_cidrs_only_at_activate_and_retire() {
        let b = peer("b", 2, "10.2.0.0/24", 51821);
        let c = peer("c", 3, "10.3.0.0/24", 51821);
        let s = state("a", &[b.clone(), c.clone()]);
        for phase in RotationPhase::ALL {
            let r = rotation("a", phase, &[b.clone(), c.clone()]);
            let routes = lane_routes(&s, Some(&r));
            if phase.lane_carries() {
                assert_eq!(
                    routes,
                    BTreeSet::from(["10.2.0.0/24".parse().unwrap(), "10.3.0.0/24".parse().unwrap()])
                );
            } else {
                assert!(routes.is_empty(), "{phase}");
            }
        }
        assert!(lane_routes(&s, None).is_empty());
        // Never this node's own pods.
        let own = peer("b", 2, "10.1.0.0/24", 51821);
        assert!(lane_routes(&s, Some(&rotation("b", RotationPhase::Activate, &[own]))).is_empty());
    }

    #[test]
    fn distribute_waits_on_the_lane_and_retire_on_the_main_device() {
        let b_lane = peer("b", 2, "10.2.0.0/24", 51821);
        let b_main = peer("b", 2, "10.2.0.0/24", 51820);
        let a_new = peer("a", 99, "10.1.0.0/24", 51821);
        let s = state("a", std::slice::from_ref(&b_main));
        let r = rotation("a", RotationPhase::Distribute, std::slice::from_ref(&b_lane));
        assert_eq!(
            awaited(&s, &r, &name("a")),
            Awaited::Handshakes { device: Device::Lane, peers: vec![(name("b"), key(2))] }
        );
        let r = rotation("a", RotationPhase::Retire, std::slice::from_ref(&b_lane));
        assert_eq!(
            awaited(&s, &r, &name("a")),
            Awaited::Handshakes { device: Device::Main, peers: vec![(name("b"), key(2))] }
        );
        // On b: the rotating node's main entry, which carries the new key.
        let mut on_b = state("b", &[]);
        on_b.peers.insert(name("a"), peer("a", 99, "10.1.0.0/24", 51820));
        let r = rotation("a", RotationPhase::Retire, &[a_new]);
        assert_eq!(
            awaited(&on_b, &r, &name("b")),
            Awaited::Handshakes { device: Device::Main, peers: vec![(name("a"), key(99))] }
        );
        for phase in
            [RotationPhase::Prepare, RotationPhase::Activate, RotationPhase::Settle, RotationPhase::Rollback]
        {
            assert_eq!(awaited(&s, &rotation("a", phase, &[]), &name("a")), Awaited::Nothing);
        }
    }

    #[test]
    fn promotion_is_idempotent_and_a_foreign_key_is_named() {
        assert_eq!(check_promotion(Some(key(9)), key(9), None), Ok(false));
        assert_eq!(check_promotion(Some(key(9)), key(1), Some(key(9))), Ok(true));
        let err = check_promotion(Some(key(9)), key(1), Some(key(5))).unwrap_err();
        assert!(
            err.contains(&short(&key(9))) && err.contains(&short(&key(1))) && err.contains(&short(&key(5))),
            "{err}"
        );
        assert!(check_promotion(None, key(1), Some(key(5))).is_err());
        assert_eq!(check_lane_key(Some(key(9)), key(1), Some(key(9))), Ok(()));
        assert_eq!(check_lane_key(Some(key(9)), key(9), None), Ok(()));
        let err = check_lane_key(Some(key(9)), key(1), None).unwrap_err();
        assert!(err.contains("nothing is staged"), "{err}");
    }
}
