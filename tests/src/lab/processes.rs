//! The lab's processes: controllers in the host namespace (as on a
//! control-plane node with host networking), one daemon per node inside
//! the node's namespace, each logging to a file in the lab directory, each
//! stopped by PID when dropped. The stream's TLS material is issued here
//! the way the chart's Secret and ConfigMap carry it.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::topology::{PREFIX, Topology};
use super::{CONTROLLER_PORTS, LEASE_DURATION, LEASE_RENEW, SYSTEM_NAMESPACE};
use crate::cluster::TestCluster;
use crate::process::{Guarded, free_addr, http_get, http_post, wait_http_ok};

/// The server name daemons expect on the controller's certificate (the
/// Service's DNS name; the lab dials an IP and names it explicitly).
pub const CONTROLLER_SERVER_NAME: &str = "vpblu-controller.vpblu-system.svc";
/// Where every daemon serves `/metrics` inside its node's namespace.
pub const DAEMON_METRICS_PORT: u16 = 9091;

/// The built `vpblu-controller` and `vpblu-daemon` and the pinned
/// wireguard-go.
#[derive(Clone, Debug)]
pub struct LabBinaries {
    /// vpblu-controller.
    pub controller: PathBuf,
    /// vpblu-daemon.
    pub daemon: PathBuf,
    /// wireguard-go.
    pub wireguard_go: PathBuf,
}

impl LabBinaries {
    /// Finds the workspace binaries next to the running executable (tests
    /// run from `target/<profile>/deps`, `vpblu-lab` from `target/<profile>`);
    /// `VPBLU_BIN_DIR` overrides. Panics, naming the fix, when one is missing.
    pub fn find() -> LabBinaries {
        let dir = std::env::var_os("VPBLU_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the running executable has a path");
            let mut dir = exe.parent().expect("an executable lives in a directory").to_owned();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        });
        let find = |name: &str| {
            let path = dir.join(name);
            assert!(
                path.is_file(),
                "{} is missing: build the workspace first (`cargo build --workspace`, which `make test` and `make lab` run)",
                path.display()
            );
            path
        };
        LabBinaries {
            controller: find("vpblu-controller"),
            daemon: find("vpblu-daemon"),
            wireguard_go: crate::built_tools::wireguard_go().to_owned(),
        }
    }
}

