//! Zero-drop key rotation with real `vpblu-daemon` processes.
//!
//! Three "nodes" (network namespaces) on an underlay bridge, one "pod" per
//! node behind `cni0`, no route between pod CIDRs but the mesh, and the
//! controller's real stream server in a fourth namespace (see
//! daemon_process.rs). Each daemon runs userspace WireGuard with its main
//! device and its lane device. The test plays the controller's rotation
//! scheduler by publishing desired states by hand, and pings pod to pod at
//! 100/s in all six directions throughout.
//!
//! 1. node-1's key rotates: Prepare → Distribute → Activate → (node-1's
//!    daemon SIGKILLed and restarted: it adopts both devices and reports
//!    Activate again on its new stream) → Retire → Settle → no rotation.
//!    Every node reports every phase; no ping is lost; node-1's key
//!    changed, and its old key is nowhere: not on either device of any
//!    node, not in its key directory.
//! 2. node-2 restarts with `--fail-rotation-phase activate`; a second
//!    rotation of node-1 gets node-2's error report at Activate and is
//!    rolled back (Rollback → no rotation): no ping lost, node-1 keeps the
//!    key it had, the discarded one is nowhere.
//!
//! Needs root, `ip`, `ping`, `nsenter`, `sysctl`, `nft`, and Go to build the
//! pinned wireguard-go. Fails, never skips, when any is missing. The
//! namespaces, every process in them, UAPI sockets and bpffs pins are
//! removed when the test ends, failed or not.

mod daemon_support;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vpblu_messages::PeerMap;

use base64::Engine as _;
use daemon_support::controller::StreamController;
use daemon_support::processes_named;
use daemon_support::stream_mesh::{MeshNet, Node, name};
use vpblu_daemon::wireguard::DEFAULT_SOCKET_DIR;
use vpblu_e2e::netns::{Bridge, Netns, require_root_and};
use vpblu_messages::{
    Generation, NodeDesiredState, NodeRotation, Peer, PublicKey, RotationPhase, RotationReport, SelfSettings,
};

const NODES: [u8; 3] = [1, 2, 3];
/// This test's addresses and namespace names.
const NET: MeshNet = MeshNet { id: 81, prefix: "rot" };
/// The node whose key rotates.
const ROTATING: u8 = 1;
const PORT: u16 = 51820;
const LANE_PORT: u16 = 51821;
/// Waits for acks and reports.
const WAIT: Duration = Duration::from_secs(30);
/// Pings per direction: 100/s for up to this many hundredths of a second,
/// more than a scripted rotation takes (checked: they must still run at
/// its end).
const PINGS: u32 = 1500;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The lab.

fn peer(n: u8, key: PublicKey, port: u16) -> Arc<Peer> {
    Arc::new(Peer {
        node: name(n),
        public_key: key,
        endpoint: format!("{}:{port}", NET.underlay(n)).parse().unwrap(),
        allowed_ips: vec![NET.pod_cidr(n)],
        persistent_keepalive: None,
    })
}

/// Where a rotation of [`ROTATING`] stands, as the scheduler would put it
/// into every node's desired state.
#[derive(Clone, Copy)]
struct Step {
    id: u64,
    phase: RotationPhase,
    new_key: Option<PublicKey>,
}

/// Node `n`'s desired state: the full mesh under `keys`, and its part of
/// the rotation at `step`.
fn state(n: u8, keys: &BTreeMap<u8, PublicKey>, step: Option<Step>) -> NodeDesiredState {
    let mut state = NodeDesiredState::empty(name(n));
    state.settings = SelfSettings {
        listen_port: PORT,
        lane_port: LANE_PORT,
        pod_cidrs: vec![NET.pod_cidr(n)],
        ..SelfSettings::default()
    };
    for (&m, key) in keys.iter().filter(|(m, _)| **m != n) {
        state.peers.insert(name(m), peer(m, *key, PORT));
    }
    state.rotation = step.map(|step| {
        let lane = if step.phase == RotationPhase::Prepare {
            PeerMap::new()
        } else if n == ROTATING {
            keys.iter()
                .filter(|(m, _)| **m != n)
                .map(|(&m, key)| (name(m), peer(m, *key, LANE_PORT)))
                .collect()
        } else {
            let new = step.new_key.expect("the new key is known after Prepare");
            PeerMap::unit(name(ROTATING), peer(ROTATING, new, LANE_PORT))
        };
        NodeRotation {
            id: step.id,
            node: name(ROTATING),
            phase: step.phase,
            new_public_key: step.new_key,
            lane,
        }
    });
    state
}

