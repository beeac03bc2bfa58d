//! A real Kubernetes control plane for integration tests: etcd and
//! kube-apiserver (built by `tools/testbed/build.sh`) on loopback ports, a
//! PKI made in Rust, an admin kubeconfig, and helpers to install vpblu's
//! CRDs and manifests, act as a service account, and register Nodes and
//! Pods the way a kubelet and a CNI would.
//!
//! There is no scheduler, controller-manager or kubelet: objects only change
//! when a test (or the code under test) changes them. Every test process
//! starts its own [`TestCluster`]; [`Drop`] stops it and deletes its files,
//! also when the test panicked (and then prints the tails of both logs).
//!
//! ```no_run
//! # async fn demo() {
//! use vpblu_e2e::cluster::TestCluster;
//! let cluster = TestCluster::start().await;
//! cluster.install_crds().await;
//! cluster.register_node("node-a", "172.18.0.2", &["10.244.1.0/24"], true).await;
//! let client = cluster.client();
//! # }
//! ```

mod certs;
mod daemon_identity;
mod identity;
mod manifests;
mod objects;
mod processes;
mod restart;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

pub use self::daemon_identity::{DAEMON_AUDIENCE, DAEMON_NAME, DAEMON_NAMESPACE};
pub use self::manifests::yaml_files;
pub use self::objects::POD_IMAGE;
pub use self::restart::ApiserverDown;

use self::certs::write_pki;
use self::processes::{ControlPlaneProcess, Ports, spawn_apiserver, spawn_etcd, testbed_bin_dir};

/// Field manager for every server-side apply the harness makes.
pub const FIELD_MANAGER: &str = "vpblu-e2e";

/// Audiences the API server accepts as its own. `vpblu` is deliberately not
/// one of them: a daemon's `vpblu` token must be useless against the API and
/// is validated by a TokenReview that names the audience (as in a real
/// cluster, whose API audience is the issuer).
pub const API_AUDIENCES: &[&str] = &["https://kubernetes.default.svc"];

/// How long etcd + kube-apiserver get to answer `/readyz` with `ok`
/// (about 3.5 s on an idle 2-core machine; generous for a busy one).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Attempts when a port picked as free was taken before a process bound it.
const PORT_ATTEMPTS: usize = 3;

/// Set to keep the temp dir (certs, logs, kubeconfig) after the test.
const KEEP_ENV: &str = "VPBLU_E2E_KEEP_CLUSTER";

/// Log lines [`TestCluster::dump_logs`] prints per process.
const LOG_TAIL_LINES: usize = 60;

