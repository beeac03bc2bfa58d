//! Routing on a real kernel, each test in fresh network namespaces: a tun
//! device stands in for the WireGuard mesh device (no `dummy` here), veths
//! for the underlay, and a veth pair for the mesh where packets must flow.
//!
//! Needs root, `ip`, `ping`, `tcpdump` and `nft`; without them every test
//! fails saying what is missing. Namespaces (and processes started in them)
//! are removed when a test ends, failed or not. The code under test runs on
//! a thread that has setns(2)ed into the node namespace, so its netlink
//! socket and the `nft` it spawns live there.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vpblu_daemon::routing::{
    Change, DEFAULT_FWMARK, DEFAULT_TABLE, Routing, RoutingConfig, RoutingError, Underlay,
};
use vpblu_e2e::netns::{Netns, require_root_and, veth, which};
use vpblu_messages::Cidr;

const MESH: &str = "wg-mesh";

fn require_tools() {
    require_root_and(&["ip", "ping", "tcpdump"]);
    assert!(
        which("nft").is_some(),
        "this test needs `nft` on PATH (Debian package nftables): run tools/install-deps.sh"
    );
}

/// A node namespace with a tun `wg-mesh` (up) and an underlay veth `eth0`
/// (MTU 1500, 192.0.2.1/24 and 2001:db8:1::1/64) to a `far` namespace.
struct Lab {
    node: Netns,
    far: Netns,
}

fn lab() -> Lab {
    require_tools();
    let node = Netns::new("vprt-node");
    let far = Netns::new("vprt-far");
    veth((&node, "eth0", "192.0.2.1/24"), (&far, "eth0", "192.0.2.2/24"));
    node.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "eth0", "nodad"]);
    far.ip(&["addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"]);
    node.ip(&["tuntap", "add", "dev", MESH, "mode", "tun"]);
    node.ip(&["link", "set", MESH, "up"]);
    Lab { node, far }
}

/// Runs `body` with a [`Routing`] connected inside `ns`, on a thread in
/// that namespace with its own current-thread runtime.
fn with_routing<T: Send>(
    ns: &Netns,
    config: RoutingConfig,
    body: impl AsyncFnOnce(&Routing) -> T + Send,
) -> T {
    ns.enter(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let routing = Routing::connect(config).expect("connect routing");
            body(&routing).await
        })
    })
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// `ip [-6] rule` and `ip [-6] route show table all` and `nft list ruleset`:
/// everything routing could touch.
fn snapshot(ns: &Netns) -> String {
    [
        ns.run_ok("ip", &["-4", "rule"]),
        ns.run_ok("ip", &["-6", "rule"]),
        ns.run_ok("ip", &["-4", "route", "show", "table", "all"]),
        ns.run_ok("ip", &["-6", "route", "show", "table", "all"]),
        ns.run_ok("nft", &["list", "ruleset"]),
    ]
    .join("\n---\n")
}

fn table_dump(ns: &Netns) -> String {
    let table = DEFAULT_TABLE.to_string();
    ns.run_ok("ip", &["-4", "route", "show", "table", &table])
        + &ns.run_ok("ip", &["-6", "route", "show", "table", &table])
}

fn link_mtu(ns: &Netns, dev: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&ns.run_ok("ip", &["-j", "link", "show", "dev", dev])).unwrap();
    json[0]["mtu"].as_u64().unwrap()
}

