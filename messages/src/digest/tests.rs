use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::{PublicKey, RotationPhase, SelfSettings, UnreachableReason};

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("a valid name")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("a valid CIDR")
}

fn peer(n: &str, key: u8, ips: &[&str]) -> Peer {
    Peer {
        node: name(n),
        public_key: PublicKey::from_bytes([key; 32]),
        endpoint: "192.0.2.2:51820".parse().expect("an endpoint"),
        allowed_ips: ips.iter().map(|c| cidr(c)).collect(),
        persistent_keepalive: None,
    }
}

fn state() -> NodeDesiredState {
    let mut state = NodeDesiredState::empty(name("n1"));
    state.settings = SelfSettings {
        listen_port: 51820,
        lane_port: 51821,
        isolated: false,
        drained: false,
        pod_cidrs: vec![cidr("10.244.1.0/24")],
    };
    for p in [peer("n2", 2, &["10.244.2.0/24"]), peer("n3", 3, &["10.244.3.0/24", "fd00:3::/64"])] {
        state.peers.insert(p.node.clone(), Arc::new(p));
    }
    state.blocks.insert(BlockRule { from: cidr("10.244.2.0/24"), to: cidr("10.244.1.0/24") });
    state.unreachable.insert(Unreachable { cidr: cidr("10.244.9.0/24"), reason: UnreachableReason::NoKey });
    state
}

/// A change to a state, for the table of edits below.
type Edit = Box<dyn Fn(&mut NodeDesiredState)>;

const KEY: DigestKey = DigestKey([7; 16]);

#[test]
fn equal_states_have_equal_digests_however_they_were_built() {
    let a = state();
    // The same peers, inserted the other way round and not shared.
    let mut b = NodeDesiredState::empty(name("n1"));
    b.settings = a.settings.clone();
    for p in a.peers.values().rev() {
        b.peers.insert(p.node.clone(), Arc::new(Peer::clone(p)));
    }
    b.blocks = a.blocks.clone();
    b.unreachable = a.unreachable.clone();
    assert_eq!(a, b);
    assert_eq!(a.digest(&KEY), b.digest(&KEY));
}

#[test]
fn every_part_of_a_state_changes_its_digest() {
    let base = state();
    let edits: Vec<(&str, Edit)> = vec![
        ("node", Box::new(|s| s.node = name("n9"))),
        ("listen port", Box::new(|s| s.settings.listen_port = 51822)),
        ("lane port", Box::new(|s| s.settings.lane_port = 51823)),
        ("isolated", Box::new(|s| s.settings.isolated = true)),
        ("drained", Box::new(|s| s.settings.drained = true)),
        ("pod CIDRs", Box::new(|s| s.settings.pod_cidrs = vec![cidr("10.244.1.0/25")])),
        (
            "a peer's key",
            Box::new(|s| upsert(s, Peer { public_key: PublicKey::from_bytes([9; 32]), ..peer2() })),
        ),
        (
            "a peer's endpoint",
            Box::new(|s| upsert(s, Peer { endpoint: "192.0.2.2:51821".parse().unwrap(), ..peer2() })),
        ),
        (
            "a peer's IPs",
            Box::new(|s| upsert(s, Peer { allowed_ips: vec![cidr("10.244.2.0/23")], ..peer2() })),
        ),
        ("a peer's keepalive", Box::new(|s| upsert(s, Peer { persistent_keepalive: Some(25), ..peer2() }))),
        ("a peer removed", Box::new(|s| _ = s.peers.remove(&name("n2")))),
        ("blocks", Box::new(|s| s.blocks = BTreeSet::new())),
        (
            "block direction",
            Box::new(|s| {
                s.blocks = [BlockRule { from: cidr("10.244.1.0/24"), to: cidr("10.244.2.0/24") }].into();
            }),
        ),
        (
            "unreachable reason",
            Box::new(|s| {
                s.unreachable =
                    [Unreachable { cidr: cidr("10.244.9.0/24"), reason: UnreachableReason::NotReady }].into();
            }),
        ),
        (
            "a rotation",
            Box::new(|s| {
                s.rotation = Some(NodeRotation {
                    id: 1,
                    node: name("n2"),
                    phase: RotationPhase::Prepare,
                    new_public_key: None,
                    lane: PeerMap::new(),
                });
            }),
        ),
    ];
    let digest = base.digest(&KEY);
    let mut seen = vec![digest];
    for (what, edit) in edits {
        let mut changed = base.clone();
        edit(&mut changed);
        assert_ne!(changed, base, "{what}: the edit changes the state");
        let other = changed.digest(&KEY);
        assert!(!seen.contains(&other), "{what}: the digest {other} did not change");
        seen.push(other);
    }
}

fn peer2() -> Peer {
    peer("n2", 2, &["10.244.2.0/24"])
}

fn upsert(state: &mut NodeDesiredState, peer: Peer) {
    state.peers.insert(peer.node.clone(), Arc::new(peer));
}

#[test]
fn a_rotation_phase_and_its_new_key_change_the_digest() {
    let mut a = state();
    let rotation = NodeRotation {
        id: 4,
        node: name("n2"),
        phase: RotationPhase::Distribute,
        new_public_key: Some(PublicKey::from_bytes([5; 32])),
        lane: [(name("n2"), Arc::new(peer2()))].into_iter().collect(),
    };
    a.rotation = Some(rotation.clone());
    let mut b = a.clone();
    b.rotation = Some(NodeRotation { phase: RotationPhase::Activate, ..rotation.clone() });
    let mut c = a.clone();
    c.rotation =
        Some(NodeRotation { new_public_key: Some(PublicKey::from_bytes([6; 32])), ..rotation.clone() });
    let mut d = a.clone();
    d.rotation = Some(NodeRotation { lane: PeerMap::new(), ..rotation });
    let digests: BTreeSet<[u8; 16]> = [&a, &b, &c, &d].iter().map(|s| *s.digest(&KEY).as_bytes()).collect();
    assert_eq!(digests.len(), 4, "each rotation field counts");
}

#[test]
fn a_digest_holds_for_one_key_only() {
    let s = state();
    assert_ne!(s.digest(&KEY), s.digest(&DigestKey([8; 16])));
    assert_eq!(s.digest(&KEY), s.digest(&DigestKey::from_bytes([7; 16])));
}

#[test]
fn a_digest_prints_as_hex() {
    let digest = StateDigest::from_bytes([0xab; 16]);
    assert_eq!(digest.to_string(), "ab".repeat(16));
    assert_eq!(format!("{digest:?}"), format!("StateDigest({})", "ab".repeat(16)));
}

/// The walk pinned to the bytes it hashes: a change to it that kept
/// [`WALK`] would make two releases disagree on every digest without
/// saying why.
#[test]
fn the_walk_gives_the_digest_it_always_gave() {
    let mut state = state();
    let long = peer("node-with-a-long-name-1", 4, &["10.244.4.0/24"]);
    state.peers.insert(long.node.clone(), Arc::new(long));
    assert_eq!(state.digest(&KEY).to_string(), "041d821d54eb8ab24ba23d515595149e");
}
