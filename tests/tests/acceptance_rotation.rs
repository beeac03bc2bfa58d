//! §12.6 on the lab: WireGuard keys rotate with zero packets lost.
//!
//! Every pair of pods on different nodes pings at 100/s and keeps a steady
//! TCP stream while a RotationPolicy (triggered with the
//! `vpblu.dev/rotate-now` annotation) rotates every node in turn; a leader
//! controller is killed in the middle of a rotation; a daemon that fails
//! its Activate (fault injection) is rolled back. Real kube-apiserver, real
//! controllers and daemons, real wireguard-go and eBPF, real packets.
//!
//! Needs root, ip, ping, tcpdump, nft and Go; fails, never skips, when one
//! is missing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vpblu_e2e::lab::pair_traffic::PairTraffic;
use vpblu_e2e::lab::rotation::{
    now_rfc3339, published_keys, rotate_now, rotation_of, wait_phase, wait_rotated,
};
use vpblu_e2e::lab::{Lab, wg, with_lab};

/// Ping interval per pair: 100 echo requests a second.
const PING_EVERY: Duration = Duration::from_millis(10);
/// TCP write interval per pair.
const TCP_EVERY: Duration = Duration::from_millis(10);
/// A lost segment costs TCP at least this (its minimum RTO).
const MAX_TCP_GAP: Duration = Duration::from_millis(200);

fn private_key_file(lab: &Lab, n: usize) -> String {
    let daemon = &lab.daemons[n];
    std::fs::read_to_string(daemon.key_dir.join("private.key"))
        .unwrap_or_else(|e| panic!("{}'s private key file: {e}", daemon.node_name))
        .trim()
        .to_owned()
}

/// After a rotation: no old private key on any device or in any key file,
/// no old public key on any device or in any status, and every main device
/// holds exactly the other nodes' published keys.
async fn assert_old_keys_gone(lab: &Lab, old_private: &[String], old_public: &BTreeMap<String, String>) {
    let old_hex: Vec<String> = old_public.values().map(|k| wg::hex_of_base64(k)).collect();
    let now = published_keys(lab).await;
    for daemon in &lab.daemons {
        for device in [&daemon.interface, &daemon.lane_interface] {
            for (n, old) in old_private.iter().enumerate() {
                assert!(
                    !wg::holds_private_key(device, old),
                    "{device} of {} still holds node {}'s old private key",
                    daemon.node_name,
                    n + 1
                );
            }
            let shown = wg::show(device);
            for peer in &shown.peers {
                assert!(
                    !old_hex.contains(&peer.public_key),
                    "{device} of {} still has an old key: {shown:?}",
                    daemon.node_name
                );
            }
        }
        let mut held: Vec<String> =
            wg::show(&daemon.interface).peers.into_iter().map(|p| p.public_key).collect();
        held.sort();
        let mut want: Vec<String> = now
            .iter()
            .filter(|(name, _)| **name != daemon.node_name)
            .map(|(_, k)| wg::hex_of_base64(k))
            .collect();
        want.sort();
        assert_eq!(held, want, "{}'s main device holds the other nodes' published keys", daemon.node_name);
        assert!(
            wg::show(&daemon.lane_interface).peers.is_empty(),
            "{}'s lane is empty after the run",
            daemon.node_name
        );
        for entry in std::fs::read_dir(&daemon.key_dir).expect("read the key dir").flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for old in old_private {
                assert!(
                    !text.contains(old.as_str()),
                    "{} still holds an old private key",
                    entry.path().display()
                );
            }
        }
    }
    for (name, status) in lab.statuses().await {
        for key in [&status.public_key, &status.staged_public_key].into_iter().flatten() {
            assert!(!old_public.values().any(|old| old == key), "{name}'s status still shows an old key");
        }
        assert_eq!(status.staged_public_key, None, "{name}: nothing staged after the run");
    }
}

/// §12.6: every node rotates in turn while every pod pair pings at 100/s
/// and streams TCP: zero pings lost, no TCP stall, only WireGuard on the
/// wire, new keys everywhere and the old ones nowhere.
#[test]
fn s12_6_every_node_rotates_with_zero_loss() {
    with_lab(6, async |lab| {
        let old_public = published_keys(lab).await;
        let old_private: Vec<String> = (0..lab.daemons.len()).map(|n| private_key_file(lab, n)).collect();
        let nodes: Vec<String> = old_public.keys().cloned().collect();
        let capture = lab.capture();
        let traffic = PairTraffic::start(&lab.topology, PING_EVERY, TCP_EVERY);
        tokio::time::sleep(Duration::from_secs(1)).await;

        let since = now_rfc3339();
        let started = Instant::now();
        rotate_now(lab, "weekly", 1, None, "s12-6-all").await;
        wait_rotated(lab, &nodes, &since).await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let result = traffic.finish();
        let seen = capture.finish(&lab.expect());

        println!("§12.6: {} nodes rotated in {:.1} s (overlap 1 s each)", nodes.len(), took.as_secs_f64());
        println!("§12.6 traffic:\n{}", result.summary());
        println!("§12.6 underlay: {}", seen.summary());
        for (name, status) in lab.statuses().await {
            let result = status.rotation.as_ref().and_then(|r| r.last_result.clone());
            assert_eq!(result.as_deref(), Some("Succeeded"), "{name}: {}", rotation_of(&status));
        }
        let min_sent = (took.as_millis() / PING_EVERY.as_millis()) as u32 * result.pings.len() as u32 / 2;
        result.assert_lossless(min_sent, MAX_TCP_GAP, "rotating every node");
        seen.assert_only_wireguard("during the rotation");

        let new_public = published_keys(lab).await;
        for (name, old) in &old_public {
            assert_ne!(&new_public[name], old, "{name}'s key rotated");
        }
        for (n, old) in old_private.iter().enumerate() {
            assert_ne!(&private_key_file(lab, n), old, "node {}'s key file holds a new key", n + 1);
        }
        assert_old_keys_gone(lab, &old_private, &old_public).await;
    });
}