#[test]
fn underlay_is_the_device_routing_the_peers_and_mesh_mtu_follows_it() {
    let Lab { node, far } = lab();
    // A second uplink with jumbo frames carries the default route.
    veth((&node, "eth1", "198.51.100.1/24"), (&far, "eth1", "198.51.100.2/24"));
    node.ip(&["link", "set", "eth1", "mtu", "9000"]);
    node.ip(&["route", "add", "default", "via", "198.51.100.2", "dev", "eth1"]);
    // A peer network behind a route with its own, smaller MTU.
    node.ip(&["route", "add", "10.10.0.0/16", "via", "192.0.2.2", "dev", "eth0", "mtu", "1400"]);
    // A peer address that (wrongly) routes into the mesh: never the underlay.
    node.ip(&["route", "add", "10.244.5.0/24", "dev", MESH]);

    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let eth = |name: &str, mtu| Underlay { interface: name.into(), ifindex: 0, mtu };
    let found = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        let mut found = Vec::new();
        for peers in [
            vec![ip("192.0.2.2")],
            vec![ip("2001:db8:1::2")],
            vec![ip("203.0.113.9")],
            vec![ip("203.0.113.9"), ip("192.0.2.2")],
            vec![ip("10.10.1.1")],
            vec![ip("10.244.5.5")],
            vec![],
        ] {
            let u = r.detect_underlay_mtu(&peers).await.unwrap_or_else(|e| panic!("{peers:?}: {e}"));
            found.push(Underlay { ifindex: 0, ..u });
        }
        found
    });
    assert_eq!(
        found,
        vec![
            eth("eth0", 1500),
            eth("eth0", 1500),
            eth("eth1", 9000), // via the default route
            eth("eth0", 1500), // the smallest of several
            eth("eth0", 1400), // the route's MTU
            eth("eth1", 9000), // the mesh is skipped: default route
            eth("eth1", 9000), // no peers: default route
        ]
    );

    node.ip(&["route", "del", "default"]);
    let (unreachable, first, second, too_small, missing) =
        with_routing(&node, RoutingConfig::new(MESH), async |r| {
            let unreachable = r.detect_underlay_mtu(&[ip("203.0.113.9")]).await;
            let first = r.ensure_mesh_mtu(1500).await.unwrap();
            let second = r.ensure_mesh_mtu(1500).await.unwrap();
            let too_small = r.ensure_mesh_mtu(1300).await;
            let gone = Routing::connect(RoutingConfig::new("nosuchdev0")).unwrap();
            let missing = gone.ensure_mesh_mtu(1500).await;
            (unreachable, first, second, too_small, missing)
        });
    assert!(matches!(unreachable, Err(RoutingError::NoUnderlay { .. })), "{unreachable:?}");
    assert_eq!(first, (1420, Change::Changed));
    assert_eq!(second, (1420, Change::Unchanged));
    assert_eq!(link_mtu(&node, MESH), 1420);
    let too_small = too_small.unwrap_err();
    assert!(too_small.to_string().contains("1300 - 80 = 1220"), "{too_small}");
    assert_eq!(link_mtu(&node, MESH), 1420, "a refused MTU is not written");
    let missing = missing.unwrap_err();
    assert!(
        matches!(&missing, RoutingError::MeshInterfaceMissing { name } if name == "nosuchdev0"),
        "{missing:?}"
    );
}

#[test]
fn fwmark_rule_exists_once_per_family_and_only_ours_is_removed() {
    let Lab { node, far: _far } = lab();
    // Someone else's rule into the same table, at the same priority.
    node.ip(&["rule", "add", "fwmark", "0x1", "lookup", "22096", "pref", "22096"]);
    let (first, second) = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        (r.ensure_rule().await.unwrap(), r.ensure_rule().await.unwrap())
    });
    assert_eq!((first, second), (Change::Changed, Change::Unchanged));
    let ours = "fwmark 0x56500000/0xffff0000 lookup 22096 proto 86";
    for family in ["-4", "-6"] {
        let rules = node.run_ok("ip", &[family, "rule"]);
        assert_eq!(lines_with(&rules, ours), 1, "ip {family} rule:\n{rules}");
        assert!(rules.contains("22096:\tfrom all fwmark 0x56500000/0xffff0000"), "{rules}");
    }

    // A stale rule of ours (an older configuration's priority) goes; the
    // kernel refuses exact duplicates itself.
    node.ip(&[
        "rule",
        "add",
        "fwmark",
        "0x56500000/0xffff0000",
        "lookup",
        "22096",
        "pref",
        "100",
        "proto",
        "86",
    ]);
    let (fixed, removed, again) = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        (r.ensure_rule().await.unwrap(), r.remove_rule().await.unwrap(), r.remove_rule().await.unwrap())
    });
    assert_eq!(fixed, Change::Changed);
    assert_eq!((removed, again), (2, 0));
    let rules = node.run_ok("ip", &["-4", "rule"]);
    assert!(!rules.contains("100:"), "the stale rule went:\n{rules}");
    for family in ["-4", "-6"] {
        let rules = node.run_ok("ip", &[family, "rule"]);
        assert_eq!(lines_with(&rules, "0x56500000"), 0, "ip {family} rule:\n{rules}");
    }
    let rules = node.run_ok("ip", &["-4", "rule"]);
    assert_eq!(lines_with(&rules, "fwmark 0x1 lookup 22096"), 1, "the foreign rule stays:\n{rules}");
}

