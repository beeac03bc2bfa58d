//! vpblu scraped by a real Prometheus: the lab (a real API server, two
//! controllers, three daemons in their node namespaces, real WireGuard and
//! eBPF) with Prometheus (tools/prometheus) on the host's loopback
//! scraping every second both controllers (loopback) and every daemon
//! (its node's underlay address, port 9091: the host has a leg on the
//! underlay, as a Prometheus pod on the host network of a node would),
//! evaluating the shipped alert rules with short `for:` (the expressions
//! are the shipped ones). Everything is proved through PromQL on the HTTP
//! API: targets up, peers up, handshake ages, a BlockPolicy's drops on
//! exactly the node that drops, a rotation counted as succeeded,
//! convergence observed, a killed daemon down then back, every Grafana
//! panel's query answering, a peer-down alert going pending -> firing;
//! and `promtool check metrics` on every endpoint, including a daemon
//! starting up and the standby controller.
//!
//! Needs root, ip, ping, tcpdump, nft and Go (the control plane,
//! wireguard-go, Prometheus); fails, never skips, when one is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::built_tools::repo_root;
use vpblu_e2e::lab::processes::DAEMON_METRICS_PORT;
use vpblu_e2e::lab::rotation::{now_rfc3339, rotate_now, wait_rotated};
use vpblu_e2e::lab::traffic::{ContinuousPing, ping, wait_dropped};
use vpblu_e2e::lab::{Lab, with_lab};
use vpblu_e2e::process::http_get;
use vpblu_e2e::prometheus::{self, Prometheus, Sample};
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule};

/// Up to a minute for anything Prometheus has to see (scrapes every second).
const SEE: Duration = Duration::from_secs(60);

/// The shipped rules with every `for:` cut to 3 s, so an alert is pending
/// for a few evaluations, then fires; the expressions are untouched.
fn rules_with_short_for() -> String {
    let rules = std::fs::read_to_string(repo_root().join("chart/vpblu/files/prometheus-rules.yaml"))
        .expect("the shipped rule file");
    let mut out = String::new();
    let mut cut = 0;
    for line in rules.lines() {
        match line.trim_start().strip_prefix("for: ") {
            Some(_) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}for: 3s\n"));
                cut += 1;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(cut >= 5, "the rule file has its `for:` lines: {cut}");
    out
}

fn daemon_addr(lab: &Lab, n: u8) -> SocketAddr {
    format!("{}:{DAEMON_METRICS_PORT}", lab.topology.node(n).underlay_v4).parse().expect("an address")
}

/// Scrapes every second: both controllers, every daemon labelled with its
/// node (what the chart's PodMonitor does from the pod's node name).
fn config(lab: &Lab) -> String {
    let controllers: Vec<String> = lab.controllers.iter().map(|c| format!("'{}'", c.metrics)).collect();
    let mut daemons = String::new();
    for n in 1..=lab.options().nodes {
        daemons.push_str(&format!(
            "      - targets: ['{}']\n        labels: {{node: '{}'}}\n",
            daemon_addr(lab, n),
            lab.topology.node(n).name
        ));
    }
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n  - job_name: vpblu-controller\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: vpblu-daemon\n    static_configs:\n{daemons}",
        controllers.join(", ")
    )
}

/// `promtool check metrics` on what `curl` gets from `addr`.
fn promtool_clean(addr: SocketAddr, what: &str) {
    let (status, page) =
        http_get(addr, "/metrics").unwrap_or_else(|| panic!("{what}: /metrics did not answer"));
    assert_eq!(status, 200, "{what}: /metrics answered {status}");
    assert!(!page.contains("NaN"), "{what}: a NaN on the page:\n{page}");
    if let Err(e) = prometheus::check_metrics(&page) {
        panic!("{what}: {e}\n--- the page ---\n{page}");
    }
}

/// The value per node of an instant vector labelled by `node`.
fn by_node(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples.iter().map(|s| (s.label("node").to_owned(), s.value)).collect()
}

