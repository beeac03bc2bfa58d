//! vpblu's Kubernetes API surface against a real kube-apiserver: the CRDs
//! install and validate, printer columns are served, the samples are
//! accepted, and the RBAC in k8s/deploy gives the controller exactly what it
//! needs and the daemon nothing. Also checks the harness itself.
//!
//! Each test starts its own control plane (about 3.5 s); they fail, never
//! skip, when it cannot be built or started.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview};
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vpblu_e2e::cluster::TestCluster;

/// vpblu's five kinds: (kind, plural).
const KINDS: [(&str, &str); 5] = [
    ("VpbluNode", "vpblunodes"),
    ("TunnelPolicy", "tunnelpolicies"),
    ("RoutePolicy", "routepolicies"),
    ("BlockPolicy", "blockpolicies"),
    ("RotationPolicy", "rotationpolicies"),
];

const CONTROLLER_USER: &str = "system:serviceaccount:vpblu-system:vpblu-controller";
const DAEMON_USER: &str = "system:serviceaccount:vpblu-system:vpblu-daemon";

// ---------------------------------------------------------------- harness

#[tokio::test]
async fn harness_starts_a_control_plane_and_registers_nodes_and_pods() {
    let cluster = TestCluster::start().await;
    println!("startup time: {:.2} s", cluster.startup_time().as_secs_f64());
    assert!(!cluster.startup_time().is_zero());
    assert!(cluster.kubeconfig_path().is_file(), "no kubeconfig at {}", cluster.kubeconfig_path().display());
    let client = cluster.client();
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.git_version, "v1.37.2", "the testbed pins kube-apiserver v1.37.2");
    assert_eq!(whoami(&client).await.0, "admin");

    let node =
        cluster.register_node("node-a", "172.18.0.2", &["10.244.1.0/24", "fd00:10:244:1::/64"], true).await;
    let spec = node.spec.clone().expect("Node has a spec");
    assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));
    assert_eq!(spec.pod_cidrs, Some(vec!["10.244.1.0/24".to_owned(), "fd00:10:244:1::/64".to_owned()]));
    assert_eq!(internal_ip(&node), Some("172.18.0.2".to_owned()));
    assert_eq!(ready_status(&node).as_deref(), Some("True"));

    let node = cluster.set_node_ready("node-a", false).await;
    assert_eq!(ready_status(&node).as_deref(), Some("False"));
    let node = cluster.set_node_ready("node-a", true).await;
    assert_eq!(ready_status(&node).as_deref(), Some("True"));

    let pod =
        cluster.register_pod("e2e-harness", "web-0", "node-a", "10.244.1.10", None, &[("app", "web")]).await;
    let status = pod.status.clone().expect("Pod has a status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.10"));
    let pod_ips: Vec<_> = status.pod_ips.unwrap_or_default().into_iter().map(|p| p.ip).collect();
    assert_eq!(pod_ips, vec!["10.244.1.10".to_owned()]);
    assert_eq!(status.host_ip.as_deref(), Some("172.18.0.2"));
    let spec = pod.spec.clone().expect("Pod has a spec");
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    assert_eq!(spec.containers[0].image.as_deref(), Some("vpblu/pause"));
    assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));

    // A token bound to the Pod authenticates as its service account and
    // carries the Pod (and Node) it was issued for.
    let uid = pod.uid().expect("stored Pod has a UID");
    let bound = cluster.client_as("e2e-harness", "default", &[], Some(("web-0", &uid))).await;
    let (user, extra) = whoami(&bound).await;
    assert_eq!(user, "system:serviceaccount:e2e-harness:default");
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["web-0".to_owned()]),
        "{extra:?}"
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec!["node-a".to_owned()]),
        "{extra:?}"
    );

    cluster.delete_node("node-a").await;
    let nodes: Api<Node> = Api::all(client);
    assert!(nodes.get_opt("node-a").await.expect("GET node-a").is_none(), "node-a still exists after delete");
}

// ------------------------------------------------------- CRDs and samples

