//! The data plane on a real kernel: network namespaces for a pod, its node
//! and a remote pod, classify attached at tc ingress of the node side of
//! the pod veth, traffic checked with ping.
//!
//! Needs root, `ip` and `ping`; without them every test fails saying what
//! is missing. Each test makes its own namespaces, veths and bpffs pin
//! directory, and removes them when it ends, failed or not. Namespaces are
//! entered with setns(2) from a thread: `ip netns exec` remounts /sys, which
//! breaks bpffs pinning.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vpblu_daemon::bpf::layout::{self, Verdict};
use vpblu_daemon::bpf::{AttachMode, Attached, Dataplane, DstEntry, ProgramKind};
use vpblu_messages::{BlockRule, Cidr, UnreachableReason};

#[path = "bpf_dataplane/harness.rs"]
mod harness;

use self::harness::*;

#[test]
fn both_programs_pass_the_verifier_and_pin_their_maps() {
    let lab = Lab::new();
    let (mut dp, attached) = lab.load_and_attach(AttachMode::Tcx);
    assert_eq!(attached, Attached::Created);
    for shape in layout::ALL_MAPS {
        let pin = dp.map_pin_path(&shape);
        assert!(pin.exists(), "{} is not pinned", pin.display());
    }
    let link = dp.link_pin_path(ProgramKind::Classify, &lab.pod_veth);
    assert!(link.exists(), "the tcx link is not pinned at {}", link.display());

    // deliver on an L3 device: a TUN in the node namespace stands in for
    // the userspace WireGuard device.
    let tun = format!("vt{}", &lab.pod_veth[2..]);
    ip(&["-n", &lab.node, "tuntap", "add", "dev", &tun, "mode", "tun"]);
    lab.in_node(|| {
        assert_eq!(dp.attach_deliver(&tun).expect("attach deliver"), Attached::Created);
        assert_eq!(dp.attach_deliver(&tun).expect("attach deliver again"), Attached::Replaced);
        assert!(dp.detach(ProgramKind::Deliver, &tun).expect("detach deliver"));
        assert!(
            !dp.detach(ProgramKind::Deliver, &tun).expect("detach deliver again"),
            "nothing left to detach"
        );
        // A device deleted and recreated under the same name leaves a pinned
        // link attached to nothing: the next attach starts over.
        assert_eq!(dp.attach_deliver(&tun).expect("attach deliver"), Attached::Created);
        ip(&["-n", &lab.node, "link", "del", &tun]);
        ip(&["-n", &lab.node, "tuntap", "add", "dev", &tun, "mode", "tun"]);
        assert_eq!(dp.attach_deliver(&tun).expect("attach deliver to the new device"), Attached::Created);
        let err = dp.attach_classify("no-such-if0").expect_err("attach to a missing interface");
        assert!(err.to_string().contains("no-such-if0"), "the error names the interface: {err}");
    });

    // Both programs share the one set of maps: a block written once is
    // seen by both.
    dp.sync_blocks(&[rule("10.60.0.0/16", "10.70.0.0/16")]).expect("sync blocks");
    assert_eq!(classify_verdict(&dp, "10.60.1.1", "10.70.1.1"), TC_ACT_SHOT);
    assert_eq!(classify_verdict(&dp, "10.70.1.1", "10.60.1.1"), TC_ACT_OK);
    assert_eq!(count(&dp, Verdict::DropBlocked), 1);
}

