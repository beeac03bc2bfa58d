//! The peer diff: what to change on a device so its peers match the desired
//! set, and nothing more. Pure: plain data in, plain data out.
//!
//! Peers are matched by public key, the identity WireGuard keys its sessions
//! by. A peer whose key is on both sides is *updated* in place (endpoint,
//! allowed IPs, keepalive), never removed and re-added, which would drop its
//! session and the packets in flight. A node whose key changed shows up as
//! one removal and one addition: that is a different peer to WireGuard.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use vpblu_messages::PeerMap;
use vpblu_messages::{Cidr, NodeName, Peer, PublicKey};

use super::PeerState;

/// What to change on a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerDiff {
    /// Peers to create, with their full configuration.
    pub add: Vec<Arc<Peer>>,
    /// Peers to change in place.
    pub update: Vec<PeerUpdate>,
    /// Keys of peers to remove.
    pub remove: Vec<PublicKey>,
}

impl PeerDiff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

/// The fields of one existing peer that differ; `None` means "leave as is".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The node the peer belongs to (for logs and metrics).
    pub node: NodeName,
    /// The peer's key (unchanged: that is what makes this an update).
    pub public_key: PublicKey,
    /// A new endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The new complete allowed-IP list, applied with `replace_allowed_ips`.
    pub allowed_ips: Option<Vec<Cidr>>,
    /// A new persistent keepalive interval in seconds; `Some(0)` turns it off.
    pub persistent_keepalive: Option<u16>,
}

/// Compares what a device has with what is desired. `desired` is expected
/// to be valid (`NodeDesiredState::validate`: unique keys and allowed IPs);
/// with duplicate keys the last node in name order wins. Output order is
/// deterministic: additions and updates in node-name order, removals in key
/// order.
pub fn diff_peers(actual: &[PeerState], desired: &PeerMap) -> PeerDiff {
    let actual_by_key: HashMap<&PublicKey, &PeerState> = actual.iter().map(|p| (&p.public_key, p)).collect();
    let desired_by_key: BTreeMap<&PublicKey, &Arc<Peer>> =
        desired.values().map(|p| (&p.public_key, p)).collect();

    let mut diff = PeerDiff::default();
    for peer in desired.values() {
        // Skip all but the winner of a (invalid) duplicate key.
        if !Arc::ptr_eq(desired_by_key[&peer.public_key], peer) {
            continue;
        }
        match actual_by_key.get(&peer.public_key) {
            None => diff.add.push(Arc::clone(peer)),
            Some(have) => {
                if let Some(update) = update_for(have, peer) {
                    diff.update.push(update);
                }
            }
        }
    }
    let mut remove: Vec<PublicKey> =
        actual.iter().map(|p| p.public_key).filter(|k| !desired_by_key.contains_key(k)).collect();
    remove.sort();
    remove.dedup();
    diff.remove = remove;
    diff
}

