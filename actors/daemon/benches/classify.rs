//! Per-packet cost of classify with 10,000 block rules loaded, measured by
//! the kernel with BPF_PROG_TEST_RUN (through aya): the program runs
//! `REPEAT` times on one frame and the kernel reports the mean time per run.
//!
//! `cargo bench -p vpblu-daemon --bench classify` as root. Fails loudly
//! without root. Uses its own pin directory under /sys/fs/bpf and removes it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use vpblu_daemon::bpf::{AttachMode, Dataplane, DstEntry, ProgramKind};
use vpblu_messages::{BlockRule, Cidr};

const REPEAT: u32 = 1_000_000;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

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

fn measure(dp: &Dataplane, label: &str, src: &str, dst: &str, expect: u32) -> f64 {
    let packet = frame(src.parse().expect("address"), dst.parse().expect("address"));
    // Warm up caches and the trie nodes once.
    dp.test_run(ProgramKind::Classify, &packet, 10_000).expect("test run");
    let outcome = dp.test_run(ProgramKind::Classify, &packet, REPEAT).expect("test run");
    assert_eq!(outcome.return_value, expect, "{label}: unexpected verdict");
    let ns = outcome.per_run.as_nanos() as f64;
    println!("  {label:<58} {ns:>6.0} ns/packet");
    ns
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful either.
    assert!(
        rustix::process::geteuid().is_root(),
        "the classify bench loads eBPF programs: run it as root (sudo -E cargo bench -p vpblu-daemon --bench classify)"
    );
    let pin = PinDir(PathBuf::from(format!("/sys/fs/bpf/vpblu-bench-{}", std::process::id())));
    let mut dp =
        Dataplane::load(Path::new(&pin.0), AttachMode::for_running_kernel()).expect("load the data plane");

    let mut rules = Vec::with_capacity(10_000);
    for a in 0..100u8 {
        for b in 0..100u8 {
            rules.push(BlockRule {
                from: Cidr::new(IpAddr::from([10, 60, a, 0]), 24).expect("cidr"),
                to: Cidr::new(IpAddr::from([10, 70, b, 0]), 24).expect("cidr"),
            });
        }
    }
    let started = std::time::Instant::now();
    dp.sync_blocks(&rules).expect("load 10,000 block rules");
    println!("loaded {} block rules in {:?}", rules.len(), started.elapsed());
    dp.set_config(0x5650, true).expect("config");
    dp.sync_destinations(&[
        ("10.80.0.0/16".parse().expect("cidr"), DstEntry::peer()),
        ("fd80::/48".parse().expect("cidr"), DstEntry::peer()),
    ])
    .expect("destinations");

    println!("BPF_PROG_TEST_RUN, {REPEAT} runs each:");
    // The common case on a node: a pod whose subnet has block rules sends
    // to a peer's pod CIDR that no rule covers — source class found, pair
    // missed, destination found, mark set: every lookup classify does.
    let headline = measure(
        &dp,
        "source in a blocked class, destination a peer (marked)",
        "10.60.42.7",
        "10.80.1.1",
        TC_ACT_OK,
    );
    measure(&dp, "blocked pair (dropped)", "10.60.42.7", "10.70.17.1", TC_ACT_SHOT);
    measure(
        &dp,
        "source matches no rule, destination not in the mesh",
        "192.168.1.1",
        "192.168.2.2",
        TC_ACT_OK,
    );
    measure(&dp, "IPv6, no rule, destination a peer (marked)", "fd90::1", "fd80::2", TC_ACT_OK);
    // The floor: an ARP frame is counted and passed without a lookup.
    let mut arp = frame("10.0.0.1".parse().expect("address"), "10.0.0.2".parse().expect("address"));
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let floor = dp.test_run(ProgramKind::Classify, &arp, REPEAT).expect("test run");
    println!(
        "  {:<58} {:>6} ns/packet",
        "non-IP frame: no lookup (test-run floor)",
        floor.per_run.as_nanos()
    );
    println!("classify with 10000 block rules: {headline:.0} ns/packet");
}