/// The stream's TLS material: a CA (the daemons' bundle) and the
/// controllers' certificate, PEM files in the lab directory (keys 0600).
#[derive(Clone, Debug)]
pub struct StreamTls {
    /// The CA certificate daemons trust.
    pub ca: PathBuf,
    /// The controllers' certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl StreamTls {
    /// Issues a fresh CA and a serving certificate for
    /// [`CONTROLLER_SERVER_NAME`] into `dir/stream-tls`.
    pub fn issue(dir: &Path) -> StreamTls {
        let dir = dir.join("stream-tls");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ca_key = KeyPair::generate().expect("generate the stream CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "vpblu lab stream CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign the stream CA");
        let issuer = Issuer::new(ca, ca_key);
        let names =
            vec![CONTROLLER_SERVER_NAME.to_owned(), format!("{CONTROLLER_SERVER_NAME}.cluster.local")];
        let mut server = CertificateParams::new(names).expect("valid DNS names");
        server.distinguished_name.push(DnType::CommonName, CONTROLLER_SERVER_NAME);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("generate the controller's key");
        let server_cert = server.signed_by(&server_key, &issuer).expect("sign the controller's certificate");
        let tls = StreamTls { ca: dir.join("ca.crt"), cert: dir.join("tls.crt"), key: dir.join("tls.key") };
        write(&tls.ca, &ca_cert.pem(), 0o644);
        write(&tls.cert, &server_cert.pem(), 0o644);
        write(&tls.key, &server_key.serialize_pem(), 0o600);
        tls
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A controller replica in the host namespace, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Controller {
    process: Option<Guarded>,
    /// `controller-0`, `controller-1`: its Lease identity.
    pub identity: String,
    /// Its stream address on the host's underlay leg.
    pub grpc: SocketAddr,
    /// Its `/metrics`, `/healthz`, `/readyz` (loopback).
    pub metrics: SocketAddr,
    /// Its web dashboard and JSON API (loopback).
    pub dashboard: SocketAddr,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl Controller {
    /// Starts replica `replica`, authenticated as the vpblu-controller
    /// service account (so the RBAC in k8s/deploy is what it runs with),
    /// and waits for `/readyz`.
    pub async fn start(
        cluster: &TestCluster,
        binaries: &LabBinaries,
        topology: &Topology,
        tls: &StreamTls,
        dir: &Path,
        replica: u8,
        fault_injection: bool,
    ) -> Controller {
        let identity = format!("controller-{replica}");
        let token = cluster.token_for(SYSTEM_NAMESPACE, "vpblu-controller", &[], None).await;
        let kubeconfig = dir.join(format!("{identity}.kubeconfig"));
        cluster.write_token_kubeconfig(&kubeconfig, &token);
        let grpc: SocketAddr = format!("{}:{}", topology.host_v4, CONTROLLER_PORTS[usize::from(replica)])
            .parse()
            .expect("a socket address");
        let metrics = free_addr();
        let dashboard = free_addr();
        let args: Vec<String> = [
            "--grpc-addr",
            &grpc.to_string(),
            "--metrics-addr",
            &metrics.to_string(),
            "--dashboard-addr",
            &dashboard.to_string(),
            "--identity",
            &identity,
            "--lease-namespace",
            SYSTEM_NAMESPACE,
            "--lease-duration",
            LEASE_DURATION,
            "--lease-renew",
            LEASE_RENEW,
            "--tls-cert-file",
            &tls.cert.display().to_string(),
            "--tls-key-file",
            &tls.key.display().to_string(),
            "--log-format",
            "text",
        ]
        .iter()
        .chain(fault_injection.then_some(&"--fault-injection"))
        .map(|s| (*s).to_owned())
        .collect();
        let log = dir.join(format!("{identity}.log"));
        let mut controller =
            Controller { process: None, identity, grpc, metrics, dashboard, args, kubeconfig, log };
        controller.spawn(binaries);
        wait_http_ok(controller.metrics, "/readyz", Duration::from_secs(60));
        controller
    }

    fn spawn(&mut self, binaries: &LabBinaries) {
        let out = append(&self.log);
        let child = Command::new(&binaries.controller)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binaries.controller.display()));
        self.process = Some(Guarded::new(child));
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guarded::pid)
    }

    /// Whether it runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.wait_timeout(Duration::ZERO).is_none())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal("KILL");
            process.wait_timeout(Duration::from_secs(5));
        }
    }

    /// Starts it again with the same flags and waits for `/readyz`.
    pub fn restart(&mut self, binaries: &LabBinaries) {
        self.kill();
        self.spawn(binaries);
        wait_http_ok(self.metrics, "/readyz", Duration::from_secs(60));
    }

    /// Its `/metrics` text.
    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// The actors a panic can be injected into (the lab was started with
    /// `VPBLU_FAULT_INJECTION=true`); empty when it was not.
    pub fn panic_targets(&self) -> Vec<String> {
        panic_targets(http_get(self.metrics, "/debug/panic"))
    }

    /// Makes its supervised child `child` panic; the controller's answer.
    pub fn inject_panic(&self, child: &str) -> Result<String, String> {
        injected(child, http_post(self.metrics, &format!("/debug/panic/{child}")))
    }
}

