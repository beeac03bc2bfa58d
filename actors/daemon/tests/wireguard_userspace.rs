//! The userspace WireGuard backend on real parts: two "nodes" (network
//! namespaces) on a veth underlay, each with a wireguard-go device created,
//! configured and read back through `vpblu_daemon::wireguard`, peers built
//! from `vpblu_messages::Peer` values, and ping through the tunnel.
//!
//! Needs root, `ip`, `ping`, and Go to build the pinned wireguard-go
//! (tools/wireguard-go/build.sh; milliseconds once cached). Fails, never
//! skips, when any is missing.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use vpblu_daemon::keys::{ACTIVE_FILE, KeyStore, PrivateKey};
use vpblu_daemon::wireguard::{
    BackendReason, DeviceState, PeerState, UserspaceOptions, WireGuard, WireGuardDevice, WireGuardError,
    WireGuardGo, detect_backend,
};
use vpblu_e2e::netns::{Netns, require_root_and, veth};
use vpblu_messages::PeerMap;
use vpblu_messages::{Backend, Cidr, NodeName, Peer};

const PORT: u16 = 51820;

/// One node: its namespace, underlay and overlay addresses, WireGuard name.
struct Node {
    ns: Netns,
    node: NodeName,
    device_name: String,
    underlay: &'static str,
    overlay: &'static str,
    keys: KeyStore,
    _key_dir: tempfile::TempDir,
}

impl Node {
    fn peer(&self, allowed_ips: &[&str]) -> Arc<Peer> {
        let mut allowed_ips: Vec<Cidr> = allowed_ips.iter().map(|s| s.parse().unwrap()).collect();
        allowed_ips.sort();
        Arc::new(Peer {
            node: self.node.clone(),
            public_key: self.keys.public_key(),
            endpoint: format!("{}:{PORT}", self.underlay).parse().unwrap(),
            allowed_ips,
            persistent_keepalive: None,
        })
    }

    /// What the "daemon" on this node does on start: ensure the device,
    /// running in the node's namespace.
    fn ensure(&self, wg: &WireGuard) -> WireGuardDevice {
        let device = self
            .ns
            .enter(|| wg.ensure_device(&self.device_name, PORT, self.keys.active()))
            .unwrap_or_else(|e| panic!("ensure_device {}: {e}", self.device_name));
        // Cleanup even if the test fails from here on.
        self.ns.kill_on_drop(device.pid().expect("userspace device has a pid"));
        self.ns.remove_on_drop(device.socket().expect("userspace device has a socket"));
        device
    }

    fn ping(&self, to: &Node, count: u32) -> (u32, u32) {
        let out =
            self.ns.run("ping", &["-n", "-q", "-c", &count.to_string(), "-i", "0.05", "-W", "1", to.overlay]);
        ping_counts(&String::from_utf8_lossy(&out.stdout))
    }
}

/// (transmitted, received) from ping's summary.
fn ping_counts(text: &str) -> (u32, u32) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
    let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

struct Lab {
    a: Node,
    b: Node,
    wg: WireGuard,
    _logs: tempfile::TempDir,
}

fn node(side: char, test: u32, underlay: &'static str, overlay: &'static str) -> Node {
    let key_dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::open(key_dir.path().join("keys")).unwrap();
    Node {
        ns: Netns::new(&format!("wgu{side}")),
        node: NodeName::new(format!("node-{side}")).unwrap(),
        // Unique on the machine: /var/run/wireguard is shared by all namespaces.
        device_name: format!("wgt{}{test}{side}", std::process::id()),
        underlay,
        overlay,
        keys,
        _key_dir: key_dir,
    }
}

fn lab() -> Lab {
    require_root_and(&["ip", "ping"]);
    static TEST: AtomicU32 = AtomicU32::new(0);
    let test = TEST.fetch_add(1, Ordering::Relaxed);
    let logs = tempfile::tempdir().unwrap();
    let wg = WireGuard::new(
        Backend::Userspace,
        UserspaceOptions {
            program: WireGuardGo::Path(vpblu_e2e::built_tools::wireguard_go().to_path_buf()),
            log_dir: logs.path().to_path_buf(),
            ..UserspaceOptions::default()
        },
    );
    let a = node('a', test, "192.0.2.1", "10.99.0.1");
    let b = node('b', test, "192.0.2.2", "10.99.0.2");
    veth((&a.ns, "ul0", "192.0.2.1/24"), (&b.ns, "ul0", "192.0.2.2/24"));
    Lab { a, b, wg, _logs: logs }
}

