//! What a desired state means for each component, and the checks the data
//! plane adds to `NodeDesiredState::validate`. Pure: plain data in, plain
//! data out.
//!
//! - **Routes**: every peer allowed IP except this node's own pod CIDRs
//!   (those are local; routing them into the mesh would loop).
//! - **Destinations** (classify's LPM maps): PEER for each routed CIDR;
//!   UNREACHABLE(reason) for each `unreachable` entry that is not routed (a
//!   tunnel that exists wins: the controller's command order can upsert a
//!   peer a moment before it clears the CIDR from the unreachable list);
//!   UNREACHABLE(NotPeered) for each *tombstone*.
//! - **Tombstones** (strict mode): a CIDR that was routed and stops being
//!   routed through a targeted command stays dropped until the controller
//!   says what it is now (the next SetUnreachable or SyncState). Without
//!   them, the moment between a PeerRemove and the SetUnreachable that
//!   follows it would let pods' traffic to that CIDR out in clear over the
//!   underlay's plain routes.
//! - **Endpoints**: the peers' underlay addresses, which size the MTU.
//! - **Lane routes**: while a key rotation has the lane carry, the lane
//!   peers' allowed IPs go through the lane device instead (they are in
//!   `routes` too: classify marks them alike); see [`super::rotation`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use vpblu_messages::{BlockRule, Cidr, NodeDesiredState, NodeName, PublicKey, UnreachableReason};

use crate::bpf::DstEntry;
use crate::routing::RouteDevice;

/// One component's share of a desired state. Two plans compare equal per
/// field exactly when that component has nothing to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// CIDRs routed into the mesh table, sorted.
    pub routes: Vec<Cidr>,
    /// Those of `routes` that go through the lane device, sorted.
    pub lane_routes: Vec<Cidr>,
    /// classify's destination entries, sorted by CIDR.
    pub destinations: Vec<(Cidr, DstEntry)>,
    /// Block rules, sorted.
    pub blocks: Vec<BlockRule>,
    /// Peer endpoint addresses, sorted, unique.
    pub endpoints: Vec<IpAddr>,
    /// The WireGuard listen port (0: leave as is).
    pub listen_port: u16,
    /// The lane device's listen port (0: leave as is).
    pub lane_port: u16,
    /// The mesh device's IPv4 address: the network address of the first
    /// IPv4 pod CIDR (reverse-path filtering needs one; see `mesh_link`).
    pub mesh_address: Option<Ipv4Addr>,
}

impl Plan {
    /// The plan for `state` with the given tombstones (CIDRs still dropped
    /// as not peered; the ones routed or listed unreachable are ignored).
    pub fn of(state: &NodeDesiredState, tombstones: &BTreeSet<Cidr>) -> Plan {
        let own = |cidr: &Cidr| state.settings.pod_cidrs.iter().any(|o| o.contains(cidr));
        let lane_routes = super::rotation::lane_routes(state, state.rotation.as_ref());
        let routes: BTreeSet<Cidr> = state
            .routes()
            .map(|(cidr, _)| *cidr)
            .filter(|cidr| !own(cidr))
            .chain(lane_routes.iter().copied())
            .collect();
        let mut destinations: Vec<(Cidr, DstEntry)> =
            routes.iter().map(|cidr| (*cidr, DstEntry::peer())).collect();
        let mut unreachable: BTreeSet<Cidr> = BTreeSet::new();
        for entry in &state.unreachable {
            if !routes.contains(&entry.cidr) && !own(&entry.cidr) && unreachable.insert(entry.cidr) {
                destinations.push((entry.cidr, DstEntry::unreachable(entry.reason)));
            }
        }
        for cidr in tombstones {
            if !routes.contains(cidr) && !own(cidr) && !unreachable.contains(cidr) {
                destinations.push((*cidr, DstEntry::unreachable(UnreachableReason::NotPeered)));
            }
        }
        destinations.sort_by_key(|(cidr, _)| *cidr);
        let endpoints: BTreeSet<IpAddr> = state.peers.values().map(|p| p.endpoint.ip()).collect();
        Plan {
            routes: routes.into_iter().collect(),
            lane_routes: lane_routes.into_iter().collect(),
            destinations,
            blocks: state.blocks.iter().copied().collect(),
            endpoints: endpoints.into_iter().collect(),
            listen_port: state.settings.listen_port,
            lane_port: state.settings.lane_port,
            mesh_address: state.settings.pod_cidrs.iter().find_map(|c| match c.addr() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
        }
    }

    /// Routes: each CIDR with the device it goes through.
    pub fn routes_via(&self) -> Vec<(Cidr, RouteDevice)> {
        via(&self.routes, &self.lane_routes)
    }
}

/// The tombstones after a targeted command: the old ones plus what stopped
/// being routed, minus what is routed again. A SyncState or SetUnreachable
/// carries the authoritative unreachable list and clears them (the caller
/// passes `authoritative`); outside strict mode there are none.
pub fn next_tombstones(
    strict: bool,
    authoritative: bool,
    tombstones: &BTreeSet<Cidr>,
    old_routes: &[Cidr],
    new_routes: &[Cidr],
) -> BTreeSet<Cidr> {
    if !strict || authoritative {
        return BTreeSet::new();
    }
    let new: BTreeSet<&Cidr> = new_routes.iter().collect();
    tombstones.iter().chain(old_routes).filter(|cidr| !new.contains(cidr)).copied().collect()
}

/// A desired state the data plane refuses on top of `validate()`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A peer key WireGuard cannot use: all zeros (no shared secret can
    /// come of it), or this node's own key (WireGuard ignores such a peer).
    #[error("peer {peer} has an unusable public key ({reason}); fix the key the node published")]
    BadKey {
        /// The peer.
        peer: NodeName,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A peer's allowed IP strictly contains one of this node's pod CIDRs:
    /// classify would steer this node's own pods into the mesh.
    #[error(
        "peer {peer}'s allowed IP {cidr} contains this node's pod CIDR {own}: local pod traffic \
         would be sent into the mesh; narrow the route policy"
    )]
    CoversOwnPods {
        /// The peer.
        peer: NodeName,
        /// Its allowed IP.
        cidr: Cidr,
        /// The pod CIDR of this node it covers.
        own: Cidr,
    },
}