#[test]
fn pod_traffic_is_blocked_marked_and_dropped_as_the_maps_say() {
    let lab = Lab::new();
    let (mut dp, _) = lab.load_and_attach(AttachMode::Tcx);
    let pod = lab.pod.as_str();

    // Without entries: not cluster traffic, passed.
    assert!(reachable(pod, "10.50.2.2"), "pod -> remote over IPv4 before any policy");
    assert!(reachable(pod, "fd50:2::2"), "pod -> remote over IPv6 before any policy");
    assert!(count(&dp, Verdict::PassLocal) > 0);

    // Blocks, IPv4 then IPv6.
    let v4_block = rule("10.50.1.0/24", "10.50.2.0/24");
    let v6_block = rule("fd50:1::/64", "fd50:2::/64");
    dp.sync_blocks(&[v4_block]).expect("sync blocks");
    assert!(unreachable(pod, "10.50.2.2"), "the IPv4 block drops pod -> remote");
    assert!(reachable(pod, "fd50:2::2"), "IPv6 is not blocked yet");
    let blocked = count(&dp, Verdict::DropBlocked);
    assert!(blocked >= 2, "DROP_BLOCKED counted the pings: {blocked}");
    dp.sync_blocks(&[v4_block, v6_block]).expect("sync blocks");
    assert!(unreachable(pod, "fd50:2::2"), "the IPv6 block drops pod -> remote");
    assert!(count(&dp, Verdict::DropBlocked) >= blocked + 2);
    dp.sync_blocks(&[]).expect("clear blocks");
    assert!(reachable(pod, "10.50.2.2"), "IPv4 works again once the block is gone");
    assert!(reachable(pod, "fd50:2::2"), "IPv6 works again once the block is gone");
    assert_eq!(dp.block_entry_counts().unwrap(), (0, 0));

    // Unreachable cluster CIDRs: dropped in strict mode, counted by reason.
    dp.set_config(MARK, true).expect("config");
    dp.sync_destinations(&[
        (cidr("10.50.2.0/24"), DstEntry::unreachable(UnreachableReason::NotPeered)),
        (cidr("fd50:2::/64"), DstEntry::unreachable(UnreachableReason::Isolated)),
    ])
    .expect("sync destinations");
    assert!(unreachable(pod, "10.50.2.2"), "strict mode drops IPv4 to an unreachable CIDR");
    assert!(unreachable(pod, "fd50:2::2"), "strict mode drops IPv6 to an unreachable CIDR");
    assert!(count(&dp, Verdict::DropUnreachableNotPeered) >= 2);
    assert!(count(&dp, Verdict::DropUnreachableIsolated) >= 2);
    assert_eq!(count(&dp, Verdict::DropUnreachableNoKey), 0);
    dp.set_config(MARK, false).expect("config");
    assert!(reachable(pod, "10.50.2.2"), "without strict mode unreachable traffic passes");
    assert!(reachable(pod, "fd50:2::2"), "without strict mode unreachable traffic passes (IPv6)");
    assert!(count(&dp, Verdict::PassUnreachable) >= 2);

    // PEER: the packet gets the mesh mark before routing. An fwmark rule
    // sends marked packets to a table that blackholes the remote CIDR, so
    // marked traffic fails and unmarked traffic works.
    ip(&["-n", &lab.node, "rule", "add", "fwmark", &MARK.to_string(), "lookup", "100"]);
    ip(&["-n", &lab.node, "-6", "rule", "add", "fwmark", &MARK.to_string(), "lookup", "100"]);
    ip(&["-n", &lab.node, "route", "add", "blackhole", "10.50.2.0/24", "table", "100"]);
    ip(&["-n", &lab.node, "-6", "route", "add", "blackhole", "fd50:2::/64", "table", "100"]);
    let stats = dp
        .sync_destinations(&[
            (cidr("10.50.2.0/24"), DstEntry::peer()),
            (cidr("fd50:2::/64"), DstEntry::peer()),
        ])
        .expect("sync destinations");
    assert_eq!((stats.added, stats.changed, stats.removed), (0, 2, 0), "{stats:?}");
    assert!(unreachable(pod, "10.50.2.2"), "marked IPv4 follows the fwmark rule into the blackhole");
    assert!(unreachable(pod, "fd50:2::2"), "marked IPv6 follows the fwmark rule into the blackhole");
    assert!(count(&dp, Verdict::ToMesh) >= 4);
    let stats = dp.sync_destinations(&[]).expect("clear destinations");
    assert_eq!(stats.removed, 2);
    assert!(reachable(pod, "10.50.2.2"), "unmarked again once the PEER entry is gone");
    assert!(reachable(pod, "fd50:2::2"), "unmarked again once the PEER entry is gone (IPv6)");
}

