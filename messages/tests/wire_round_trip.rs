//! Domain → wire → domain is the identity for everything the stream
//! carries, and malformed wire input becomes an error naming the field.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use vpblu_messages::wire::WireError;
use vpblu_messages::{
    Backend, BlockRule, Cidr, Command, DigestKey, Downstream, Envelope, Generation, Hello, NodeDesiredState,
    NodeName, NodeRotation, Peer, PeerMap, PeerObservation, PublicKey, RotationPhase, RotationReport,
    SelfSettings, StateDigest, Unreachable, UnreachableReason, Upstream,
};
use vpblu_proto as pb;

fn cidr_strategy() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(
            |(a, p)| Cidr::containing(std::net::Ipv4Addr::from(a).into(), p).expect("prefix in range")
        ),
        (any::<u128>(), 0u8..=128).prop_map(
            |(a, p)| Cidr::containing(std::net::Ipv6Addr::from(a).into(), p).expect("prefix in range")
        ),
    ]
}

fn name_strategy() -> impl Strategy<Value = NodeName> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9]".prop_map(|s| NodeName::new(s).expect("generated a valid name"))
}

fn key_strategy() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey::from_bytes)
}

fn peer_strategy() -> impl Strategy<Value = Peer> {
    (
        name_strategy(),
        key_strategy(),
        (any::<std::net::IpAddr>(), any::<u16>()).prop_map(std::net::SocketAddr::from),
        proptest::collection::btree_set(cidr_strategy(), 0..4),
        proptest::option::of(1u16..),
    )
        .prop_map(|(node, public_key, endpoint, ips, persistent_keepalive)| Peer {
            node,
            public_key,
            endpoint,
            allowed_ips: ips.into_iter().collect(),
            persistent_keepalive,
        })
}

fn reason_strategy() -> impl Strategy<Value = UnreachableReason> {
    prop_oneof![
        Just(UnreachableReason::NoKey),
        Just(UnreachableReason::NotPeered),
        Just(UnreachableReason::Isolated),
        Just(UnreachableReason::NotReady),
        Just(UnreachableReason::Drained),
    ]
}

fn state_strategy() -> impl Strategy<Value = NodeDesiredState> {
    (
        name_strategy(),
        1u16..,
        any::<(bool, bool)>(),
        proptest::collection::vec(cidr_strategy(), 0..3),
        proptest::collection::vec(peer_strategy(), 0..5),
        proptest::collection::btree_set((cidr_strategy(), cidr_strategy()), 0..5),
        proptest::collection::btree_set((cidr_strategy(), reason_strategy()), 0..5),
        (1u16.., proptest::option::of(rotation_strategy())),
    )
        .prop_map(
            |(
                node,
                listen_port,
                (isolated, drained),
                pod_cidrs,
                peers,
                blocks,
                unreachable,
                (lane_port, rotation),
            )| {
                NodeDesiredState {
                    node,
                    settings: SelfSettings { listen_port, lane_port, isolated, drained, pod_cidrs },
                    rotation,
                    peers: peers.into_iter().map(|p| (p.node.clone(), Arc::new(p))).collect::<PeerMap>(),
                    blocks: blocks.into_iter().map(|(from, to)| BlockRule { from, to }).collect(),
                    unreachable: unreachable
                        .into_iter()
                        .map(|(cidr, reason)| Unreachable { cidr, reason })
                        .collect::<BTreeSet<_>>(),
                }
            },
        )
}

fn phase_strategy() -> impl Strategy<Value = RotationPhase> {
    prop_oneof![
        Just(RotationPhase::Prepare),
        Just(RotationPhase::Distribute),
        Just(RotationPhase::Activate),
        Just(RotationPhase::Retire),
        Just(RotationPhase::Settle),
        Just(RotationPhase::Rollback),
    ]
}

fn rotation_strategy() -> impl Strategy<Value = NodeRotation> {
    (
        any::<u64>(),
        phase_strategy(),
        name_strategy(),
        proptest::option::of(key_strategy()),
        proptest::collection::vec(peer_strategy(), 0..3),
    )
        .prop_map(|(id, phase, node, new_public_key, lane)| NodeRotation {
            id,
            phase,
            node,
            new_public_key,
            lane: lane.into_iter().map(|p| (p.node.clone(), Arc::new(p))).collect(),
        })
}

