//! `vpblu-controller uninstall` (Helm's pre-delete hook) against the real
//! API server: it deletes the daemon DaemonSet in the foreground (the
//! object stays, marked, so the stopping daemons can still read it and
//! remove vpblu from their nodes) and returns once the DaemonSet and every
//! daemon pod are gone; at its deadline it fails naming the pods and nodes
//! left. No garbage collector runs here: the test plays its part (deleting
//! the pods, then dropping the finalizer). The hook runs as the chart's
//! `vpblu-uninstall` account, with the chart's RBAC for it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use vpblu_controller::uninstall::{UninstallError, remove_daemons};
use vpblu_e2e::chart;
use vpblu_e2e::cluster::TestCluster;

const NAMESPACE: &str = "vpblu-system";
const NAME: &str = "vpblu-daemon";
const LABEL: (&str, &str) = ("app.kubernetes.io/name", "vpblu-daemon");

async fn setup(cluster: &TestCluster) -> (Api<DaemonSet>, Api<Pod>) {
    cluster.apply_manifest("k8s/deploy/namespace.yaml").await;
    cluster.create_daemonset(NAMESPACE, NAME).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(cluster.client(), NAMESPACE);
    for (pod, node, ip) in
        [("vpblu-daemon-a1", "node-a", "172.18.0.2"), ("vpblu-daemon-b2", "node-b", "172.18.0.3")]
    {
        cluster.register_pod(NAMESPACE, pod, node, ip, None, &[LABEL]).await;
    }
    (daemonsets, Api::namespaced(cluster.client(), NAMESPACE))
}

/// The hook's own identity, with the RBAC the chart gives it (its
/// ServiceAccount, Role and RoleBinding, rendered from chart/vpblu).
async fn hook_client(cluster: &TestCluster) -> kube::Client {
    let rendered = chart::template("vpblu", NAMESPACE, &[]).expect("helm template chart/vpblu");
    let hook = chart::by_template(&rendered).expect("split by template").remove("uninstall-hook.yaml");
    let hook = hook.expect("the chart renders uninstall-hook.yaml");
    let rbac: Vec<&str> = hook.split("\n---\n").filter(|doc| !doc.contains("kind: Job")).collect();
    assert_eq!(rbac.len(), 3, "ServiceAccount, Role, RoleBinding: {rbac:?}");
    let file = cluster.dir().join("uninstall-hook-rbac.yaml");
    std::fs::write(&file, rbac.join("\n---\n")).expect("write the hook's RBAC");
    cluster.apply_manifest(&file).await;
    cluster.client_as(NAMESPACE, "vpblu-uninstall", &[], None).await
}

#[tokio::test]
async fn the_daemonset_goes_in_the_foreground_and_the_hook_waits_for_every_daemon() {
    let cluster = TestCluster::start().await;
    let (daemonsets, pods) = setup(&cluster).await;
    // As the chart's hook runs: its own account, nothing more.
    let client = hook_client(&cluster).await;
    let hook =
        tokio::spawn(async move { remove_daemons(client, NAMESPACE, NAME, Duration::from_secs(60)).await });

    // Foreground: still there, marked, with the finalizer the GC removes.
    let mut marked = None;
    for _ in 0..100 {
        let ds = daemonsets.get(NAME).await.expect("the DaemonSet stays during a foreground delete");
        if ds.metadata.deletion_timestamp.is_some() {
            marked = Some(ds);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marked = marked.expect("the hook deleted the DaemonSet");
    assert!(
        marked.metadata.finalizers.unwrap_or_default().contains(&"foregroundDeletion".to_owned()),
        "a foreground delete"
    );

    // The pods stop one by one; the hook is still waiting with one left.
    pods.delete("vpblu-daemon-a1", &DeleteParams::default().grace_period(0)).await.expect("delete a pod");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!hook.is_finished(), "a daemon pod is left: the hook must wait");
    pods.delete("vpblu-daemon-b2", &DeleteParams::default().grace_period(0)).await.expect("delete a pod");
    let release = serde_json::json!({ "metadata": { "finalizers": null } });
    daemonsets
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("drop the finalizer");

    let removed = tokio::time::timeout(Duration::from_secs(30), hook)
        .await
        .expect("the hook returns once everything is gone")
        .expect("the hook task")
        .expect("the hook succeeds");
    assert_eq!(removed.pods, 2, "{removed:?}");
}

#[tokio::test]
async fn at_its_deadline_the_hook_names_the_pods_and_nodes_left() {
    let cluster = TestCluster::start().await;
    let (_daemonsets, _pods) = setup(&cluster).await;
    let error = remove_daemons(cluster.client(), NAMESPACE, NAME, Duration::from_secs(2))
        .await
        .expect_err("nothing deletes the pods here");
    let UninstallError::Timeout { left, .. } = &error else { panic!("a timeout, got {error}") };
    assert_eq!(left.len(), 2, "{error}");
    let text = error.to_string();
    for want in ["vpblu-daemon-a1 (node node-a)", "vpblu-daemon-b2 (node node-b)", "--no-hooks"] {
        assert!(text.contains(want), "the error names {want:?}: {text}");
    }
}