/// `routes` with their device: the lane for those in `lane`, else the mesh.
pub fn via(routes: &[Cidr], lane: &[Cidr]) -> Vec<(Cidr, RouteDevice)> {
    routes
        .iter()
        .map(|cidr| {
            (*cidr, if lane.binary_search(cidr).is_ok() { RouteDevice::Lane } else { RouteDevice::Mesh })
        })
        .collect()
}

/// Checks what `validate()` does not and this data plane cannot carry out.
pub fn check(state: &NodeDesiredState, own_key: &PublicKey) -> Result<(), Refused> {
    check_peers(state, state.peers.values(), own_key)
}

/// [`check`] for the lane's peers, against the key the lane will hold.
pub fn check_lane(state: &NodeDesiredState, lane_key: &PublicKey) -> Result<(), Refused> {
    match &state.rotation {
        Some(r) => check_peers(state, r.lane.values(), lane_key),
        None => Ok(()),
    }
}

fn check_peers<'a>(
    state: &NodeDesiredState,
    peers: impl Iterator<Item = &'a std::sync::Arc<vpblu_messages::Peer>>,
    own_key: &PublicKey,
) -> Result<(), Refused> {
    for peer in peers {
        if peer.public_key.as_bytes().iter().all(|b| *b == 0) {
            return Err(Refused::BadKey { peer: peer.node.clone(), reason: "all zeros" });
        }
        if peer.public_key == *own_key {
            return Err(Refused::BadKey { peer: peer.node.clone(), reason: "it is this node's own key" });
        }
        for cidr in &peer.allowed_ips {
            if let Some(own) = state.settings.pod_cidrs.iter().find(|o| cidr.contains(o) && *o != cidr) {
                return Err(Refused::CoversOwnPods { peer: peer.node.clone(), cidr: *cidr, own: *own });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vpblu_messages::{Peer, SelfSettings, Unreachable};

    use super::*;
    use vpblu_messages::PeerMap;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn name(text: &str) -> NodeName {
        NodeName::new(text).unwrap()
    }

    fn peer(node: &str, key: u8, endpoint: &str, allowed: &[&str]) -> Arc<Peer> {
        let mut allowed_ips: Vec<Cidr> = allowed.iter().map(|c| cidr(c)).collect();
        allowed_ips.sort();
        Arc::new(Peer {
            node: name(node),
            public_key: PublicKey::from_bytes([key; 32]),
            endpoint: endpoint.parse().unwrap(),
            allowed_ips,
            persistent_keepalive: None,
        })
    }

    fn state(peers: &[Arc<Peer>]) -> NodeDesiredState {
        NodeDesiredState {
            node: name("n1"),
            settings: SelfSettings {
                listen_port: 51820,
                pod_cidrs: vec![cidr("10.1.0.0/24"), cidr("fd01::/64")],
                ..SelfSettings::default()
            },
            peers: peers.iter().map(|p| (p.node.clone(), Arc::clone(p))).collect::<PeerMap>(),
            blocks: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            rotation: None,
        }
    }

    #[test]
    fn routes_are_peer_allowed_ips_without_our_own_pods() {
        let s = state(&[
            peer("n2", 2, "192.0.2.2:51820", &["10.2.0.0/24", "fd02::/64"]),
            // A peer (wrongly) announcing our CIDR, or a part of it: never routed.
            peer("n3", 3, "192.0.2.3:51820", &["10.3.0.0/24", "10.1.0.128/25"]),
        ]);
        let plan = Plan::of(&s, &BTreeSet::new());
        assert_eq!(plan.routes, vec![cidr("10.2.0.0/24"), cidr("10.3.0.0/24"), cidr("fd02::/64")]);
        assert!(plan.destinations.iter().all(|(_, e)| *e == DstEntry::peer()));
        assert_eq!(plan.destinations.len(), 3);
        let ips: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()];
        assert_eq!(plan.endpoints, ips);
        assert_eq!(plan.listen_port, 51820);
        assert_eq!(plan.mesh_address, Some("10.1.0.0".parse().unwrap()));
    }

    #[test]
    fn unreachable_cidrs_drop_unless_a_tunnel_exists() {
        let mut s = state(&[peer("n2", 2, "192.0.2.2:51820", &["10.2.0.0/24"])]);
        s.unreachable.insert(Unreachable { cidr: cidr("10.3.0.0/24"), reason: UnreachableReason::NoKey });
        // Routed and still listed (PeerUpsert arrived before SetUnreachable): the tunnel wins.
        s.unreachable.insert(Unreachable { cidr: cidr("10.2.0.0/24"), reason: UnreachableReason::NoKey });
        let plan = Plan::of(&s, &BTreeSet::new());
        assert_eq!(
            plan.destinations,
            vec![
                (cidr("10.2.0.0/24"), DstEntry::peer()),
                (cidr("10.3.0.0/24"), DstEntry::unreachable(UnreachableReason::NoKey)),
            ]
        );
    }

    #[test]
    fn a_cidr_that_loses_its_tunnel_stays_dropped_until_the_controller_says_more() {
        let old = vec![cidr("10.2.0.0/24"), cidr("10.3.0.0/24")];
        let new = vec![cidr("10.2.0.0/24")];
        let tomb = next_tombstones(true, false, &BTreeSet::new(), &old, &new);
        assert_eq!(tomb, BTreeSet::from([cidr("10.3.0.0/24")]));
        let s = state(&[peer("n2", 2, "192.0.2.2:51820", &["10.2.0.0/24"])]);
        let plan = Plan::of(&s, &tomb);
        assert!(
            plan.destinations
                .contains(&(cidr("10.3.0.0/24"), DstEntry::unreachable(UnreachableReason::NotPeered)))
        );
        // Routed again: no longer a tombstone.
        assert!(next_tombstones(true, false, &tomb, &new, &old).is_empty());
        // Kept across unrelated commands.
        assert_eq!(next_tombstones(true, false, &tomb, &new, &new), tomb);
        // The authoritative list, or non-strict mode: none.
        assert!(next_tombstones(true, true, &tomb, &old, &new).is_empty());
        assert!(next_tombstones(false, false, &BTreeSet::new(), &old, &new).is_empty());
        // A tombstone listed as unreachable takes the listed reason.
        let mut s = s;
        s.unreachable.insert(Unreachable { cidr: cidr("10.3.0.0/24"), reason: UnreachableReason::NoKey });
        let plan = Plan::of(&s, &tomb);
        assert_eq!(
            plan.destinations[1],
            (cidr("10.3.0.0/24"), DstEntry::unreachable(UnreachableReason::NoKey))
        );
        assert_eq!(plan.destinations.len(), 2);
    }

    #[test]
    fn unusable_keys_and_supernets_of_our_pods_are_refused() {
        let own = PublicKey::from_bytes([1; 32]);
        assert_eq!(check(&state(&[peer("n2", 2, "192.0.2.2:51820", &["10.2.0.0/24"])]), &own), Ok(()));
        let err = check(&state(&[peer("n2", 0, "192.0.2.2:51820", &["10.2.0.0/24"])]), &own).unwrap_err();
        assert!(matches!(err, Refused::BadKey { reason: "all zeros", .. }), "{err}");
        let err = check(&state(&[peer("n2", 1, "192.0.2.2:51820", &["10.2.0.0/24"])]), &own).unwrap_err();
        assert!(err.to_string().contains("own key"), "{err}");
        let err = check(&state(&[peer("n2", 2, "192.0.2.2:51820", &["10.0.0.0/8"])]), &own).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/8") && err.to_string().contains("10.1.0.0/24"), "{err}");
    }
}