struct Lab {
    nodes: Vec<Node>,
    controller: StreamController,
    /// Each node's main key as the peers hold it.
    keys: BTreeMap<u8, PublicKey>,
    /// The last generation each node acked.
    acked: BTreeMap<u8, Generation>,
    _bridge: Bridge,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let (bridge, controller) = NET.underlay_and_controller();
        let mut nodes: Vec<Node> =
            NODES.iter().map(|&n| NET.add_node(&bridge, n, tmp.path(), &controller.endpoint)).collect();
        let keys = MeshNet::start_all(&mut nodes, &controller, WAIT);
        let acked = NODES.iter().map(|&n| (n, Generation(0))).collect();
        Lab { nodes, controller, keys, acked, _bridge: bridge, _tmp: tmp }
    }

    fn node(&mut self, n: u8) -> &mut Node {
        &mut self.nodes[usize::from(n - 1)]
    }

    /// Publishes every node's state at `step` and waits for their acks.
    fn publish(&mut self, step: Option<Step>) {
        let states = NODES.iter().map(|&n| (name(n), state(n, &self.keys, step))).collect();
        let changed = self.controller.desired.publish(states);
        for n in NODES.into_iter().filter(|n| changed.contains(&name(*n))) {
            let status = self.controller.wait_acked_above(&name(n), self.acked[&n]);
            self.acked.insert(n, status.last_acked.expect("acked"));
        }
    }

    /// Waits for every node's report on `step` (the `nth` of each) and
    /// returns them by node.
    fn reports(&self, step: Step, nth: usize) -> BTreeMap<u8, RotationReport> {
        NODES
            .iter()
            .map(|&n| (n, self.controller.wait_report(&name(n), step.id, step.phase, nth, WAIT)))
            .collect()
    }

    /// Publishes `step`, and checks every node reported it done.
    fn walk(&mut self, step: Step, summary: &mut Vec<String>) -> BTreeMap<u8, RotationReport> {
        let started = Instant::now();
        self.publish(Some(step));
        let reports = self.reports(step, 1);
        for (n, report) in &reports {
            assert_eq!(report.result, Ok(()), "node-{n} failed its part of {}: {report:?}", step.phase);
        }
        let line = format!(
            "rotation {} {}: acked and reported Ok by all 3 nodes in {:.2?}",
            step.id,
            step.phase,
            started.elapsed()
        );
        eprintln!("{line}");
        summary.push(line);
        reports
    }

    fn wait_flows(&self, within: Duration) {
        for from in NODES {
            for to in NODES.into_iter().filter(|to| *to != from) {
                let pod = &self.nodes[usize::from(from - 1)].pod;
                let start = Instant::now();
                loop {
                    if ping_once(pod, &NET.pod_ip(to)) {
                        break;
                    }
                    assert!(start.elapsed() < within, "pod {from} -> pod {to}: no answer within {within:?}");
                }
            }
        }
    }

    /// `ping -i 0.01` in all six directions.
    fn start_pings(&self) -> Vec<(String, Child)> {
        let mut pings = Vec::new();
        for from in NODES {
            for to in NODES.into_iter().filter(|to| *to != from) {
                let child = self.nodes[usize::from(from - 1)].pod.spawn_in(
                    Command::new("ping")
                        .args([
                            "-n",
                            "-q",
                            "-i",
                            "0.01",
                            "-W",
                            "1",
                            "-c",
                            &PINGS.to_string(),
                            &NET.pod_ip(to),
                        ])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped()),
                );
                pings.push((format!("pod {from} -> pod {to}"), child));
            }
        }
        pings
    }

    /// The main and lane devices' keys of every node: (node, device, its
    /// private key in hex, its peers' public keys in hex).
    fn device_keys(&self) -> Vec<(u8, String, String, Vec<String>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            for device in [&node.setup.interface, &node.setup.lane_interface] {
                let (private, peers) = uapi_keys(device);
                out.push((node.n, device.clone(), private, peers));
            }
        }
        out
    }
}

fn ping_once(from: &Netns, to: &str) -> bool {
    from.run("ping", &["-n", "-q", "-c", "1", "-W", "1", to]).status.success()
}

/// Waits for every ping and asserts none lost; returns the packets sent.
fn finish_pings(mut pings: Vec<(String, Child)>, what: &str) -> u32 {
    let mut total = 0;
    let mut lines = Vec::new();
    for (pair, child) in &mut pings {
        assert!(
            child.try_wait().expect("ping status").is_none(),
            "{what}: {pair}: the ping ended before the rotation did; raise PINGS"
        );
    }
    for (pair, child) in pings {
        let out = child.wait_with_output().expect("ping ran");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_owned();
        let nums: Vec<u32> =
            line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        let (sent, received) = (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0));
        assert_eq!(sent, PINGS, "{what}: {pair}: ping did not send them all:\n{text}");
        assert_eq!(received, sent, "{what}: {pair}: {} of {sent} lost:\n{text}", sent - received);
        total += sent;
        lines.push(format!("{pair} {received}/{sent}"));
    }
    println!("{what}: {}", lines.join(", "));
    total
}