fn panic_targets(answer: Option<(u16, String)>) -> Vec<String> {
    match answer {
        Some((200, body)) => body.lines().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn injected(child: &str, answer: Option<(u16, String)>) -> Result<String, String> {
    match answer {
        Some((200, body)) => Ok(body.trim().to_owned()),
        Some((status, body)) => Err(format!("POST /debug/panic/{child}: {status} {}", body.trim())),
        None => Err(format!("POST /debug/panic/{child}: no answer")),
    }
}

/// A node's daemon inside the node's namespace. Dropping it SIGKILLs it
/// and removes what it leaves on purpose (its WireGuard process goes with
/// the namespace; its pins and UAPI socket are removed by name here).
#[derive(Debug)]
pub struct Daemon {
    /// 1-based node index.
    pub node: u8,
    /// The node's name.
    pub node_name: String,
    /// The node's namespace path (`/run/netns/...`).
    pub netns: PathBuf,
    /// Its main WireGuard device.
    pub interface: String,
    /// Its lane device (the spare that carries traffic while a key rotates).
    pub lane_interface: String,
    /// Its bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Its key directory.
    pub key_dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    extra: Vec<String>,
    log: PathBuf,
    binary: PathBuf,
}

impl Daemon {
    /// Registers the daemon's Pod (the token is bound to it), writes its
    /// token, and starts it inside node `n`'s namespace, dialling both
    /// controllers; waits for `/healthz`.
    pub async fn start(
        cluster: &TestCluster,
        binaries: &LabBinaries,
        topology: &Topology,
        tls: &StreamTls,
        dir: &Path,
        n: u8,
        fault_injection: bool,
    ) -> Daemon {
        let node = topology.node(n);
        let (pod, uid) = super::register_daemon_pod(cluster, node).await;
        let token = cluster.token_for(SYSTEM_NAMESPACE, "vpblu-daemon", &["vpblu"], Some((&pod, &uid))).await;
        let node_dir = dir.join(&node.name);
        std::fs::create_dir_all(&node_dir).unwrap_or_else(|e| panic!("create {}: {e}", node_dir.display()));
        let token_file = node_dir.join("token");
        write(&token_file, &token, 0o600);
        let interface = format!("{PREFIX}{}wg{n}", topology.id);
        let lane_interface = format!("{PREFIX}{}ln{n}", topology.id);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{PREFIX}{}-n{n}", topology.id));
        let key_dir = node_dir.join("keys");
        let controllers = CONTROLLER_PORTS
            .iter()
            .map(|port| format!("https://{}:{port}", topology.host_v4))
            .collect::<Vec<_>>()
            .join(",");
        let args: Vec<String> = [
            "--node-name",
            &node.name,
            "--controller-addr",
            &controllers,
            "--controller-server-name",
            CONTROLLER_SERVER_NAME,
            "--ca-file",
            &tls.ca.display().to_string(),
            "--token-file",
            &token_file.display().to_string(),
            "--key-dir",
            &key_dir.display().to_string(),
            "--state-dir",
            &node_dir.join("state").display().to_string(),
            "--bpffs",
            &pin_dir.display().to_string(),
            "--interface",
            &interface,
            "--lane-interface",
            &lane_interface,
            "--backend",
            "userspace",
            "--wireguard-go",
            &binaries.wireguard_go.display().to_string(),
            "--metrics-addr",
            &format!("0.0.0.0:{DAEMON_METRICS_PORT}"),
            "--observe-interval",
            "1s",
            "--log-format",
            "text",
        ]
        .iter()
        .chain(fault_injection.then_some(&"--fault-injection"))
        .map(|s| (*s).to_owned())
        .collect();
        node.ns.remove_on_drop(format!("/var/run/wireguard/{interface}.sock"));
        node.ns.remove_on_drop(format!("/var/run/wireguard/{lane_interface}.sock"));
        let mut daemon = Daemon {
            node: n,
            node_name: node.name.clone(),
            netns: node.ns.path(),
            interface,
            lane_interface,
            pin_dir,
            key_dir,
            child: None,
            args,
            extra: Vec::new(),
            log: node_dir.join("daemon.log"),
            binary: binaries.daemon.clone(),
        };
        daemon.spawn(topology);
        daemon.wait_healthy(topology);
        daemon
    }

    fn spawn(&mut self, topology: &Topology) {
        let out = append(&self.log);
        let node = topology.node(self.node);
        let child = node.ns.spawn_in(
            Command::new(&self.binary)
                .args(&self.args)
                .args(&self.extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup the log file"))
                .stderr(out),
        );
        self.child = Some(child);
    }

    fn wait_healthy(&self, topology: &Topology) {
        let node = topology.node(self.node);
        let addr: SocketAddr = format!("127.0.0.1:{DAEMON_METRICS_PORT}").parse().expect("an address");
        node.ns.enter(|| wait_http_ok(addr, "/healthz", Duration::from_secs(30)));
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the daemon gets no chance to clean up (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same flags (same key dir, pins and device)
    /// and waits for `/healthz`.
    pub fn restart(&mut self, topology: &Topology) {
        self.kill();
        self.spawn(topology);
        self.wait_healthy(topology);
    }

    /// Restarts it with `extra` flags added to its own (e.g. a fault to
    /// inject); they stay for later restarts until [`Daemon::restart_plain`].
    pub fn restart_with(&mut self, topology: &Topology, extra: &[&str]) {
        self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        self.restart(topology);
    }

    /// Restarts it with its own flags only.
    pub fn restart_plain(&mut self, topology: &Topology) {
        self.restart_with(topology, &[]);
    }

    /// The actors a panic can be injected into; see
    /// [`Controller::panic_targets`].
    pub fn panic_targets(&self, topology: &Topology) -> Vec<String> {
        panic_targets(self.in_node(topology, |addr| http_get(addr, "/debug/panic")))
    }

    /// Makes its supervised child `child` panic; the daemon's answer.
    pub fn inject_panic(&self, topology: &Topology, child: &str) -> Result<String, String> {
        injected(child, self.in_node(topology, |addr| http_post(addr, &format!("/debug/panic/{child}"))))
    }

    /// Runs `f` with the daemon's metrics address inside its namespace.
    fn in_node<T: Send>(&self, topology: &Topology, f: impl FnOnce(SocketAddr) -> T + Send) -> T {
        let addr: SocketAddr = format!("127.0.0.1:{DAEMON_METRICS_PORT}").parse().expect("an address");
        topology.node(self.node).ns.enter(|| f(addr))
    }

    /// `GET /metrics` inside the node's namespace.
    pub fn metrics_text(&self, topology: &Topology) -> String {
        self.in_node(topology, |addr| http_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // The device's process dies with the namespace; the pins are global.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Opens `path` for appending (restarts keep one log).
fn append(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Prints the last 40 lines of a log.
pub fn print_tail(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("---- last lines of {} ----", path.display());
    for line in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("{line}");
    }
}
