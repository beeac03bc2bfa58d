//! The kernel WireGuard backend, proven in real guest kernels
//! (`make kvm-validate`; not part of `make test`, see the Makefile).
//!
//! This machine's kernel has no WireGuard module, so each node is a QEMU
//! guest booted from Debian's kernel (which has one) running
//! `vpblu-daemon --backend kernel`; the control plane and the controller
//! run on the host, reached over the lab's underlay bridge. The checks are
//! the §12 items that depend on the data plane, each measured, then a
//! table of what was measured.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::DeleteParams;
use vpblu_e2e::kvm::GuestLab;
use vpblu_e2e::lab::capture::{Capture, Expect};
use vpblu_e2e::lab::rotation::{finished_since, now_rfc3339, rotate_now_in, rotation_of};
use vpblu_e2e::lab::topology::underlay_prefix;
use vpblu_e2e::lab::{CONTROLLER_PORTS, LANE_PORT, MESH_PORT};
use vpblu_e2e::process::http_get;
use vpblu_k8s::{BlockPolicy, WireGuardBackend};

#[path = "kvm_kernel/throughput.rs"]
mod throughput;

use self::throughput::*;

/// Nodes (guests): `VPBLU_KVM_NODES`, default 3 (each a TCG guest here).
fn nodes() -> u8 {
    std::env::var("VPBLU_KVM_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(3)
}

/// What the run measured, one row per item.
#[derive(Default)]
struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    fn pass(&mut self, item: &str, measured: String) {
        println!("PASS {item}: {measured}");
        self.rows.push((item.to_owned(), measured));
    }

    fn print(&self, title: &str) -> String {
        let width = self.rows.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
        let mut out = format!("{title}\n{:width$}  RESULT  MEASURED\n", "ITEM");
        for (item, measured) in &self.rows {
            out.push_str(&format!("{item:width$}  PASS    {measured}\n"));
        }
        out
    }
}

// Three TCG guests take about 4 minutes here, plus about 2.5 to build the
// guest image on a fresh machine and the QEMU packages tools/kvm installs:
// `make kvm-validate` runs it (`--ignored`); `make test` lists it as
// ignored rather than spend that on every run.
#[test]
#[ignore = "boots QEMU guests for minutes: run by `make kvm-validate`"]
fn kernel_backend_in_guest_kernels() {
    let total = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let id = 240 + (std::process::id() % 9) as u8;
        let mut lab = GuestLab::up(id, nodes(), "kernel").await;
        let mut table = Table::default();
        let mesh = lab.wait_mesh(Duration::from_secs(180)).await;
        let boot_to_tunnel = lab.launched.elapsed();
        let n = lab.guests.len();
        full_mesh_on_kernel_devices(&lab, &mut table).await;
        nothing_in_clear(&lab, &mut table);
        mesh_vs_plain_wireguard(&lab, &mut table).await;
        block_policy_drops(&lab, &mut table).await;
        rotation_loses_nothing(&lab, &mut table).await;
        daemon_sigkill_adopts_the_device(&lab, &mut table).await;
        large_packets_and_mtu(&lab, &mut table).await;
        controller_down_30s(&mut lab, &mut table).await;
        auto_backend_both_ways(&lab, &mut table).await;
        node_delete(&lab, &mut table).await;
        let kernel = lab.image.versions.lines().next().unwrap_or_default().to_owned();
        let title = format!(
            "§12 on kernel WireGuard: {n} guests ({kernel}, {:?}, {} MiB each)",
            lab.accel,
            vpblu_e2e::kvm::lab::GUEST_MEMORY_MB
        );
        let mut text = table.print(&title);
        text.push_str(&format!(
            "boot-to-tunnel: {:.1} s (QEMU launch -> every peer up; mesh wait {:.1} s)\ntotal: {:.1} s\n",
            boot_to_tunnel.as_secs_f64(),
            mesh.as_secs_f64(),
            total.elapsed().as_secs_f64()
        ));
        println!("\n{text}");
        if let Ok(path) = std::env::var("VPBLU_KVM_REPORT") {
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {path}: {e}"));
        }
    });
}

