//! vpblu's Kubernetes API surface against a real kube-apiserver: the CRDs
//! install and validate, printer columns are served, the samples are
//! accepted and bad input is rejected readably. Also checks the harness
//! itself. RBAC is in kube_rbac.rs.
//!
//! Each test starts its own control plane (about 3.5 s); they fail, never
//! skip, when it cannot be built or started.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::kube_api::*;

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
