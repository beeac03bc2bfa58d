//! The controller binary against the real API server: it elects itself,
//! syncs its caches, becomes ready, creates a VpbluNode per Node, serves
//! daemon streams only as the leader, and on SIGTERM stops in order and
//! hands the Lease back. Streams are TLS: without a certificate it refuses
//! to start (naming the flags), unless told `--insecure-dev`, which it
//! warns about at start.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::{Guarded, free_addr, wait_http_ok};
use vpblu_e2e::stream_pki::StreamPki;
use vpblu_k8s::VpbluNode;

const EXE: &str = env!("CARGO_BIN_EXE_vpblu-controller");

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    cluster.apply_manifest(&cluster.repo_root().join("k8s/deploy/namespace.yaml")).await;
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn leads_serves_and_stops_cleanly_against_a_real_api_server() {
    let cluster = cluster().await;
    cluster.register_node("node-a", "192.0.2.1", &["10.244.1.0/24"], true).await;
    let kubeconfig = cluster.kubeconfig_path().to_str().expect("utf-8 temp path").to_owned();
    let grpc = free_addr();
    let (grpc_text, dashboard) = (grpc.to_string(), free_addr().to_string());
    let base = [
        "--grpc-addr",
        grpc_text.as_str(),
        "--dashboard-addr",
        dashboard.as_str(),
        "--identity",
        "controller-0",
        "--lease-duration",
        "6s",
        "--lease-renew",
        "2s",
    ];
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    // No certificate and no --insecure-dev: it will not serve plaintext.
    let stderr = fails(&base, &env);
    assert!(stderr.contains("--tls-cert-file") && stderr.contains("--insecure-dev"), "{stderr}");
    // A certificate file that is not there: named.
    let stderr = fails(
        &[&base[..], &["--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"]]
            .concat(),
        &env,
    );
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
    // --insecure-dev: it runs, and says loudly what that means.
    let metrics = free_addr().to_string();
    let insecure =
        [&base[..], &["--insecure-dev", "--metrics-addr", &metrics, "--log-format", "text"]].concat();
    let mut dev = Guarded::new(
        Command::new(EXE)
            .args(&insecure)
            .envs(env)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start"),
    );
    tokio::task::block_in_place(|| {
        wait_http_ok(metrics.parse().unwrap(), "/readyz", Duration::from_secs(30))
    });
    dev.signal("TERM");
    let status = tokio::task::block_in_place(|| dev.wait_timeout(Duration::from_secs(15))).expect("exits");
    assert!(status.success(), "{status}");
    let mut log = String::new();
    dev.child_mut().stderr.take().expect("piped").read_to_string(&mut log).expect("read the log");
    assert!(log.contains("WARN") && log.contains("--insecure-dev") && log.contains("PLAINTEXT"), "{log}");

    let pki = StreamPki::new();
    let (cert, key) = (pki.cert_file().display().to_string(), pki.key_file().display().to_string());
    let args = [&base[..], &["--tls-cert-file", &cert, "--tls-key-file", &key]].concat();

    // Its metrics port taken: the tree cannot start, exit 1 naming it.
    tokio::task::block_in_place(|| {
        vpblu_e2e::binary_lifecycle::fails_when_its_port_is_taken(EXE, &args, &env)
    });

    // A normal run: ready (= leading + synced), the stream server listens,
    // a VpbluNode appears for the Node; SIGTERM -> exit 0.
    let metrics = free_addr();
    let mut controller = Guarded::new(
        Command::new(EXE)
            .args(&args)
            .args(["--metrics-addr", &metrics.to_string(), "--log-format", "text"])
            .envs(env)
            .stdin(Stdio::null())
            .spawn()
            .expect("start vpblu-controller"),
    );
    tokio::task::block_in_place(|| wait_http_ok(metrics, "/readyz", Duration::from_secs(30)));
    // Ready means "caches synced"; the stream server opens once the Lease
    // is held, which may come a moment later.
    let mut listening = false;
    for _ in 0..150 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listening, "the leader listens for daemons on {grpc}");
    let vnodes: Api<VpbluNode> = Api::all(cluster.client());
    let mut created = false;
    for _ in 0..100 {
        if vnodes.get_opt("node-a").await.expect("read VpbluNode").is_some() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the controller creates a VpbluNode for every Node");

    controller.signal("TERM");
    let status = tokio::task::block_in_place(|| controller.wait_timeout(Duration::from_secs(15)))
        .expect("exits within 15 s of SIGTERM");
    assert!(status.success(), "SIGTERM must give exit 0, got {status}");
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err(), "no stream server after exit");

    let leases: Api<Lease> = Api::namespaced(cluster.client(), "vpblu-system");
    let lease = leases.get("vpblu-controller").await.expect("the controller's Lease exists");
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.is_empty(), "a clean stop releases the Lease, holder was {holder:?}");
}

/// Runs the controller with `args` (and a free metrics port), expects it
/// to exit non-zero within 15 s, and returns what it wrote to stderr.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let metrics = free_addr().to_string();
    let mut child = Guarded::new(
        Command::new(EXE)
            .args(args)
            .args(["--metrics-addr", &metrics, "--log-format", "text"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vpblu-controller"),
    );
    let status = tokio::task::block_in_place(|| child.wait_timeout(Duration::from_secs(15)))
        .expect("gives up in time");
    assert!(!status.success(), "it must refuse to start with {args:?}");
    let mut stderr = String::new();
    child.child_mut().stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    stderr
}
