//! The controller binary as a child process against a test cluster:
//! serving TLS with the test PKI, short lease timings (failover within a
//! few seconds), its log printed when a test fails.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::{Guarded, free_addr, http_get, wait_http_ok};
use vpblu_e2e::stream_pki::StreamPki;

use super::tls_flags;

const EXE: &str = env!("CARGO_BIN_EXE_vpblu-controller");

/// A running controller; killed (SIGKILL, no goodbye) when dropped.
pub struct ControllerProcess {
    _process: Guarded,
    metrics: SocketAddr,
    log: PathBuf,
}

impl ControllerProcess {
    /// Starts replica `identity` serving the stream on `grpc` and checking
    /// daemons with TokenReview (its defaults), logging at `rust_log`;
    /// waits for `/readyz`.
    pub fn start(cluster: &TestCluster, identity: &str, grpc: &str, pki: &StreamPki, rust_log: &str) -> Self {
        let metrics = free_addr();
        let log = cluster.dir().join(format!("{identity}.log"));
        let out = File::create(&log).expect("controller log file");
        let process = Command::new(EXE)
            .args(["--grpc-addr", grpc, "--metrics-addr", &metrics.to_string()])
            .args(tls_flags(pki))
            .args(["--dashboard-addr", &free_addr().to_string(), "--identity", identity])
            .args(["--lease-duration", "4s", "--lease-renew", "1s", "--log-format", "text"])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("start vpblu-controller");
        let controller = ControllerProcess { _process: Guarded::new(process), metrics, log };
        wait_http_ok(metrics, "/readyz", Duration::from_secs(30));
        controller
    }

    /// Its `/metrics` page.
    pub fn metrics(&self) -> String {
        match http_get(self.metrics, "/metrics") {
            Some((200, page)) => page,
            other => panic!("the controller's /metrics did not answer: {other:?}"),
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {} ----", self.log.display());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
    }
}
