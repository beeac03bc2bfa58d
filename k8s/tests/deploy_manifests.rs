//! `k8s/deploy/`: every file parses, the samples match the Rust types, the
//! kustomization lists what exists, and the RBAC stays least-privilege.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;
use vpblu_k8s::{BlockPolicy, RotationPolicy, RoutePolicy, TunnelMode, TunnelPolicy};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every YAML document in `path`, as JSON values (empty documents skipped).
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_deploy_file_is_valid_yaml_with_kind_and_name() {
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 11, "expected the manifests and samples, found {files:?}");
    for file in files {
        let docs = documents(&file);
        assert!(!docs.is_empty(), "{}: no documents", file.display());
        for doc in docs {
            assert!(doc["apiVersion"].is_string(), "{}: document without apiVersion", file.display());
            assert!(doc["kind"].is_string(), "{}: document without kind", file.display());
            let is_kustomization = doc["kind"] == "Kustomization";
            assert!(
                is_kustomization || doc["metadata"]["name"].is_string(),
                "{}: document without a name",
                file.display()
            );
        }
    }
}

#[test]
fn kustomization_lists_every_manifest_and_the_crds() {
    let dir = deploy_dir();
    let kustomization = documents(&dir.join("kustomization.yaml")).remove(0);
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources list")
        .iter()
        .map(|r| r.as_str().expect("resource path"))
        .collect();
    assert!(resources.contains(&"../crds"), "the CRDs must be installed with the rest");
    for resource in &resources {
        assert!(dir.join(resource).exists(), "kustomization lists missing {resource}");
    }
    for file in fs::read_dir(&dir).expect("deploy dir").map(|e| e.expect("entry").path()) {
        let name = file.file_name().expect("name").to_string_lossy().into_owned();
        if file.is_file() && name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(resources.contains(&name.as_str()), "kustomization.yaml does not list {name}");
        }
    }
}

/// Parses a sample into `T` and checks nothing in it was silently ignored:
/// every field the sample sets comes back out of the typed value unchanged.
fn sample<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str) -> T {
    let path = deploy_dir().join("samples").join(file);
    let mut docs = documents(&path);
    assert_eq!(docs.len(), 1, "{file}: one object per sample");
    let raw = docs.remove(0);
    let typed: T =
        serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{file} does not match the type: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_subset(file, "", &raw, &back);
    typed
}

fn assert_subset(file: &str, path: &str, sample: &Value, typed: &Value) {
    match (sample, typed) {
        (Value::Object(s), Value::Object(t)) => {
            for (key, value) in s {
                let Some(t_value) = t.get(key) else {
                    panic!("{file}: field {path}.{key} is not part of the type (typo?)");
                };
                assert_subset(file, &format!("{path}.{key}"), value, t_value);
            }
        }
        (Value::Array(s), Value::Array(t)) => {
            assert_eq!(s.len(), t.len(), "{file}: {path} changed length");
            for (i, (sv, tv)) in s.iter().zip(t).enumerate() {
                assert_subset(file, &format!("{path}[{i}]"), sv, tv);
            }
        }
        _ => assert_eq!(sample, typed, "{file}: {path} does not round-trip"),
    }
}

#[test]
fn tunnel_policy_sample_matches_the_type() {
    let tp: TunnelPolicy = sample("tunnelpolicy-fullmesh.yaml");
    assert_eq!(tp.spec.mode, TunnelMode::FullMesh);
    assert_eq!(tp.spec.listen_port, 51820);
    assert!(tp.spec.peers.is_empty());
}

#[test]
fn rotation_policy_sample_matches_the_type() {
    let rtp: RotationPolicy = sample("rotationpolicy.yaml");
    assert_eq!(rtp.spec.schedule.split_whitespace().count(), 6, "6-field cron, with seconds");
    assert!((10..=86400).contains(&rtp.spec.overlap_seconds));
    assert!(!rtp.spec.paused);
}

#[test]
fn block_policy_sample_matches_the_type() {
    let bp: BlockPolicy = sample("blockpolicy.yaml");
    assert_eq!(bp.spec.blocks.len(), 1);
    assert_eq!(bp.spec.blocks[0].from, "10.244.1.0/24");
    assert_eq!(bp.spec.blocks[0].to, "10.244.2.0/24");
}

