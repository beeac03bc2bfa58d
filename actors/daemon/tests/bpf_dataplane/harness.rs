//! Namespaces, veths, pins and packets for the BPF data-plane tests.

use super::*;

pub(crate) const MARK: u32 = 0x5650;
pub(crate) const TC_ACT_OK: u32 = 0;
pub(crate) const TC_ACT_SHOT: u32 = 2;

pub(crate) fn require_root_and_tools() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the BPF data-plane tests need root (network namespaces, bpf(2), tc): run them as root"
    );
    for tool in ["ip", "ping"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        assert!(
            found,
            "`{tool}` is not on PATH: apt-get install iproute2 iputils-ping (or run tools/install-deps.sh)"
        );
    }
}

pub(crate) fn run(program: &str, args: &[&str]) {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

pub(crate) fn ip(args: &[&str]) {
    run("ip", args);
}

/// True when `ns` gets a ping reply from `addr` within a few tries
/// (neighbour discovery on fresh veths can eat the first one).
pub(crate) fn reachable(ns: &str, addr: &str) -> bool {
    (0..5).any(|_| ping_once(ns, addr, "1"))
}

/// True when two pings from `ns` to `addr` both go unanswered.
pub(crate) fn unreachable(ns: &str, addr: &str) -> bool {
    !ping_once(ns, addr, "2")
}

pub(crate) fn ping_once(ns: &str, addr: &str, count: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-q", "-c", count, "-i", "0.2", "-W", "1", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ping")
        .success()
}

/// A test's own namespaces and pin directory, removed on drop.
pub(crate) struct Lab {
    pub(crate) pod: String,
    pub(crate) node: String,
    pub(crate) remote: String,
    /// Host side of the pod veth, in `node`.
    pub(crate) pod_veth: String,
    pub(crate) pin_dir: PathBuf,
}

pub(crate) static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// Namespaces pod (10.50.1.2, fd50:1::2) — node (forwarding) — remote
    /// (10.50.2.2, fd50:2::2), each link a veth pair.
    pub(crate) fn new() -> Lab {
        require_root_and_tools();
        let tag = format!("{:x}x{}", std::process::id() & 0xfffff, NEXT.fetch_add(1, Ordering::Relaxed));
        let lab = Lab {
            pod: format!("vpblu-pod-{tag}"),
            node: format!("vpblu-node-{tag}"),
            remote: format!("vpblu-remote-{tag}"),
            pod_veth: format!("vh{tag}"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/vpblu-test-{tag}")),
        };
        let (pod, node, remote) = (lab.pod.as_str(), lab.node.as_str(), lab.remote.as_str());
        let (vh, vc, vr, vs) =
            (lab.pod_veth.as_str(), &format!("vc{tag}"), &format!("vr{tag}"), &format!("vs{tag}"));
        for ns in [pod, node, remote] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", node, "link", "add", vh, "type", "veth", "peer", "name", vc, "netns", pod]);
        ip(&["-n", node, "link", "add", vr, "type", "veth", "peer", "name", vs, "netns", remote]);
        for (ns, dev, v4, v6) in [
            (pod, vc.as_str(), "10.50.1.2/24", "fd50:1::2/64"),
            (node, vh, "10.50.1.1/24", "fd50:1::1/64"),
            (node, vr.as_str(), "10.50.2.1/24", "fd50:2::1/64"),
            (remote, vs.as_str(), "10.50.2.2/24", "fd50:2::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", pod, "route", "add", "default", "via", "10.50.1.1"]);
        ip(&["-n", pod, "-6", "route", "add", "default", "via", "fd50:1::1"]);
        ip(&["-n", remote, "route", "add", "default", "via", "10.50.2.1"]);
        ip(&["-n", remote, "-6", "route", "add", "default", "via", "fd50:2::1"]);
        ip(&["netns", "exec", node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        ip(&["netns", "exec", node, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
        lab
    }

    /// Runs `f` on a thread that has entered the node namespace.
    pub(crate) fn in_node<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.node, f)
    }

    /// Loads the data plane with this lab's pin directory and attaches
    /// classify to the pod veth, from inside the node namespace.
    pub(crate) fn load_and_attach(&self, mode: AttachMode) -> (Dataplane, Attached) {
        self.in_node(|| {
            let mut dp = Dataplane::load(&self.pin_dir, mode).expect("load the data plane");
            let attached = dp.attach_classify(&self.pod_veth).expect("attach classify");
            (dp, attached)
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.node, &self.remote] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        remove_pin_dir(&self.pin_dir);
    }
}

pub(crate) fn remove_pin_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

pub(crate) fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

pub(crate) fn rule(from: &str, to: &str) -> BlockRule {
    BlockRule { from: cidr(from), to: cidr(to) }
}

pub(crate) fn count(dp: &Dataplane, v: Verdict) -> u64 {
    dp.counters().expect("read counters")[&v]
}

/// An Ethernet frame carrying an IPv4 (or IPv6) ICMP header from src to dst.
pub(crate) fn frame(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut h = [0u8; 28];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&28u16.to_be_bytes());
            h[8] = 64;
            h[9] = 1;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            h[20] = 8;
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut h = [0u8; 48];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&8u16.to_be_bytes());
            h[6] = 58;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            h[40] = 128;
            f.extend_from_slice(&h);
        }
        _ => panic!("mixed families"),
    }
    f
}

pub(crate) fn classify_verdict(dp: &Dataplane, src: &str, dst: &str) -> u32 {
    let packet = frame(src.parse().unwrap(), dst.parse().unwrap());
    dp.test_run(ProgramKind::Classify, &packet, 1).expect("test run classify").return_value
}