/// A device's own private key and its peers' public keys, in hex, read
/// over its UAPI socket (shared by every namespace).
fn uapi_keys(device: &str) -> (String, Vec<String>) {
    let path = Path::new(DEFAULT_SOCKET_DIR).join(format!("{device}.sock"));
    let mut stream = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"get=1\n\n").unwrap();
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with("\n\n") {
        let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(n > 0, "{}: the reply ended early: {reply}", path.display());
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut private = String::new();
    let mut peers = Vec::new();
    for line in reply.lines() {
        if let Some(key) = line.strip_prefix("private_key=") {
            private = key.to_owned();
        } else if let Some(key) = line.strip_prefix("public_key=") {
            peers.push(key.to_owned());
        }
    }
    (private, peers)
}

/// A private key file's content (base64) in hex.
fn key_file_hex(text: &str) -> String {
    hex(&base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("a base64 key"))
}

/// Every file in `dir` with its content.
fn key_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------

#[test]
fn a_key_rotates_and_a_failed_one_rolls_back_without_losing_a_packet() {
    require_root_and(&["ip", "ping", "nsenter", "sysctl", "nft"]);
    vpblu_e2e::built_tools::wireguard_go();
    let mut lab = Lab::new();
    let mut summary = Vec::new();

    lab.publish(None);
    lab.wait_flows(Duration::from_secs(10));
    summary
        .push("3 daemons with mesh and lane devices, full mesh applied, every pod pings every other".into());

    // 1. node-1's key rotates, its daemon killed and restarted mid-way.
    let old_key = lab.keys[&ROTATING];
    let old_private = lab.node(ROTATING).setup.private_key_text();
    let old_private_hex = key_file_hex(&old_private);
    let pings = lab.start_pings();
    std::thread::sleep(Duration::from_millis(300));

    let mut step = Step { id: 1, phase: RotationPhase::Prepare, new_key: None };
    let prepared = lab.walk(step, &mut summary);
    let new_key =
        prepared[&ROTATING].staged_public_key.expect("node-1's Prepare report carries its staged key");
    assert_ne!(new_key, old_key, "a new key was staged");
    for n in [2, 3] {
        assert_eq!(prepared[&n].staged_public_key, None, "node-{n} stages nothing");
    }
    assert!(lab.node(ROTATING).setup.key_dir.join("staged.key").exists(), "the staged key is on disk");
    step.new_key = Some(new_key);
    for phase in [RotationPhase::Distribute, RotationPhase::Activate] {
        step.phase = phase;
        lab.walk(step, &mut summary);
    }

    // Mid-rotation (traffic to and from node-1 rides the lanes): SIGKILL
    // and restart node-1's daemon. It adopts both devices and reports the
    // phase again on its new stream.
    let wireguard_go = processes_named(&lab.node(ROTATING).ns, "wireguard-go");
    assert_eq!(wireguard_go.len(), 2, "node-1 runs a wireguard-go per device: {wireguard_go:?}");
    let killed_at = Instant::now();
    let status = lab.node(ROTATING).daemon().stop_with("KILL", Duration::from_secs(5));
    assert!(!status.success(), "SIGKILL: {status}");
    let node = lab.node(ROTATING);
    node.daemon = Some(node.setup.start(&node.ns));
    let before = lab.acked[&ROTATING];
    let status = lab.controller.wait_acked_above(&name(ROTATING), before);
    lab.acked.insert(ROTATING, status.last_acked.expect("acked"));
    assert_eq!(
        status.hello.staged_public_key,
        Some(new_key),
        "the restarted daemon's Hello names its staged key"
    );
    assert_eq!(status.hello.public_key, old_key, "and the old key is still its active one");
    let again = lab.controller.wait_report(&name(ROTATING), step.id, RotationPhase::Activate, 2, WAIT);
    assert_eq!(again.result, Ok(()), "{again:?}");
    assert_eq!(
        processes_named(&lab.node(ROTATING).ns, "wireguard-go"),
        wireguard_go,
        "both wireguard-go processes were adopted, not restarted"
    );
    summary.push(format!(
        "node-1's daemon SIGKILLed during Activate, restarted: both devices adopted, Activate reported again \
         {:.2?} after the kill",
        killed_at.elapsed()
    ));

    step.phase = RotationPhase::Retire;
    // Peers now hold node-1's new key on their main devices too.
    lab.keys.insert(ROTATING, new_key);
    lab.walk(step, &mut summary);
    step.phase = RotationPhase::Settle;
    lab.walk(step, &mut summary);
    lab.publish(None);
    summary.push("rotation 1 over: no rotation in anyone's state".into());
    std::thread::sleep(Duration::from_millis(500));
    let sent = finish_pings(pings, "rotation 1");
    summary.push(format!("rotation 1: {sent} pings at 100/s in 6 directions, 0 lost"));

    // node-1's key changed, and the old one is nowhere.
    let new_private = lab.node(ROTATING).setup.private_key_text();
    assert_ne!(new_private, old_private, "node-1's key file holds a new key");
    let new_private_hex = key_file_hex(&new_private);
    let files = key_dir(&lab.node(ROTATING).setup.key_dir);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["private.key"], "no staged or retired key is left");
    for (file, text) in &files {
        assert!(!text.contains(&old_private), "{file} holds the old key");
    }
    let old_public_hex = hex(old_key.as_bytes());
    for (n, device, private, peers) in lab.device_keys() {
        assert_ne!(private, old_private_hex, "node-{n} {device} holds node-1's old private key");
        assert!(!peers.contains(&old_public_hex), "node-{n} {device} still has node-1's old key as a peer");
        if n == ROTATING {
            assert_eq!(private, new_private_hex, "node-1 {device} holds the new key");
        }
        if device.starts_with("wgl") {
            assert!(peers.is_empty(), "node-{n}'s lane {device} is empty after the rotation: {peers:?}");
        } else if n != ROTATING {
            assert!(peers.contains(&hex(new_key.as_bytes())), "node-{n} {device} has node-1's new key");
        }
    }
    lab.wait_flows(Duration::from_secs(5));
    summary.push(
        "node-1's key changed; its old key is in no device of any node (mesh and lane) and not in its key \
         directory; lanes empty"
            .into(),
    );

    // 2. node-2 fails Activate; the rotation rolls back.
    let node2 = lab.node(2);
    let status = node2.daemon().stop_with("TERM", Duration::from_secs(10));
    assert!(status.success(), "SIGTERM: {status}");
    node2.setup.extra.extend(["--fault-injection", "--fail-rotation-phase", "activate"].map(str::to_owned));
    node2.daemon = Some(node2.setup.start(&node2.ns));
    let before = lab.acked[&2];
    let status = lab.controller.wait_acked_above(&name(2), before);
    lab.acked.insert(2, status.last_acked.expect("acked"));
    lab.wait_flows(Duration::from_secs(10));
    let pings = lab.start_pings();
    std::thread::sleep(Duration::from_millis(300));

    let mut step = Step { id: 2, phase: RotationPhase::Prepare, new_key: None };
    let prepared = lab.walk(step, &mut summary);
    let discarded = prepared[&ROTATING].staged_public_key.expect("a staged key");
    step.new_key = Some(discarded);
    step.phase = RotationPhase::Distribute;
    lab.walk(step, &mut summary);
    step.phase = RotationPhase::Activate;
    lab.publish(Some(step));
    let reports = lab.reports(step, 1);
    assert_eq!(
        reports[&2].result,
        Err("fault injected: --fail-rotation-phase activate".to_owned()),
        "node-2 reports the injected fault"
    );
    for n in [1, 3] {
        assert_eq!(reports[&n].result, Ok(()), "node-{n}: {:?}", reports[&n]);
    }
    summary.push(format!("rotation 2 Activate: node-2 reported {:?}", reports[&2].result));
    step.phase = RotationPhase::Rollback;
    lab.walk(step, &mut summary);
    lab.publish(None);
    std::thread::sleep(Duration::from_millis(500));
    let sent = finish_pings(pings, "rotation 2 (rolled back)");
    summary.push(format!("rotation 2 rolled back: {sent} pings at 100/s in 6 directions, 0 lost"));

    assert_eq!(lab.node(ROTATING).setup.private_key_text(), new_private, "node-1 keeps its key");
    let files = key_dir(&lab.node(ROTATING).setup.key_dir);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["private.key"], "the staged key was discarded");
    let discarded_hex = hex(discarded.as_bytes());
    for (n, device, private, peers) in lab.device_keys() {
        assert!(!peers.contains(&discarded_hex), "node-{n} {device} has the discarded key as a peer");
        if n == ROTATING {
            assert_eq!(private, new_private_hex, "node-1 {device} holds its active key");
        }
    }
    lab.wait_flows(Duration::from_secs(5));
    summary.push("node-1 keeps its key; the discarded key is in no device and no file".into());

    // No daemon logged a private key.
    for node in &mut lab.nodes {
        let key = node.setup.private_key_text();
        let log = node.daemon().log_text();
        assert!(!log.contains(&key), "node-{}: the private key was logged", node.n);
        assert!(!log.contains(&old_private), "node-{}: node-1's old private key was logged", node.n);
    }

    println!("rotation_netns summary:\n  {}", summary.join("\n  "));
    let Lab { nodes, controller, .. } = lab;
    drop(nodes);
    controller.stop();
}