#[test]
fn route_policy_sample_matches_the_type() {
    let rp: RoutePolicy = sample("routepolicy.yaml");
    assert_eq!(rp.spec.routes.len(), 1);
    assert_eq!(rp.spec.routes[0].via, "vpblu-worker2");
}

/// All rules of every Role and ClusterRole in a file.
fn rbac_rules(file: &str) -> Vec<Value> {
    documents(&deploy_dir().join(file))
        .into_iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[test]
fn controller_rbac_is_least_privilege() {
    let rules = rbac_rules("controller-rbac.yaml");
    assert!(!rules.is_empty());
    for rule in &rules {
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        for forbidden in ["*", "delete", "deletecollection", "escalate", "bind", "impersonate"] {
            assert!(!verbs.contains(&forbidden), "controller may not {forbidden}: {rule}");
        }
        assert!(!resources.contains(&"*") && !resources.contains(&"secrets"), "controller resources: {rule}");
        assert!(!strings(&rule["apiGroups"]).contains(&"*"), "controller apiGroups: {rule}");
        // Writes to the main resources (not /status) are limited to the
        // VpbluNodes the controller owns; policies are read-only.
        let writes: Vec<&&str> =
            verbs.iter().filter(|v| ["create", "update", "patch"].contains(*v)).collect();
        for resource in resources.iter().filter(|r| !r.ends_with("/status")) {
            if writes.is_empty() {
                continue;
            }
            assert!(
                ["vpblunodes", "events", "leases", "tokenreviews"].contains(resource),
                "controller may not write {resource}: {rule}"
            );
        }
    }
    let docs = documents(&deploy_dir().join("controller-rbac.yaml"));
    let lease_role =
        docs.iter().find(|d| d["kind"] == "Role").expect("leader election uses a namespaced Role");
    assert_eq!(lease_role["metadata"]["namespace"], "vpblu-system");
    assert!(strings(&lease_role["rules"][0]["resources"]).contains(&"leases"));
}

#[test]
fn the_daemon_may_read_its_own_daemonset_and_nothing_else() {
    let mut bound = Vec::new();
    for file in yaml_files(&deploy_dir()) {
        for doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind == "ClusterRoleBinding" {
                for subject in doc["subjects"].as_array().into_iter().flatten() {
                    assert_ne!(subject["name"], "vpblu-daemon", "{}: no cluster-wide role", file.display());
                }
            }
            if kind == "RoleBinding"
                && doc["subjects"].as_array().into_iter().flatten().any(|s| s["name"] == "vpblu-daemon")
            {
                bound.push(doc["roleRef"]["name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(bound, ["vpblu-daemon"], "one RoleBinding for the daemon");
    let docs = documents(&deploy_dir().join("daemon-rbac.yaml"));
    let sa = &docs[0];
    assert_eq!(sa["kind"], "ServiceAccount");
    assert_eq!(sa["automountServiceAccountToken"], false, "the DaemonSet decides");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("the daemon's Role");
    assert_eq!(
        role["rules"],
        serde_json::json!([{
            "apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["vpblu-daemon"], "verbs": ["get"]
        }]),
        "get on its own DaemonSet, by name, is all"
    );
}

#[test]
fn daemon_mounts_the_vpblu_audience_token_and_an_api_token_for_its_stop() {
    let ds = documents(&deploy_dir().join("daemon-daemonset.yaml")).remove(0);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true, "removeOnStop=auto reads the DaemonSet at stop");
    let args = strings(&pod["containers"][0]["args"]);
    assert!(
        args.contains(&"--remove-on-stop=auto") && args.contains(&"--daemonset=vpblu-daemon"),
        "{args:?}"
    );
    assert_eq!(pod["serviceAccountName"], "vpblu-daemon");
    let token = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["projected"]["sources"][0].get("serviceAccountToken"))
        .expect("a projected service account token");
    assert_eq!(token["audience"], "vpblu");
    assert_eq!(token["expirationSeconds"], 3600);
    assert_eq!(token["path"], "token");
}
