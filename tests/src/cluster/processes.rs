//! etcd and kube-apiserver as child processes: building them (through
//! `tools/testbed/build.sh`), free loopback ports, logs in files, and a stop
//! that escalates from SIGTERM to SIGKILL.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::certs::Pki;

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `tools/testbed/build.sh` (instant when the binaries are cached) and
/// returns the bin directory it prints. Panics with the script's output
/// when it fails: a missing control plane is a failure, never a skip.
pub(crate) async fn testbed_bin_dir() -> PathBuf {
    tokio::task::spawn_blocking(|| crate::built_tools::bin_dir("testbed", &["etcd", "kube-apiserver"]))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// `N` distinct loopback ports that were free a moment ago. All listeners
/// are held at once so the kernel cannot hand out the same port twice.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound listener has an address").port())
}

/// A control-plane process whose stdout and stderr go to a log file; stopped
/// (SIGTERM, then SIGKILL after 5 s) when dropped.
#[derive(Debug)]
pub(crate) struct ControlPlaneProcess {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl ControlPlaneProcess {
    fn spawn(name: &'static str, exe: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("duplicate the log file handle");
        let child = Command::new(&exe)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        ControlPlaneProcess { name, child: Some(child), log }
    }

    /// Its PID while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process name used in messages ("etcd", "kube-apiserver").
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The log file (stdout and stderr).
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("try_wait on a child we own")
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }

    /// SIGKILL (a crash: no chance to clean up); reaps the child.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (a kill(1) name: `STOP`, `CONT`) while it runs.
    pub(crate) fn signal(&self, signal: &str) {
        let Some(pid) = self.pid() else { return };
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -{signal} {pid} ({}) failed: {sent:?}",
            self.name
        );
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; reaps the child. Idempotent.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // std has SIGKILL only; kill(1) sends SIGTERM by PID without unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} (pid {}) ignored SIGTERM for {STOP_GRACE:?}; sending SIGKILL", self.name, child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ControlPlaneProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The loopback ports one control plane uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
}

impl Ports {
    /// Three distinct free ports.
    pub(crate) fn pick() -> Self {
        let [etcd_client, etcd_peer, apiserver] = free_ports::<3>();
        Ports { etcd_client, etcd_peer, apiserver }
    }
}

/// Starts etcd with its data in `dir/etcd` and its log in `dir/etcd.log`.
pub(crate) fn spawn_etcd(bin_dir: &Path, dir: &Path, ports: Ports) -> ControlPlaneProcess {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    let args = vec![
        "--name=e2e".to_owned(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=e2e={peer}"),
        // Throw-away data: durability buys nothing and costs startup time.
        "--unsafe-no-fsync".to_owned(),
        "--log-level=warn".to_owned(),
    ];
    ControlPlaneProcess::spawn("etcd", bin_dir.join("etcd"), args, dir.join("etcd.log"))
}

/// Starts kube-apiserver against the etcd on `ports.etcd_client`, with the
/// PKI in `pki` and its log in `dir/kube-apiserver.log`.
pub(crate) fn spawn_apiserver(
    bin_dir: &Path,
    dir: &Path,
    ports: Ports,
    pki: &Pki,
    api_audiences: &[&str],
) -> ControlPlaneProcess {
    let args = vec![
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={}", ports.apiserver),
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
        // Keep the `kubernetes` Endpoints on loopback instead of the host's
        // default-interface address (a loopback advertise address alone is fatal).
        "--advertise-address=127.0.0.1".to_owned(),
        "--endpoint-reconciler-type=none".to_owned(),
        "--authorization-mode=Node,RBAC".to_owned(),
        // The daemon DaemonSet in k8s/deploy is privileged (it loads eBPF and
        // owns a WireGuard device); without this the API refuses it.
        "--allow-privileged=true".to_owned(),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        format!("--service-account-key-file={}", pki.sa_public_key.display()),
        format!("--service-account-signing-key-file={}", pki.sa_private_key.display()),
        format!("--api-audiences={}", api_audiences.join(",")),
        // Its default (/var/run/kubernetes) is shared by every test binary.
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
    ];
    ControlPlaneProcess::spawn(
        "kube-apiserver",
        bin_dir.join("kube-apiserver"),
        args,
        dir.join("kube-apiserver.log"),
    )
}
