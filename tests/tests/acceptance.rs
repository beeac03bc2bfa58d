//! The seed's §12 acceptance suite, on the lab: a real kube-apiserver, two
//! real controllers (leader-elected), a real daemon per node in its own
//! network namespace with real eBPF and userspace WireGuard, and pods
//! sending real traffic. Each test brings up its own lab (they run one at
//! a time: two labs would fight over two cores).
//!
//! §12.6 (rotation) is `acceptance_rotation.rs`; §12.9 (the desired-state
//! tables) runs in the same `make test` as
//! `engine/tests/tables.rs`.
//!
//! Needs root, ip, ping, tcpdump, nft, iperf3 and Go (for the pinned
//! wireguard-go and the control plane); fails, never skips, when one is
//! missing.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::lab::traffic::{self, ContinuousPing, assert_dropped, assert_flows, wait_dropped, wait_flows};
use vpblu_e2e::lab::{Lab, wg};
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};

fn run(id_offset: u8, test: impl AsyncFnOnce(&mut Lab)) {
    vpblu_e2e::lab::with_lab(id_offset, test);
}

fn block(name: &str, from: &str, to: &str) -> BlockPolicy {
    BlockPolicy::new(
        name,
        BlockPolicySpec {
            blocks: vec![BlockRule { from: from.to_owned(), to: to.to_owned(), bidirectional: false }],
            ..BlockPolicySpec::default()
        },
    )
}

/// §12.2: every daemon has every other node as a peer, with a handshake;
/// the keys are distinct, published, and nothing private leaks into logs.
#[test]
fn s12_2_full_mesh_peers_form() {
    run(0, async |lab| {
        let statuses = lab.statuses().await;
        let keys: Vec<String> =
            statuses.iter().map(|(_, s)| s.public_key.clone().expect("a published key")).collect();
        for daemon in &lab.daemons {
            let device = wg::show(&daemon.interface);
            let others: Vec<String> = keys
                .iter()
                .zip(&statuses)
                .filter(|(_, (name, _))| *name != daemon.node_name)
                .map(|(key, _)| wg::hex_of_base64(key))
                .collect();
            let mut held: Vec<String> = device.peers.iter().map(|p| p.public_key.clone()).collect();
            held.sort();
            let mut want = others.clone();
            want.sort();
            assert_eq!(
                held, want,
                "{}'s device holds exactly the other nodes' published keys",
                daemon.node_name
            );
            assert!(
                device.peers.iter().all(|p| p.last_handshake > 0),
                "{}: every peer has a handshake: {device:?}",
                daemon.node_name
            );
        }
        let mut distinct = keys.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), keys.len(), "every node has its own key");

        // Keys stay home: no private key in any log line of any process.
        let mut logs = Vec::new();
        for entry in walk(lab.dir()).into_iter().chain(walk(lab.cluster.dir())) {
            if entry.extension().is_some_and(|e| e == "log") {
                logs.push(std::fs::read_to_string(&entry).unwrap_or_default());
            }
        }
        for daemon in &lab.daemons {
            let private = std::fs::read_to_string(daemon.key_dir.join("private.key"))
                .unwrap_or_else(|e| panic!("{}'s private key file: {e}", daemon.node_name));
            let private = private.trim();
            assert!(private.len() >= 40, "{}'s key file holds a base64 key", daemon.node_name);
            let hits = logs.iter().filter(|log| log.contains(private)).count();
            assert_eq!(hits, 0, "{}'s private key appears in {hits} log file(s)", daemon.node_name);
        }
        println!(
            "§12.2: {} nodes, each with {} peers and handshakes; no private key in {} logs",
            lab.daemons.len(),
            keys.len() - 1,
            logs.len()
        );
    });
}

/// §12.3: during ICMP, TCP and UDP between every pod pair across nodes,
/// IPv4 and IPv6, the underlay carries only WireGuard (and the controller
/// stream, which is TLS on the host network).
#[test]
fn s12_3_nothing_in_clear() {
    run(1, async |lab| {
        let capture = lab.capture();
        for (from, to) in lab.topology.cross_node_pairs() {
            assert_flows(&from.ns, &to.v4, "ICMP v4 through the mesh");
            assert_flows(&from.ns, &to.v6, "ICMP v6 through the mesh");
        }
        let (a, b) = (&lab.topology.node(1).pods[0], &lab.topology.node(2).pods[0]);
        traffic::bulk_tcp(&a.ns, &b.ns, &b.v4, 5201, 8 << 20);
        traffic::bulk_tcp(&b.ns, &a.ns, &a.v6, 5202, 8 << 20);
        let c = &lab.topology.node(3).pods[1];
        let got = traffic::udp_datagrams(&a.ns, &c.ns, &c.v4, 5300, 200, 1000);
        assert!(got >= 190, "UDP through the mesh: {got}/200 datagrams arrived");
        let seen = capture.finish(&lab.expect());
        println!("§12.3 underlay: {}", seen.summary());
        seen.assert_only_wireguard("mixed pod traffic");
    });
}

