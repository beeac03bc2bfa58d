//! A flight recorder for the lab: tcpdump on every node's main and lane
//! devices (the pods' packets, decrypted, so which device carried what)
//! and on the underlay (WireGuard's own UDP: handshakes and data, per
//! port), each into a ring of a few pcap files (`-W`/`-C`), so a loss
//! found at the end of a run is still on disk with what led to it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::netns::{Bridge, Netns};

use super::Lab;

/// Files per ring.
const FILES: &str = "4";
/// Megabytes per file (tcpdump's `-C` unit is 1,000,000 bytes).
const FILE_MB: &str = "8";
/// Bytes kept per packet: the headers, and WireGuard's message type.
const SNAPLEN: &str = "128";

/// The rings of one lab, written under one directory.
#[derive(Debug)]
pub struct RingCapture {
    dir: PathBuf,
    dumps: Vec<(String, Child)>,
}

impl RingCapture {
    /// Starts a ring per node device and one on the underlay (UDP only)
    /// into `dir` (created), and waits until each listens.
    pub fn start(lab: &Lab, dir: &Path) -> RingCapture {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let mut ring = RingCapture { dir: dir.to_owned(), dumps: Vec::new() };
        for daemon in &lab.daemons {
            let ns = &lab.topology.node(daemon.node).ns;
            for (device, what) in [(&daemon.interface, "main"), (&daemon.lane_interface, "lane")] {
                let file = format!("{}-{what}.pcap", daemon.node_name);
                ring.spawn(ns, device, &file, &[]);
            }
        }
        ring.spawn(lab.topology.underlay.netns(), Bridge::NAME, "underlay.pcap", &["udp"]);
        ring
    }

    /// Where the rings are written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&mut self, ns: &Netns, device: &str, file: &str, filter: &[&str]) {
        let path = self.dir.join(file);
        let path = path.display().to_string();
        let mut child = ns.spawn_in(
            Command::new("tcpdump")
                .args(["-i", device, "-n", "-U", "-Z", "root", "-s", SNAPLEN, "-W", FILES, "-C", FILE_MB])
                .args(["-w", &path])
                .args(filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let stderr = child.stderr.take().expect("tcpdump's stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                }
                said.push_str(&line);
                said.push('\n');
            }
            let _ = tx.send(Err(said));
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(said)) => panic!("tcpdump on {device} in {} did not start:\n{said}", ns.name()),
            Err(_) => panic!("tcpdump on {device} in {} did not start listening within 5 s", ns.name()),
        }
        self.dumps.push((format!("{} {device}", ns.name()), child));
    }

    /// Stops every tcpdump (SIGINT: each flushes its file) and returns the
    /// directory.
    pub fn stop(mut self) -> PathBuf {
        self.stop_all();
        self.dir.clone()
    }

    fn stop_all(&mut self) {
        for (_, child) in &self.dumps {
            if let Ok(raw) = i32::try_from(child.id())
                && let Some(pid) = rustix::process::Pid::from_raw(raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
        }
        for (_, mut child) in self.dumps.drain(..) {
            let _ = child.wait();
        }
    }
}

impl Drop for RingCapture {
    fn drop(&mut self) {
        self.stop_all();
    }
}