/// §12.2: every node has every other node as a peer on a device of type
/// wireguard (the kernel's), and reports backend=kernel.
async fn full_mesh_on_kernel_devices(lab: &GuestLab, table: &mut Table) {
    let want = lab.guests.len() - 1;
    for guest in &lab.guests {
        let link = guest.exec_ok("ip -d link show wg-mesh", Duration::from_secs(10));
        assert!(
            link.contains("wireguard"),
            "{}: wg-mesh is not a kernel wireguard link:\n{link}",
            guest.name
        );
        let peers = guest.exec_ok("wg show wg-mesh peers", Duration::from_secs(10));
        assert_eq!(peers.lines().count(), want, "{}: `wg show wg-mesh peers`:\n{peers}", guest.name);
    }
    for (name, status) in lab.statuses().await {
        assert_eq!(status.backend, Some(WireGuardBackend::Kernel), "{name}: VpbluNode status {status:#?}");
    }
    let series = r#"vpblu_daemon_wireguard_backend{backend="kernel",reason="requested"} 1"#;
    for guest in &lab.guests {
        assert_eq!(backend_metric(guest), series, "{}: /metrics", guest.name);
    }
    table.pass(
        ".2 full mesh, kernel devices",
        format!(
            "{} nodes: wg-mesh is `wireguard` (kernel), {want} peer(s) each in `wg show`, VpbluNode backend=Kernel, /metrics {series}",
            lab.guests.len()
        ),
    );
}

/// §12.3: pod traffic crosses the underlay only as WireGuard UDP.
fn nothing_in_clear(lab: &GuestLab, table: &mut Table) {
    let expect = Expect {
        underlay_prefix: format!("{}.", underlay_prefix(lab.topology.id)),
        mesh_ports: vec![MESH_PORT, LANE_PORT],
        control_ports: CONTROLLER_PORTS.to_vec(),
        pod_markers: vec!["10.244.".to_owned(), "fd00:244:".to_owned()],
    };
    let capture = Capture::start(&lab.topology.underlay);
    let mut answered = 0;
    let mut sent = 0;
    for a in 1..=lab.guests.len() as u8 {
        for b in (1..=lab.guests.len() as u8).filter(|b| *b != a) {
            let ping = lab.pod_ping(a, b, "-c 20 -i 0.05 -W 2", Duration::from_secs(30));
            assert_eq!(ping.received, 20, "node-{a} pod -> node-{b} pod:\n{}", ping.text);
            sent += ping.sent;
            answered += ping.received;
        }
    }
    let seen = capture.finish(&expect);
    seen.assert_only_wireguard("pod pings between guests");
    table.pass(
        ".3 nothing in clear",
        format!("{answered}/{sent} pod pings answered; underlay: {}", seen.summary()),
    );
}