/// §12.6, the failures: the leader controller is killed in the middle of a
/// rotation (the standby finishes it or rolls it back) and a daemon fails
/// its Activate (rolled back, old key still valid, status says why); zero
/// pings lost and no TCP stall throughout.
#[test]
fn s12_6_leader_loss_and_failed_activate_lose_nothing() {
    with_lab(7, async |lab| {
        let nodes: Vec<String> = lab.daemons.iter().map(|d| d.node_name.clone()).collect();
        let traffic = PairTraffic::start(&lab.topology, PING_EVERY, TCP_EVERY);
        tokio::time::sleep(Duration::from_secs(1)).await;

        // --- The leader dies while node-2's traffic rides the lanes.
        let since = now_rfc3339();
        let started = Instant::now();
        rotate_now(lab, "weekly", 3, None, "s12-6-leader").await;
        wait_phase(lab, &nodes[1], "Activate").await;
        let leader = lab.leader().await.expect("a leader holds the Lease");
        println!("killing the leader {} during {}'s Activate", lab.controllers[leader].identity, nodes[1]);
        lab.controllers[leader].kill();
        wait_rotated(lab, &nodes, &since).await;
        let took = started.elapsed();
        let outcomes: Vec<String> =
            lab.statuses().await.iter().map(|(n, s)| format!("{n}: {}", rotation_of(s))).collect();
        println!(
            "§12.6 outcomes across the leader loss ({:.1} s):\n{}",
            took.as_secs_f64(),
            outcomes.join("\n")
        );
        let result = traffic.finish();
        println!("§12.6 traffic across the leader loss:\n{}", result.summary());
        let min_sent = (took.as_millis() / PING_EVERY.as_millis()) as u32 * result.pings.len() as u32 / 2;
        result.assert_lossless(min_sent, MAX_TCP_GAP, "rotating across a leader loss");
        for (name, status) in lab.statuses().await {
            let last = status.rotation.as_ref().and_then(|r| r.last_result.clone()).unwrap_or_default();
            assert!(
                last == "Succeeded" || last.starts_with("RolledBack"),
                "{name}: {}",
                rotation_of(&status)
            );
        }
        let binaries = vpblu_e2e::lab::LabBinaries::find();
        lab.controllers[leader].restart(&binaries);
        lab.record_processes();

        // --- node-3 fails its Activate on purpose.
        let target = nodes[2].clone();
        let old_public = published_keys(lab).await[&target].clone();
        let old_private = private_key_file(lab, 2);
        let topology = &lab.topology;
        lab.daemons[2].restart_with(topology, &["--fault-injection", "--fail-rotation-phase", "activate"]);
        lab.wait_mesh(Duration::from_secs(60)).await;
        let traffic = PairTraffic::start(&lab.topology, PING_EVERY, TCP_EVERY);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let since = now_rfc3339();
        let started = Instant::now();
        rotate_now(lab, "weekly", 1, Some(&target), "s12-6-fault").await;
        wait_rotated(lab, std::slice::from_ref(&target), &since).await;
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let result = traffic.finish();
        println!(
            "§12.6 traffic across a failed Activate ({:.1} s):\n{}",
            took.as_secs_f64(),
            result.summary()
        );
        let statuses = lab.statuses().await;
        let (_, status) = statuses.iter().find(|(n, _)| *n == target).expect("node-3's status");
        let last = status.rotation.as_ref().and_then(|r| r.last_result.clone()).unwrap_or_default();
        assert!(
            last.starts_with("RolledBack") && last.contains("fault injected"),
            "{target} was rolled back and the status says why: {}",
            rotation_of(status)
        );
        let min_sent = (took.as_millis() / PING_EVERY.as_millis()) as u32 * result.pings.len() as u32 / 2;
        result.assert_lossless(min_sent, MAX_TCP_GAP, "a failed Activate and its rollback");
        assert_eq!(status.public_key.as_deref(), Some(old_public.as_str()), "{target} keeps its old key");
        assert_eq!(status.staged_public_key, None, "nothing left staged on {target}");
        assert_eq!(private_key_file(lab, 2), old_private, "{target}'s key file is unchanged");
        assert!(
            wg::holds_private_key(&lab.daemons[2].interface, &old_private),
            "{target}'s device keeps the old key"
        );
        assert!(!lab.daemons[2].key_dir.join("staged.key").exists(), "the staged key of {target} is gone");
        // The old key is still valid: every pair still talks.
        lab.daemons[2].restart_plain(&lab.topology);
        lab.wait_mesh(Duration::from_secs(60)).await;
    });
}