#[tokio::test]
async fn crds_are_established_and_every_sample_is_accepted() {
    let cluster = TestCluster::start().await;
    let crds = cluster.install_crds().await;
    let mut names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
    names.sort();
    let mut expected: Vec<String> = KINDS.iter().map(|(_, plural)| format!("{plural}.vpblu.dev")).collect();
    expected.sort();
    assert_eq!(names, expected, "k8s/crds should hold exactly vpblu's five CRDs");
    for crd in &crds {
        assert_eq!(crd.spec.scope, "Cluster", "{} should be cluster-scoped", crd.name_any());
        let established = crd.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True")
        });
        assert!(established, "{} is not Established", crd.name_any());
    }

    let samples = vpblu_e2e::cluster::yaml_files(&cluster.repo_root().join("k8s/deploy/samples"));
    assert!(!samples.is_empty(), "k8s/deploy/samples has no samples");
    for sample in samples {
        let applied = cluster.apply_manifest(&sample).await;
        assert!(!applied.is_empty(), "{} holds no object", sample.display());
        for object in applied {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            println!("accepted {} {} from {}", kind, object.name_any(), sample.display());
            // Round trip: the stored object can be read back through its kind.
            let plural = plural_of(&kind);
            let stored = vpblu_api(cluster.client(), &kind, plural).get(&object.name_any()).await;
            assert!(stored.is_ok(), "cannot read back {kind} {}: {stored:?}", object.name_any());
        }
    }

    // The whole deployment is accepted as written: namespace, RBAC, the
    // controller Deployment and Service, the privileged daemon DaemonSet.
    for file in [
        "namespace.yaml",
        "controller-rbac.yaml",
        "daemon-rbac.yaml",
        "controller-deployment.yaml",
        "controller-service.yaml",
        "daemon-daemonset.yaml",
    ] {
        let applied = cluster.apply_manifest(&cluster.repo_root().join("k8s/deploy").join(file)).await;
        assert!(!applied.is_empty(), "k8s/deploy/{file} holds no object");
    }
}

// ------------------------------------------------------------- validation

/// A custom resource the API server must reject, and what its message must
/// mention (field path and/or the offending value).
struct BadResource {
    why: &'static str,
    kind: &'static str,
    spec: Value,
    mentions: &'static [&'static str],
}

fn bad_resources() -> Vec<BadResource> {
    vec![
        BadResource {
            why: "IPv4 CIDR with host bits",
            kind: "BlockPolicy",
            spec: json!({"blocks": [{"from": "10.244.1.5/24", "to": "10.244.2.0/24"}]}),
            mentions: &["spec.blocks[0].from", "\"10.244.1.5/24\"", "host bits"],
        },
        BadResource {
            why: "prefix length 33",
            kind: "BlockPolicy",
            spec: json!({"blocks": [{"from": "10.244.1.0/24", "to": "10.244.2.0/33"}]}),
            mentions: &["spec.blocks[0].to", "\"10.244.2.0/33\"", "must be a CIDR"],
        },
        BadResource {
            why: "garbage CIDR",
            kind: "RoutePolicy",
            spec: json!({"routes": [{"cidr": "not-a-cidr", "via": "node-b"}]}),
            mentions: &["spec.routes[0].cidr", "\"not-a-cidr\"", "must be a CIDR"],
        },
        BadResource {
            why: "IPv6 CIDR with host bits",
            kind: "RoutePolicy",
            spec: json!({"routes": [{"cidr": "fd00:100::1/64", "via": "node-b"}]}),
            mentions: &["spec.routes[0].cidr", "\"fd00:100::1/64\"", "host bits"],
        },
        BadResource {
            why: "unknown TunnelPolicy mode",
            kind: "TunnelPolicy",
            spec: json!({"mode": "Star"}),
            mentions: &["spec.mode", "\"Star\"", "FullMesh", "Explicit"],
        },
        BadResource {
            why: "listenPort 0",
            kind: "TunnelPolicy",
            spec: json!({"mode": "FullMesh", "listenPort": 0}),
            mentions: &["spec.listenPort: Invalid value: 0:", "greater than or equal to 1"],
        },
        BadResource {
            why: "listenPort 70000",
            kind: "TunnelPolicy",
            spec: json!({"mode": "FullMesh", "listenPort": 70000}),
            mentions: &["spec.listenPort: Invalid value: 70000:", "less than or equal to 65535"],
        },
        BadResource {
            why: "listenPort as a string",
            kind: "TunnelPolicy",
            spec: json!({"mode": "FullMesh", "listenPort": "51820"}),
            mentions: &["spec.listenPort", "integer"],
        },
        BadResource {
            why: "route without via",
            kind: "RoutePolicy",
            spec: json!({"routes": [{"cidr": "192.168.100.0/24"}]}),
            mentions: &["spec.routes[0].via", "Required value"],
        },
        BadResource {
            why: "Explicit mode without peers",
            kind: "TunnelPolicy",
            spec: json!({"mode": "Explicit"}),
            mentions: &["spec.peers", "mode Explicit needs at least one entry in peers"],
        },
        BadResource {
            why: "FullMesh mode with peers",
            kind: "TunnelPolicy",
            spec: json!({"mode": "FullMesh", "peers": [{"a": "node-a", "b": "node-b"}]}),
            mentions: &["spec.peers", "must be empty when mode is FullMesh"],
        },
        BadResource {
            why: "a node peering with itself",
            kind: "TunnelPolicy",
            spec: json!({"mode": "Explicit", "peers": [{"a": "node-a", "b": "node-a"}]}),
            mentions: &["spec.peers[0]", "cannot peer with itself"],
        },
        BadResource {
            why: "bad node name in via",
            kind: "RoutePolicy",
            spec: json!({"routes": [{"cidr": "192.168.100.0/24", "via": "Node_B"}]}),
            mentions: &["spec.routes[0].via", "\"Node_B\""],
        },
        BadResource {
            why: "BlockPolicy with nothing to block",
            kind: "BlockPolicy",
            spec: json!({}),
            mentions: &["spec", "at least one of blocks"],
        },
        BadResource {
            why: "unknown node action",
            kind: "BlockPolicy",
            spec: json!({"nodes": [{"node": "node-a", "action": "Remove"}]}),
            mentions: &["spec.nodes[0].action", "\"Remove\""],
        },
        BadResource {
            why: "5-field crontab schedule",
            kind: "RotationPolicy",
            spec: json!({"schedule": "0 3 * * Sun"}),
            mentions: &["spec.schedule", "\"0 3 * * Sun\"", "6 or 7 space-separated fields"],
        },
        BadResource {
            why: "overlap of 0 s",
            kind: "RotationPolicy",
            spec: json!({"schedule": "0 0 3 * * Sun", "overlapSeconds": 0}),
            mentions: &["spec.overlapSeconds: Invalid value: 0:", "greater than or equal to 1"],
        },
    ]
}