#[test]
fn routes_are_synced_by_difference_and_foreign_routes_stay() {
    let Lab { node, far: _far } = lab();
    let table = DEFAULT_TABLE.to_string();
    // Not ours: another protocol in our table, and our protocol in main.
    node.ip(&["route", "add", "10.99.0.0/24", "dev", "eth0", "table", &table, "proto", "static"]);
    node.ip(&["route", "add", "10.244.9.0/24", "dev", MESH, "proto", "86"]);
    let main_before = node.run_ok("ip", &["-4", "route", "show", "table", "main"]);

    let desired = [cidr("10.244.2.0/24"), cidr("10.244.3.0/24"), cidr("fd00:244:2::/64")];
    let (first, dump_after_first, second) = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        let first = r.sync_routes(&desired).await.unwrap();
        let dump = table_dump(&node);
        (first, dump, r.sync_routes(&desired).await.unwrap())
    });
    assert_eq!(first.added, desired.to_vec());
    assert!(first.removed.is_empty() && first.shadowed.is_empty(), "{first:?}");
    assert!(!second.changed(), "an identical sync writes nothing: {second:?}");
    let dump = table_dump(&node);
    assert_eq!(dump, dump_after_first, "an identical sync leaves the table as it was");
    for route in [
        "10.244.2.0/24 dev wg-mesh proto 86 scope link",
        "10.244.3.0/24 dev wg-mesh proto 86 scope link",
        "fd00:244:2::/64 dev wg-mesh proto 86",
        "10.99.0.0/24 dev eth0 proto static scope link",
    ] {
        assert_eq!(lines_with(&dump, route), 1, "{route:?} in table {table}:\n{dump}");
    }

    // Drop one CIDR, ask for one a foreign route holds.
    let desired = [cidr("10.244.2.0/24"), cidr("10.99.0.0/24"), cidr("fd00:244:2::/64")];
    let third =
        with_routing(&node, RoutingConfig::new(MESH), async |r| r.sync_routes(&desired).await.unwrap());
    assert_eq!(third.removed, vec![cidr("10.244.3.0/24")]);
    assert!(third.added.is_empty(), "{third:?}");
    assert_eq!(third.shadowed, vec![cidr("10.99.0.0/24")]);
    let after = table_dump(&node);
    let expected: Vec<&str> = dump.lines().filter(|l| !l.starts_with("10.244.3.0/24")).collect::<Vec<_>>();
    assert_eq!(after.lines().collect::<Vec<_>>(), expected, "exactly that route went");
    assert_eq!(node.run_ok("ip", &["-4", "route", "show", "table", "main"]), main_before);

    // The mesh device goes down: IPv4 routes through it are refused by name.
    node.ip(&["link", "set", MESH, "down"]);
    let down = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        r.sync_routes(&[cidr("10.244.4.0/24")]).await
    });
    assert!(matches!(&down, Err(RoutingError::MeshInterfaceDown { name }) if name == MESH), "{down:?}");
    node.ip(&["link", "set", MESH, "up"]);

    let emptied = with_routing(&node, RoutingConfig::new(MESH), async |r| r.sync_routes(&[]).await.unwrap());
    assert!(emptied.added.is_empty(), "{emptied:?}");
    let left = table_dump(&node);
    assert_eq!(left.trim(), "10.99.0.0/24 dev eth0 proto static scope link", "only the foreign route");
}

