//! Network namespaces for data-plane tests: one per "node" or "pod", veth
//! pairs between them, an underlay bridge in a namespace of its own, and a
//! guard that tears it all down (processes by PID, files, namespaces) when
//! dropped, including while a failing test unwinds.
//!
//! Namespaces are named `PREFIX-PID-N`, so parallel tests and test binaries
//! never collide. [`Netns::run`] goes through `ip netns exec` (fine for
//! commands; it remounts /sys, so not for bpffs work); [`Netns::enter`] runs
//! a closure on a fresh thread that `setns(2)`s into the namespace: netlink,
//! sockets, bpffs, and processes spawned from it all live there.
//!
//! Tests that need this call [`require_root_and`] first: a missing privilege
//! or tool fails the test with a message saying what is missing; it never
//! skips.

use std::fs::File;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Panics unless running as root with every tool in `tools` on `PATH`,
/// naming what is missing (and the Debian package that has it).
pub fn require_root_and(tools: &[&str]) {
    let mut missing = Vec::new();
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        missing.push(format!("root (running as uid {})", euid.as_raw()));
    }
    for tool in tools {
        if which(tool).is_none() {
            let package = match *tool {
                "ip" | "bridge" | "tc" => Some("iproute2"),
                "ping" => Some("iputils-ping"),
                "tcpdump" => Some("tcpdump"),
                "bpftool" => Some("bpftool"),
                "wg" => Some("wireguard-tools"),
                "qemu-system-x86_64" => Some("qemu-system-x86"),
                "debootstrap" => Some("debootstrap"),
                _ => None,
            };
            missing.push(match package {
                Some(p) => format!("`{tool}` on PATH (Debian package {p})"),
                None => format!("`{tool}` on PATH"),
            });
        }
    }
    assert!(
        missing.is_empty(),
        "this test needs {} (it does not skip): run it as root on a machine set up by tools/install-deps.sh",
        missing.join(", ")
    );
}

/// The full path of `tool` on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).is_file().then(|| PathBuf::from(tool));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip(8) must be on PATH (iproute2)");
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by a test; removed on drop, after the
/// processes and files registered with it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    pids: Mutex<Vec<u32>>,
    files: Mutex<Vec<PathBuf>>,
}

impl Netns {
    /// Creates `PREFIX-PID-N` with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name, pids: Mutex::new(Vec::new()), files: Mutex::new(Vec::new()) };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its name (for `ip -n NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `cmd ARGS` inside via `ip netns exec` and returns what it did.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {cmd}: {e}", self.name))
    }

    /// [`run`](Self::run), panicking with stderr unless it succeeds; its
    /// stdout.
    pub fn run_ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.run(cmd, args);
        assert!(
            out.status.success(),
            "in netns {}: {cmd} {} failed ({}): {}{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME ARGS`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `f` on a fresh thread that has `setns(2)`ed into this namespace
    /// (the caller's thread stays where it is); a panic in `f` propagates.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Spawns `cmd` inside the namespace; the process is killed by PID when
    /// this namespace is dropped (if still running).
    pub fn spawn_in(&self, cmd: &mut Command) -> Child {
        let child =
            self.enter(|| cmd.spawn()).unwrap_or_else(|e| panic!("spawn in netns {}: {e}", self.name));
        self.kill_on_drop(child.id());
        child
    }

    /// Kill `pid` (SIGTERM, then SIGKILL) when this namespace is dropped,
    /// if it is still running in this namespace (a PID reused by an
    /// unrelated process elsewhere is left alone).
    pub fn kill_on_drop(&self, pid: u32) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    }

    /// Remove `path` when this namespace is dropped (e.g. a UAPI socket a
    /// killed process could not remove).
    pub fn remove_on_drop(&self, path: impl Into<PathBuf>) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).push(path.into());
    }

    /// The live processes inside (`ip netns pids`).
    pub fn pids_inside(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .filter(|&pid| !is_zombie(pid))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `pid` is alive (not a zombie) inside this namespace.
    pub fn holds(&self, pid: u32) -> bool {
        let (Ok(ns), Ok(theirs)) =
            (std::fs::metadata(self.path()), std::fs::metadata(format!("/proc/{pid}/ns/net")))
        else {
            return false;
        };
        ns.dev() == theirs.dev() && ns.ino() == theirs.ino() && !is_zombie(pid)
    }
}

