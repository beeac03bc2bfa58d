//! `vpblu status` when the cluster cannot be read, or is not healthy: one
//! line saying what and what to do, never a stack trace, and an exit code a
//! script can act on (2: cannot read, 1: degraded). One real API server
//! (no CRDs first, then with them) serves the cases that need one.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use vpblu_e2e::cluster::TestCluster;

fn vpblu(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpblu"))
        .arg("status")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run vpblu")
}

/// Exit 2 and exactly one line on stderr, containing every one of `says`.
fn assert_one_line(output: &Output, case: &str, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{case}: exit 2; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{case}: one line, no stack trace:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    for word in says {
        assert!(stderr.contains(word), "{case}: says {word:?}: {stderr}");
    }
    println!("{case}: {}", stderr.trim());
}

#[test]
fn unreachable_server_and_missing_kubeconfig_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = dir.path().join("dead.kubeconfig");
    std::fs::write(
        &dead,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
             insecure-skip-tls-verify: true\ncontexts:\n- name: dead\n  context: {{cluster: dead, user: u}}\n\
             current-context: dead\nusers:\n- name: u\n  user: {{token: not-a-real-token}}\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = vpblu(&dead, &[]);
    assert_one_line(&output, "unreachable API server", &["cannot reach", &format!("127.0.0.1:{port}")]);
    assert!(started.elapsed().as_secs() < 10, "fails fast: {:?}", started.elapsed());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("not-a-real-token"), "never prints the token");

    let missing = dir.path().join("nowhere.kubeconfig");
    let output = vpblu(&missing, &[]);
    assert_one_line(&output, "missing kubeconfig", &["nowhere.kubeconfig", "KUBECONFIG"]);
}

#[test]
fn missing_crds_rbac_denied_and_a_degraded_mesh() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = TestCluster::start().await;
        let admin = cluster.kubeconfig_path().to_owned();
        let output = vpblu(&admin, &[]);
        assert_one_line(
            &output,
            "missing CRD",
            &["vpblunodes.vpblu.dev", "CRDs are not installed", "kubectl apply"],
        );

        cluster.install_crds().await;
        let dir = tempfile::tempdir().unwrap();
        let nobody = dir.path().join("nobody.kubeconfig");
        let token = cluster.token_for("default", "nobody", &[], None).await;
        cluster.write_token_kubeconfig(&nobody, &token);
        let output = vpblu(&nobody, &[]);
        assert_one_line(
            &output,
            "RBAC denied",
            &["RBAC denied", "vpblunodes.vpblu.dev", "system:serviceaccount:default:nobody"],
        );
        assert!(!String::from_utf8_lossy(&output.stderr).contains(&token), "never prints the token");

        // Readable but not healthy: no controller ever led, no node.
        let output = vpblu(&admin, &[]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "degraded exits 1:\n{stdout}");
        assert!(stdout.contains("Mesh:     DEGRADED"), "{stdout}");
        assert!(stdout.contains("no leader: Lease vpblu-system/vpblu-controller does not exist"), "{stdout}");
        let started = std::time::Instant::now();
        let output = vpblu(&admin, &["--wait", "--timeout", "3s", "-o", "json"]);
        assert_eq!(output.status.code(), Some(1), "--wait gives up after its timeout, still degraded");
        assert!(started.elapsed().as_secs_f64() >= 3.0, "--wait waited: {:?}", started.elapsed());
        let view: serde_json::Value = serde_json::from_slice(&output.stdout).expect("-o json is JSON");
        assert_eq!(view["verdict"]["healthy"], false);
    });
}