/// §12.4: a BlockPolicy drops the pair promptly after `create` (printed),
/// the reverse direction keeps flowing, the receiving node holds the rule
/// too, and deleting the policy restores traffic.
#[test]
fn s12_4_block_policy_drops_and_restores() {
    run(2, async |lab| {
        let (a, b) = (&lab.topology.node(1), &lab.topology.node(2));
        let (pa, pb) = (&a.pods[0], &b.pods[0]);
        assert_flows(&pa.ns, &pb.v4, "before the block");
        let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
        let started = Instant::now();
        api.create(&PostParams::default(), &block("lab-block", &a.pod_cidrs[0], &b.pod_cidrs[0]))
            .await
            .expect("create the BlockPolicy");
        let api_call = started.elapsed();
        let dropped = api_call + wait_dropped(&pa.ns, &pb.v4, Duration::from_secs(10));
        println!("§12.4: create -> first dropped ping sent {} ms later", dropped.as_millis());
        assert_dropped(&pa.ns, &pb.v4, "the blocked direction");
        assert_dropped(&pa.ns, &b.pods[1].v4, "every pod in the blocked destination CIDR");
        // The reverse direction's requests arrive; only replies (blocked) would fail.
        assert_flows(&pa.ns, &lab.topology.node(3).pods[0].v4, "an unblocked destination");
        // Both ends hold the rule: each applied a SetBlocks, and the
        // sender's classify counts the drops.
        for n in [1, 2] {
            let text = lab.daemon(n).metrics_text(&lab.topology);
            let applied = metric(&text, r#"vpblu_daemon_apply_duration_seconds_count{command="SetBlocks"}"#);
            assert!(applied >= 1.0, "node-{n} applied the block (SetBlocks count {applied}):\n{text}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let blocked = r#"vpblu_daemon_packets_dropped_total{program="classify",reason="blocked"}"#;
        while metric(&lab.daemon(1).metrics_text(&lab.topology), blocked) < 1.0 {
            assert!(Instant::now() < deadline, "node-1's metrics never counted a blocked packet");
            std::thread::sleep(Duration::from_millis(200));
        }
        let deleted = Instant::now();
        api.delete("lab-block", &DeleteParams::default()).await.expect("delete the BlockPolicy");
        wait_flows(&pa.ns, &pb.v4, Duration::from_secs(10));
        println!("§12.4: delete -> traffic back in {} ms", deleted.elapsed().as_millis());
        assert_flows(&pa.ns, &pb.v4, "after the block is deleted");
    });
}

/// §12.5: deleting a Node removes its peer from every other node's device,
/// and traffic towards its pods is dropped, never sent in clear.
#[test]
fn s12_5_node_delete_removes_the_peer_everywhere() {
    run(3, async |lab| {
        let gone = lab.topology.node(3);
        let gone_key = lab
            .statuses()
            .await
            .into_iter()
            .find(|(n, _)| *n == gone.name)
            .and_then(|(_, s)| s.public_key)
            .expect("node-3's key");
        let gone_hex = wg::hex_of_base64(&gone_key);
        let started = Instant::now();
        lab.delete_node_object(3).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in [1, 2] {
            let interface = &lab.daemon(n).interface;
            while wg::show(interface).peers.iter().any(|p| p.public_key == gone_hex) {
                assert!(Instant::now() < deadline, "node-{n} still holds node-3's peer after 30 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        println!("§12.5: node delete -> peer gone from both nodes in {} ms", started.elapsed().as_millis());
        let capture = lab.capture();
        let from = &lab.topology.node(1).pods[0];
        assert_dropped(&from.ns, &gone.pods[0].v4, "traffic to a deleted node's pods (strict mode)");
        assert_flows(&from.ns, &lab.topology.node(2).pods[0].v4, "the remaining mesh");
        let seen = capture.finish(&lab.expect());
        assert!(seen.other.is_empty(), "nothing in clear towards the deleted node: {:?}", seen.other);
    });
}

/// §12.7: with both controllers killed, pod traffic flows with zero loss
/// for 30 s; a restarted controller resyncs without touching the data
/// plane (no peer removed and re-added: the devices' byte counters never
/// go back).
#[test]
fn s12_7_controllers_down_traffic_flows() {
    run(4, async |lab| {
        let (a, b) = (&lab.topology.node(1).pods[0], &lab.topology.node(2).pods[0]);
        let ping = ContinuousPing::start(&a.ns, &b.v4, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(500));
        for controller in &mut lab.controllers {
            controller.kill();
        }
        let before: Vec<_> = lab.daemons.iter().map(|d| wg::show(&d.interface)).collect();
        std::thread::sleep(Duration::from_secs(30));
        let binaries = vpblu_e2e::lab::LabBinaries::find();
        lab.controllers[0].restart(&binaries);
        lab.record_processes();
        // Give the restarted controller time to win the Lease, take the
        // streams and resync everyone.
        std::thread::sleep(Duration::from_secs(10));
        let result = ping.finish();
        println!(
            "§12.7: {} pings over {:.0} s with no controller, then a resync: {} lost",
            result.sent,
            40.0,
            result.lost()
        );
        assert!(result.sent >= 2500, "the ping ran: {}", result.text);
        assert_eq!(
            result.lost(),
            0,
            "pod traffic lost packets while the controllers were down:\n{}",
            result.text
        );
        for (daemon, before) in lab.daemons.iter().zip(before) {
            let after = wg::show(&daemon.interface);
            for peer in &before.peers {
                let now = after.peers.iter().find(|p| p.public_key == peer.public_key).unwrap_or_else(|| {
                    panic!("{} lost a peer across the controller restart: {after:?}", daemon.node_name)
                });
                assert!(
                    now.rx_bytes >= peer.rx_bytes && now.tx_bytes >= peer.tx_bytes,
                    "{}: a peer's counters went back (removed and re-added?): {peer:?} -> {now:?}",
                    daemon.node_name
                );
            }
        }
    });
}

/// §12.8: the largest DF ping that fits the mesh MTU passes, one byte more
/// gets "fragmentation needed" (never a silent drop), and 30 s of iperf3
/// TCP completes (MSS clamp).
#[test]
fn s12_8_large_packets() {
    vpblu_e2e::netns::require_root_and(&["iperf3"]);
    run(5, async |lab| {
        let mtu = lab.statuses().await[0].1.mtu.expect("node-1 reports its mesh MTU");
        assert_eq!(mtu, 1420, "underlay 1500 minus the 80-byte WireGuard overhead");
        let (a, b) = (&lab.topology.node(1).pods[0], &lab.topology.node(2).pods[0]);
        let fits = (mtu - 28).to_string();
        let over = (mtu - 27).to_string();
        let ok = traffic::ping(&a.ns, &b.v4, &["-c", "3", "-i", "0.1", "-M", "do", "-s", &fits]);
        assert_eq!(ok.received, 3, "a {fits}-byte DF ping fits the mesh MTU {mtu}:\n{}", ok.text);
        let refused = traffic::ping(&a.ns, &b.v4, &["-c", "3", "-i", "0.1", "-M", "do", "-s", &over]);
        assert_eq!(refused.received, 0, "{}", refused.text);
        assert!(
            refused.text.contains("message too long") || refused.text.contains("Frag needed"),
            "one byte over the mesh MTU is refused loudly (fragmentation needed), not dropped silently:\n{}",
            refused.text
        );
        let server = b.ns.spawn_in(
            std::process::Command::new("iperf3")
                .args(["-s", "-1", "-B", &b.v4])
                .stdout(std::process::Stdio::null()),
        );
        std::thread::sleep(Duration::from_millis(500));
        let out = a.ns.run_ok("iperf3", &["-c", &b.v4, "-t", "30", "-f", "m"]);
        let summary = out
            .lines()
            .filter(|l| l.contains("sender") || l.contains("receiver"))
            .collect::<Vec<_>>()
            .join("\n");
        println!("§12.8: mesh MTU {mtu}; iperf3 30 s:\n{summary}");
        assert!(out.contains("receiver"), "iperf3 completed:\n{out}");
        drop(server);
    });
}

/// The value of the sample `name{labels}` in a Prometheus text page, 0
/// when absent.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample).and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
        })
        .unwrap_or(0.0)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
