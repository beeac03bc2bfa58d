//! A stopping daemon's question to the real API server: is my DaemonSet
//! still there? Present while it exists, `Deleting` once a foreground
//! delete stamped it (no garbage collector runs here, so it stays so),
//! `Gone` once it is removed or never existed, `Unknown` when no API
//! server answers; and what `--remove-on-stop=auto` makes of each.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use vpblu_daemon::uninstall::owner::daemonset_via;
use vpblu_daemon::uninstall::{Decision, Owner, RemoveOnStop};
use vpblu_e2e::cluster::TestCluster;

const NAMESPACE: &str = "default";
const NAME: &str = "vpblu-daemon";
const WITHIN: Duration = Duration::from_secs(10);

fn decision(owner: &Owner) -> Decision {
    Decision::of(RemoveOnStop::Auto, Some(NAME), Some(owner))
}

#[tokio::test]
async fn the_daemonset_is_present_then_deleting_then_gone() {
    let cluster = TestCluster::start().await;
    let client = cluster.client();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);

    let owner = daemonset_via(client.clone(), NAMESPACE, NAME, WITHIN).await;
    assert_eq!(owner, Owner::Gone, "no DaemonSet yet");

    cluster.create_daemonset(NAMESPACE, NAME).await;
    let owner = daemonset_via(client.clone(), NAMESPACE, NAME, WITHIN).await;
    assert_eq!(owner, Owner::Present);
    assert!(matches!(decision(&owner), Decision::Keep(_)), "a present DaemonSet keeps the data plane");

    // A foreground delete: the object stays, stamped, until the garbage
    // collector (not running here) has deleted its pods.
    api.delete(NAME, &DeleteParams::foreground()).await.expect("delete the DaemonSet");
    let owner = daemonset_via(client.clone(), NAMESPACE, NAME, WITHIN).await;
    assert_eq!(owner, Owner::Deleting);
    assert!(matches!(decision(&owner), Decision::Remove(_)), "uninstall: remove vpblu from the node");

    let release = serde_json::json!({ "metadata": { "finalizers": null } });
    api.patch(NAME, &PatchParams::default(), &Patch::Merge(&release)).await.expect("drop the finalizer");
    let owner = daemonset_via(client.clone(), NAMESPACE, NAME, WITHIN).await;
    assert_eq!(owner, Owner::Gone);
    assert!(matches!(decision(&owner), Decision::Remove(_)));
}

#[tokio::test]
async fn no_answer_is_unknown_and_keeps_the_data_plane() {
    // Nothing listens on port 1 of the loopback.
    let config = kube::Config::new("https://127.0.0.1:1".parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let owner = daemonset_via(client, NAMESPACE, NAME, WITHIN).await;
    let Owner::Unknown(why) = &owner else { panic!("no API server, yet {owner:?}") };
    assert!(why.contains(NAME), "the reason names the DaemonSet: {why}");
    let Decision::Keep(reason) = decision(&owner) else {
        panic!("an unknown owner must keep the data plane")
    };
    assert!(reason.contains("safe"), "{reason}");
}