/// Creates both devices, addresses them, and configures the peers from
/// `Peer` values, the responder (b) first so a's first packet handshakes at
/// once.
fn bring_up(lab: &Lab) -> (WireGuardDevice, WireGuardDevice, [PeerMap; 2]) {
    let mut dev_a = lab.a.ensure(&lab.wg);
    let mut dev_b = lab.b.ensure(&lab.wg);
    assert!(dev_a.started_here() && dev_b.started_here());
    for (node, dev) in [(&lab.a, &dev_a), (&lab.b, &dev_b)] {
        node.ns.ip(&["addr", "add", &format!("{}/24", node.overlay), "dev", dev.name()]);
        node.ns.ip(&["link", "set", dev.name(), "up"]);
    }
    let want_a: PeerMap = [(lab.b.node.clone(), lab.b.peer(&["10.99.0.2/32"]))].into_iter().collect();
    let want_b: PeerMap = [(lab.a.node.clone(), lab.a.peer(&["10.99.0.1/32"]))].into_iter().collect();
    let added = dev_b.apply_peers(&want_b).unwrap();
    assert_eq!(added.add.len(), 1);
    let added = dev_a.apply_peers(&want_a).unwrap();
    assert_eq!(added.add.len(), 1);
    (dev_a, dev_b, [want_a, want_b])
}

fn wait_for_ping(from: &Node, to: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if from.ping(to, 1).1 == 1 {
            return;
        }
    }
    panic!("{} could not ping {} through the tunnel within 10s", from.node, to.overlay);
}

fn only_peer(state: &DeviceState) -> &PeerState {
    assert_eq!(state.peers.len(), 1, "exactly one peer expected: {state:?}");
    &state.peers[0]
}