/// A daemon exit leaves the data plane as it was; a restart with the same
/// pin directory finds the maps and the attachment and rewrites nothing.
fn blocks_survive_a_restart(mode: AttachMode) {
    let lab = Lab::new();
    let (mut dp, attached) = lab.load_and_attach(mode);
    assert_eq!(attached, Attached::Created);
    let rules = [rule("10.50.1.0/24", "10.50.2.0/24"), rule("fd50:1::/64", "fd50:2::/64")];
    dp.sync_blocks(&rules).expect("sync blocks");
    assert!(unreachable(&lab.pod, "10.50.2.2"), "blocked before the restart");

    // A pinger runs across the whole restart: not one reply may come back.
    let pinger: Child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pod,
            "ping",
            "-n",
            "-q",
            "-c",
            "40",
            "-i",
            "0.05",
            "-W",
            "1",
            "10.50.2.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ping");
    drop(dp); // the daemon exits
    std::thread::sleep(Duration::from_millis(300));
    let (mut dp, attached) = lab.load_and_attach(mode);
    assert_eq!(attached, Attached::Replaced, "the restart reuses the attachment");
    let stats = dp.sync_blocks(&rules).expect("sync blocks after restart");
    assert!(stats.wrote_nothing(), "the same rules change nothing: {stats:?}");
    assert_eq!(stats.unchanged, 4, "two sources and two pairs: {stats:?}");
    let out = pinger.wait_with_output().expect("wait for ping");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains(" 0 received"), "a packet got through during the restart: {summary}");
    assert!(count(&dp, Verdict::DropBlocked) >= 40, "counters survive the restart too");

    // The reloaded program and maps are the live ones.
    dp.sync_blocks(&[]).expect("clear blocks");
    assert!(reachable(&lab.pod, "10.50.2.2"), "unblocked by the restarted daemon");
    // Detaching leaves traffic flowing and no pin behind.
    lab.in_node(|| assert!(dp.detach(ProgramKind::Classify, &lab.pod_veth).expect("detach")));
    assert!(!dp.link_pin_path(ProgramKind::Classify, &lab.pod_veth).exists());
    assert!(reachable(&lab.pod, "10.50.2.2"));
    // Detaching again finds nothing, and is no error.
    lab.in_node(|| assert!(!dp.detach(ProgramKind::Classify, &lab.pod_veth).expect("detach again")));
    if mode == AttachMode::Netlink {
        // What removing vpblu from a node calls on every pod interface,
        // including one that never had clsact: nothing there, no error.
        lab.in_node(|| {
            let detached = vpblu_daemon::bpf::dataplane::detach_netlink(ProgramKind::Classify, "lo");
            assert!(!detached.expect("detach from an interface without clsact"));
        });
    }
}

#[test]
fn blocks_survive_a_restart_with_tcx_links() {
    blocks_survive_a_restart(AttachMode::Tcx);
}

#[test]
fn blocks_survive_a_restart_with_netlink_filters() {
    blocks_survive_a_restart(AttachMode::Netlink);
}

#[test]
fn a_pin_of_another_shape_is_refused() {
    let lab = Lab::new();
    assert!(
        Command::new("bpftool").arg("version").output().is_ok_and(|o| o.status.success()),
        "`bpftool` is missing: apt-get install bpftool (or run tools/install-deps.sh)"
    );
    drop(lab.load_and_attach(AttachMode::Tcx));
    // Replace one pinned map by a map of a different shape, as an
    // incompatible older build would have left it.
    let pin = lab.pin_dir.join(layout::CONFIG.name);
    std::fs::remove_file(&pin).unwrap();
    run(
        "bpftool",
        &[
            "map",
            "create",
            pin.to_str().unwrap(),
            "type",
            "array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "1",
            "name",
            "mesh_config",
        ],
    );
    let err =
        Dataplane::load(&lab.pin_dir, AttachMode::Tcx).expect_err("an incompatible pin must be refused");
    let text = err.to_string();
    assert!(
        text.contains(pin.to_str().unwrap()) && text.contains("rm "),
        "the error names the pin and the fix: {text}"
    );
}

