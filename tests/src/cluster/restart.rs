//! Taking the API server (or etcd) away and bringing it back, for tests of
//! what clients do meanwhile. etcd's data directory survives its restarts,
//! so every object does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::certs::Pki;
use super::processes::{Ports, spawn_apiserver, spawn_etcd};
use super::{API_AUDIENCES, TestCluster};

/// How a running kube-apiserver was started: what a restart needs again.
#[derive(Debug)]
struct ApiserverLaunch {
    bin_dir: PathBuf,
    ports: Ports,
}

/// A kube-apiserver [`TestCluster::stop_apiserver`] stopped, to hand to
/// [`TestCluster::start_apiserver`].
#[derive(Debug)]
#[must_use = "start the API server again with TestCluster::start_apiserver"]
pub struct ApiserverDown {
    launch: ApiserverLaunch,
    stopped: Instant,
}

impl TestCluster {
    /// Stops kube-apiserver (SIGTERM, as on drop: its connections close),
    /// leaves it down for `down`, then starts it again on the same port with
    /// the same flags and PKI and waits for `/readyz`. Returns how long
    /// clients had no API server. Panics, with the logs, if it does not
    /// come back.
    pub async fn restart_apiserver(&mut self, down: Duration) -> Duration {
        let stopped = self.stop_apiserver();
        tokio::time::sleep(down).await;
        self.start_apiserver(stopped).await
    }

    /// SIGKILLs kube-apiserver (a crash: its connections are cut, not
    /// closed) and starts it again at once; how long there was no API.
    pub async fn crash_apiserver(&mut self) -> Duration {
        let launch = self.apiserver_launch();
        let stopped = Instant::now();
        self.apiserver.kill();
        self.start_apiserver(ApiserverDown { launch, stopped }).await
    }

    /// SIGSTOPs kube-apiserver for `paused` (it holds every connection and
    /// answers nothing, as a hung process would), then SIGCONTs it and
    /// waits for `/readyz`; how long clients got no answer.
    pub async fn pause_apiserver(&mut self, paused: Duration) -> Duration {
        let stopped = Instant::now();
        self.apiserver.signal("STOP");
        tokio::time::sleep(paused).await;
        self.apiserver.signal("CONT");
        if let Err(why) = self.wait_ready().await {
            let why = match why {
                super::NotReady::PortTaken(why) | super::NotReady::Failed(why) => why,
            };
            panic!("kube-apiserver did not answer after SIGCONT: {why}");
        }
        stopped.elapsed()
    }

    /// SIGKILLs etcd and starts it again on the same ports with the same
    /// data directory (kube-apiserver reconnects by itself); waits for the
    /// API server's `/readyz`, and returns how long that took.
    pub async fn crash_etcd(&mut self) -> Duration {
        let launch = self.apiserver_launch();
        let peer = self.etcd_peer_port();
        let stopped = Instant::now();
        self.etcd.kill();
        let dir = self.dir().to_owned();
        let log = dir.join("etcd.log");
        let _ = std::fs::rename(&log, dir.join("etcd.1.log"));
        let ports = Ports { etcd_peer: peer, ..launch.ports };
        self.etcd = spawn_etcd(&launch.bin_dir, &dir, ports);
        if let Err(why) = self.wait_ready().await {
            let why = match why {
                super::NotReady::PortTaken(why) | super::NotReady::Failed(why) => why,
            };
            panic!("the control plane did not come back after etcd restarted: {why}");
        }
        stopped.elapsed()
    }

    /// Stops kube-apiserver and keeps what starting it again needs, so a
    /// test can watch its clients while there is no API server.
    pub fn stop_apiserver(&mut self) -> ApiserverDown {
        let launch = self.apiserver_launch();
        let stopped = Instant::now();
        self.apiserver.stop();
        ApiserverDown { launch, stopped }
    }

    /// Starts the API server [`stop_apiserver`](Self::stop_apiserver)
    /// stopped, on the same port with the same flags and PKI, and waits for
    /// `/readyz`. Returns how long clients had no API server. Panics, with
    /// the logs, if it does not come back.
    pub async fn start_apiserver(&mut self, down: ApiserverDown) -> Duration {
        let ApiserverDown { launch, stopped } = down;
        let dir = self.dir().to_owned();
        // Keep the first run's log beside the new one.
        let log = dir.join("kube-apiserver.log");
        let _ = std::fs::rename(&log, dir.join("kube-apiserver.1.log"));
        self.apiserver = spawn_apiserver(&launch.bin_dir, &dir, launch.ports, &pki_in(&dir), API_AUDIENCES);
        if let Err(why) = self.wait_ready().await {
            let why = match why {
                super::NotReady::PortTaken(why) | super::NotReady::Failed(why) => why,
            };
            panic!("kube-apiserver did not come back after a restart: {why}");
        }
        let outage = stopped.elapsed();
        println!("test cluster: kube-apiserver restarted; no API for {:.2} s", outage.as_secs_f64());
        outage
    }

    /// Reads the running API server's command line (found by its
    /// `--cert-dir`, which is unique to this cluster) for its binary and
    /// its etcd port.
    fn apiserver_launch(&self) -> ApiserverLaunch {
        let cert_dir = format!("--cert-dir={}", self.dir().join("apiserver-certs").display());
        let argv = running_command_lines()
            .into_iter()
            .find(|argv| {
                argv.first().is_some_and(|exe| exe.ends_with("kube-apiserver")) && argv.contains(&cert_dir)
            })
            .unwrap_or_else(|| panic!("no running kube-apiserver with {cert_dir} in /proc"));
        let bin_dir = Path::new(&argv[0]).parent().expect("kube-apiserver runs from a bin dir").to_owned();
        let etcd_client = argv
            .iter()
            .find_map(|a| a.strip_prefix("--etcd-servers=http://127.0.0.1:"))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("kube-apiserver has no loopback --etcd-servers: {argv:?}"));
        let apiserver = self
            .api_url()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{} has no port", self.api_url()));
        // The peer port only matters to etcd itself.
        ApiserverLaunch { bin_dir, ports: Ports { etcd_client, etcd_peer: 0, apiserver } }
    }
}

impl TestCluster {
    /// The running etcd's peer port (found by its `--data-dir`, unique to
    /// this cluster).
    fn etcd_peer_port(&self) -> u16 {
        let data_dir = format!("--data-dir={}", self.dir().join("etcd").display());
        running_command_lines()
            .into_iter()
            .find(|argv| argv.first().is_some_and(|exe| exe.ends_with("etcd")) && argv.contains(&data_dir))
            .and_then(|argv| {
                argv.iter()
                    .find_map(|a| a.strip_prefix("--listen-peer-urls=http://127.0.0.1:"))
                    .and_then(|port| port.parse().ok())
            })
            .unwrap_or_else(|| panic!("no running etcd with {data_dir} and a loopback peer URL in /proc"))
    }
}

/// The PEM files `write_pki` put in `dir`.
fn pki_in(dir: &Path) -> Pki {
    Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("serving.crt"),
        serving_key: dir.join("serving.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_public_key: dir.join("sa.pub"),
        sa_private_key: dir.join("sa.key"),
    }
}

/// The argv of every process we can read.
fn running_command_lines() -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .collect()
}