#[test]
fn peers_from_messages_carry_traffic_and_reconcile_minimally() {
    let lab = lab();
    let (mut dev_a, mut dev_b, [want_a, want_b]) = bring_up(&lab);
    let started = Instant::now();
    wait_for_ping(&lab.a, &lab.b);
    eprintln!("first ping through the tunnel after {:?}", started.elapsed());
    assert_eq!(lab.a.ping(&lab.b, 10), (10, 10));

    // Read back: keys, port, the peer as configured, a handshake, counters.
    let state_a = dev_a.read_back().unwrap();
    assert_eq!(state_a.public_key, Some(lab.a.keys.public_key()));
    assert_eq!(state_a.listen_port, PORT);
    let peer_b = only_peer(&state_a).clone();
    assert_eq!(peer_b.public_key, lab.b.keys.public_key());
    assert_eq!(peer_b.endpoint, Some(want_a[&lab.b.node].endpoint));
    assert_eq!(peer_b.allowed_ips, want_a[&lab.b.node].allowed_ips);
    let handshake = peer_b.last_handshake.expect("a handshake happened");
    let age = SystemTime::now().duration_since(handshake).unwrap_or_default();
    assert!(age < Duration::from_secs(30), "handshake {age:?} ago");
    assert!(peer_b.rx_bytes > 0 && peer_b.tx_bytes > 0, "{peer_b:?}");
    let peer_a = only_peer(&dev_b.read_back().unwrap()).clone();
    assert_eq!(peer_a.public_key, lab.a.keys.public_key());
    assert!(peer_a.last_handshake.is_some());

    // The same desired set again: read, nothing written.
    for (dev, want) in [(&mut dev_a, &want_a), (&mut dev_b, &want_b)] {
        let before = dev.operations();
        let diff = dev.apply_peers(want).unwrap();
        assert!(diff.is_empty(), "{diff:?}");
        let after = dev.operations();
        assert_eq!(after.writes, before.writes, "no UAPI set for an unchanged peer set");
        assert_eq!(after.reads, before.reads + 1);
    }

    // More allowed IPs for b on a: an in-place update, the session stays.
    let ping = lab.a.ns.spawn_in(
        Command::new("ping")
            .args(["-n", "-q", "-i", "0.02", "-c", "100", "-W", "1", lab.b.overlay])
            .stdout(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let widened: PeerMap =
        [(lab.b.node.clone(), lab.b.peer(&["10.99.0.2/32", "10.98.0.0/24"]))].into_iter().collect();
    let diff = dev_a.apply_peers(&widened).unwrap();
    assert!(diff.add.is_empty() && diff.remove.is_empty(), "never remove and re-add: {diff:?}");
    assert_eq!(diff.update.len(), 1);
    assert_eq!(diff.update[0].endpoint, None);
    assert!(diff.update[0].allowed_ips.is_some());
    let out = ping.wait_with_output().unwrap();
    let (sent, received) = ping_counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((sent, received), (100, 100), "traffic continued across the allowed-IP change");
    let after = only_peer(&dev_a.read_back().unwrap()).clone();
    assert_eq!(after.allowed_ips, widened[&lab.b.node].allowed_ips);
    assert_eq!(after.last_handshake, Some(handshake), "same session: no new handshake");
    assert!(after.tx_bytes > peer_b.tx_bytes && after.rx_bytes > peer_b.rx_bytes, "counters kept counting");

    // Removing the peer on a stops the traffic.
    let diff = dev_a.apply_peers(&PeerMap::new()).unwrap();
    assert_eq!(diff.remove, [lab.b.keys.public_key()]);
    assert!(dev_a.read_back().unwrap().peers.is_empty());
    assert_eq!(lab.a.ping(&lab.b, 3).1, 0, "no traffic without the peer");
}

#[test]
fn a_restarted_daemon_adopts_the_device_and_traffic_never_stops() {
    let lab = lab();
    let (dev_a, dev_b, [want_a, want_b]) = bring_up(&lab);
    wait_for_ping(&lab.a, &lab.b);

    // The private key is a 0600 file.
    let key_file = lab.a.keys.dir().join(ACTIVE_FILE);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key_file.display());

    // wireguard-go is in its own process group: signals for the daemon's
    // group (SIGTERM to it, ^C) do not reach it.
    let pid_a = dev_a.pid().unwrap();
    let pgid = std::fs::read_to_string(format!("/proc/{pid_a}/stat")).unwrap();
    let pgid: u32 = pgid.rsplit_once(')').unwrap().1.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(pgid, pid_a, "wireguard-go leads its own process group");
    let pid_b = dev_b.pid().unwrap();
    let mut before_a = dev_a;
    let state_before = before_a.read_back().unwrap();

    let ping = lab.a.ns.spawn_in(
        Command::new("ping")
            .args(["-n", "-q", "-i", "0.01", "-c", "300", "-W", "1", lab.b.overlay])
            .stdout(Stdio::piped()),
    );
    std::thread::sleep(Duration::from_millis(500));

    // The daemons exit: every Rust handle and the key stores go away.
    drop(before_a);
    drop(dev_b);
    let Lab { a, b, wg, _logs } = lab;
    let (dir_a, dir_b) = (a.keys.dir().to_path_buf(), b.keys.dir().to_path_buf());
    let (a, b) = (Node { keys: reopen(&dir_a, a.keys), ..a }, Node { keys: reopen(&dir_b, b.keys), ..b });
    std::thread::sleep(Duration::from_millis(200));

    // New daemons: same key from disk, the device adopted, nothing written.
    let mut dev_a = a.ensure(&wg);
    let mut dev_b = b.ensure(&wg);
    assert!(!dev_a.started_here() && !dev_b.started_here(), "adopted, not started");
    assert_eq!((dev_a.pid(), dev_b.pid()), (Some(pid_a), Some(pid_b)));
    assert_eq!(dev_a.operations().writes, 0, "the restart reused the key and port: no set");
    assert_eq!(dev_b.operations().writes, 0);
    let state_after = dev_a.read_back().unwrap();
    assert_eq!(state_after.public_key, state_before.public_key);
    assert_eq!(state_after.listen_port, state_before.listen_port);
    let (p0, p1) = (only_peer(&state_before), only_peer(&state_after));
    assert_eq!((p1.public_key, p1.endpoint, &p1.allowed_ips), (p0.public_key, p0.endpoint, &p0.allowed_ips));
    assert_eq!(p1.last_handshake, p0.last_handshake, "same session");
    assert!(p1.rx_bytes >= p0.rx_bytes && p1.tx_bytes >= p0.tx_bytes);
    assert!(dev_a.apply_peers(&want_a).unwrap().is_empty());
    assert!(dev_b.apply_peers(&want_b).unwrap().is_empty());
    assert_eq!(dev_a.operations().writes, 0);
    dev_a.check().unwrap();

    let out = ping.wait_with_output().unwrap();
    let (sent, received) = ping_counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((sent, received), (300, 300), "no packet lost across the daemon restart");
}

/// Drops a key store and opens its directory again, as a new daemon would;
/// the public key must not change.
fn reopen(dir: &Path, old: KeyStore) -> KeyStore {
    let public = old.public_key();
    drop(old);
    let again = KeyStore::open(dir).unwrap();
    assert_eq!(again.public_key(), public, "a restart must not rotate the key");
    again
}

#[test]
fn a_device_name_served_from_another_namespace_is_refused() {
    let lab = lab();
    let dev_a = lab.a.ensure(&lab.wg);
    // Same name, different namespace: the shared socket directory would
    // otherwise let b configure a's device.
    let err = lab
        .b
        .ns
        .enter(|| lab.wg.ensure_device(dev_a.name(), PORT, &PrivateKey::generate()))
        .expect_err("another namespace's socket must be refused");
    let text = err.to_string();
    assert!(text.contains("another network namespace"), "{text}");
    assert!(text.contains(&dev_a.pid().unwrap().to_string()), "{text}");
    // And a's device is untouched.
    let mut again = lab.a.ns.enter(|| lab.wg.adopt_device(dev_a.name())).unwrap().expect("still there");
    assert_eq!(again.read_back().unwrap().public_key, Some(lab.a.keys.public_key()));
}

#[test]
fn a_dead_wireguard_go_is_reported_and_replaced() {
    let lab = lab();
    let (mut dev_a, _dev_b, [want_a, _]) = bring_up(&lab);
    wait_for_ping(&lab.a, &lab.b);
    let old_pid = dev_a.pid().unwrap();
    dev_a.check().unwrap();

    // It dies hard (no chance to remove its socket).
    lab.a.ns.run_ok("kill", &["-KILL", &old_pid.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    // While it dies the socket may first just stop answering; once it is
    // gone, check() says so.
    let err = loop {
        match dev_a.check() {
            Err(e @ WireGuardError::Exited { .. }) => break e,
            other if Instant::now() < deadline => {
                if let Err(e) = other {
                    assert!(matches!(e, WireGuardError::Uapi { .. }), "{e}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("check() did not report the exit within 5s of SIGKILL: {other:?}"),
        }
    };
    assert!(matches!(err, WireGuardError::Exited { pid, .. } if pid == old_pid), "{err}");
    let text = err.to_string();
    assert!(text.contains(&dev_a.name().to_owned()) && text.contains("signal: 9"), "{text}");
    drop(dev_a);

    // The supervisor's answer: ensure again. The stale socket is not
    // mistaken for a live device; a new process takes over.
    let mut dev_a = lab.a.ensure(&lab.wg);
    assert!(dev_a.started_here());
    assert_ne!(dev_a.pid(), Some(old_pid));
    assert!(dev_a.read_back().unwrap().peers.is_empty(), "a new device starts empty");
    lab.a.ns.ip(&["addr", "add", &format!("{}/24", lab.a.overlay), "dev", dev_a.name()]);
    lab.a.ns.ip(&["link", "set", dev_a.name(), "up"]);
    assert_eq!(dev_a.apply_peers(&want_a).unwrap().add.len(), 1);
    wait_for_ping(&lab.a, &lab.b);
}

#[test]
fn the_backend_here_is_detected_and_the_probe_leaves_nothing() {
    require_root_and(&["ip"]);
    let ns = Netns::new("wgdet");
    let expected =
        if Path::new("/sys/module/wireguard").exists() { Backend::Kernel } else { Backend::Userspace };
    // Probing when the module is not loaded may load it; ask the kernel after.
    let (detected, reason) = ns.enter(detect_backend);
    if Path::new("/sys/module/wireguard").exists() {
        assert_eq!(detected, Backend::Kernel);
        assert!(matches!(reason, BackendReason::ModuleLoaded | BackendReason::LinkCreated), "{reason:?}");
    } else {
        assert_eq!(detected, expected);
        // Root in a namespace of our own: only a kernel without the
        // module refuses the link, and it says so with EOPNOTSUPP.
        assert_eq!(reason, BackendReason::ModuleMissing);
    }
    let links = ns.run_ok("ip", &["-o", "link"]);
    assert!(!links.contains("vpbluprobe"), "the probe link was left behind: {links}");
}