#[test]
fn ten_thousand_block_rules_load_and_other_traffic_passes() {
    let lab = Lab::new();
    let (mut dp, _) = lab.load_and_attach(AttachMode::Tcx);
    // 100 source /24s × 100 destination /24s, plus the pod's own subnet
    // blocked towards somewhere else: its packets take the full path
    // (source class found, no pair) and must still pass.
    let mut rules = Vec::with_capacity(10_001);
    for a in 0..100u8 {
        for b in 0..100u8 {
            rules.push(BlockRule {
                from: Cidr::new(IpAddr::from([10, 60, a, 0]), 24).unwrap(),
                to: Cidr::new(IpAddr::from([10, 70, b, 0]), 24).unwrap(),
            });
        }
    }
    rules.push(rule("10.50.1.0/24", "10.99.0.0/16"));
    let started = Instant::now();
    let stats = dp.sync_blocks(&rules).expect("sync 10,001 block rules");
    let first = started.elapsed();
    assert_eq!(stats.added, 101 + 10_001, "{stats:?}");
    let started = Instant::now();
    let again = dp.sync_blocks(&rules).expect("sync the same rules again");
    let second = started.elapsed();
    assert!(again.wrote_nothing(), "{again:?}");
    println!("sync_blocks with {} rules: {first:?} to load, {second:?} to confirm unchanged", rules.len());

    assert!(reachable(&lab.pod, "10.50.2.2"), "traffic matching no rule passes");
    assert_eq!(classify_verdict(&dp, "10.60.42.7", "10.70.99.1"), TC_ACT_SHOT);
    assert_eq!(classify_verdict(&dp, "10.60.42.7", "10.71.0.1"), TC_ACT_OK);
    assert_eq!(classify_verdict(&dp, "10.50.1.2", "10.99.3.3"), TC_ACT_SHOT);

    // Removing one rule removes exactly its pair.
    let removed = rules.remove(0);
    let stats = dp.sync_blocks(&rules).expect("sync one rule less");
    assert_eq!((stats.added, stats.changed, stats.removed), (0, 0, 1), "{stats:?}");
    let (src, dst) = (removed.from.addr().to_string(), removed.to.addr().to_string());
    assert_eq!(classify_verdict(&dp, &src, &dst), TC_ACT_OK);
}

/// An IP packet with no link-layer header, as deliver sees it on an L3
/// device (WireGuard, TUN). Padded: BPF_PROG_TEST_RUN wants a whole IP
/// header after what it takes for the Ethernet header.
fn l3_packet(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut packet = frame(src, dst).split_off(14);
    packet.resize(packet.len() + 64, 0);
    packet
}

#[test]
fn deliver_reads_the_ip_header_at_offset_zero() {
    let lab = Lab::new();
    let (mut dp, _) = lab.load_and_attach(AttachMode::Tcx);
    // BPF_PROG_TEST_RUN always parses its input as Ethernet to set
    // skb->protocol. A source address beginning 8.0 (IPv4) or with 86dd in
    // its third group (IPv6) puts the right EtherType at bytes 12..14 of the
    // bare IP packet, so the run sees exactly what an L3 device delivers.
    dp.sync_blocks(&[rule("8.0.0.0/16", "10.50.2.0/24"), rule("fd50:0:86dd::/48", "fd50:2::/64")])
        .expect("sync blocks");
    let verdict = |src: &str, dst: &str| {
        let packet = l3_packet(src.parse().unwrap(), dst.parse().unwrap());
        dp.test_run(ProgramKind::Deliver, &packet, 1).expect("test run deliver").return_value
    };
    assert_eq!(verdict("8.0.1.2", "10.50.2.2"), TC_ACT_SHOT, "blocked pair arriving from the mesh");
    assert_eq!(verdict("8.0.1.2", "10.50.3.3"), TC_ACT_OK);
    assert_eq!(
        verdict("fd50:0:86dd::2", "fd50:2::2"),
        TC_ACT_SHOT,
        "blocked IPv6 pair arriving from the mesh"
    );
    assert_eq!(verdict("fd50:0:86dd::2", "fd50:3::2"), TC_ACT_OK);
    let counters = dp.counters().expect("counters");
    assert_eq!(counters[&Verdict::DeliverDropBlocked], 2);
    assert_eq!(counters[&Verdict::DeliverPass], 2);
    assert_eq!(counters[&Verdict::DropBlocked], 0, "deliver counts under its own verdicts");
}

