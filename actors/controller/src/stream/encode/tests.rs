use std::collections::BTreeSet;

use vpblu_messages::{
    BlockRule, Cidr, NodeName, NodeRotation, PublicKey, RotationPhase, SelfSettings, Unreachable,
    UnreachableReason,
};

use super::*;

fn name(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

fn peer(i: u32) -> Arc<Peer> {
    Arc::new(Peer {
        node: name(&format!("node-{i}")),
        public_key: PublicKey::from_bytes([i as u8 + 1; 32]),
        endpoint: format!("192.0.2.{}:51820", i % 250 + 1).parse().unwrap(),
        allowed_ips: vec![format!("10.{}.{}.0/24", i >> 8, i & 0xff).parse().unwrap()],
        persistent_keepalive: i.is_multiple_of(2).then_some(25),
    })
}

fn mesh(n: u32) -> PeerMap {
    (1..n).map(peer).map(|p| (p.node.clone(), p)).collect()
}

/// A state with every field set: settings, peers, blocks, unreachable and
/// a rotation with a lane.
fn full_state(peers: PeerMap) -> NodeDesiredState {
    let cidr = |s: &str| s.parse::<Cidr>().unwrap();
    let lane: PeerMap = peers.iter().take(2).map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
    NodeDesiredState {
        node: name("node-0"),
        settings: SelfSettings {
            listen_port: 51820,
            lane_port: 51821,
            isolated: false,
            drained: true,
            pod_cidrs: vec![cidr("10.0.0.0/24"), cidr("fd00::/64")],
        },
        peers,
        blocks: BTreeSet::from([BlockRule { from: cidr("10.0.1.0/24"), to: cidr("10.0.2.0/24") }]),
        unreachable: BTreeSet::from([Unreachable {
            cidr: cidr("10.9.0.0/16"),
            reason: UnreachableReason::NoKey,
        }]),
        rotation: Some(NodeRotation {
            id: 7,
            node: name("node-1"),
            phase: RotationPhase::Distribute,
            new_public_key: Some(PublicKey::from_bytes([9; 32])),
            lane,
        }),
    }
}

/// The message after the prefix, decoded; checks the prefix on the way.
fn decode(framed: &Bytes) -> pb::ControllerMessage {
    assert_eq!(framed[0], 0, "not compressed");
    let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
    assert_eq!(framed.len(), PREFIX + len, "the prefix states the message's length");
    pb::ControllerMessage::decode(&framed[PREFIX..]).expect("decodes")
}

#[test]
fn a_full_state_decodes_to_what_the_shared_conversion_makes() {
    let encodings = PeerEncodings::default();
    for (generation, peers) in [(1, mesh(1)), (2, mesh(2)), (300, mesh(200))] {
        let envelope = Envelope {
            generation: Generation(generation),
            body: Downstream::State(Command::SyncState(full_state(peers))),
        };
        let framed = encodings.frame(&envelope);
        assert_eq!(decode(&framed), pb::ControllerMessage::from(&envelope), "generation {generation}");
        assert_eq!(decode(&framed), decode(&encodings.frame(&envelope)), "again, from the kept encodings");
    }
    let empty = Envelope {
        generation: Generation(0),
        body: Downstream::State(Command::SyncState(NodeDesiredState::empty(name("node-0")))),
    };
    assert_eq!(decode(&encodings.frame(&empty)), pb::ControllerMessage::from(&empty));
}

#[test]
fn a_peer_upsert_and_other_commands_decode_as_converted() {
    let encodings = PeerEncodings::default();
    for body in
        [Command::PeerUpsert(peer(3)), Command::PeerRemove(name("node-3")), Command::SetBlocks(Vec::new())]
    {
        let envelope = Envelope { generation: Generation(1 << 40), body: Downstream::State(body) };
        assert_eq!(decode(&encodings.frame(&envelope)), pb::ControllerMessage::from(&envelope));
    }
}

#[test]
fn each_shared_peer_is_kept_once_and_forgotten_when_no_state_holds_it() {
    let encodings = PeerEncodings::default();
    let shared = mesh(100);
    // Two nodes' states share the same peers: 99 encodings, not 198.
    for _ in 0..2 {
        let state = NodeDesiredState { peers: shared.clone(), ..NodeDesiredState::empty(name("node-0")) };
        encodings.frame(&Envelope {
            generation: Generation(1),
            body: Downstream::State(Command::SyncState(state)),
        });
    }
    assert_eq!(encodings.kept(), 99);
    // A peer changes: a new Arc, encoded anew; the old one is the cache's
    // alone. Passes that each rebuild every peer leave the cache bounded.
    drop(shared);
    for _ in 0..40 {
        let state = NodeDesiredState { peers: mesh(100), ..NodeDesiredState::empty(name("node-0")) };
        let envelope =
            Envelope { generation: Generation(2), body: Downstream::State(Command::SyncState(state)) };
        let changed = pb::ControllerMessage::from(&envelope);
        assert_eq!(decode(&encodings.frame(&envelope)), changed, "a new Arc is encoded anew");
    }
    assert!(encodings.kept() <= 2 * MIN_SWEEP + 99, "kept {} encodings of 99 live peers", encodings.kept());
}

#[test]
fn a_frame_is_the_prefix_and_the_message_in_exactly_its_size() {
    let message = pb::ControllerMessage { generation: 7, ..pb::ControllerMessage::default() };
    let framed = frame(&message);
    assert_eq!(framed.len(), PREFIX + message.encoded_len());
    assert_eq!(decode(&framed), message);
}