fn update_for(have: &PeerState, want: &Peer) -> Option<PeerUpdate> {
    let endpoint = (have.endpoint != Some(want.endpoint)).then_some(want.endpoint);

    let mut want_ips = want.allowed_ips.clone();
    want_ips.sort();
    want_ips.dedup();
    let mut have_ips = have.allowed_ips.clone();
    have_ips.sort();
    have_ips.dedup();
    let allowed_ips = (have_ips != want_ips).then_some(want_ips);

    // WireGuard has no "unset": an interval of 0 is off.
    let want_keepalive = want.persistent_keepalive.unwrap_or(0);
    let have_keepalive = have.persistent_keepalive.unwrap_or(0);
    let persistent_keepalive = (have_keepalive != want_keepalive).then_some(want_keepalive);

    if endpoint.is_none() && allowed_ips.is_none() && persistent_keepalive.is_none() {
        return None;
    }
    Some(PeerUpdate {
        node: want.node.clone(),
        public_key: want.public_key,
        endpoint,
        allowed_ips,
        persistent_keepalive,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; 32])
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn peer(name: &str, k: u8, endpoint: &str, ips: &[&str], keepalive: Option<u16>) -> Arc<Peer> {
        let mut allowed_ips: Vec<Cidr> = ips.iter().map(|s| cidr(s)).collect();
        allowed_ips.sort();
        Arc::new(Peer {
            node: NodeName::new(name).unwrap(),
            public_key: key(k),
            endpoint: endpoint.parse().unwrap(),
            allowed_ips,
            persistent_keepalive: keepalive,
        })
    }

    /// What a device reports once `peer` is applied (with counters running).
    fn state_of(peer: &Peer) -> PeerState {
        PeerState {
            public_key: peer.public_key,
            endpoint: Some(peer.endpoint),
            allowed_ips: peer.allowed_ips.clone(),
            last_handshake: Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            rx_bytes: 1000,
            tx_bytes: 2000,
            persistent_keepalive: peer.persistent_keepalive.filter(|&k| k != 0),
        }
    }

    fn desired(peers: &[Arc<Peer>]) -> PeerMap {
        peers.iter().map(|p| (p.node.clone(), Arc::clone(p))).collect()
    }

    fn b() -> Arc<Peer> {
        peer("b", 2, "192.0.2.2:51820", &["10.244.2.0/24"], None)
    }
    fn c() -> Arc<Peer> {
        peer("c", 3, "192.0.2.3:51820", &["10.244.3.0/24", "fd00:3::/64"], Some(25))
    }

    #[test]
    fn nothing_to_do_when_the_device_matches() {
        let want = desired(&[b(), c()]);
        let actual: Vec<_> = want.values().map(|p| state_of(p)).collect();
        assert!(diff_peers(&actual, &want).is_empty());
        assert!(diff_peers(&[], &PeerMap::new()).is_empty());
    }

    #[test]
    fn allowed_ip_order_and_counters_do_not_matter() {
        let want = desired(&[c()]);
        let mut have = state_of(&c());
        have.allowed_ips.reverse();
        have.last_handshake = None;
        have.rx_bytes = 0;
        assert!(diff_peers(&[have], &want).is_empty());
    }

    #[test]
    fn an_empty_device_gets_every_peer_added() {
        let want = desired(&[c(), b()]);
        let diff = diff_peers(&[], &want);
        assert_eq!(diff.add, [b(), c()], "in node-name order");
        assert!(diff.update.is_empty() && diff.remove.is_empty());
    }

    #[test]
    fn peers_no_longer_desired_are_removed_by_key() {
        let want = desired(&[b()]);
        let actual = [state_of(&c()), state_of(&b()), state_of(&peer("x", 9, "192.0.2.9:1", &[], None))];
        let diff = diff_peers(&actual, &want);
        assert_eq!(diff.remove, [key(3), key(9)]);
        assert!(diff.add.is_empty() && diff.update.is_empty());
        // Everything goes when nothing is desired.
        assert_eq!(diff_peers(&actual, &PeerMap::new()).remove.len(), 3);
    }

    #[test]
    fn a_changed_allowed_ip_set_is_an_in_place_update_of_only_that_field() {
        let old = c();
        let new = peer("c", 3, "192.0.2.3:51820", &["10.244.3.0/24", "10.244.30.0/24"], Some(25));
        let diff = diff_peers(&[state_of(&old)], &desired(std::slice::from_ref(&new)));
        assert!(diff.add.is_empty() && diff.remove.is_empty(), "same key: never remove and re-add");
        assert_eq!(
            diff.update,
            [PeerUpdate {
                node: new.node.clone(),
                public_key: key(3),
                endpoint: None,
                allowed_ips: Some(new.allowed_ips.clone()),
                persistent_keepalive: None,
            }]
        );
    }

    #[test]
    fn endpoint_and_keepalive_changes_are_updates() {
        let moved = peer("b", 2, "192.0.2.22:51821", &["10.244.2.0/24"], Some(10));
        let diff = diff_peers(&[state_of(&b())], &desired(&[moved]));
        assert_eq!(diff.update.len(), 1);
        let u = &diff.update[0];
        assert_eq!(u.endpoint, Some("192.0.2.22:51821".parse().unwrap()));
        assert_eq!(u.persistent_keepalive, Some(10));
        assert_eq!(u.allowed_ips, None);

        // Turning keepalive off is an explicit 0; Some(0) desired equals off.
        let diff = diff_peers(
            &[state_of(&c())],
            &desired(&[peer("c", 3, "192.0.2.3:51820", &["10.244.3.0/24", "fd00:3::/64"], None)]),
        );
        assert_eq!(diff.update[0].persistent_keepalive, Some(0));
        let off = peer("b", 2, "192.0.2.2:51820", &["10.244.2.0/24"], Some(0));
        assert!(diff_peers(&[state_of(&b())], &desired(&[off])).is_empty());
    }

    #[test]
    fn a_peer_without_a_known_endpoint_gets_one() {
        let mut have = state_of(&b());
        have.endpoint = None;
        let diff = diff_peers(&[have], &desired(&[b()]));
        assert_eq!(diff.update[0].endpoint, Some(b().endpoint));
    }

    #[test]
    fn a_rotated_key_is_a_removal_and_an_addition() {
        let rotated = peer("b", 20, "192.0.2.2:51820", &["10.244.2.0/24"], None);
        let diff = diff_peers(&[state_of(&b())], &desired(std::slice::from_ref(&rotated)));
        assert_eq!(diff.add, [rotated]);
        assert_eq!(diff.remove, [key(2)]);
        assert!(diff.update.is_empty());
    }

    fn arb_peer() -> impl Strategy<Value = (u8, u8, bool, Option<u16>)> {
        // (key, address byte for endpoint and allowed IP, second CIDR, keepalive)
        (0u8..8, 0u8..4, any::<bool>(), prop_oneof![Just(None), Just(Some(25)), Just(Some(0))])
    }

    fn build(spec: &[(u8, u8, bool, Option<u16>)]) -> PeerMap {
        let mut out = PeerMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, &(k, a, second, keepalive)) in spec.iter().enumerate() {
            if !seen.insert(k) {
                continue; // validate() forbids shared keys
            }
            let mut ips = vec![format!("10.{i}.{a}.0/24")];
            if second {
                ips.push(format!("fd00:{i}::/64"));
            }
            let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
            let p = peer(&format!("n{i}"), k, &format!("192.0.2.{a}:51820"), &ips, keepalive);
            out.insert(p.node.clone(), p);
        }
        out
    }

    /// Applies a diff to a model of the device, as WireGuard would.
    fn apply(actual: &[PeerState], diff: &PeerDiff) -> Vec<PeerState> {
        let mut device: BTreeMap<PublicKey, PeerState> =
            actual.iter().map(|p| (p.public_key, p.clone())).collect();
        for k in &diff.remove {
            device.remove(k);
        }
        for u in &diff.update {
            let p = device.get_mut(&u.public_key).expect("updates only touch existing peers");
            if let Some(e) = u.endpoint {
                p.endpoint = Some(e);
            }
            if let Some(ips) = &u.allowed_ips {
                p.allowed_ips.clone_from(ips);
            }
            if let Some(k) = u.persistent_keepalive {
                p.persistent_keepalive = (k != 0).then_some(k);
            }
        }
        for a in &diff.add {
            assert!(!device.contains_key(&a.public_key), "additions are new keys");
            device.insert(a.public_key, state_of(a));
        }
        device.into_values().collect()
    }

    proptest! {
        #[test]
        fn applying_the_diff_converges_and_keeps_surviving_sessions(
            from in prop::collection::vec(arb_peer(), 0..6),
            to in prop::collection::vec(arb_peer(), 0..6),
        ) {
            let actual: Vec<PeerState> = build(&from).values().map(|p| state_of(p)).collect();
            let want = build(&to);
            let diff = diff_peers(&actual, &want);
            let after = apply(&actual, &diff);
            // Converged: nothing left to do.
            prop_assert!(diff_peers(&after, &want).is_empty());
            // Minimal: a key present before and after is never removed or re-added.
            for p in &actual {
                if want.values().any(|w| w.public_key == p.public_key) {
                    prop_assert!(!diff.remove.contains(&p.public_key));
                    prop_assert!(diff.add.iter().all(|a| a.public_key != p.public_key));
                }
            }
            // Idempotent from the desired state itself.
            let settled: Vec<PeerState> = want.values().map(|p| state_of(p)).collect();
            prop_assert!(diff_peers(&settled, &want).is_empty());
        }
    }
}