fn downstream_strategy() -> impl Strategy<Value = Downstream> {
    prop_oneof![
        state_strategy().prop_map(|s| Downstream::State(Command::SyncState(s))),
        state_strategy().prop_map(|s| Downstream::State(Command::SetSettings(s.settings))),
        peer_strategy().prop_map(|p| Downstream::State(Command::PeerUpsert(Arc::new(p)))),
        name_strategy().prop_map(|n| Downstream::State(Command::PeerRemove(n))),
        state_strategy().prop_map(|s| Downstream::State(Command::SetBlocks(s.blocks.into_iter().collect()))),
        state_strategy()
            .prop_map(|s| Downstream::State(Command::SetUnreachable(s.unreachable.into_iter().collect()))),
        proptest::option::of(rotation_strategy()).prop_map(|r| Downstream::State(Command::SetRotation(r))),
        any::<[u8; 16]>().prop_map(|d| Downstream::State(Command::KeepState(StateDigest::from_bytes(d)))),
    ]
}

fn upstream_strategy() -> impl Strategy<Value = Upstream> {
    prop_oneof![
        (
            name_strategy(),
            key_strategy(),
            proptest::option::of(key_strategy()),
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            "[a-z0-9.]{0,8}",
            (proptest::option::of(any::<[u8; 16]>()), proptest::option::of(any::<[u8; 16]>())),
        )
            .prop_map(|(node, public_key, staged_public_key, g, kernel, mtu, version, held)| {
                Upstream::Hello(Hello {
                    node,
                    public_key,
                    staged_public_key,
                    applied_generation: Generation(g),
                    backend: if kernel { Backend::Kernel } else { Backend::Userspace },
                    mtu,
                    version,
                    digest_key: held.0.map(DigestKey::from_bytes),
                    held: held.1.map(StateDigest::from_bytes),
                })
            }),
        (any::<u64>(), proptest::option::of("[ -~]{1,20}")).prop_map(|(g, err)| Upstream::Ack {
            generation: Generation(g),
            result: err.map_or(Ok(()), Err),
        }),
        proptest::collection::vec(
            (name_strategy(), key_strategy(), proptest::option::of(any::<u32>()), any::<u64>(), any::<u64>()),
            0..4
        )
        .prop_map(|obs| Upstream::Observed(
            obs.into_iter()
                .map(|(node, public_key, age, rx_bytes, tx_bytes)| PeerObservation {
                    node,
                    public_key,
                    last_handshake_age: age.map(|s| Duration::from_secs(s.into())),
                    rx_bytes,
                    tx_bytes,
                })
                .collect()
        )),
        (
            any::<u64>(),
            phase_strategy(),
            proptest::option::of("[ -~]{1,20}"),
            proptest::option::of(key_strategy())
        )
            .prop_map(|(rotation_id, phase, err, staged_public_key)| Upstream::RotationReport(
                RotationReport { rotation_id, phase, result: err.map_or(Ok(()), Err), staged_public_key }
            )),
    ]
}

proptest! {
    #[test]
    fn controller_messages_round_trip(generation in any::<u64>(), body in downstream_strategy()) {
        let envelope = Envelope { generation: Generation(generation), body };
        let wire = pb::ControllerMessage::from(&envelope);
        prop_assert_eq!(Envelope::try_from(&wire).unwrap(), envelope);
    }

    #[test]
    fn daemon_messages_round_trip(up in upstream_strategy()) {
        let wire = pb::DaemonMessage::from(&up);
        prop_assert_eq!(Upstream::try_from(&wire).unwrap(), up);
    }

    /// A daemon digests the state it decoded, the controller the one it
    /// encoded: the two must agree, and differ for different states.
    #[test]
    fn a_state_keeps_its_digest_across_the_wire(a in state_strategy(), b in state_strategy(), key in any::<[u8; 16]>()) {
        let key = DigestKey::from_bytes(key);
        let decoded = NodeDesiredState::try_from(&pb::SyncState::from(&a)).unwrap();
        prop_assert_eq!(decoded.digest(&key), a.digest(&key));
        prop_assert_eq!(a == b, a.digest(&key) == b.digest(&key));
    }

    #[test]
    fn arbitrary_peer_bytes_never_panic(node in ".{0,20}", key in proptest::collection::vec(any::<u8>(), 0..40),
        endpoint in ".{0,30}", ips in proptest::collection::vec(".{0,20}", 0..3), ka in any::<u32>()) {
        let _ = Peer::try_from(&pb::Peer { node, public_key: key, endpoint, allowed_ips: ips, persistent_keepalive: ka });
    }
}