/// etcd + kube-apiserver on loopback, stopped and deleted on drop.
#[derive(Debug)]
pub struct TestCluster {
    // Stopped explicitly in Drop, API server first; the temp dir goes last.
    apiserver: ControlPlaneProcess,
    etcd: ControlPlaneProcess,
    config: kube::Config,
    kubeconfig: PathBuf,
    api_url: String,
    startup_time: Duration,
    repo_root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// Why one start attempt did not reach `/readyz`.
#[derive(Debug)]
enum NotReady {
    /// A port picked as free was taken by someone else meanwhile: retry.
    PortTaken(String),
    /// Anything else: give up with this message.
    Failed(String),
}

impl TestCluster {
    /// Builds (or finds cached) binaries, generates the PKI, starts etcd and
    /// kube-apiserver on free loopback ports, waits for `/readyz` and writes
    /// an admin kubeconfig. Panics, with the logs, if any of that fails.
    pub async fn start() -> TestCluster {
        let repo_root = repo_root();
        let bin_dir = testbed_bin_dir().await;
        for attempt in 1..=PORT_ATTEMPTS {
            let mut cluster = TestCluster::launch(&bin_dir, &repo_root).await;
            match cluster.wait_ready().await {
                Ok(elapsed) => {
                    cluster.startup_time = elapsed;
                    println!(
                        "test cluster: /readyz ok {:.2} s after start ({}, dir {})",
                        elapsed.as_secs_f64(),
                        cluster.api_url,
                        cluster.dir().display()
                    );
                    return cluster;
                }
                Err(NotReady::PortTaken(why)) if attempt < PORT_ATTEMPTS => {
                    eprintln!("test cluster: {why}; retrying with other ports");
                }
                Err(NotReady::PortTaken(why) | NotReady::Failed(why)) => {
                    // Drop prints both logs while this panic unwinds.
                    panic!("the test control plane did not start: {why}");
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn launch(bin_dir: &Path, repo_root: &Path) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("vpblu-e2e-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the test cluster: {e}"));
        let path = dir.path().to_owned();
        let pki = write_pki(&path);
        let ports = Ports::pick();
        let api_url = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfig = path.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &api_url, &pki);
        let etcd = spawn_etcd(bin_dir, &path, ports);
        let apiserver = spawn_apiserver(bin_dir, &path, ports, &pki, API_AUDIENCES);
        let config = admin_config(&kubeconfig).await;
        TestCluster {
            apiserver,
            etcd,
            config,
            kubeconfig,
            api_url,
            startup_time: Duration::ZERO,
            repo_root: repo_root.to_owned(),
            dir: Some(dir),
        }
    }

    /// Polls `/readyz` until it says `ok`; the time since the processes
    /// were started.
    async fn wait_ready(&mut self) -> Result<Duration, NotReady> {
        let started = Instant::now();
        let client = self.client();
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            for process in [&mut self.etcd, &mut self.apiserver] {
                if let Some(status) = process.exited() {
                    let why = format!("{} exited early ({status})", process.name());
                    let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
                    return Err(if log.contains("address already in use") {
                        NotReady::PortTaken(why)
                    } else {
                        NotReady::Failed(why)
                    });
                }
            }
            let request = http::Request::get("/readyz").body(Vec::new()).expect("a valid request");
            match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
                Ok(Ok(body)) if body.trim() == "ok" => return Ok(started.elapsed()),
                Ok(Ok(body)) => last = body,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "GET /readyz timed out after 5 s".to_owned(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(NotReady::Failed(format!("/readyz not ok after {READY_TIMEOUT:?}; last answer: {last}")))
    }

    /// An admin (`system:masters`) client. Build one per Tokio runtime: a
    /// client's connections belong to the runtime it was created on.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("build a client from the admin config")
    }

    /// The admin client configuration (for clients with other credentials).
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The admin kubeconfig (client certificate), usable by kubectl too.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// From starting etcd to `/readyz` answering `ok`.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The temp dir holding certificates, logs, etcd data and the kubeconfig.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the temp dir lives as long as the cluster").path()
    }

    /// The PIDs of etcd and kube-apiserver (for a lab's record of what to
    /// stop if it is killed before it can clean up).
    pub fn control_plane_pids(&self) -> Vec<u32> {
        [self.etcd.pid(), self.apiserver.pid()].into_iter().flatten().collect()
    }

    /// The repository root (for `k8s/...` paths).
    pub fn repo_root(&self) -> &Path {
        &self.repo_root
    }

    /// Prints the tails of the etcd and kube-apiserver logs to stderr.
    pub fn dump_logs(&self) {
        for process in [&self.etcd, &self.apiserver] {
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of {} ({}) -----\n{}",
                process.name(),
                process.log_path().display(),
                process.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.apiserver.stop();
        self.etcd.stop();
        if let Some(dir) = self.dir.take() {
            if std::env::var_os(KEEP_ENV).is_some() {
                eprintln!("test cluster: kept {} ({KEEP_ENV} is set)", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("test cluster: cannot remove its temp dir: {e}");
            }
        }
    }
}

/// `CARGO_MANIFEST_DIR/..`: the workspace root.
fn repo_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().expect("the tests crate sits in the workspace root").to_owned()
}

fn write_kubeconfig(path: &Path, api_url: &str, pki: &certs::Pki) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: vpblu-e2e
  cluster:
    server: {api_url}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: vpblu-e2e
  context:
    cluster: vpblu-e2e
    user: admin
current-context: vpblu-e2e
",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The admin config, loaded from the kubeconfig just written (which proves
/// the file itself works).
async fn admin_config(kubeconfig: &Path) -> kube::Config {
    let parsed = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", kubeconfig.display()));
    kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", kubeconfig.display()))
}
