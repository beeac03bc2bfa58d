//! What the daemon process tests share: a `vpblu-daemon` process run inside
//! a node's network namespace with `nsenter --net` (not `ip netns exec`,
//! which remounts /sys and hides bpffs), with its own key and state
//! directories, bpffs pin directory, WireGuard device name and log file;
//! HTTP to its metrics port from inside that namespace; and reading
//! Prometheus text.
//!
//! Cleanup happens on drop, also while a failing test unwinds: the daemon
//! and its wireguard-go are killed by PID through the namespace's guard,
//! the UAPI socket and wireguard-go log are removed with it, and the pin
//! directory is emptied and removed.

#![allow(dead_code)] // each test file uses its own part of this

pub mod controller;
pub mod stream_mesh;

use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vpblu_daemon::wireguard::{DEFAULT_LOG_DIR, DEFAULT_SOCKET_DIR};
use vpblu_e2e::netns::Netns;
use vpblu_e2e::process::{Guarded, http_get};

/// The daemon binary cargo built for these tests.
pub const EXE: &str = env!("CARGO_BIN_EXE_vpblu-daemon");

/// Where every daemon listens for /healthz, /readyz and /metrics, on the
/// loopback of its own namespace.
pub const METRICS_PORT: u16 = 9091;

static DAEMONS: AtomicU32 = AtomicU32::new(0);

pub use vpblu_e2e::netns::PinDir;

/// One node's daemon: where it keeps things and how it is started. The
/// process itself is a [`Running`].
#[derive(Debug)]
pub struct DaemonSetup {
    /// The node name.
    pub node: String,
    /// The WireGuard device, unique on the machine (UAPI sockets are shared
    /// by every namespace).
    pub interface: String,
    /// The lane device (the spare that carries traffic while a key
    /// rotates), unique on the machine too.
    pub lane_interface: String,
    pub key_dir: PathBuf,
    pub state_dir: PathBuf,
    pub pin_dir: PinDir,
    /// Where each run's stdout and stderr go: `daemon-N.log`.
    pub log_dir: PathBuf,
    /// Flags besides the ones this setup owns.
    pub extra: Vec<String>,
    runs: u32,
}

impl DaemonSetup {
    /// A daemon for `node` in `ns`, with its directories under `dir`. The
    /// device's UAPI socket and wireguard-go log are removed with `ns`.
    pub fn new(ns: &Netns, node: &str, dir: &Path) -> DaemonSetup {
        let id = DAEMONS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let interface = format!("wgd{pid}x{id}");
        let lane_interface = format!("wgl{pid}x{id}");
        assert!(interface.len() <= 15, "interface name {interface} too long");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/vpblu-daemon-test-{pid}-{id}"));
        let dir = dir.join(format!("{node}-{id}"));
        std::fs::create_dir_all(&dir).expect("create the daemon's test directory");
        ns.remove_on_drop(Path::new(DEFAULT_SOCKET_DIR).join(format!("{interface}.sock")));
        ns.remove_on_drop(Path::new(DEFAULT_LOG_DIR).join(format!("wireguard-go-{interface}.log")));
        ns.remove_on_drop(Path::new(DEFAULT_SOCKET_DIR).join(format!("{lane_interface}.sock")));
        ns.remove_on_drop(Path::new(DEFAULT_LOG_DIR).join(format!("wireguard-go-{lane_interface}.log")));
        DaemonSetup {
            node: node.to_owned(),
            interface,
            lane_interface,
            key_dir: dir.join("keys"),
            state_dir: dir.join("state"),
            pin_dir: PinDir(pin_dir),
            log_dir: dir,
            extra: Vec::new(),
            runs: 0,
        }
    }

    /// Userspace WireGuard with the pinned wireguard-go build.
    pub fn userspace(mut self) -> Self {
        let wireguard_go = vpblu_e2e::built_tools::wireguard_go().display().to_string();
        self.extra.extend(["--backend".into(), "userspace".into(), "--wireguard-go".into(), wireguard_go]);
        self
    }

