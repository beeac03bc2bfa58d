//! The daemon's data plane actors (WireGuard, Routing, BPF maps) each own
//! their part of the node and are restarted by their supervisor when they
//! fail. This proves what a restart costs, on the lab (real
//! kube-apiserver, controllers, daemons, wireguard-go, eBPF, pods): a
//! panic injected into each actor in turn, while every cross-node pod pair
//! pings 100 times a second and streams TCP, loses no packet; the restarted
//! actor re-adopts the device, the routes and the pinned maps (nothing is
//! re-created or flushed); and the next command from the controller is
//! applied through it.
//!
//! Needs root, ip, ping, tcpdump, nft, iperf3 and Go, like the acceptance
//! suite; fails, never skips, when one is missing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::lab::pair_traffic::PairTraffic;
use vpblu_e2e::lab::traffic::{assert_dropped, wait_dropped, wait_flows};
use vpblu_e2e::lab::{Lab, wg, with_lab_options};
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};

/// The daemon's actors that hold state, by the names their supervisor
/// gives them: the data plane's three, then the stream client and the
/// observer.
const ACTORS: [&str; 5] = ["wireguard", "routing", "bpf", "stream", "observer"];

/// Those that own a part of the node and say so when they re-adopt it.
const DATA_PLANE: [&str; 3] = ["wireguard", "routing", "bpf"];

