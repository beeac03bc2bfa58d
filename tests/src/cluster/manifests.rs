//! Installing vpblu's CRDs and applying YAML manifests the way
//! `kubectl apply --server-side` does (for real, or as a server-side dry
//! run): every document, resolved through discovery, under one field manager.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};

use super::{FIELD_MANAGER, TestCluster};

/// How long a CRD gets to become Established and discoverable.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// kustomize's own file: not a Kubernetes object.
const KUSTOMIZATION: &str = "kustomization.yaml";

impl TestCluster {
    /// Applies every `k8s/crds/*.yaml` (server-side apply) and waits until
    /// each CRD is `Established` and its kind is discoverable. Panics naming
    /// the CRD that the API server rejects or that does not get there in 30 s.
    pub async fn install_crds(&self) -> Vec<CustomResourceDefinition> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut applied = Vec::new();
        for path in yaml_files(&self.repo_root().join("k8s/crds")) {
            let text = read(&path);
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not a CustomResourceDefinition: {e}", path.display()));
            let name = crd.metadata.name.clone().unwrap_or_else(|| panic!("{} has no name", path.display()));
            let crd = api
                .patch(&name, &params, &Patch::Apply(&crd))
                .await
                .unwrap_or_else(|e| panic!("the API server rejected CRD {name} ({}): {e}", path.display()));
            applied.push(crd);
        }
        assert!(!applied.is_empty(), "no CRDs found in {}", self.repo_root().join("k8s/crds").display());
        let mut established = Vec::new();
        for crd in &applied {
            established.push(self.wait_established(crd).await);
        }
        established
    }

    /// Waits until `crd` is `Established` and every served version of it is
    /// in discovery (so dynamic clients can resolve the kind).
    async fn wait_established(&self, crd: &CustomResourceDefinition) -> CustomResourceDefinition {
        let name = crd.metadata.name.as_deref().expect("applied CRDs have names");
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let deadline = Instant::now() + ESTABLISH_TIMEOUT;
        let current = loop {
            let current = api.get(name).await.unwrap_or_else(|e| panic!("cannot get CRD {name}: {e}"));
            let conditions = current.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            let has =
                |kind: &str, status: &str| conditions.iter().any(|c| c.type_ == kind && c.status == status);
            if has("Established", "True") {
                break current;
            }
            if has("NamesAccepted", "False") {
                panic!("CRD {name}: names not accepted: {conditions:?}");
            }
            if Instant::now() > deadline {
                panic!(
                    "CRD {name} is not Established after {ESTABLISH_TIMEOUT:?}; conditions: {conditions:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let client = self.client();
        for version in current.spec.versions.iter().filter(|v| v.served) {
            let gvk = GroupVersionKind::gvk(&current.spec.group, &version.name, &current.spec.names.kind);
            while let Err(e) = pinned_kind(&client, &gvk).await {
                if Instant::now() > deadline {
                    panic!("CRD {name} is Established but {gvk:?} is not discoverable: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        current
    }

    /// Applies every document of a (multi-document) YAML file with
    /// server-side apply, field manager `vpblu-e2e`, resolving each kind
    /// through discovery. A relative `path` is taken from the repository
    /// root. Namespaced objects without a namespace go to `default`;
    /// `kustomization.yaml` files and `Kustomization` documents are skipped.
    /// Returns the objects as the API server stored them.
    pub async fn apply_manifest(&self, path: impl AsRef<Path>) -> Vec<DynamicObject> {
        let path = self.repo_root().join(path.as_ref());
        if path.file_name().is_some_and(|n| n == KUSTOMIZATION) {
            return Vec::new();
        }
        self.apply_documents(&read(&path), &path.display().to_string(), false).await
    }

    /// Sends every document of `yaml` as `kubectl apply --server-side
    /// --dry-run=server` would: the API server admits, defaults and
    /// validates each object and stores nothing. `source` names the text in
    /// panics (a file, a rendered chart). Returns the objects as they would
    /// have been stored; panics naming the first one refused.
    pub async fn dry_run_apply(&self, yaml: &str, source: &str) -> Vec<DynamicObject> {
        self.apply_documents(yaml, source, true).await
    }

    async fn apply_documents(&self, yaml: &str, source: &str, dry_run: bool) -> Vec<DynamicObject> {
        let client = self.client();
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run;
        let mut applied = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let where_ = format!("{source} (document {})", index + 1);
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{where_} is not valid YAML: {e}"));
            if value.is_null() {
                continue; // empty or comment-only document
            }
            let object: DynamicObject = serde_yaml::from_value(value)
                .unwrap_or_else(|e| panic!("{where_} is not a Kubernetes object: {e}"));
            let types = object.types.clone().unwrap_or_else(|| panic!("{where_} has no apiVersion/kind"));
            if types.kind == "Kustomization" {
                continue;
            }
            let gvk = GroupVersionKind::try_from(&types)
                .unwrap_or_else(|e| panic!("{where_}: bad apiVersion {:?}: {e}", types.api_version));
            let (resource, capabilities) = pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{where_}: the API server does not serve {gvk:?}: {e}"));
            let name = object.metadata.name.clone().unwrap_or_else(|| panic!("{where_} has no name"));
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Cluster => Api::all_with(client.clone(), &resource),
                Scope::Namespaced => {
                    let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
                    Api::namespaced_with(client.clone(), namespace, &resource)
                }
            };
            let what = if dry_run { "a server-side dry run of " } else { "" };
            let stored = api.patch(&name, &params, &Patch::Apply(&object)).await.unwrap_or_else(|e| {
                panic!("the API server rejected {what}{} {name} from {where_}: {e}", types.kind)
            });
            applied.push(stored);
        }
        applied
    }
}

/// `dir/*.yaml` without `kustomization.yaml`, sorted by name (for
/// applying a directory such as `k8s/deploy/samples`).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != KUSTOMIZATION))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