    /// Adds flags.
    pub fn with(mut self, flags: &[&str]) -> Self {
        self.extra.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }

    /// Every flag of a run (the metrics address is the namespace's loopback).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--node-name",
            &self.node,
            "--interface",
            &self.interface,
            "--lane-interface",
            &self.lane_interface,
            "--key-dir",
            &self.key_dir.display().to_string(),
            "--state-dir",
            &self.state_dir.display().to_string(),
            "--bpffs",
            &self.pin_dir.0.display().to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{METRICS_PORT}"),
            "--log-format",
            "text",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts the daemon inside `ns` with `nsenter --net` (which execs it:
    /// the PID is the daemon's). Killed by PID when `ns` is dropped.
    pub fn start(&mut self, ns: &Netns) -> Running {
        self.runs += 1;
        let log = self.log_dir.join(format!("daemon-{}.log", self.runs));
        let out = File::create(&log).expect("create the daemon's log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(EXE)
            .args(self.args())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nsenter (util-linux) to start {EXE}: {e}"));
        ns.kill_on_drop(child.id());
        Running { child: Guarded::new(child), log, netns: ns.path(), node: self.node.clone() }
    }

    /// The daemon's private key file as written (base64), to look for in logs.
    pub fn private_key_text(&self) -> String {
        let path = self.key_dir.join(vpblu_daemon::keys::ACTIVE_FILE);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }
}

/// A running daemon process.
#[derive(Debug)]
pub struct Running {
    pub child: Guarded,
    pub log: PathBuf,
    netns: PathBuf,
    node: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `GET path` on its metrics port, from inside its namespace.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr: SocketAddr = ([127, 0, 0, 1], METRICS_PORT).into();
        let netns = self.netns.clone();
        let path = path.to_owned();
        std::thread::spawn(move || {
            let file = File::open(&netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("setns into {}: {e}", netns.display()));
            http_get(addr, &path)
        })
        .join()
        .expect("the HTTP thread does not panic")
    }

    /// Waits until `GET path` answers `status`; panics with the daemon's log
    /// after `within`, or at once if the daemon exited.
    pub fn wait_status(&mut self, path: &str, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.get(path).is_some_and(|(s, _)| s == status) {
                return;
            }
            if let Some(exit) = self.child.wait_timeout(Duration::ZERO) {
                panic!(
                    "{}: the daemon exited ({exit}) before {path} answered {status}:\n{}",
                    self.node,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: {path} did not answer {status} within {within:?} (last: {:?}); the daemon logged:\n{}",
                self.node,
                self.get(path),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its /metrics text.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("{}: /metrics did not answer 200: {other:?}\n{}", self.node, self.log_text()),
        }
    }

    /// Polls /metrics until `check` finds what it wants; panics naming
    /// `what` with the last metrics after `within`.
    pub fn wait_metrics<T>(&self, what: &str, within: Duration, check: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics();
            if let Some(value) = check(&text) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{}: /metrics did not show {what} within {within:?}; it shows:\n{text}",
                self.node
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends `signal` and waits up to `within` for the exit.
    pub fn stop_with(&mut self, signal: &str, within: Duration) -> ExitStatus {
        self.child.signal(signal);
        self.child.wait_timeout(within).unwrap_or_else(|| {
            panic!(
                "{}: the daemon did not exit within {within:?} of SIG{signal}:\n{}",
                self.node,
                self.log_text()
            )
        })
    }
}

/// The value of the sample `series` (a name with its labels exactly as
/// printed, e.g. `vpblu_daemon_packets_total{verdict="to_mesh"}`), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// PIDs of processes named `comm` inside `ns`.
pub fn processes_named(ns: &Netns, comm: &str) -> Vec<u32> {
    ns.pids_inside()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}
