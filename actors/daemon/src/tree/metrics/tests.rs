use super::*;

fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

const NOW_SECS: u64 = 1_800_000_000;

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn nothing_observed_yet_renders_only_the_counted_metrics() {
    let health = Health::new();
    let metrics = DaemonMetrics::register(&health, Backend::Userspace, BackendReason::Requested);
    metrics.set_applied_generation(Generation(7));
    metrics.set_stream_connected(true);
    let text = health.render();
    let lines = lines(&text);
    assert!(lines.contains(&"vpblu_daemon_applied_generation 7"), "{text}");
    assert!(lines.contains(&"vpblu_daemon_stream_connected 1"), "{text}");
    assert!(lines.contains(&"vpblu_daemon_stream_reconnects_total 0"), "{text}");
    assert!(!text.contains("vpblu_daemon_peers") && !text.contains("vpblu_daemon_packets"), "{text}");
}

#[test]
fn an_observation_renders_peers_by_node_and_packets_by_verdict_and_reason() {
    let health = Health::new();
    let metrics = DaemonMetrics::register(&health, Backend::Userspace, BackendReason::Requested);
    let mut packets: BTreeMap<Verdict, u64> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
    packets.insert(Verdict::ToMesh, 120);
    packets.insert(Verdict::DropUnreachableNoKey, 4);
    packets.insert(Verdict::DeliverDropBlocked, 2);
    let handshake = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_SECS * 1000 - 42_500);
    metrics.observed(Observation {
        configured_peers: 3,
        peers: [
            (
                node("node-2"),
                ObservedPeer { last_handshake: Some(handshake), rx_bytes: 1000, tx_bytes: 2000 },
            ),
            (node("node-3"), ObservedPeer { last_handshake: None, rx_bytes: 0, tx_bytes: 148 }),
        ]
        .into(),
        lane: None,
        packets,
    });
    let text = health.render();
    let lines = lines(&text);
    for want in [
        "vpblu_daemon_peers 3",
        "vpblu_daemon_peer_last_handshake_timestamp_seconds{peer=\"node-2\"} 1799999957.5",
        "vpblu_daemon_peer_last_handshake_timestamp_seconds{peer=\"node-3\"} 0.0",
        "vpblu_daemon_peer_received_bytes_total{peer=\"node-2\"} 1000",
        "vpblu_daemon_peer_sent_bytes_total{peer=\"node-2\"} 2000",
        "vpblu_daemon_peer_received_bytes_total{peer=\"node-3\"} 0",
        "vpblu_daemon_peer_sent_bytes_total{peer=\"node-3\"} 148",
        "vpblu_daemon_packets_total{verdict=\"to_mesh\"} 120",
        "vpblu_daemon_packets_total{verdict=\"pass_local\"} 0",
        "vpblu_daemon_packets_total{verdict=\"deliver_drop_blocked\"} 2",
        "vpblu_daemon_packets_dropped_total{program=\"classify\",reason=\"unreachable_no_key\"} 4",
        "vpblu_daemon_packets_dropped_total{program=\"deliver\",reason=\"blocked\"} 2",
        "vpblu_daemon_packets_dropped_total{program=\"classify\",reason=\"blocked\"} 0",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("vpblu_daemon_packets_total")).count(),
        Verdict::ALL.len()
    );
    let drops = Verdict::ALL.iter().filter(|v| drop_reason(**v).is_some()).count();
    assert_eq!(lines.iter().filter(|l| l.starts_with("vpblu_daemon_packets_dropped_total")).count(), drops);

    // The next observation replaces the last: a removed peer is gone.
    metrics.observed(Observation { configured_peers: 0, ..Observation::default() });
    let text = health.render();
    assert!(text.contains("vpblu_daemon_peers 0") && !text.contains("node-2"), "{text}");
}

