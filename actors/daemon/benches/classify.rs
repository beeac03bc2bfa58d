//! Per-packet cost of classify with 10,000 IPv4 and 10,000 IPv6 block
//! rules loaded, measured by the kernel with BPF_PROG_TEST_RUN (through
//! aya): the kernel runs the program on one frame `repeat` times and
//! reports the mean time per run.
//!
//! Two views, both printed with the verdict each packet got:
//! - per scenario, hot: one frame 1,000,000 times (maps and trie nodes in
//!   cache): each path classify can take, including the worst (a
//!   destination that block rules cover: the destination lookup plus every
//!   source probe). Each path twice: with the destination table probed by
//!   hash, one probe per prefix length (the bench's table has two per
//!   family), and by trie walk, as a table with more lengths is;
//! - a mix: 4,096 distinct frames (v4 and v6; covered, blocked, uncovered
//!   and non-mesh destinations) each run once per pass, so consecutive
//!   runs take different trie paths. A single run's figure includes the
//!   kernel's two clock reads around it, so the non-IP floor measured the
//!   same way is printed beside it.
//!
//! `cargo bench -p vpblu-daemon --bench classify` as root. Fails loudly
//! without root. Uses its own pin directory under /sys/fs/bpf and removes it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use vpblu_daemon::bpf::layout::DST_LENS;
use vpblu_daemon::bpf::{AttachMode, Dataplane, DstEntry, ProgramKind, Verdict};
use vpblu_e2e::bench_goal::goal;
use vpblu_e2e::netns::PinDir;
use vpblu_messages::{BlockRule, Cidr, UnreachableReason};

const REPEAT: u32 = 1_000_000;
const MIX_PACKETS: usize = 4096;
const MIX_PASSES: usize = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const MARK: u32 = 0x5650;

fn frame(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 58, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&[128, 0, 0, 0, 0, 0, 0, 0]);
        }
        _ => panic!("mixed families"),
    }
    f
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// One path through classify: what the packet is, and what classify must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Destination a peer that block rules cover; the source is not blocked.
    CoveredMarked,
    /// A blocked pair.
    Blocked,
    /// Destination a peer that no rule covers.
    UncoveredMarked,
    /// Destination outside the mesh.
    NotMesh,
}

impl Scenario {
    fn expect(self) -> (u32, Verdict) {
        match self {
            Scenario::CoveredMarked | Scenario::UncoveredMarked => (TC_ACT_OK, Verdict::ToMesh),
            Scenario::Blocked => (TC_ACT_SHOT, Verdict::DropBlocked),
            Scenario::NotMesh => (TC_ACT_OK, Verdict::PassLocal),
        }
    }
}

/// Addresses for packet `i` of path `p` (v6 when `v6`); `i` picks the
/// /24 (/64) so that different packets walk different trie paths.
fn addresses(p: Scenario, v6: bool, i: usize) -> (IpAddr, IpAddr) {
    let (a, b, h) = ((i * 37) % 100, (i * 61) % 100, 1 + i % 250);
    let text = match (p, v6) {
        // 10.50.0.0/16 (fd50::/32): local pods, named by no rule.
        (Scenario::CoveredMarked, false) => (format!("10.50.{a}.{h}"), format!("10.70.{b}.{h}")),
        (Scenario::CoveredMarked, true) => (format!("fd50:{a}::{h:x}"), format!("fd70:{b}::{h:x}")),
        (Scenario::Blocked, false) => (format!("10.60.{a}.{h}"), format!("10.70.{b}.{h}")),
        (Scenario::Blocked, true) => (format!("fd60:{a}::{h:x}"), format!("fd70:{b}::{h:x}")),
        (Scenario::UncoveredMarked, false) => (format!("10.60.{a}.{h}"), format!("10.80.{b}.{h}")),
        (Scenario::UncoveredMarked, true) => (format!("fd60:{a}::{h:x}"), format!("fd80:{b}::{h:x}")),
        (Scenario::NotMesh, false) => (format!("10.50.{a}.{h}"), format!("192.168.{b}.{h}")),
        (Scenario::NotMesh, true) => (format!("fd50:{a}::{h:x}"), format!("2001:db8:{b}::{h:x}")),
    };
    (ip(&text.0), ip(&text.1))
}

fn verdict_delta(dp: &Dataplane, before: &std::collections::BTreeMap<Verdict, u64>, v: Verdict) -> u64 {
    dp.counters().expect("counters")[&v] - before[&v]
}

