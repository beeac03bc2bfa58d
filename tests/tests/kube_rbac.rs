//! vpblu's RBAC against a real kube-apiserver: the roles in k8s/deploy give
//! the controller exactly what it needs, and the daemon nothing but a
//! look at its own DaemonSet (when it stops: uninstall or restart?).
//!
//! Each test starts its own control plane (about 3.5 s); they fail, never
//! skip, when it cannot be built or started.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::kube_api::*;

// ------------------------------------------------------------------- RBAC

#[tokio::test]
async fn controller_service_account_can_do_its_job_and_no_more() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    for manifest in
        ["k8s/deploy/namespace.yaml", "k8s/deploy/controller-rbac.yaml", "k8s/deploy/daemon-rbac.yaml"]
    {
        cluster.apply_manifest(manifest).await;
    }
    for sample in vpblu_e2e::cluster::yaml_files(&cluster.repo_root().join("k8s/deploy/samples")) {
        cluster.apply_manifest(sample).await;
    }
    let admin = cluster.client();
    vpblu_api(admin.clone(), "VpbluNode", "vpblunodes")
        .create(&PostParams::default(), &vpblu_object("VpbluNode", "node-a", json!({})))
        .await
        .expect("create a VpbluNode");
    cluster.register_node("node-a", "172.18.0.2", &["10.244.1.0/24"], true).await;
    let daemon_pod = cluster
        .register_pod("vpblu-system", "vpblu-daemon-x7k2p", "node-a", "172.18.0.2", Some("vpblu-daemon"), &[])
        .await;

    let controller = cluster.client_as("vpblu-system", "vpblu-controller", &[], None).await;
    assert_eq!(whoami(&controller).await.0, CONTROLLER_USER);

    // --- CAN, with real calls.
    let nodes: Api<Node> = Api::all(controller.clone());
    let listed = nodes.list(&ListParams::default()).await.expect("controller lists nodes");
    assert_eq!(listed.items.len(), 1);
    expect_watch_ok(&nodes, "nodes").await;
    let pods: Api<Pod> = Api::all(controller.clone());
    pods.list(&ListParams::default()).await.expect("controller lists pods in all namespaces");
    expect_watch_ok(&pods, "pods").await;
    for (kind, plural) in KINDS {
        let api = vpblu_api(controller.clone(), kind, plural);
        let objects = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list {plural}: {e}"));
        let name = objects.items.first().unwrap_or_else(|| panic!("no {kind} to patch")).name_any();
        expect_watch_ok(&api, plural).await;
        // Status the way the controller writes it: server-side apply.
        let status = json!({
            "apiVersion": "vpblu.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "status": {"conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "E2E",
                "message": "written by the controller's service account",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }]},
        });
        let patched = api
            .patch_status(&name, &PatchParams::apply("vpblu-controller").force(), &Patch::Apply(&status))
            .await
            .unwrap_or_else(|e| panic!("controller patches {plural}/{name}/status: {e}"));
        assert_eq!(patched.data["status"]["conditions"][0]["reason"], "E2E", "{plural}/{name}");
    }
    let leases: Api<Lease> = Api::namespaced(controller.clone(), "vpblu-system");
    let lease: Lease = from_json(json!({
        "metadata": {"name": "vpblu-controller", "namespace": "vpblu-system"},
        "spec": {"holderIdentity": "vpblu-controller-0", "leaseDurationSeconds": 15},
    }));
    let mut lease =
        leases.create(&PostParams::default(), &lease).await.expect("controller creates its Lease");
    lease.spec.get_or_insert_default().holder_identity = Some("vpblu-controller-1".to_owned());
    let lease = leases
        .replace("vpblu-controller", &PostParams::default(), &lease)
        .await
        .expect("controller updates its Lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("vpblu-controller-1"));
    leases.get("vpblu-controller").await.expect("controller reads its Lease");
    // Events about namespaced objects live in their namespace; events about
    // cluster-scoped ones (every vpblu kind, Nodes) must live in `default`.
    let events: Api<Event> = Api::namespaced(controller.clone(), "vpblu-system");
    let event: Event = from_json(json!({
        "metadata": {"name": "vpblu-e2e.lease", "namespace": "vpblu-system"},
        "involvedObject": {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "namespace": "vpblu-system", "name": "vpblu-controller",
        },
        "reason": "LeaderElected",
        "message": "written by the controller's service account",
        "type": "Normal",
    }));
    events.create(&PostParams::default(), &event).await.expect("controller creates an Event in vpblu-system");
    let events: Api<Event> = Api::namespaced(controller.clone(), "default");
    let event: Event = from_json(json!({
        "metadata": {"name": "vpblu-e2e.node-a", "namespace": "default"},
        "involvedObject": {"apiVersion": "vpblu.dev/v1alpha1", "kind": "VpbluNode", "name": "node-a"},
        "reason": "RotationStarted",
        "message": "written by the controller's service account",
        "type": "Normal",
    }));
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("controller creates an Event about a VpbluNode");

    // A daemon's projected-style token: audience vpblu, bound to its Pod.
    // The controller proves who is on a stream with a TokenReview.
    let pod_uid = daemon_pod.uid().expect("stored Pod has a UID");
    let daemon_token = cluster
        .token_for("vpblu-system", "vpblu-daemon", &["vpblu"], Some(("vpblu-daemon-x7k2p", &pod_uid)))
        .await;
    let review: TokenReview = from_json(json!({"spec": {"token": daemon_token, "audiences": ["vpblu"]}}));
    let reviewed = Api::<TokenReview>::all(controller.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("controller creates a TokenReview");
    let status = reviewed.status.expect("TokenReview has a status");
    assert_eq!(status.authenticated, Some(true), "daemon token not authenticated: {status:?}");
    assert_eq!(status.audiences, Some(vec!["vpblu".to_owned()]));
    let user = status.user.expect("authenticated review names the user");
    assert_eq!(user.username.as_deref(), Some(DAEMON_USER));
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["vpblu-daemon-x7k2p".to_owned()])
    );
    assert_eq!(extra.get("authentication.kubernetes.io/pod-uid"), Some(&vec![pod_uid.clone()]));
    assert_eq!(extra.get("authentication.kubernetes.io/node-name"), Some(&vec!["node-a".to_owned()]));
    // The same token for the API's audience is not accepted as a vpblu one.
    let api_token =
        cluster.token_for("vpblu-system", "vpblu-daemon", &[], Some(("vpblu-daemon-x7k2p", &pod_uid))).await;
    let review: TokenReview = from_json(json!({"spec": {"token": api_token, "audiences": ["vpblu"]}}));
    let reviewed = Api::<TokenReview>::all(controller.clone()).create(&PostParams::default(), &review).await;
    let status = reviewed.expect("TokenReview").status.expect("TokenReview has a status");
    assert_ne!(status.authenticated, Some(true), "an API-audience token passed as vpblu: {status:?}");
    // ...and reads the Pod the token is bound to (node, account, owner).
    let bound = Api::<Pod>::namespaced(controller.clone(), "vpblu-system")
        .get("vpblu-daemon-x7k2p")
        .await
        .expect("controller reads the daemon Pod a token is bound to");
    assert_eq!(bound.uid(), Some(pod_uid.clone()));

    // Identity needs exactly TokenReview create and Pod get (list and watch
    // were there for the Pod informer): no other rule names either, beyond
    // what every authenticated user has.
    let baseline = rules_in(&cluster.client_as("e2e-baseline", "nobody", &[], None).await, "default").await;
    let own: Vec<_> =
        rules_in(&controller, "default").await.into_iter().filter(|rule| !baseline.contains(rule)).collect();
    let naming = |resource: &str| -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
        own.iter().filter(|(_, resources, _)| resources.iter().any(|r| r == resource)).cloned().collect()
    };
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        naming("pods"),
        vec![(strings(&[""]), strings(&["nodes", "pods"]), strings(&["get", "list", "watch"]))]
    );
    assert_eq!(
        naming("tokenreviews"),
        vec![(strings(&["authentication.k8s.io"]), strings(&["tokenreviews"]), strings(&["create"]))]
    );

    // --- CAN, where a real call is awkward.
    let can = [
        ("watch", "", "nodes", "", None),
        ("watch", "", "pods", "", None),
        ("create", "coordination.k8s.io", "leases", "", Some("vpblu-system")),
        ("update", "coordination.k8s.io", "leases", "", Some("vpblu-system")),
        ("create", "", "events", "", Some("vpblu-system")),
        ("create", "", "events", "", Some("default")),
        ("create", "events.k8s.io", "events", "", Some("vpblu-system")),
        // The dashboard lists the recent Events about vpblu objects.
        ("list", "", "events", "", None),
        ("create", "authentication.k8s.io", "tokenreviews", "", None),
        ("create", "vpblu.dev", "vpblunodes", "", None),
    ];
    for (verb, group, resource, subresource, namespace) in can {
        assert!(
            can_i(&controller, verb, group, resource, subresource, namespace).await,
            "controller should be able to {verb} {group}/{resource}{subresource} in {namespace:?}"
        );
    }
    for (_, plural) in KINDS {
        for verb in ["get", "list", "watch"] {
            assert!(can_i(&controller, verb, "vpblu.dev", plural, "", None).await, "{verb} {plural}");
        }
        assert!(
            can_i(&controller, "patch", "vpblu.dev", plural, "status", None).await,
            "patch {plural}/status"
        );
    }

    // --- CANNOT, with real calls.
    let secrets: Api<Secret> = Api::namespaced(controller.clone(), "vpblu-system");
    expect_forbidden(secrets.list(&ListParams::default()).await, "list secrets in vpblu-system");
    expect_forbidden(secrets.get("any").await, "get a secret in vpblu-system");
    expect_forbidden(
        Api::<Secret>::all(controller.clone()).list(&ListParams::default()).await,
        "list all secrets",
    );
    expect_forbidden(nodes.delete("node-a", &Default::default()).await, "delete a Node");
    assert!(Api::<Node>::all(admin.clone()).get_opt("node-a").await.expect("GET node-a").is_some());
    let tunnel_policies = vpblu_api(controller.clone(), "TunnelPolicy", "tunnelpolicies");
    let mut policy = tunnel_policies.get("default").await.expect("controller reads TunnelPolicy default");
    policy.data["spec"]["listenPort"] = json!(51821);
    expect_forbidden(
        tunnel_policies.replace("default", &PostParams::default(), &policy).await,
        "update a TunnelPolicy's spec",
    );
    expect_forbidden(
        tunnel_policies
            .patch("default", &PatchParams::default(), &Patch::Merge(json!({"spec": {"listenPort": 51821}})))
            .await,
        "patch a TunnelPolicy's spec",
    );
    let unchanged = vpblu_api(admin.clone(), "TunnelPolicy", "tunnelpolicies").get("default").await;
    assert_eq!(unchanged.expect("admin reads TunnelPolicy default").data["spec"]["listenPort"], 51820);
    expect_forbidden(
        vpblu_api(controller.clone(), "BlockPolicy", "blockpolicies")
            .create(
                &PostParams::default(),
                &vpblu_object(
                    "BlockPolicy",
                    "sneaky",
                    json!({"nodes": [{"node": "node-a", "action": "Isolate"}]}),
                ),
            )
            .await,
        "create a BlockPolicy",
    );
    for namespace in ["kube-system", "default"] {
        let lease: Lease =
            from_json(json!({"metadata": {"name": "vpblu-controller", "namespace": namespace}}));
        let leases: Api<Lease> = Api::namespaced(controller.clone(), namespace);
        expect_forbidden(
            leases.create(&PostParams::default(), &lease).await,
            "create a Lease outside vpblu-system",
        );
    }

    // --- CANNOT, as the authorizer answers.
    let cannot = [
        ("get", "", "secrets", "", Some("vpblu-system")),
        ("list", "", "secrets", "", None),
        ("delete", "", "nodes", "", None),
        ("update", "", "nodes", "", None),
        ("patch", "", "nodes", "status", None),
        ("delete", "", "pods", "", Some("vpblu-system")),
        ("create", "", "pods", "", Some("vpblu-system")),
        ("patch", "", "pods", "", Some("vpblu-system")),
        ("create", "", "pods", "exec", Some("vpblu-system")),
        ("create", "authorization.k8s.io", "subjectaccessreviews", "", None),
        ("create", "coordination.k8s.io", "leases", "", Some("kube-system")),
        ("delete", "coordination.k8s.io", "leases", "", Some("vpblu-system")),
        ("update", "vpblu.dev", "tunnelpolicies", "", None),
        ("patch", "vpblu.dev", "tunnelpolicies", "", None),
        ("patch", "vpblu.dev", "routepolicies", "", None),
        ("patch", "vpblu.dev", "blockpolicies", "", None),
        ("create", "vpblu.dev", "blockpolicies", "", None),
        ("create", "vpblu.dev", "tunnelpolicies", "", None),
        ("create", "apiextensions.k8s.io", "customresourcedefinitions", "", None),
        ("create", "", "serviceaccounts", "token", Some("vpblu-system")),
        ("impersonate", "", "serviceaccounts", "", Some("vpblu-system")),
    ];
    for (verb, group, resource, subresource, namespace) in cannot {
        assert!(
            !can_i(&controller, verb, group, resource, subresource, namespace).await,
            "controller must not be able to {verb} {group}/{resource}/{subresource} in {namespace:?}"
        );
    }
    for (_, plural) in KINDS {
        assert!(!can_i(&controller, "delete", "vpblu.dev", plural, "", None).await, "delete {plural}");
    }
}