fn is_zombie(pid: u32) -> bool {
    // /proc/PID/stat: "PID (COMM) STATE ..."; COMM may contain spaces.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Stops `pid`: SIGTERM, up to `grace` to exit, then SIGKILL. Our own
/// child is waited for (reaped); another's counts as gone once a zombie.
fn stop(pid: u32, grace: Duration) {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { return };
    let gone = || match rustix::process::waitpid(Some(raw), WaitOptions::NOHANG) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        // Not our child: its parent reaps it.
        Err(_) => is_zombie(pid),
    };
    let wait = |timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if gone() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    let _ = rustix::process::kill_process(raw, Signal::TERM);
    if !wait(grace) {
        let _ = rustix::process::kill_process(raw, Signal::KILL);
        wait(Duration::from_secs(2));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *self.pids.lock().unwrap_or_else(|p| p.into_inner()));
        for pid in pids {
            if self.holds(pid) {
                stop(pid, Duration::from_secs(1));
            }
        }
        // Anything else still inside was started by this test too (e.g. by
        // code that failed before its PID could be registered).
        for pid in self.pids_inside() {
            stop(pid, Duration::from_secs(1));
        }
        for file in std::mem::take(&mut *self.files.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = std::fs::remove_file(file);
        }
        let out = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::piped()).output();
        if let Ok(out) = out
            && !out.status.success()
            && !std::thread::panicking()
        {
            eprintln!("warning: ip netns del {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
}

/// A veth pair: `a.1` in `a.0` with address `a.2` (CIDR notation, e.g.
/// `192.0.2.1/24`; empty for none), `b.1` in `b.0` likewise; both up.
pub fn veth(a: (&Netns, &str, &str), b: (&Netns, &str, &str)) {
    let (ns_a, if_a, addr_a) = a;
    let (ns_b, if_b, addr_b) = b;
    ns_a.ip(&["link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b.name()]);
    for (ns, ifname, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
        if !addr.is_empty() {
            ns.ip(&["addr", "add", addr, "dev", ifname]);
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// An underlay: a bridge `br0` in a namespace of its own, with a veth port
/// per attached node.
#[derive(Debug)]
pub struct Bridge {
    ns: Netns,
    ports: AtomicU32,
}

impl Bridge {
    /// The bridge's name inside its namespace.
    pub const NAME: &'static str = "br0";

    /// A new bridge, up, in a namespace named after `prefix`.
    pub fn new(prefix: &str) -> Bridge {
        let ns = Netns::new(prefix);
        ns.ip(&["link", "add", Self::NAME, "type", "bridge"]);
        ns.ip(&["link", "set", Self::NAME, "up"]);
        Bridge { ns, ports: AtomicU32::new(0) }
    }

    /// The bridge's namespace (e.g. to run tcpdump on `br0`).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Connects `node` to the bridge: interface `ifname` in `node` with
    /// address `addr` (CIDR notation), its peer a port of `br0`.
    pub fn attach(&self, node: &Netns, ifname: &str, addr: &str) {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        veth((&self.ns, &port, ""), (node, ifname, addr));
        self.ns.ip(&["link", "set", &port, "master", Self::NAME]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_on_a_bridge_reach_each_other_and_everything_is_removed_on_drop() {
        require_root_and(&["ip", "ping", "sleep"]);
        let bridge = Bridge::new("nst-br");
        let a = Netns::new("nst-a");
        let b = Netns::new("nst-b");
        bridge.attach(&a, "eth0", "192.0.2.1/24");
        bridge.attach(&b, "eth0", "192.0.2.2/24");
        a.run_ok("ping", &["-n", "-q", "-c", "1", "-W", "2", "192.0.2.2"]);
        // A direct veth pair too.
        veth((&a, "d0", "198.51.100.1/30"), (&b, "d0", "198.51.100.2/30"));
        b.run_ok("ping", &["-n", "-q", "-c", "1", "-W", "2", "198.51.100.1"]);

        // enter: this thread stays put, the closure runs inside.
        let ours = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let inside = a.enter(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino());
        assert_ne!(inside, ours);
        assert_eq!(inside, std::fs::metadata(a.path()).unwrap().ino());
        assert_eq!(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(), ours);

        // Reaped by the namespace's drop, not here.
        let pid = a.spawn_in(Command::new("sleep").arg("60")).id();
        assert!(a.holds(pid) && !b.holds(pid));
        let unregistered = a.spawn_in(Command::new("sleep").arg("60")).id();
        a.pids.lock().unwrap().retain(|&p| p != unregistered);
        let path = a.path();
        drop(a);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "registered process killed and reaped");
        assert!(!Path::new(&format!("/proc/{unregistered}")).exists() || is_zombie(unregistered));
        assert!(!path.exists(), "namespace removed");
    }

    #[test]
    fn a_panic_inside_enter_reaches_the_caller_and_cleanup_still_runs() {
        require_root_and(&["ip"]);
        let ns = Netns::new("nst-p");
        let path = ns.path();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ns = ns;
            ns.enter(|| panic!("inside"));
        }));
        let panic = result.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"inside"));
        assert!(!path.exists());
    }

    #[test]
    #[should_panic(expected = "`no-such-tool-vpblu` on PATH")]
    fn a_missing_tool_fails_the_test_by_name() {
        require_root_and(&["ip", "no-such-tool-vpblu"]);
    }
}

/// A bpffs pin directory, emptied and removed on drop (also while a
/// failing test unwinds).
#[derive(Debug)]
pub struct PinDir(pub PathBuf);

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