#[test]
fn mss_clamp_table_holds_the_values_and_is_replaced_only_when_different() {
    let Lab { node, far: _far } = lab();
    node.run_ok(
        "nft",
        &["add table inet other; add chain inet other c { type filter hook forward priority 0; }"],
    );
    let nft_list = || node.run_ok("nft", &["list", "table", "inet", "vpblu"]);
    let (first, second, listing) = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        (r.ensure_mss_clamp(1420).await.unwrap(), r.ensure_mss_clamp(1420).await.unwrap(), nft_list())
    });
    assert_eq!((first, second), (Change::Changed, Change::Unchanged));
    for (needle, count) in [
        ("oifname \"wg-mesh\" meta nfproto ipv4 tcp flags syn", 2),
        ("tcp option maxseg size set 1380", 2),
        ("tcp option maxseg size set 1360", 2),
        ("type filter hook forward priority mangle; policy accept;", 1),
        ("type filter hook output priority mangle; policy accept;", 1),
    ] {
        assert_eq!(lines_with(&listing, needle), count, "{needle:?} in\n{listing}");
    }

    // A hand edit of our table is repaired; a new MTU rewrites it.
    node.run_ok("nft", &["flush chain inet vpblu output"]);
    let (repaired, changed, listing, removed, again) =
        with_routing(&node, RoutingConfig::new(MESH), async |r| {
            let repaired = r.ensure_mss_clamp(1420).await.unwrap();
            let changed = r.ensure_mss_clamp(1400).await.unwrap();
            let listing = nft_list();
            (
                repaired,
                changed,
                listing,
                r.remove_mss_clamp().await.unwrap(),
                r.remove_mss_clamp().await.unwrap(),
            )
        });
    assert_eq!((repaired, changed), (Change::Changed, Change::Changed));
    assert_eq!(lines_with(&listing, "maxseg size set 1360"), 2, "{listing}");
    assert_eq!(lines_with(&listing, "maxseg size set 1340"), 2, "{listing}");
    assert_eq!((removed, again), (Change::Changed, Change::Unchanged));
    let ruleset = node.run_ok("nft", &["list", "ruleset"]);
    assert!(!ruleset.contains("table inet vpblu"), "{ruleset}");
    assert!(ruleset.contains("table inet other"), "someone else's table stays:\n{ruleset}");
}

#[test]
fn cleanup_leaves_the_namespace_as_found() {
    let Lab { node, far: _far } = lab();
    let table = DEFAULT_TABLE.to_string();
    node.ip(&["route", "add", "10.99.0.0/24", "dev", "eth0", "table", &table, "proto", "static"]);
    node.run_ok("nft", &["add table inet other"]);
    let before = snapshot(&node);

    // Ours on another device (say, left by an older mesh device name).
    let report = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        let (mtu, _) = r.ensure_mesh_mtu(1500).await.unwrap();
        r.ensure_rule().await.unwrap();
        r.sync_routes(&[cidr("10.244.2.0/24"), cidr("fd00:244:2::/64")]).await.unwrap();
        r.ensure_mss_clamp(mtu).await.unwrap();
        node.ip(&["route", "add", "10.50.0.0/24", "dev", "eth0", "table", &table, "proto", "86"]);
        assert_ne!(snapshot(&node), before);
        let report = r.cleanup().await.unwrap();
        let again = r.cleanup().await.unwrap();
        assert_eq!(again, Default::default(), "a second cleanup finds nothing");
        report
    });
    assert_eq!((report.rules, report.routes, report.mss_clamp), (2, 3, true), "{report:?}");
    assert_eq!(snapshot(&node), before);

    // With the mesh device gone (and its routes with it), cleanup still
    // removes what is left of ours.
    let owned = |ns: &Netns| {
        [ns.run_ok("ip", &["-4", "rule"]), ns.run_ok("ip", &["-6", "rule"]), table_dump(ns)].join("\n---\n")
            + &ns.run_ok("nft", &["list", "ruleset"])
    };
    let before = owned(&node);
    let with_dev_gone = with_routing(&node, RoutingConfig::new(MESH), async |r| {
        r.ensure_rule().await.unwrap();
        r.sync_routes(&[cidr("fd00:244:2::/64")]).await.unwrap();
        node.ip(&["link", "del", MESH]);
        r.cleanup().await.unwrap()
    });
    assert_eq!(with_dev_gone.rules, 2);
    assert_eq!(owned(&node), before);
}