fn show(samples: &[Sample]) -> String {
    let parts: Vec<String> = samples
        .iter()
        .map(|s| {
            let labels: Vec<String> =
                s.labels.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}} {}", labels.join(","), s.value)
        })
        .collect();
    parts.join(" ")
}

fn answer(prometheus: &Prometheus, promql: &str) {
    println!("  {promql}\n    => {}", show(&prometheus.query(promql)));
}

/// Polls the alerts until `name` with `labels` reaches `state`; how long.
fn wait_alert(
    prometheus: &Prometheus,
    name: &str,
    labels: &[(&str, &str)],
    state: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let alerts = prometheus.alerts();
        let hit = alerts.iter().any(|a| {
            a.state == state
                && a.labels.get("alertname").map(String::as_str) == Some(name)
                && labels.iter().all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        });
        if hit {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{name} {labels:?} was not {state} within {within:?}; alerts: {alerts:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every target of the dashboard, `$__rate_interval` as Grafana would set
/// it for a 1 s scrape interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("chart/vpblu/files/grafana-dashboard.json"))
        .expect("the shipped dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let title = panel["title"].as_str().unwrap_or_default();
            out.push((
                format!("{title} ({})", target["refId"].as_str().unwrap_or("?")),
                expr.replace("$__rate_interval", "15s"),
            ));
        }
    }
    out
}

#[test]
fn prometheus_scrapes_the_lab_and_alerts() {
    with_lab(0, async |lab| {
        let started = Instant::now();
        let nodes = lab.options().nodes;
        let peers_each = f64::from(nodes - 1);
        let names: Vec<String> = lab.topology.nodes.iter().map(|n| n.name.clone()).collect();
        let rules = rules_with_short_for();
        let prometheus = Prometheus::start(&config(lab), &[("rules.yaml", &rules)]);
        println!("Prometheus up on {} ({:.1} s)", prometheus.addr, started.elapsed().as_secs_f64());

        // Every target up.
        let targets = usize::from(nodes) + lab.controllers.len();
        prometheus.wait_for("every target up", "count(up == 1)", SEE, |a| {
            (a.first().map(|s| s.value) == Some(targets as f64)).then_some(())
        });
        println!("targets up:");
        answer(&prometheus, "count(up == 1)");

        // Peers up on every node, handshakes younger than 3 minutes.
        lab.poke_every_pair();
        let peers_up = "count by (node) (time() - vpblu_daemon_peer_last_handshake_timestamp_seconds < 180)";
        prometheus.wait_for("N-1 peers up on every node", peers_up, SEE, |a| {
            let up = by_node(a);
            (up.len() == usize::from(nodes) && up.values().all(|v| *v == peers_each)).then_some(())
        });
        let oldest = "max(time() - vpblu_daemon_peer_last_handshake_timestamp_seconds)";
        let age = prometheus.query(oldest)[0].value;
        assert!(age < 180.0, "the oldest handshake is {age} s old");
        println!("peers up (want {peers_each} on each of {nodes} nodes) and the oldest handshake:");
        answer(&prometheus, peers_up);
        answer(&prometheus, oldest);

        // Every daemon shows its lane device, with no peers outside a rotation.
        let lanes = "vpblu_daemon_lane_peers";
        prometheus.wait_for("a lane device on every node", lanes, SEE, |a| {
            let lane = by_node(a);
            (lane.len() == usize::from(nodes) && lane.values().all(|v| *v == 0.0)).then_some(())
        });
        println!("lane devices (no peers outside a rotation):");
        answer(&prometheus, lanes);

        // promtool on every endpoint: the leader, the standby, every daemon.
        let leader = lab.leader().await.expect("a leader");
        for (i, controller) in lab.controllers.iter().enumerate() {
            let role = if i == leader { "leader" } else { "standby" };
            promtool_clean(controller.metrics, &format!("controller {} ({role})", controller.identity));
        }
        for n in 1..=nodes {
            promtool_clean(daemon_addr(lab, n), &format!("daemon of node-{n}"));
        }
        let held =
            format!("vpblu_controller_lease_held{{instance=\"{}\"}}", lab.controllers[1 - leader].metrics);
        assert_eq!(prometheus.query(&held)[0].value, 0.0, "the standby says it does not lead");
        println!("promtool check metrics: clean on both controllers (one standby) and {nodes} daemons");

        // A BlockPolicy node-1 -> node-2: only node-1's classify program
        // (which sees the blocked packets leave) counts them; node-2's
        // deliver program enforces the block too, so while the policy
        // reaches node-2 before node-1 it may count some, and no other
        // node ever does. node-2 and node-3 carry other traffic meanwhile.
        let blocked = "sum by (node) (increase(vpblu_daemon_packets_dropped_total\
                       {program=\"classify\",reason=\"blocked\"}[1m])) > 0";
        let delivered_blocked = "sum by (node) (increase(vpblu_daemon_packets_dropped_total\
                                 {program=\"deliver\",reason=\"blocked\"}[1m])) > 0";
        assert!(
            prometheus.query(blocked).is_empty(),
            "no drops before the policy: {:?}",
            prometheus.query(blocked)
        );
        let (a, b, c) = (lab.topology.node(1), lab.topology.node(2), lab.topology.node(3));
        let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
        let policy = BlockPolicy::new(
            "prometheus-block",
            BlockPolicySpec {
                blocks: vec![BlockRule {
                    from: a.pod_cidrs[0].clone(),
                    to: b.pod_cidrs[0].clone(),
                    bidirectional: false,
                }],
                ..BlockPolicySpec::default()
            },
        );
        api.create(&PostParams::default(), &policy).await.expect("create the BlockPolicy");
        wait_dropped(&a.pods[0].ns, &b.pods[0].v4, Duration::from_secs(20));
        for _ in 0..3 {
            let _ = ping(&a.pods[0].ns, &b.pods[0].v4, &["-q", "-c", "5", "-i", "0.2", "-W", "1"]);
            let _ = ping(&c.pods[0].ns, &b.pods[0].v4, &["-q", "-c", "5", "-i", "0.2", "-W", "1"]);
            let _ = ping(&b.pods[0].ns, &c.pods[0].v4, &["-q", "-c", "5", "-i", "0.2", "-W", "1"]);
        }
        let dropping = prometheus.wait_for("node-1's blocked drops", blocked, SEE, |a| {
            let nodes: BTreeSet<String> = by_node(a).into_keys().collect();
            nodes.contains("node-1").then_some(nodes)
        });
        assert_eq!(dropping, BTreeSet::from(["node-1".to_owned()]), "exactly the node the policy drops on");
        let receivers: BTreeSet<String> = by_node(&prometheus.query(delivered_blocked)).into_keys().collect();
        assert!(
            receivers.iter().all(|n| n == "node-2"),
            "only the blocked destination's deliver program may drop: {receivers:?}"
        );
        println!("BlockPolicy node-1 -> node-2, drops by node (classify, then deliver):");
        answer(&prometheus, blocked);
        answer(&prometheus, delivered_blocked);
        api.delete("prometheus-block", &DeleteParams::default()).await.expect("delete the BlockPolicy");

        // A rotation of node-2's key, counted as succeeded; convergence
        // observed on the way.
        let succeeded = "sum(vpblu_controller_rotations_total{result=\"succeeded\"})";
        let before = prometheus.query(succeeded).first().map_or(0.0, |s| s.value);
        let since = now_rfc3339();
        rotate_now(lab, "prometheus-rotation", 1, Some(&names[1]), "prometheus-1").await;
        wait_rotated(lab, &names[1..2], &since).await;
        prometheus.wait_for("the rotation counted", succeeded, SEE, |a| {
            (a.first().map(|s| s.value) == Some(before + 1.0)).then_some(())
        });
        println!("rotation of node-2 (before: {before}):");
        answer(&prometheus, succeeded);
        answer(&prometheus, "sum(vpblu_controller_convergence_seconds_count)");
        answer(
            &prometheus,
            "histogram_quantile(0.99, sum by (le) (rate(vpblu_controller_convergence_seconds_bucket[5m])))",
        );
        assert!(prometheus.query("sum(vpblu_controller_convergence_seconds_count)")[0].value > 0.0);

        // Every Grafana panel's query has data over the test so far.
        lab.poke_every_pair();
        std::thread::sleep(Duration::from_secs(3));
        let mut empty = Vec::new();
        let queries = dashboard_queries();
        let span = started.elapsed() + Duration::from_secs(5);
        for (panel, expr) in &queries {
            if prometheus.query_range_series(expr, span, Duration::from_secs(2)) == 0 {
                empty.push(format!("{panel}: {expr}"));
            }
        }
        assert!(empty.is_empty(), "dashboard panels without data:\n{}", empty.join("\n"));
        println!("Grafana dashboard: all {} panel queries have data", queries.len());

        // node-2's daemon killed: its target goes down (and the daemon-down
        // alert fires), then it comes back; promtool on its pages while it
        // starts.
        let up2 = "up{job=\"vpblu-daemon\",node=\"node-2\"}";
        lab.daemons[1].kill();
        prometheus.wait_for("node-2's daemon down", up2, SEE, |a| {
            (a.first().map(|s| s.value) == Some(0.0)).then_some(())
        });
        println!("node-2's daemon killed:");
        answer(&prometheus, up2);
        let pending = wait_alert(&prometheus, "VpbluDaemonDown", &[("node", "node-2")], "pending", SEE);
        let firing = wait_alert(&prometheus, "VpbluDaemonDown", &[("node", "node-2")], "firing", SEE);
        println!("  VpbluDaemonDown{{node=node-2}}: pending after {pending:?}, firing {firing:?} later");
        lab.daemons[1].restart(&lab.topology);
        let addr = daemon_addr(lab, 2);
        let mut pages = 0;
        let starting = Instant::now();
        while starting.elapsed() < Duration::from_secs(3) {
            promtool_clean(addr, "node-2's daemon starting up");
            pages += 1;
        }
        prometheus.wait_for("node-2's daemon back", up2, SEE, |a| {
            (a.first().map(|s| s.value) == Some(1.0)).then_some(())
        });
        println!("node-2's daemon restarted ({pages} pages checked by promtool while it started):");
        answer(&prometheus, up2);

        // node-3 gone (its daemon and its WireGuard processes), while
        // node-1's pod keeps pinging a pod on it: node-1 sends handshake
        // initiations nobody answers, and once its last handshake with
        // node-3 is older than 180 s the peer-down alert goes pending,
        // then fires.
        lab.daemons[2].kill();
        let ns = &lab.topology.node(3).ns;
        for pid in ns.pids_inside() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "wireguard-go" {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).expect("a pid"),
                    rustix::process::Signal::KILL,
                );
            }
        }
        let pinging = ContinuousPing::start(&a.pods[0].ns, &c.pods[0].v4, Duration::from_millis(500));
        let labels = [("alertname", "VpbluPeerDown"), ("node", "node-1"), ("peer", "node-3")];
        let limit = Duration::from_secs(300);
        let pending = wait_alert(&prometheus, "VpbluPeerDown", &labels[1..], "pending", limit);
        let firing = wait_alert(&prometheus, "VpbluPeerDown", &labels[1..], "firing", SEE);
        drop(pinging.finish_now());
        println!(
            "node-3 stopped: VpbluPeerDown{{node=node-1,peer=node-3}} pending after {pending:?}, firing {firing:?} later"
        );
        answer(&prometheus, "ALERTS{alertname=\"VpbluPeerDown\"}");
        println!("prometheus test: {:.0} s after the lab was up", started.elapsed().as_secs_f64());
    });
}
