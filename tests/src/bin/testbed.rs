//! `make testbed-up`: a real kube-apiserver + etcd on loopback with vpblu's
//! CRDs, RBAC and samples installed, kept running for kubectl until Ctrl-C.

use vpblu_e2e::cluster::TestCluster;

#[tokio::main]
async fn main() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let deploy = cluster.repo_root().join("k8s/deploy");
    for file in ["namespace.yaml", "controller-rbac.yaml", "daemon-rbac.yaml"] {
        cluster.apply_manifest(&deploy.join(file)).await;
    }
    for sample in vpblu_e2e::cluster::yaml_files(&deploy.join("samples")) {
        cluster.apply_manifest(&sample).await;
    }
    println!("kube-apiserver {} is up ({:.1?} to /readyz)", cluster.api_url(), cluster.startup_time());
    println!("vpblu CRDs, RBAC and samples are installed. In another shell:\n");
    if !on_path("kubectl") {
        // make testbed-up built one next to kube-apiserver.
        let root = std::env::var_os("VPBLU_TESTBED_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/vpblu/testbed")
        });
        println!("  export PATH={}:$PATH", root.join("current").display());
    }
    println!("  export KUBECONFIG={}", cluster.kubeconfig_path().display());
    println!("  kubectl get vpblu");
    println!("  kubectl explain blockpolicy.spec\n");
    println!("Ctrl-C stops both processes and removes {}", cluster.dir().display());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C ({e}); stopping now");
    }
    println!("stopping");
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