#[test]
fn a_destination_blocked_from_many_source_lengths_is_matched_at_every_length() {
    let lab = Lab::new();
    let (mut dp, _) = lab.load_and_attach(AttachMode::Tcx);
    dp.set_config(MARK, true).expect("config");
    // The destination is a peer's CIDR: its block entry also says "mark".
    dp.sync_destinations(&[(cidr("10.99.0.0/16"), DstEntry::peer()), (cidr("fd99::/16"), DstEntry::peer())])
        .expect("sync destinations");
    // Ten source lengths towards one destination: more than a destination
    // entry lists, so the programs probe every length.
    let mut rules = Vec::new();
    for len in 16u8..26 {
        rules.push(BlockRule {
            from: Cidr::containing(IpAddr::from([10, len, 0, 0]), len).unwrap(),
            to: cidr("10.99.1.0/24"),
        });
        rules.push(BlockRule {
            from: Cidr::containing(IpAddr::from([0xfd10, u16::from(len), 0, 0, 0, 0, 0, 0]), 32 + len)
                .unwrap(),
            to: cidr("fd99:1::/48"),
        });
    }
    dp.sync_blocks(&rules).expect("sync blocks");
    for r in &rules {
        let dst = if r.to.is_ipv4() { "10.99.1.1" } else { "fd99:1::1" };
        assert_eq!(classify_verdict(&dp, &r.from.addr().to_string(), dst), TC_ACT_SHOT, "{r:?}");
    }
    // Covered or not, a peer's CIDR is marked.
    for (src, dst, why) in [
        ("10.9.0.1", "10.99.1.1", "a source no rule names"),
        ("fd10:9::1", "fd99:1::1", "a source no rule names (IPv6)"),
        ("10.16.0.1", "10.99.2.1", "outside the blocked /24"),
    ] {
        let before = count(&dp, Verdict::ToMesh);
        assert_eq!(classify_verdict(&dp, src, dst), TC_ACT_OK, "{why}");
        assert_eq!(count(&dp, Verdict::ToMesh), before + 1, "{why}: {src} -> {dst} is marked");
    }
    assert_eq!(count(&dp, Verdict::DropBlocked), rules.len() as u64);
}

/// What classify did with one packet: its return value and the verdict it
/// counted.
fn outcome(dp: &Dataplane, src: IpAddr, dst: IpAddr) -> (u32, Verdict) {
    let before = dp.counters().expect("counters");
    let packet = frame(src, dst);
    let ret = dp.test_run(ProgramKind::Classify, &packet, 1).expect("test run classify").return_value;
    let after = dp.counters().expect("counters");
    let counted: Vec<Verdict> = Verdict::ALL.into_iter().filter(|v| after[v] != before[v]).collect();
    assert_eq!(counted.len(), 1, "{src} -> {dst} counted {counted:?}");
    (ret, counted[0])
}