/// §12.4: a BlockPolicy drops (create -> first drop), and deleting it
/// restores traffic.
async fn block_policy_drops(lab: &GuestLab, table: &mut Table) {
    let started = Instant::now();
    lab.cluster.apply_manifest(lab.cluster.repo_root().join("k8s/deploy/samples/blockpolicy.yaml")).await;
    loop {
        let ping = lab.pod_ping(1, 2, "-c 1 -W 0.5", Duration::from_secs(10));
        if ping.received == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the BlockPolicy never dropped node-1 -> node-2"
        );
    }
    let first_drop = started.elapsed();
    let ping = lab.pod_ping(1, 2, "-c 5 -i 0.2 -W 1", Duration::from_secs(20));
    assert_eq!(ping.received, 0, "blocked pair still answered:\n{}", ping.text);
    let (_, metrics) =
        http_get(format!("{}:9091", lab.guests[0].v4).parse().expect("an address"), "/metrics")
            .expect("node-1's daemon serves /metrics");
    let blocked = metrics
        .lines()
        .find(|l| l.starts_with(r#"vpblu_daemon_packets_dropped_total{program="classify",reason="blocked"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(blocked >= 5.0, "node-1's classify counted {blocked} blocked packets");
    let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
    let deleted = Instant::now();
    api.delete("block-worker-to-worker2", &DeleteParams::default()).await.expect("delete the BlockPolicy");
    loop {
        if lab.pod_ping(1, 2, "-c 1 -W 0.5", Duration::from_secs(10)).received == 1 {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(20), "traffic never came back after the block");
    }
    table.pass(
        ".4 BlockPolicy drops",
        format!(
            "create -> first drop {} ms; 5/5 lost; classify counted {blocked}; delete -> back in {} ms",
            first_drop.as_millis(),
            deleted.elapsed().as_millis()
        ),
    );
}

/// §12.6: node-1's key rotates under 100 pings/s with 0 lost, through the
/// kernel main and lane devices.
async fn rotation_loses_nothing(lab: &GuestLab, table: &mut Table) {
    let before = lab.statuses().await;
    let key_before = before[0].1.public_key.clone().expect("node-1 published a key");
    let guest = &lab.guests[0];
    guest.exec_ok(
        "ip netns exec pod-1-2 ping -n -c 3000 -i 0.01 -W 2 10.244.2.2 >/vpblu/rotation-ping.txt 2>&1 &",
        Duration::from_secs(10),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = now_rfc3339();
    let started = Instant::now();
    rotate_now_in(&lab.cluster, "kvm-rotation", 5, Some("node-1"), &since).await;
    let mut lanes_seen = String::new();
    loop {
        let statuses = lab.statuses().await;
        if lanes_seen.is_empty() {
            let (_, out) = guest.exec("ip -br -d link show type wireguard", Duration::from_secs(10));
            if out.contains("wg-lane") {
                lanes_seen =
                    out.split_whitespace().filter(|w| w.starts_with("wg-")).collect::<Vec<_>>().join("+");
            }
        }
        if finished_since(&statuses[0].1, &since) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "node-1's rotation did not finish within 25 s (while the ping ran): {}",
            rotation_of(&statuses[0].1)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    let after = lab.statuses().await;
    let rotation = after[0].1.rotation.clone().unwrap_or_default();
    assert_eq!(rotation.last_result.as_deref(), Some("Succeeded"), "node-1: {}", rotation_of(&after[0].1));
    let key_after = after[0].1.public_key.clone().expect("node-1 still publishes a key");
    assert_ne!(key_before, key_after, "node-1's published key did not change");
    let ping = wait_ping_file(guest, "/vpblu/rotation-ping.txt", Duration::from_secs(60)).await;
    assert_eq!(ping.sent, 3000, "the rotation ping:\n{}", ping.text);
    assert_eq!(ping.lost(), 0, "pings lost during the rotation:\n{}", ping.text);
    assert!(!lanes_seen.is_empty(), "no kernel wg-lane device was seen on node-1 during the rotation");
    table.pass(
        ".6 rotation, kernel devices",
        format!(
            "node-1 rotated in {:.1} s; 0 of {} pings lost (100/s); kernel devices seen: {lanes_seen}",
            took.as_secs_f64(),
            ping.sent
        ),
    );
}

/// A daemon SIGKILLed under 100 pings/s loses nothing, and the restarted
/// one adopts the kernel device: same ifindex, peer counters not reset.
async fn daemon_sigkill_adopts_the_device(lab: &GuestLab, table: &mut Table) {
    let guest = &lab.guests[1];
    let ifindex = |out: &str| out.split(':').next().unwrap_or_default().trim().to_owned();
    let dump = "wg show wg-mesh transfer";
    let index_before = ifindex(&guest.exec_ok("ip -o link show wg-mesh", Duration::from_secs(10)));
    let rx = |out: &str| -> u64 {
        out.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).sum()
    };
    lab.guests[0].exec_ok(
        "ip netns exec pod-1-2 ping -n -c 1500 -i 0.01 -W 2 10.244.2.2 >/vpblu/kill-ping.txt 2>&1 &",
        Duration::from_secs(10),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rx_before = rx(&guest.exec_ok(dump, Duration::from_secs(10)));
    guest.exec_ok("kill -9 $(cat /run/vpblu-daemon.pid)", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.start_daemon(1, "kernel");
    let restarted = Instant::now();
    let metrics_addr = format!("{}:9091", guest.v4).parse().expect("an address");
    while http_get(metrics_addr, "/healthz").map(|(code, _)| code) != Some(200) {
        assert!(restarted.elapsed() < Duration::from_secs(60), "the restarted daemon never became healthy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ping = wait_ping_file(&lab.guests[0], "/vpblu/kill-ping.txt", Duration::from_secs(60)).await;
    assert_eq!(ping.lost(), 0, "pings lost across the daemon's SIGKILL:\n{}", ping.text);
    let index_after = ifindex(&guest.exec_ok("ip -o link show wg-mesh", Duration::from_secs(10)));
    let rx_after = rx(&guest.exec_ok(dump, Duration::from_secs(10)));
    assert_eq!(index_before, index_after, "wg-mesh was re-created (ifindex changed)");
    assert!(
        rx_after >= rx_before,
        "peer counters were reset ({rx_before} -> {rx_after} bytes): peers re-created"
    );
    table.pass(
        "daemon SIGKILL, device adopted",
        format!(
            "0 of {} pings lost (100/s); healthy {} ms after restart; wg-mesh ifindex {index_after} kept, peer rx {rx_before} -> {rx_after} B",
            ping.sent,
            restarted.elapsed().as_millis(),
        ),
    );
}

/// §12.8: the mesh MTU (underlay 1500 - 80) carries the largest DF ping and
/// refuses one byte more with "frag needed".
async fn large_packets_and_mtu(lab: &GuestLab, table: &mut Table) {
    let statuses = lab.statuses().await;
    let mtu = statuses[0].1.mtu.expect("node-1 reports its MTU");
    assert_eq!(mtu, 1420, "mesh MTU");
    let largest = mtu - 28;
    let ok = lab.pod_ping(1, 2, &format!("-c 3 -M do -s {largest} -W 2"), Duration::from_secs(20));
    assert_eq!(ok.received, 3, "DF ping of {largest} B payload:\n{}", ok.text);
    let over = lab.pod_ping(1, 2, &format!("-c 2 -M do -s {} -W 2", largest + 1), Duration::from_secs(20));
    assert_eq!(over.received, 0, "DF ping over the MTU went through:\n{}", over.text);
    assert!(
        over.text.contains("mtu = 1420") || over.text.contains("too long"),
        "no 'frag needed (mtu = 1420)' for an oversize DF ping:\n{}",
        over.text
    );
    table.pass(
        ".8 large packets / MTU",
        format!(
            "wg-mesh MTU {mtu}; DF -s {largest} 3/3; DF -s {} refused (frag needed, mtu = 1420)",
            largest + 1
        ),
    );
}

/// §12.7: with the controller down for 30 s, pods keep talking (10 pings/s,
/// 0 lost); it comes back and the daemons reconnect.
async fn controller_down_30s(lab: &mut GuestLab, table: &mut Table) {
    lab.guests[0].exec_ok(
        "ip netns exec pod-1-2 ping -n -c 320 -i 0.1 -W 2 10.244.2.2 >/vpblu/down-ping.txt 2>&1 &",
        Duration::from_secs(10),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    lab.controller.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let binaries = lab.binaries.clone();
    lab.controller.restart(&binaries);
    lab.record_processes();
    let ping = wait_ping_file(&lab.guests[0], "/vpblu/down-ping.txt", Duration::from_secs(60)).await;
    assert_eq!(ping.lost(), 0, "pings lost with the controller down:\n{}", ping.text);
    let back = Instant::now();
    let connected = |text: &str| {
        text.lines().filter(|l| l.starts_with("vpblu_controller_stream_connections ")).any(|l| {
            l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(lab.guests.len() as f64)
        })
    };
    while !connected(&lab.controller.metrics_text()) {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the daemons did not reconnect to the restarted controller"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    table.pass(
        ".7 controller down 30 s",
        format!(
            "0 of {} pings lost (10/s) while it was down; every daemon reconnected {} ms after its restart",
            ping.sent,
            back.elapsed().as_millis()
        ),
    );
}

/// §12.5: deleting the last node's Node object removes it from every other
/// node's kernel device.
async fn node_delete(lab: &GuestLab, table: &mut Table) {
    let last = lab.guests.last().expect("a guest");
    let key = lab.statuses().await.pop().and_then(|(_, s)| s.public_key).expect("the last node's key");
    let started = Instant::now();
    lab.cluster.delete_node(&last.name).await;
    for guest in lab.guests.iter().filter(|g| g.index != last.index) {
        loop {
            let peers = guest.exec_ok("wg show wg-mesh peers", Duration::from_secs(10));
            if !peers.contains(&key) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} still has {}'s peer",
                guest.name,
                last.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    table.pass(
        ".5 node delete",
        format!(
            "{}'s peer gone from every other kernel device {} ms after the delete",
            last.name,
            started.elapsed().as_millis()
        ),
    );
}

/// `--backend auto`: kernel where the module loads; userspace (with the
/// reason logged) when it is removed and blacklisted. On node-2, last.
async fn auto_backend_both_ways(lab: &GuestLab, table: &mut Table) {
    let guest = &lab.guests[1];
    let stop =
        "kill -9 $(cat /run/vpblu-daemon.pid); ip link del wg-mesh; ip link del wg-lane 2>/dev/null; true";
    guest.exec_ok(stop, Duration::from_secs(10));
    lab.start_daemon(1, "auto");
    let kernel_took = wait_auto(lab, "WireGuard backend: kernel", WireGuardBackend::Kernel).await;
    // The module is loaded: the kernel daemon before created wg-mesh.
    let kernel_series = r#"vpblu_daemon_wireguard_backend{backend="kernel",reason="module_loaded"} 1"#;
    assert_eq!(backend_metric(guest), kernel_series, "node-2 (auto, module loaded): /metrics");
    guest.exec_ok(stop, Duration::from_secs(10));
    guest.exec_ok(
        "modprobe -r wireguard && echo 'install wireguard /bin/false' >/etc/modprobe.d/no-wireguard.conf \
         && ! modprobe wireguard && ! ip link add probe0 type wireguard",
        Duration::from_secs(20),
    );
    lab.start_daemon(1, "auto");
    let user_took = wait_auto(lab, "WireGuard backend: userspace", WireGuardBackend::Userspace).await;
    let user_series = r#"vpblu_daemon_wireguard_backend{backend="userspace",reason="module_missing"} 1"#;
    assert_eq!(backend_metric(guest), user_series, "node-2 (auto, module blocked): /metrics");
    let ping = lab.pod_ping(1, 2, "-c 5 -i 0.2 -W 2", Duration::from_secs(20));
    assert_eq!(ping.received, 5, "kernel node-1 -> userspace node-2:\n{}", ping.text);
    table.pass(
        "--backend auto",
        format!(
            "module present: kernel ({}), pod traffic through it {:.1} s after start; module removed + blacklisted: userspace ({}, reason logged), pod traffic through it {:.1} s after start, 5/5 pings kernel<->userspace",
            metric_labels(kernel_series),
            kernel_took.as_secs_f64(),
            metric_labels(user_series),
            user_took.as_secs_f64()
        ),
    );
}

/// Waits until node-2's fresh `--backend auto` daemon logged `line` (the
/// log is truncated at each start), its VpbluNode says `want`, and node-1's
/// pod reaches node-2's through it. (After a device is re-created under the
/// same key, node-1's old session is dead until it re-handshakes, which
/// WireGuard does after its 5 s + 10 s of unanswered data.)
async fn wait_auto(lab: &GuestLab, line: &str, want: WireGuardBackend) -> Duration {
    let guest = &lab.guests[1];
    let started = Instant::now();
    loop {
        let logged = guest.daemon_log().contains(line);
        let statuses = lab.statuses().await;
        let status = &statuses[1].1;
        let flows = lab.pod_ping(1, 2, "-c 1 -W 1", Duration::from_secs(10)).received == 1;
        if logged && status.backend == Some(want) && flows {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "node-2 (auto) never logged {line:?}, reported {want:?} and carried pod traffic (logged {logged}, \
             flows {flows}): {status:#?}\n{}",
            guest.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The one `vpblu_daemon_wireguard_backend` series `guest`'s daemon serves.
fn backend_metric(guest: &vpblu_e2e::kvm::Guest) -> String {
    let addr = format!("{}:9091", guest.v4).parse().expect("an address");
    let (code, text) = http_get(addr, "/metrics")
        .unwrap_or_else(|| panic!("{}: the daemon's /metrics on {addr} did not answer", guest.name));
    assert_eq!(code, 200, "{}: /metrics answered {code}", guest.name);
    let series: Vec<&str> =
        text.lines().filter(|l| l.starts_with("vpblu_daemon_wireguard_backend{")).collect();
    assert_eq!(series.len(), 1, "{}: want one wireguard_backend series:\n{text}", guest.name);
    series[0].to_owned()
}

/// `{backend="...",reason="..."}` of a series, for the table.
fn metric_labels(series: &str) -> &str {
    series.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or(series, |(labels, _)| labels)
}

/// Waits for a background ping's summary in the guest's file.
async fn wait_ping_file(
    guest: &vpblu_e2e::kvm::Guest,
    path: &str,
    within: Duration,
) -> vpblu_e2e::lab::traffic::PingResult {
    let started = Instant::now();
    let host_path = guest.share.join(path.trim_start_matches("/vpblu/"));
    loop {
        let text = std::fs::read_to_string(&host_path).unwrap_or_default();
        if text.contains("packets transmitted") {
            return vpblu_e2e::lab::traffic::PingResult::parse(text);
        }
        assert!(
            started.elapsed() < within,
            "{}: {path} has no summary after {within:?}:\n{text}",
            guest.name
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