/// How long a restarted actor may take to come back.
const RESTART_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn a_panic_in_each_data_plane_actor_loses_no_packet_and_the_next_command_applies() {
    with_lab_options(
        6,
        |options| options.fault_injection = true,
        async |lab| {
            let (n1, n2) = (lab.topology.node(1), lab.topology.node(2));
            // The probe pair the commands block; the steady traffic leaves it out.
            let (from, to) = (&n1.pods[1], &n2.pods[1]);
            let probe = [from.name.clone(), to.name.clone()];
            let traffic = PairTraffic::start_where(
                &lab.topology,
                Duration::from_millis(10),
                Duration::from_millis(100),
                |a, b| !(probe.contains(&a.to_owned()) && probe.contains(&b.to_owned())),
            );
            let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
            let mut blocked_before = blocked_drops(lab);
            for (turn, actor) in ACTORS.into_iter().enumerate() {
                let before = NodeView::read(lab);
                let restarts = restarts(lab, actor);
                let answer =
                    lab.daemon(1).inject_panic(&lab.topology, actor).unwrap_or_else(|e| panic!("{e}"));
                println!("panic in node-1's {actor} actor: {answer}");
                wait_restarted(lab, actor, restarts);
                // Traffic goes through the new incarnation for a while.
                std::thread::sleep(Duration::from_secs(1));

                let after = NodeView::read(lab);
                before.assert_adopted(&after, actor);

                // The next command goes through the restarted actor.
                let name = format!("actor-restart-{turn}");
                let applied = set_blocks_applied(lab);
                let started = Instant::now();
                api.create(&PostParams::default(), &block(&name, &from.v4, &to.v4))
                    .await
                    .unwrap_or_else(|e| panic!("create BlockPolicy {name}: {e}"));
                wait_dropped(&from.ns, &to.v4, Duration::from_secs(10));
                println!(
                    "after the {actor} restart: BlockPolicy enforced in {} ms",
                    started.elapsed().as_millis()
                );
                // The receiver (node-2) may have dropped that first ping;
                // once node-1 applied the block, its classify drops the
                // next ones, counted in the pinned map.
                let deadline = Instant::now() + Duration::from_secs(10);
                while set_blocks_applied(lab) <= applied {
                    assert!(
                        Instant::now() < deadline,
                        "node-1 applied no SetBlocks after its {actor} restart"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                assert_dropped(&from.ns, &to.v4, "the probe pair, blocked at node-1");
                let blocked = wait_blocked_drops_above(lab, blocked_before);
                blocked_before = blocked;
                api.delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete BlockPolicy {name}: {e}"));
                wait_flows(&from.ns, &to.v4, Duration::from_secs(10));
            }
            let result = traffic.finish();
            println!("{}", result.summary());
            result.assert_lossless(3_000, Duration::from_secs(1), "panics in node-1's data plane actors");
        },
    );
}

fn block(name: &str, from: &str, to: &str) -> BlockPolicy {
    BlockPolicy::new(
        name,
        BlockPolicySpec {
            blocks: vec![BlockRule {
                from: format!("{from}/32"),
                to: format!("{to}/32"),
                bidirectional: false,
            }],
            ..BlockPolicySpec::default()
        },
    )
}

/// What node-1 holds that a restart must not re-create or flush.
#[derive(Debug)]
struct NodeView {
    /// The device's peers (key, allowed IPs) and bytes received from
    /// each, by key.
    peers: Vec<(String, Vec<String>, u64)>,
    listen_port: u16,
    /// Routes through the mesh device, in every table.
    routes: BTreeSet<String>,
}

impl NodeView {
    fn read(lab: &Lab) -> NodeView {
        let daemon = lab.daemon(1);
        let device = wg::show(&daemon.interface);
        let routes = lab
            .topology
            .node(1)
            .ns
            .run_ok("ip", &["route", "show", "table", "all", "dev", &daemon.interface]);
        // UAPI lists peers in no fixed order.
        let mut peers: Vec<_> =
            device.peers.into_iter().map(|p| (p.public_key, p.allowed_ips, p.rx_bytes)).collect();
        peers.sort();
        NodeView {
            peers,
            listen_port: device.listen_port,
            routes: routes.lines().map(str::to_owned).collect(),
        }
    }

    /// Same device (same peers, counters only grew: a new wireguard-go
    /// would start from zero), same routes.
    fn assert_adopted(&self, after: &NodeView, actor: &str) {
        assert_eq!(after.listen_port, self.listen_port, "the listen port changed over the {actor} restart");
        let keys =
            |v: &NodeView| v.peers.iter().map(|(k, ips, _)| (k.clone(), ips.clone())).collect::<Vec<_>>();
        assert_eq!(keys(after), keys(self), "the device's peers changed over the {actor} restart");
        for ((key, _, rx_before), (_, _, rx_after)) in self.peers.iter().zip(&after.peers) {
            assert!(
                rx_after >= rx_before,
                "peer {key}'s counters went back over the {actor} restart: re-created?"
            );
        }
        assert_eq!(after.routes, self.routes, "the mesh routes changed over the {actor} restart");
        assert!(!self.routes.is_empty(), "node-1 has no route through its mesh device");
    }
}

/// How often node-1's log says its supervisor restarted `actor`, and how
/// often `actor` said it re-adopted its part of the node.
fn restarts(lab: &Lab, actor: &str) -> (usize, usize) {
    let log = std::fs::read_to_string(lab.daemon(1).log()).unwrap_or_default();
    let names = |key: &str| [format!("{key}={actor}"), format!("{key}=\"{actor}\"")];
    let count = |what: &str, key: &str| {
        let names = names(key);
        log.lines().filter(|l| l.contains(what) && names.iter().any(|n| l.contains(n.as_str()))).count()
    };
    (count("restarting child", "child"), count("re-adopted", "actor"))
}

fn wait_restarted(lab: &Lab, actor: &str, (restarted, adopted): (usize, usize)) {
    let deadline = Instant::now() + RESTART_WITHIN;
    let adopts = DATA_PLANE.contains(&actor);
    loop {
        let back = lab.daemon(1).panic_targets(&lab.topology).iter().any(|c| c == actor);
        let (now_restarted, now_adopted) = restarts(lab, actor);
        if back && now_restarted > restarted && (!adopts || now_adopted > adopted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node-1's {actor} actor was not restarted{} within {RESTART_WITHIN:?} (log: {})",
            if adopts { " and did not re-adopt its part" } else { "" },
            lab.daemon(1).log().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(lab: &Lab, sample: &str) -> f64 {
    let text = lab.daemon(1).metrics_text(&lab.topology);
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

fn set_blocks_applied(lab: &Lab) -> f64 {
    metric(lab, r#"vpblu_daemon_apply_duration_seconds_count{command="SetBlocks"}"#)
}

/// Packets classify dropped as blocked, from the pinned counters: a
/// re-created map would start again from zero.
fn blocked_drops(lab: &Lab) -> f64 {
    metric(lab, r#"vpblu_daemon_packets_dropped_total{program="classify",reason="blocked"}"#)
}

fn wait_blocked_drops_above(lab: &Lab, before: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = blocked_drops(lab);
        if now > before {
            return now;
        }
        if Instant::now() >= deadline {
            let text = lab.daemon(1).metrics_text(&lab.topology);
            let drops: Vec<&str> = text.lines().filter(|l| l.contains("packets_")).collect();
            vpblu_e2e::lab::processes::print_tail(lab.daemon(1).log());
            panic!("node-1's blocked-drop counter stayed at {now} (was {before}):\n{}", drops.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