#[test]
fn hash_probes_and_the_trie_walk_find_the_same_longest_match() {
    let lab = Lab::new();
    // Loaded, not attached: only the test runs below are counted.
    let mut dp = Dataplane::load(&lab.pin_dir, AttachMode::Tcx).expect("load the data plane");
    dp.set_config(MARK, true).expect("config");
    // Peers' /24s (/64s) inside an unreachable cluster /16 (/32), and block
    // destinations of a third length, one of them inside a peer's CIDR.
    let mut destinations = vec![
        (cidr("10.50.0.0/16"), DstEntry::unreachable(UnreachableReason::NotPeered)),
        (cidr("fd50::/32"), DstEntry::unreachable(UnreachableReason::NotPeered)),
    ];
    for x in 1..8 {
        destinations.push((cidr(&format!("10.50.{x}.0/24")), DstEntry::peer()));
        destinations.push((cidr(&format!("fd50:0:{x}::/64")), DstEntry::peer()));
    }
    dp.sync_destinations(&destinations).expect("sync destinations");
    let rules = vec![
        rule("10.60.0.0/16", "10.50.3.0/24"),
        rule("10.61.1.0/24", "10.50.4.128/25"),
        rule("fd60::/32", "fd50:0:3::/64"),
        rule("fd61:0:1::/48", "fd50:0:4:0:8000::/65"),
    ];
    dp.sync_blocks(&rules).expect("sync blocks");
    let lens = dp.dst_lens().expect("lengths");
    assert_eq!((lens.nlens_v4, lens.lens_v4), (3, [25, 24, 16, 0]), "three IPv4 lengths: hash probes");
    assert_eq!((lens.nlens_v6, lens.lens_v6), (3, [65, 64, 32, 0]), "three IPv6 lengths: hash probes");

    // Every source region against every destination region, both families.
    let mut packets = Vec::new();
    for (src, v6src) in
        [("10.50.1.9", "fd50:0:1::9"), ("10.60.7.1", "fd60::7:1"), ("10.61.1.5", "fd61:0:1::5")]
    {
        for x in 0..10u8 {
            for host in [1u8, 127, 128, 250] {
                packets.push((ip_of(src), IpAddr::from([10, 50, x, host])));
                let dst =
                    [0xfd50, 0, u16::from(x), 0, if host >= 128 { 0x8000 } else { 0 }, 0, 0, u16::from(host)];
                packets.push((ip_of(v6src), IpAddr::from(dst)));
            }
        }
        packets.push((ip_of(src), ip_of("10.51.0.1")));
        packets.push((ip_of(v6src), ip_of("2001:db8::1")));
    }
    let by_hash: Vec<_> = packets.iter().map(|(s, d)| outcome(&dp, *s, *d)).collect();

    // The expected answers, so the comparison below compares right ones.
    let expect = |src: &str, dst: &str| outcome(&dp, ip_of(src), ip_of(dst));
    assert_eq!(expect("10.60.7.1", "10.50.3.1"), (TC_ACT_SHOT, Verdict::DropBlocked));
    assert_eq!(expect("10.61.1.5", "10.50.4.250"), (TC_ACT_SHOT, Verdict::DropBlocked));
    assert_eq!(expect("10.61.1.5", "10.50.4.127"), (TC_ACT_OK, Verdict::ToMesh), "outside the /25");
    assert_eq!(expect("10.50.1.9", "10.50.9.1"), (TC_ACT_SHOT, Verdict::DropUnreachableNotPeered));
    assert_eq!(expect("10.50.1.9", "10.51.0.1"), (TC_ACT_OK, Verdict::PassLocal));
    assert_eq!(expect("fd61:0:1::5", "fd50:0:4:0:8000::1"), (TC_ACT_SHOT, Verdict::DropBlocked));
    assert_eq!(expect("fd61:0:1::5", "fd50:0:4::1"), (TC_ACT_OK, Verdict::ToMesh));

    // Block destinations of three more lengths elsewhere: more lengths
    // than the record lists, so both families walk the tries.
    let mut more = rules.clone();
    for to in ["172.16.0.0/12", "172.32.0.0/13", "172.40.0.0/14", "fd70::/20", "fd71::/21", "fd72::/22"] {
        let from = if to.contains(':') { "fd99::/16" } else { "10.99.0.0/16" };
        more.push(rule(from, to));
    }
    dp.sync_blocks(&more).expect("sync more blocks");
    let lens = dp.dst_lens().expect("lengths");
    assert_eq!((lens.nlens_v4, lens.nlens_v6), (0, 0), "six lengths per family: the tries");
    let by_trie: Vec<_> = packets.iter().map(|(s, d)| outcome(&dp, *s, *d)).collect();
    for (i, (src, dst)) in packets.iter().enumerate() {
        assert_eq!(by_hash[i], by_trie[i], "{src} -> {dst}: hash probes and trie walk disagree");
    }
    assert_eq!(outcome(&dp, ip_of("10.99.0.1"), ip_of("172.41.0.1")), (TC_ACT_SHOT, Verdict::DropBlocked));

    // Back to three lengths: hash probes again, same answers.
    dp.sync_blocks(&rules).expect("sync fewer blocks");
    assert_eq!(dp.dst_lens().expect("lengths").nlens_v4, 3);
    let again: Vec<_> = packets.iter().map(|(s, d)| outcome(&dp, *s, *d)).collect();
    assert_eq!(again, by_hash, "the hash copy is exact again after the trie detour");
}

fn ip_of(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}
