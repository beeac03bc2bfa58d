//! The daemon binary's life on its own (no controller), run as root inside
//! a network namespace of its own with the real data plane (userspace
//! WireGuard, tc BPF, bpffs pins): it serves health, is not ready without a
//! state, stops on SIGTERM with exit 0 and leaves the data plane in place;
//! it exits non-zero naming what failed when the data plane or the tree
//! cannot start, and 2 naming the value for a bad flag.
//!
//! Needs root, `ip`, `nsenter`, and Go to build the pinned wireguard-go.
//! Fails, never skips, when any is missing.

mod daemon_support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::{DaemonSetup, EXE, METRICS_PORT, processes_named, sample};
use vpblu_e2e::netns::{Netns, require_root_and};
use vpblu_e2e::process::Guarded;

/// The controller address of these tests: nothing listens there.
const NO_CONTROLLER: &str = "http://127.0.0.1:9";

#[test]
fn serves_health_is_not_ready_without_a_state_and_stops_on_sigterm_leaving_the_data_plane() {
    require_root_and(&["ip", "nsenter"]);
    let tmp = tempfile::tempdir().unwrap();
    let ns = Netns::new("dlife");
    // A pod-facing bridge for classify to attach to.
    ns.ip(&["link", "add", "cni0", "type", "bridge"]);
    ns.ip(&["link", "set", "cni0", "up"]);
    let mut setup = DaemonSetup::new(&ns, "node-1", tmp.path()).userspace().with(&[
        "--controller-addr",
        NO_CONTROLLER,
        "--insecure-dev",
        "--observe-interval",
        "200ms",
    ]);
    let mut daemon = setup.start(&ns);

    daemon.wait_status("/healthz", 200, Duration::from_secs(30));
    let (status, body) = daemon.get("/readyz").expect("/readyz answers");
    assert_eq!((status, body.trim()), (503, "not ready"), "a fresh node without a controller is not ready");
    let text = daemon.wait_metrics("a first reading of the data plane", Duration::from_secs(10), |text| {
        sample(text, "vpblu_daemon_peers").map(|_| text.to_owned())
    });
    for (series, want) in [
        ("vpblu_daemon_peers", 0.0),
        ("vpblu_daemon_stream_connected", 0.0),
        ("vpblu_daemon_applied_generation", 0.0),
        ("vpblu_daemon_packets_total{verdict=\"to_mesh\"}", 0.0),
        ("vpblu_daemon_packets_dropped_total{program=\"classify\",reason=\"blocked\"}", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
    let wireguard_go = processes_named(&ns, "wireguard-go");
    assert_eq!(
        wireguard_go.len(),
        2,
        "the daemon started one wireguard-go per device (mesh and lane): {wireguard_go:?}"
    );
    let lane = ns.run("ip", &["link", "show", &setup.lane_interface]);
    assert!(lane.status.success(), "the lane device {} exists next to the mesh device", setup.lane_interface);
    let pins = std::fs::read_dir(&setup.pin_dir.0).map(|d| d.count()).unwrap_or(0);
    assert!(pins > 0, "maps and links are pinned under {}", setup.pin_dir.0.display());

    let status = daemon.stop_with("TERM", Duration::from_secs(10));
    assert!(status.success(), "SIGTERM must give exit 0, got {status}:\n{}", daemon.log_text());
    assert!(daemon.get("/healthz").is_none(), "the health server is gone after exit");
    // Nothing torn down: the device, its wireguard-go and the pins stay.
    let link = ns.run("ip", &["link", "show", &setup.interface]);
    assert!(link.status.success(), "{} survives the daemon's exit", setup.interface);
    let lane = ns.run("ip", &["link", "show", &setup.lane_interface]);
    assert!(lane.status.success(), "{} survives the daemon's exit", setup.lane_interface);
    assert_eq!(processes_named(&ns, "wireguard-go"), wireguard_go, "wireguard-go keeps running");
    let after = std::fs::read_dir(&setup.pin_dir.0).map(|d| d.count()).unwrap_or(0);
    assert_eq!(after, pins, "the pins stay");
    let log = daemon.log_text();
    assert!(log.contains("data plane started"), "{log}");
    let key = setup.private_key_text();
    assert!(!log.contains(&key), "the private key must never be logged");
}

#[test]
fn exits_non_zero_when_its_port_is_taken() {
    require_root_and(&["ip", "nsenter"]);
    let tmp = tempfile::tempdir().unwrap();
    let ns = Netns::new("dport");
    let mut setup = DaemonSetup::new(&ns, "node-1", tmp.path()).userspace().with(&[
        "--controller-addr",
        NO_CONTROLLER,
        "--insecure-dev",
    ]);
    // The port is taken inside the daemon's namespace.
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let path = ns.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let listener = std::net::TcpListener::bind(("127.0.0.1", METRICS_PORT)).expect("take the port");
            taken_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
            drop(listener);
        })
    };
    taken_rx.recv_timeout(Duration::from_secs(5)).expect("the port was taken");
    let mut daemon = setup.start(&ns);
    let status = daemon
        .child
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("gives up within 30 s:\n{}", daemon.log_text()));
    drop(release_tx);
    holder.join().unwrap();
    assert!(!status.success(), "a tree that cannot start must exit non-zero:\n{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(log.contains(&format!("127.0.0.1:{METRICS_PORT}")), "the error names the address: {log}");
}

#[test]
fn a_data_plane_that_cannot_start_exits_non_zero_naming_what_failed() {
    require_root_and(&["ip", "nsenter"]);
    let tmp = tempfile::tempdir().unwrap();
    let ns = Netns::new("dfail");
    let mut setup = DaemonSetup::new(&ns, "node-1", tmp.path()).with(&[
        "--controller-addr",
        NO_CONTROLLER,
        "--insecure-dev",
        "--backend",
        "userspace",
        "--wireguard-go",
        "/nonexistent/wireguard-go",
    ]);
    let mut daemon = setup.start(&ns);
    let status = daemon
        .child
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("gives up within 30 s:\n{}", daemon.log_text()));
    let log = daemon.log_text();
    assert_eq!(status.code(), Some(1), "exit 1 when the data plane cannot start:\n{log}");
    assert!(
        log.contains("data plane") && log.contains("/nonexistent/wireguard-go"),
        "the error says the data plane failed and names the missing wireguard-go:\n{log}"
    );
    assert!(daemon.get("/healthz").is_none(), "nothing served without a data plane");
}

#[test]
fn a_bad_flag_exits_2_naming_the_value() {
    for (flag, value) in [
        ("--observe-interval", "10parsecs"),
        ("--backend", "ebpf"),
        ("--strict", "perhaps"),
        ("--pod-interfaces", "veth*,bad/name"),
        ("--node-name", "Bad_Name"),
    ] {
        let node = if flag == "--node-name" { [].as_slice() } else { ["--node-name", "node-1"].as_slice() };
        let child = Command::new(EXE)
            .args(node)
            .args([flag, value])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {EXE}: {e}"));
        let mut child = Guarded::new(child);
        let status = child.wait_timeout(Duration::from_secs(10)).expect("exits at once");
        let mut stderr = String::new();
        child.child_mut().stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
        assert_eq!(status.code(), Some(2), "{flag} {value}: usage errors exit 2: {stderr}");
        let named = value.rsplit(',').next().unwrap_or(value);
        assert!(stderr.contains(named), "{flag} {value}: the error names {named:?}: {stderr}");
    }
}