/// Runs one frame `REPEAT` times; checks the return value and the counter.
fn hot(dp: &Dataplane, label: &str, p: Scenario, v6: bool) -> f64 {
    let (src, dst) = addresses(p, v6, 7);
    let packet = frame(src, dst);
    let (expect, verdict) = p.expect();
    // Warm up caches and the trie nodes once.
    dp.test_run(ProgramKind::Classify, &packet, 10_000).expect("test run");
    let before = dp.counters().expect("counters");
    let outcome = dp.test_run(ProgramKind::Classify, &packet, REPEAT).expect("test run");
    assert_eq!(outcome.return_value, expect, "{label} ({src} -> {dst}): unexpected return value");
    assert_eq!(
        verdict_delta(dp, &before, verdict),
        u64::from(REPEAT),
        "{label} ({src} -> {dst}): every run counts as {verdict:?}"
    );
    let ns = outcome.per_run.as_nanos() as f64;
    println!("  {label:<62} {ns:>5.0} ns  ({}, {src} -> {dst})", verdict.as_str());
    ns
}

/// Every path classify takes for a mesh member's packet, both families.
fn paths() -> Vec<(String, Scenario, bool)> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        for (p, what) in [
            (Scenario::CoveredMarked, "destination covered by rules, source not blocked: marked"),
            (Scenario::Blocked, "blocked pair: dropped"),
            (Scenario::UncoveredMarked, "destination a peer no rule covers: marked"),
            (Scenario::NotMesh, "destination outside the mesh: passed"),
        ] {
            out.push((format!("{family}, {what}"), p, v6));
        }
    }
    out
}

fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the classify bench loads eBPF programs: run it as root (sudo -E cargo bench -p vpblu-daemon --bench classify)"
    );
    let pin = PinDir(PathBuf::from(format!("/sys/fs/bpf/vpblu-bench-{}", std::process::id())));
    let mut dp =
        Dataplane::load(Path::new(&pin.0), AttachMode::for_running_kernel()).expect("load the data plane");

    // 100 source subnets × 100 destination subnets per family; the
    // destinations are peers' pod CIDRs.
    let mut rules = Vec::with_capacity(20_000);
    for a in 0..100u8 {
        for b in 0..100u8 {
            rules.push(BlockRule {
                from: cidr(&format!("10.60.{a}.0/24")),
                to: cidr(&format!("10.70.{b}.0/24")),
            });
            rules.push(BlockRule {
                from: cidr(&format!("fd60:{a}::/64")),
                to: cidr(&format!("fd70:{b}::/64")),
            });
        }
    }
    // 200 peers per family (100 covered by rules, 100 not) and an
    // unreachable cluster CIDR, as a strict node holds them.
    let mut destinations = Vec::new();
    for b in 0..100u8 {
        for prefix in [
            format!("10.70.{b}.0/24"),
            format!("10.80.{b}.0/24"),
            format!("fd70:{b}::/64"),
            format!("fd80:{b}::/64"),
        ] {
            destinations.push((cidr(&prefix), DstEntry::peer()));
        }
    }
    destinations.push((cidr("10.90.0.0/16"), DstEntry::unreachable(UnreachableReason::NotPeered)));
    destinations.push((cidr("fd90::/32"), DstEntry::unreachable(UnreachableReason::NotPeered)));
    dp.set_config(MARK, true).expect("config");
    dp.sync_destinations(&destinations).expect("destinations");
    let started = std::time::Instant::now();
    let stats = dp.sync_blocks(&rules).expect("load 20,000 block rules");
    println!(
        "loaded {} block rules (10,000 IPv4 + 10,000 IPv6) and {} destinations in {:?}: {} entries written",
        rules.len(),
        destinations.len(),
        started.elapsed(),
        stats.added + stats.changed
    );

    let lens = dp.dst_lens().expect("lengths");
    assert!(lens.nlens_v4 > 0 && lens.nlens_v6 > 0, "two lengths per family: hash probes ({lens:?})");
    println!("BPF_PROG_TEST_RUN, hot: one frame {REPEAT} times each");
    let paths = paths();
    let by_hash: Vec<f64> = paths.iter().map(|(label, p, v6)| hot(&dp, label, *p, *v6)).collect();
    let mut worst = by_hash.iter().copied().fold(0.0, f64::max);

    // The same paths with the destination table looked up by trie walk, as
    // a table with more than DST_LENS prefix lengths per family is: block
    // destinations of three more lengths where no packet below goes.
    let mut more = rules.clone();
    for to in ["172.16.0.0/12", "172.32.0.0/13", "172.40.0.0/14", "fd71::/20", "fd72::/21", "fd73::/22"] {
        let from = if to.contains(':') { "fd99::/16" } else { "10.99.0.0/16" };
        more.push(BlockRule { from: cidr(from), to: cidr(to) });
    }
    dp.sync_blocks(&more).expect("block destinations of three more lengths");
    let lens = dp.dst_lens().expect("lengths");
    assert_eq!((lens.nlens_v4, lens.nlens_v6), (0, 0), "five lengths per family: the trie");
    println!("the same paths with {} destination prefix lengths per family: trie walk", DST_LENS + 1);
    let by_trie: Vec<f64> = paths.iter().map(|(label, p, v6)| hot(&dp, label, *p, *v6)).collect();
    dp.sync_blocks(&rules).expect("back to the 20,000 rules");
    println!("per path: hash probes (<= {} lengths) vs trie walk", DST_LENS);
    for (i, (label, _, _)) in paths.iter().enumerate() {
        println!("  {label:<62} {:>5.0} ns  {:>5.0} ns", by_hash[i], by_trie[i]);
    }
    // Strict mode: an unreachable cluster CIDR.
    let packet = frame(ip("10.50.1.2"), ip("10.90.3.4"));
    let strict = dp.test_run(ProgramKind::Classify, &packet, REPEAT).expect("test run");
    assert_eq!(strict.return_value, TC_ACT_SHOT, "strict mode drops an unreachable destination");
    println!(
        "  {:<62} {:>5} ns",
        "IPv4, strict, unreachable cluster CIDR: dropped",
        strict.per_run.as_nanos()
    );
    worst = worst.max(strict.per_run.as_nanos() as f64);
    // The floor: an ARP frame is counted and passed without a lookup.
    let mut arp = frame(ip("10.0.0.1"), ip("10.0.0.2"));
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let floor = dp.test_run(ProgramKind::Classify, &arp, REPEAT).expect("test run");
    println!("  {:<62} {:>5} ns", "non-IP frame: no lookup (test-run floor)", floor.per_run.as_nanos());

    // The mix: 40 % covered-but-allowed, 10 % blocked, 30 % uncovered
    // peers, 20 % outside the mesh; half IPv6.
    let mut mix = Vec::with_capacity(MIX_PACKETS);
    for i in 0..MIX_PACKETS {
        let p = match i % 10 {
            0..=3 => Scenario::CoveredMarked,
            4 => Scenario::Blocked,
            5..=7 => Scenario::UncoveredMarked,
            _ => Scenario::NotMesh,
        };
        let (src, dst) = addresses(p, (i / 10) % 2 == 1, i);
        mix.push((frame(src, dst), p.expect().0));
    }
    let (mut total, mut floor_total) = (0u128, 0u128);
    for _ in 0..MIX_PASSES {
        for (packet, expect) in &mix {
            let outcome = dp.test_run(ProgramKind::Classify, packet, 1).expect("test run");
            assert_eq!(outcome.return_value, *expect, "mix: unexpected return value");
            total += outcome.per_run.as_nanos();
            floor_total += dp.test_run(ProgramKind::Classify, &arp, 1).expect("test run").per_run.as_nanos();
        }
    }
    let runs = (MIX_PACKETS * MIX_PASSES) as f64;
    let (mix_ns, mix_floor) = (total as f64 / runs, floor_total as f64 / runs);
    println!(
        "mix of {MIX_PACKETS} distinct frames, {MIX_PASSES} passes, one run each: {mix_ns:.0} ns/packet \
         (non-IP floor measured the same way: {mix_floor:.0} ns; difference {:.0} ns)",
        mix_ns - mix_floor
    );
    // The floor is the harness's own cost (context, clock reads, the
    // program's entry): the ratio is what survives a slower or busier machine.
    let floor_ns = floor.per_run.as_nanos() as f64;
    let ratio = worst / floor_ns;
    let worst_trie = by_trie.iter().copied().fold(0.0, f64::max);
    println!(
        "classify with 10000 IPv4 + 10000 IPv6 block rules: {worst:.0} ns/packet on the slowest path, \
         {ratio:.2}x the non-IP floor of {floor_ns:.0} ns in the same run (goal < 100 ns); \
         {worst_trie:.0} ns ({:.2}x) when the destination table has more than {} prefix lengths per family",
        worst_trie / floor_ns,
        DST_LENS
    );
    goal(
        "classify slowest path, 10k v4 + 10k v6 block rules",
        "< 100 ns",
        &format!("{worst:.0} ns ({ratio:.2}x the {floor_ns:.0} ns floor)"),
        worst < 100.0,
    );
}
