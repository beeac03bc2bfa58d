//! The checks every vpblu binary must pass: serves health, stops on SIGTERM
//! with exit 0, exits non-zero when its tree cannot run.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Guarded, free_addr, http_get, wait_http_ok};

/// Starts `exe` with `args` (and `env`) plus `--metrics-addr`, checks
/// /healthz, waits for /readyz and reads /metrics, then SIGTERM → exit 0
/// within 10 s.
pub fn serves_health_and_stops_on_sigterm(exe: &str, args: &[&str], env: &[(&str, &str)]) {
    let addr = free_addr();
    let child = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .args(["--metrics-addr", &addr.to_string(), "--log-format", "text"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    let mut child = Guarded::new(child);
    wait_http_ok(addr, "/healthz", Duration::from_secs(10));
    wait_http_ok(addr, "/readyz", Duration::from_secs(30));
    let (status, _body) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    child.signal("TERM");
    let status = child.wait_timeout(Duration::from_secs(10)).expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "SIGTERM must give exit 0, got {status}");
    assert!(http_get(addr, "/healthz").is_none(), "the health server is gone after exit");
}

/// With its metrics port taken, the tree cannot start: exit non-zero with
/// a message naming the address.
pub fn fails_when_its_port_is_taken(exe: &str, args: &[&str], env: &[(&str, &str)]) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to block");
    let addr = taken.local_addr().expect("bound port has an address");
    let child = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .args(["--metrics-addr", &addr.to_string(), "--log-format", "text"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    let mut child = Guarded::new(child);
    let status = child.wait_timeout(Duration::from_secs(10)).expect("gives up within 10 s");
    assert!(!status.success(), "a tree that cannot start must exit non-zero");
    let mut stderr = String::new();
    use std::io::Read;
    child.child_mut().stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    assert!(stderr.contains(&addr.to_string()), "the error names {addr}: {stderr}");
}