#[tokio::test]
async fn bad_custom_resources_are_rejected_with_readable_messages() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let client = cluster.client();
    let mut failures = Vec::new();
    for (index, bad) in bad_resources().into_iter().enumerate() {
        let name = format!("bad-{index}");
        let api = vpblu_api(client.clone(), bad.kind, plural_of(bad.kind));
        match api.create(&PostParams::default(), &vpblu_object(bad.kind, &name, bad.spec.clone())).await {
            Ok(_) => failures.push(format!("{} ({} {}): accepted", bad.why, bad.kind, bad.spec)),
            Err(kube::Error::Api(status)) => {
                println!("{}: {} {}\n  -> {} {}", bad.why, bad.kind, bad.spec, status.code, status.message);
                let missing: Vec<_> = bad.mentions.iter().filter(|m| !status.message.contains(**m)).collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{} ({} {}): got {} {:?}, expected 422 mentioning {missing:?}",
                        bad.why, bad.kind, bad.spec, status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: unexpected error {e}", bad.why)),
        }
    }
    assert!(failures.is_empty(), "bad resources not rejected as expected:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------- printer columns

#[tokio::test]
async fn printer_columns_are_served_in_kubectl_table_format() {
    let cluster = TestCluster::start().await;
    let crds = cluster.install_crds().await;
    for sample in vpblu_e2e::cluster::yaml_files(&cluster.repo_root().join("k8s/deploy/samples")) {
        cluster.apply_manifest(sample).await;
    }
    let client = cluster.client();
    vpblu_api(client.clone(), "VpbluNode", "vpblunodes")
        .create(&PostParams::default(), &vpblu_object("VpbluNode", "node-a", json!({})))
        .await
        .expect("create a VpbluNode");

    for crd in &crds {
        let plural = &crd.spec.names.plural;
        let version = &crd.spec.versions[0];
        // The server adds Name first; priority 1 columns are kubectl's `-o wide`.
        let mut expected = vec![("Name".to_owned(), 0_i64)];
        for column in version.additional_printer_columns.iter().flatten() {
            expected.push((column.name.clone(), i64::from(column.priority.unwrap_or(0))));
        }
        let table = get_table(&client, &version.name, plural).await;
        let served: Vec<(String, i64)> = table["columnDefinitions"]
            .as_array()
            .unwrap_or_else(|| panic!("{plural}: no columnDefinitions: {table}"))
            .iter()
            .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c["priority"].as_i64().unwrap_or(0)))
            .collect();
        println!("{plural}: {served:?}");
        assert_eq!(
            served, expected,
            "{plural}: served columns differ from the CRD's additionalPrinterColumns"
        );
        let upper: Vec<String> = served.iter().map(|(n, _)| n.to_uppercase()).collect();
        assert!(
            upper.contains(&"NAME".to_owned()) && upper.contains(&"AGE".to_owned()),
            "{plural}: {upper:?}"
        );
        for row in table["rows"].as_array().into_iter().flatten() {
            let cells = row["cells"].as_array().expect("rows have cells");
            assert_eq!(cells.len(), served.len(), "{plural}: row {row} does not fill the columns");
        }
    }
    // Rows carry the values: one VpbluNode, and the sample TunnelPolicy.
    let table = get_table(&client, "v1alpha1", "vpblunodes").await;
    assert_eq!(table["rows"].as_array().map(Vec::len), Some(1), "vpblunodes: {table}");
    assert_eq!(table["rows"][0]["cells"][0], "node-a");
    let table = get_table(&client, "v1alpha1", "tunnelpolicies").await;
    assert_eq!(table["rows"].as_array().map(Vec::len), Some(1), "tunnelpolicies: {table}");
    let cells = &table["rows"][0]["cells"];
    // Name, Mode, Port, Keepalive from k8s/deploy/samples/tunnelpolicy-fullmesh.yaml.
    assert_eq!(
        (&cells[0], &cells[1], &cells[2], &cells[3]),
        (&json!("default"), &json!("FullMesh"), &json!(51820), &json!(25))
    );
}

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
async fn daemon_service_account_can_do_nothing() {
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

    // All it may do is what every authenticated user may (system:basic-user,
    // system:discovery, ...): its rules equal those of an unbound account.
    let baseline = cluster.client_as("e2e-baseline", "nobody", &[], None).await;
    let daemon_rules = rules_in(&daemon, "vpblu-system").await;
    assert_eq!(
        daemon_rules,
        rules_in(&baseline, "vpblu-system").await,
        "the daemon has a binding of its own"
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

// ------------------------------------------------------------------ helpers

fn vpblu_api(client: Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("vpblu.dev", "v1alpha1", kind);
    Api::all_with(client, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// A vpblu list in kubectl's table format (`kubectl get` asks for this).
async fn get_table(client: &Client, version: &str, plural: &str) -> Value {
    let request = http::Request::get(format!("/apis/vpblu.dev/{version}/{plural}"))
        .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("a valid request");
    let text = client.request_text(request).await.unwrap_or_else(|e| panic!("GET {plural} as a Table: {e}"));
    let table: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{plural}: Table is not JSON: {e}"));
    assert_eq!(table["kind"], "Table", "{plural}: not a Table: {text}");
    table
}

fn vpblu_object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    from_json(
        json!({"apiVersion": "vpblu.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}),
    )
}

fn plural_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("not a vpblu kind: {kind}"))
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object matches its type")
}

/// The authenticated user's name and extra attributes (SelfSubjectReview).
async fn whoami(client: &Client) -> (String, BTreeMap<String, Vec<String>>) {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let user = review.status.and_then(|s| s.user_info).expect("SelfSubjectReview names the user");
    (user.username.unwrap_or_default(), user.extra.unwrap_or_default())
}

/// What the authorizer answers for this client (SelfSubjectAccessReview).
async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: Option<&str>,
) -> bool {
    let review: SelfSubjectAccessReview = from_json(json!({"spec": {"resourceAttributes": {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "namespace": namespace.unwrap_or(""),
    }}}));
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview");
    answer.status.expect("access review has a status").allowed
}

/// The resource rules the authorizer lists for this client in `namespace`
/// (SelfSubjectRulesReview), as sorted (groups, resources, verbs).
async fn rules_in(client: &Client, namespace: &str) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let review: SelfSubjectRulesReview = from_json(json!({"spec": {"namespace": namespace}}));
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectRulesReview")
        .status
        .expect("rules review has a status");
    assert!(!status.incomplete, "incomplete rules review: {:?}", status.evaluation_error);
    let mut rules: Vec<_> = status
        .resource_rules
        .into_iter()
        .map(|r| (r.api_groups.unwrap_or_default(), r.resources.unwrap_or_default(), r.verbs))
        .collect();
    rules.sort();
    rules
}

fn expect_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Opens a watch (1 s server-side timeout) and reads its first event:
/// authorization is checked when the watch starts.
async fn expect_watch_ok<K>(api: &Api<K>, what: &str)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap_or_else(|e| panic!("watch {what}: {e}"));
    if let Some(Err(e)) = std::pin::pin!(stream).next().await {
        panic!("watch {what}: {e}");
    }
}

fn internal_ip(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone())
}

fn ready_status(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}
