//! What a lab leaves behind if it is killed before it can clean up, and
//! `vpblu-lab down` (`make lab-down`), which removes it: processes recorded
//! by PID (with their start time, so a reused PID is left alone), every
//! namespace, host link, bpffs pin directory and UAPI socket named with
//! [`PREFIX`](super::topology::PREFIX).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::topology::PREFIX;

/// Where labs record their processes.
pub const RECORD_DIR: &str = "/run/vpblu-lab";

/// The record of lab `id`.
pub fn record_path(id: u8) -> PathBuf {
    Path::new(RECORD_DIR).join(format!("lab-{id}.pids"))
}

/// Records `pids` (with their start times) as lab `id`'s processes.
pub fn record(id: u8, pids: &[u32]) {
    let _ = std::fs::create_dir_all(RECORD_DIR);
    let text: String =
        pids.iter().filter_map(|&pid| start_time(pid).map(|t| format!("{pid} {t}\n"))).collect();
    let path = record_path(id);
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("warning: cannot record the lab's processes in {}: {e}", path.display());
    }
}

/// Forgets lab `id` (it cleaned up after itself).
pub fn forget(id: u8) {
    let _ = std::fs::remove_file(record_path(id));
}

/// A process's start time (field 22 of /proc/PID/stat), to tell it from
/// a later process with the same PID.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What [`down`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Processes stopped.
    pub processes: usize,
    /// Namespaces deleted.
    pub namespaces: usize,
    /// Host links, pin directories and sockets removed.
    pub other: usize,
}

/// Removes every lab's leftovers. Safe to run when there are none.
pub fn down() -> Removed {
    let mut removed = Removed::default();
    // Recorded processes (controllers, API server, etcd).
    if let Ok(entries) = std::fs::read_dir(RECORD_DIR) {
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let mut words = line.split_whitespace();
                let (Some(pid), Some(started)) = (
                    words.next().and_then(|w| w.parse::<u32>().ok()),
                    words.next().and_then(|w| w.parse().ok()),
                ) else {
                    continue;
                };
                if start_time(pid) == Some(started) && kill(pid) {
                    removed.processes += 1;
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    // Namespaces, with whatever still runs inside (daemons, wireguard-go).
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for name in String::from_utf8_lossy(&listed).lines().filter_map(|l| l.split_whitespace().next()) {
        if !name.starts_with(PREFIX) {
            continue;
        }
        let pids =
            Command::new("ip").args(["netns", "pids", name]).output().map(|o| o.stdout).unwrap_or_default();
        for pid in String::from_utf8_lossy(&pids).split_whitespace().filter_map(|p| p.parse().ok()) {
            if kill(pid) {
                removed.processes += 1;
            }
        }
        if Command::new("ip").args(["netns", "del", name]).status().is_ok_and(|s| s.success()) {
            removed.namespaces += 1;
        }
    }
    // Host links.
    let links =
        Command::new("ip").args(["-o", "link", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&links).lines() {
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        if name.starts_with(PREFIX)
            && Command::new("ip")
                .args(["link", "del", name])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            removed.other += 1;
        }
    }
    // Pins and sockets.
    for (dir, is_dir) in [("/sys/fs/bpf", true), ("/var/run/wireguard", false)] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
                continue;
            }
            let gone = if is_dir {
                std::fs::remove_dir_all(entry.path()).is_ok()
            } else {
                std::fs::remove_file(entry.path()).is_ok()
            };
            removed.other += usize::from(gone);
        }
    }
    removed
}

/// SIGTERM, up to 2 s, then SIGKILL. Whether the process existed.
fn kill(pid: u32) -> bool {
    let Some(raw) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    if rustix::process::kill_process(raw, rustix::process::Signal::TERM).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process(raw, rustix::process::Signal::KILL);
    true
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}