/// Runs tcpdump in `ns` on `dev` for the first packet matching `filter`
/// while `trigger` is called repeatedly; its verbose line.
fn first_packet(ns: &Netns, dev: &str, filter: &str, trigger: impl Fn()) -> String {
    let mut child = ns.spawn_in(
        Command::new("tcpdump")
            .args(["-l", "-nn", "-v", "-c", "1", "-i", dev])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait tcpdump").is_none() {
        assert!(Instant::now() < deadline, "tcpdump on {dev} saw no packet matching {filter:?}");
        trigger();
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pod — node — (veth standing in for the mesh) — far. Packets from the
/// pod get the mesh mark at node's prerouting (an nft rule doing what
/// classify does); only the fwmark rule and the mesh table can route them
/// to far, whose pod CIDR the node's main table does not know.
#[test]
fn marked_packets_follow_the_mesh_table_with_mss_clamped() {
    require_tools();
    let pod = Netns::new("vprt-pod");
    let node = Netns::new("vprt-node");
    let far = Netns::new("vprt-far");
    let mesh = "vmesh";
    veth((&pod, "eth0", "10.244.1.2/24"), (&node, "vpod", "10.244.1.1/24"));
    veth((&node, mesh, "10.77.0.1/32"), (&far, "vpeer", "10.244.2.1/24"));
    for (ns, dev, addr) in [
        (&pod, "eth0", "fd00:244:1::2/64"),
        (&node, "vpod", "fd00:244:1::1/64"),
        (&node, mesh, "fd77::1/128"),
        (&far, "vpeer", "fd00:244:2::1/64"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]);
    }
    pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
    pod.ip(&["-6", "route", "add", "default", "via", "fd00:244:1::1"]);
    // Back to the node's mesh address on-link, to the pods through it (the
    // node does not answer ARP/ND for its pods' addresses).
    for back in [&["10.77.0.1/32", "dev", "vpeer"][..], &["fd77::1/128", "dev", "vpeer"]] {
        far.ip(&[&["route", "add"][..], back].concat());
    }
    far.ip(&["route", "add", "10.244.1.0/24", "via", "10.77.0.1", "dev", "vpeer"]);
    far.ip(&["-6", "route", "add", "fd00:244:1::/64", "via", "fd77::1", "dev", "vpeer"]);
    node.run_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
    let mark = DEFAULT_FWMARK.to_string();
    node.run_ok(
        "nft",
        &[&format!(
            "add table inet classify; add chain inet classify pre {{ type filter hook prerouting priority 0; }}; \
             add rule inet classify pre iifname vpod ip daddr 10.244.2.0/24 meta mark set {mark}; \
             add rule inet classify pre iifname vpod ip6 daddr fd00:244:2::/64 meta mark set {mark}"
        )],
    );

    let ping = |ns: &Netns, args: &[&str]| {
        let mut all = vec!["-n", "-q", "-c", "1", "-W", "1"];
        all.extend_from_slice(args);
        (0..3).any(|_| ns.run("ping", &all).status.success())
    };
    let remote = [cidr("10.244.2.0/24"), cidr("fd00:244:2::/64")];
    assert!(
        !ping(&node, &["-m", &mark, "10.244.2.1"]),
        "reachable before any routing: the test proves nothing"
    );

    with_routing(&node, RoutingConfig::new(mesh), async |r| {
        r.ensure_rule().await.unwrap();
        r.sync_routes(&remote).await.unwrap();
        r.ensure_mss_clamp(1420).await.unwrap();
    });
    // From the node itself: the mark alone decides.
    for target in ["10.244.2.1", "fd00:244:2::1"] {
        assert!(ping(&node, &["-m", &mark, target]), "marked ping to {target} must use the mesh table");
        assert!(!ping(&node, &[target]), "unmarked ping to {target} must not reach it");
        // kube-proxy's low bits do not matter; another upper half does.
        assert!(ping(&node, &["-m", &(DEFAULT_FWMARK | 0x4000).to_string(), target]));
        assert!(!ping(&node, &["-m", &(DEFAULT_FWMARK + 0x1_0000).to_string(), target]));
    }
    // From the pod, marked at the node's prerouting as classify would.
    assert!(ping(&pod, &["10.244.2.1"]) && ping(&pod, &["fd00:244:2::1"]), "pod traffic is steered");

    // A TCP SYN from the pod leaves the mesh with the MSS clamped.
    for (target, port, mss) in [("10.244.2.1", 5555, 1380), ("fd00:244:2::1", 5556, 1360)] {
        let to = SocketAddr::new(target.parse().unwrap(), port);
        let line = first_packet(&far, "vpeer", &format!("tcp dst port {port}"), || {
            pod.enter(|| {
                // Refused (nothing listens), which is fine: the SYN went out.
                let _ = TcpStream::connect_timeout(&to, Duration::from_millis(300));
            });
        });
        assert!(line.contains(&format!("mss {mss}")), "SYN to {to} seen on far:\n{line}");
    }

    with_routing(&node, RoutingConfig::new(mesh), async |r| r.cleanup().await.unwrap());
    assert!(!ping(&pod, &["10.244.2.1"]), "after cleanup nothing steers into the mesh");
}