fn valid_peer() -> pb::Peer {
    pb::Peer {
        node: "node-2".into(),
        public_key: vec![9; 32],
        endpoint: "192.0.2.2:51820".into(),
        allowed_ips: vec!["10.244.2.0/24".into()],
        persistent_keepalive: 0,
    }
}

#[test]
fn malformed_wire_input_names_the_field_and_value() {
    let cases: Vec<(pb::Peer, &str)> = vec![
        (pb::Peer { public_key: vec![1; 31], ..valid_peer() }, "peer.public_key"),
        (pb::Peer { allowed_ips: vec!["10.244.2.1/24".into()], ..valid_peer() }, "10.244.2.1/24"),
        (pb::Peer { allowed_ips: vec!["10.0.0.0/33".into()], ..valid_peer() }, "10.0.0.0/33"),
        (pb::Peer { endpoint: "nowhere".into(), ..valid_peer() }, "nowhere"),
        (pb::Peer { node: "Node_2".into(), ..valid_peer() }, "Node_2"),
        (pb::Peer { persistent_keepalive: 70_000, ..valid_peer() }, "70000"),
    ];
    for (bad, needle) in cases {
        let err = Peer::try_from(&bad).unwrap_err();
        assert!(err.to_string().contains(needle), "error {err} should name {needle}");
    }
    assert!(Peer::try_from(&valid_peer()).is_ok());
}

#[test]
fn missing_oneofs_and_unknown_enums_are_errors() {
    assert_eq!(
        Envelope::try_from(&pb::ControllerMessage { generation: 1, command: None }).unwrap_err(),
        WireError::Missing { field: "controller_message.command" }
    );
    assert!(Upstream::try_from(&pb::DaemonMessage { msg: None }).is_err());
    let hello =
        pb::Hello { node: "node-1".into(), public_key: vec![1; 32], backend: 99, ..Default::default() };
    let err = Upstream::try_from(&pb::DaemonMessage { msg: Some(pb::daemon_message::Msg::Hello(hello)) })
        .unwrap_err();
    assert_eq!(err, WireError::UnknownEnum { field: "hello.backend", value: 99 });
    let short_digest = pb::Hello {
        node: "node-1".into(),
        public_key: vec![1; 32],
        backend: pb::Backend::Kernel.into(),
        digest_key: vec![1; 16],
        held_digest: vec![2; 15],
        ..Default::default()
    };
    let err =
        Upstream::try_from(&pb::DaemonMessage { msg: Some(pb::daemon_message::Msg::Hello(short_digest)) })
            .unwrap_err();
    assert_eq!(err, WireError::DigestLength { field: "hello.held_digest", len: 15 });
    assert!(err.to_string().contains("15 bytes"), "{err}");
    let keep = pb::ControllerMessage {
        generation: 3,
        command: Some(pb::controller_message::Command::KeepState(pb::KeepState { digest: vec![] })),
    };
    assert_eq!(
        Envelope::try_from(&keep).unwrap_err(),
        WireError::DigestLength { field: "keep_state.digest", len: 0 }
    );
    let sync = pb::SyncState { node: "node-1".into(), settings: None, ..Default::default() };
    assert_eq!(
        NodeDesiredState::try_from(&sync).unwrap_err(),
        WireError::Missing { field: "sync_state.settings" }
    );
    let zero_port = pb::SyncState {
        node: "node-1".into(),
        settings: Some(pb::Settings { listen_port: 0, ..Default::default() }),
        ..Default::default()
    };
    assert!(NodeDesiredState::try_from(&zero_port).unwrap_err().to_string().contains("listen_port"));
}
