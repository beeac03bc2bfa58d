//! `--backend kernel` on the kernel this test runs on, in a fresh network
//! namespace: where the kernel has no WireGuard (this lab machine), the
//! daemon exits 1 at once, naming the missing module and what to do;
//! where it has it, the daemon creates a kernel `wireguard` link and keeps
//! running. (The kernel backend itself is proven in guests whose kernel
//! has the module: `make kvm-validate`.)
//!
//! Needs root and `ip`; fails, never skips, without them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vpblu_e2e::netns::{Netns, require_root_and};

#[test]
fn backend_kernel_without_the_module_exits_1_and_says_what_to_do() {
    require_root_and(&["ip"]);
    let ns = Netns::new("dkbk");
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("token"), "unused").expect("write a token file");
    std::fs::write(dir.path().join("ca.crt"), "unused").expect("write a CA file");
    let has_wireguard = ns.run("ip", &["link", "add", "dkbkprobe", "type", "wireguard"]).status.success();
    let pin_dir = format!("/sys/fs/bpf/dkbk-{}", std::process::id());
    let path = |p: &str| dir.path().join(p).display().to_string();
    let mut child = ns.spawn_in(
        Command::new(env!("CARGO_BIN_EXE_vpblu-daemon"))
            .args(["--node-name", "node-k", "--controller-addr", "https://127.0.0.1:1"])
            .args(["--ca-file", &path("ca.crt"), "--token-file", &path("token")])
            .args(["--key-dir", &path("keys"), "--state-dir", &path("state"), "--bpffs", &pin_dir])
            .args(["--interface", "dkbk0", "--lane-interface", "dkbk1", "--backend", "kernel"])
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < Duration::from_secs(5) {
        status = child.try_wait().expect("try_wait on the daemon");
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("the daemon's output");
    let _ = std::fs::remove_dir_all(&pin_dir);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if has_wireguard {
        assert!(status.is_none(), "with kernel WireGuard the daemon exited ({status:?}):\n{log}");
        let link = ns.run("ip", &["-d", "link", "show", "dkbk0"]);
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains("wireguard"), "no kernel wireguard link dkbk0:\n{link}\n{log}");
    } else {
        let status =
            status.unwrap_or_else(|| panic!("without kernel WireGuard the daemon kept running:\n{log}"));
        assert_eq!(status.code(), Some(1), "exit status without kernel WireGuard:\n{log}");
        for says in ["no WireGuard", "module `wireguard`", "modprobe wireguard", "--backend userspace"] {
            assert!(log.contains(says), "the error does not say {says:?}:\n{log}");
        }
    }
}