#[tokio::test]
async fn daemon_service_account_can_only_read_its_own_daemonset() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    for manifest in
        ["k8s/deploy/namespace.yaml", "k8s/deploy/controller-rbac.yaml", "k8s/deploy/daemon-rbac.yaml"]
    {
        cluster.apply_manifest(manifest).await;
    }
    cluster.register_node("node-a", "172.18.0.2", &["10.244.1.0/24"], true).await;
    cluster
        .register_pod("vpblu-system", "vpblu-daemon-x7k2p", "node-a", "172.18.0.2", Some("vpblu-daemon"), &[])
        .await;

    let daemon = cluster.client_as("vpblu-system", "vpblu-daemon", &[], None).await;
    assert_eq!(whoami(&daemon).await.0, DAEMON_USER);
    expect_forbidden(Api::<Node>::all(daemon.clone()).list(&ListParams::default()).await, "list nodes");
    expect_forbidden(Api::<Node>::all(daemon.clone()).get("node-a").await, "get its own node");
    let crds: Api<CustomResourceDefinition> = Api::all(daemon.clone());
    expect_forbidden(crds.get("tunnelpolicies.vpblu.dev").await, "get a CRD");
    for (kind, plural) in KINDS {
        let api = vpblu_api(daemon.clone(), kind, plural);
        expect_forbidden(api.list(&ListParams::default()).await, &format!("list {plural}"));
    }
    let pods: Api<Pod> = Api::namespaced(daemon.clone(), "vpblu-system");
    expect_forbidden(pods.list(&ListParams::default()).await, "list pods in its own namespace");
    expect_forbidden(pods.get("vpblu-daemon-x7k2p").await, "get its own pod");
    let secrets: Api<Secret> = Api::namespaced(daemon.clone(), "vpblu-system");
    expect_forbidden(secrets.list(&ListParams::default()).await, "list secrets in its own namespace");

    // Its own DaemonSet, by name: allowed (absent here, so 404, not 403).
    let daemonsets: Api<DaemonSet> = Api::namespaced(daemon.clone(), "vpblu-system");
    match daemonsets.get("vpblu-daemon").await {
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        other => panic!("get its own DaemonSet: expected 404 (allowed, absent), got {other:?}"),
    }
    expect_forbidden(daemonsets.get("another-daemonset").await, "get another DaemonSet");
    expect_forbidden(daemonsets.list(&ListParams::default()).await, "list DaemonSets");
    let patch = json!({"metadata": {"labels": {"x": "y"}}});
    expect_forbidden(
        daemonsets.patch("vpblu-daemon", &PatchParams::default(), &Patch::Merge(&patch)).await,
        "patch its own DaemonSet",
    );

    // Beyond that, all it may do is what every authenticated user may
    // (system:basic-user, system:discovery, ...): its rules are an unbound
    // account's plus that one.
    let baseline = cluster.client_as("e2e-baseline", "nobody", &[], None).await;
    let mut daemon_rules = rules_in(&daemon, "vpblu-system").await;
    let own = (vec!["apps".to_owned()], vec!["daemonsets".to_owned()], vec!["get".to_owned()]);
    let had_own = daemon_rules.iter().position(|rule| *rule == own).map(|i| daemon_rules.remove(i));
    assert!(had_own.is_some(), "the daemon may get daemonsets (its own, by name): {daemon_rules:?}");
    assert_eq!(
        daemon_rules,
        rules_in(&baseline, "vpblu-system").await,
        "the daemon has another binding of its own"
    );
    for (groups, resources, verbs) in &daemon_rules {
        println!("daemon (like everyone) may {verbs:?} {groups:?}/{resources:?}");
    }

    // Its real token (audience vpblu) is no API credential at all.
    let pod_uid = Api::<Pod>::namespaced(cluster.client(), "vpblu-system")
        .get("vpblu-daemon-x7k2p")
        .await
        .expect("admin reads the daemon pod")
        .uid()
        .expect("stored Pod has a UID");
    let vpblu_only = cluster
        .client_as("vpblu-system", "vpblu-daemon", &["vpblu"], Some(("vpblu-daemon-x7k2p", &pod_uid)))
        .await;
    match Api::<Node>::all(vpblu_only).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 401 => {}
        other => panic!("a vpblu-audience token should be rejected by the API with 401, got {other:?}"),
    }
}