#[test]
fn the_lane_device_has_its_own_families_and_none_without_a_lane() {
    let health = Health::new();
    let metrics = DaemonMetrics::register(&health, Backend::Userspace, BackendReason::Requested);
    let handshake = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let main = ObservedPeer { last_handshake: Some(handshake), rx_bytes: 10, tx_bytes: 20 };
    let on_lane = ObservedPeer { last_handshake: Some(handshake), rx_bytes: 7, tx_bytes: 9 };
    metrics.observed(Observation {
        configured_peers: 2,
        peers: [(node("node-2"), main), (node("node-3"), main)].into(),
        lane: Some(LaneObservation { configured_peers: 1, peers: [(node("node-3"), on_lane)].into() }),
        packets: BTreeMap::new(),
    });
    let text = health.render();
    let lines = lines(&text);
    for want in [
        "vpblu_daemon_peers 2",
        "vpblu_daemon_lane_peers 1",
        "vpblu_daemon_lane_peer_last_handshake_timestamp_seconds{peer=\"node-3\"} 1800000000.0",
        "vpblu_daemon_lane_peer_received_bytes_total{peer=\"node-3\"} 7",
        "vpblu_daemon_lane_peer_sent_bytes_total{peer=\"node-3\"} 9",
        "vpblu_daemon_peer_received_bytes_total{peer=\"node-3\"} 10",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("vpblu_daemon_lane_peer_sent_bytes_total{peer=\"node-2\"}")));

    // A rotation over: the lane is there with no peers.
    metrics.observed(Observation { lane: Some(LaneObservation::default()), ..Observation::default() });
    let text = health.render();
    assert!(text.lines().any(|l| l == "vpblu_daemon_lane_peers 0"), "{text}");
    assert!(!text.contains("node-3"), "{text}");

    // A daemon without a lane device says nothing about one.
    metrics.observed(Observation::default());
    let text = health.render();
    assert!(!text.contains("vpblu_daemon_lane_"), "{text}");
}

#[test]
fn applies_are_timed_and_failures_counted_by_kind() {
    let health = Health::new();
    let metrics = DaemonMetrics::register(&health, Backend::Userspace, BackendReason::Requested);
    metrics.applied(CommandKind::SyncState, Duration::from_millis(30), true);
    metrics.applied(CommandKind::PeerUpsert, Duration::from_millis(2), false);
    metrics.reconnected(0);
    metrics.reconnected(2);
    let text = health.render();
    let lines = lines(&text);
    for want in [
        "vpblu_daemon_apply_duration_seconds_count{command=\"SyncState\"} 1",
        "vpblu_daemon_apply_duration_seconds_sum{command=\"SyncState\"} 0.03",
        "vpblu_daemon_apply_duration_seconds_bucket{le=\"0.032\",command=\"SyncState\"} 1",
        "vpblu_daemon_apply_duration_seconds_bucket{le=\"0.016\",command=\"SyncState\"} 0",
        "vpblu_daemon_apply_duration_seconds_count{command=\"PeerUpsert\"} 1",
        "vpblu_daemon_apply_errors_total{command=\"PeerUpsert\"} 1",
        "vpblu_daemon_stream_reconnects_total 2",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{text}");
    }
    // Every kind's error series exists from the start, at 0.
    assert!(lines.contains(&"vpblu_daemon_apply_errors_total{command=\"SyncState\"} 0"), "{text}");
    let errors = lines.iter().filter(|l| l.starts_with("vpblu_daemon_apply_errors_total{")).count();
    assert_eq!(errors, CommandKind::ALL.len(), "{text}");
}

#[test]
fn the_backend_is_one_series_at_1_naming_it_and_why() {
    let (kernel, userspace) = (Backend::Kernel, Backend::Userspace);
    for (backend, reason, want) in [
        (kernel, BackendReason::Requested, r#"{backend="kernel",reason="requested"} 1"#),
        (kernel, BackendReason::ModuleLoaded, r#"{backend="kernel",reason="module_loaded"} 1"#),
        (kernel, BackendReason::LinkCreated, r#"{backend="kernel",reason="link_created"} 1"#),
        (userspace, BackendReason::Requested, r#"{backend="userspace",reason="requested"} 1"#),
        (userspace, BackendReason::ModuleMissing, r#"{backend="userspace",reason="module_missing"} 1"#),
        (
            userspace,
            BackendReason::LinkCreateFailed,
            r#"{backend="userspace",reason="link_create_failed"} 1"#,
        ),
    ] {
        let health = Health::new();
        let _metrics = DaemonMetrics::register(&health, backend, reason);
        let text = health.render();
        let series: Vec<&str> =
            lines(&text).into_iter().filter(|l| l.starts_with("vpblu_daemon_wireguard_backend")).collect();
        assert_eq!(series, [format!("vpblu_daemon_wireguard_backend{want}")], "{text}");
        assert!(text.contains("# TYPE vpblu_daemon_wireguard_backend gauge"), "{text}");
    }
}

#[test]
fn backend_reasons_are_distinct_snake_case_label_values() {
    let values: std::collections::BTreeSet<&str> = BackendReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(values.len(), BackendReason::ALL.len(), "{values:?}");
    for value in values {
        assert!(value.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{value:?}");
    }
}

#[test]
fn every_drop_verdict_has_a_reason_and_no_pass_verdict_does() {
    for verdict in Verdict::ALL {
        let dropped = verdict.as_str().contains("drop");
        assert_eq!(drop_reason(verdict).is_some(), dropped, "{verdict:?}");
    }
}
