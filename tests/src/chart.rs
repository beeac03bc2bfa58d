//! The Helm chart, `chart/vpblu`, rendered by the pinned helm; and
//! `k8s/deploy/`, which is generated from it (`deploygen`), so the plain
//! manifests the lab, the tests and `kubectl apply -k` use can never drift
//! from what `helm install` deploys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::built_tools::{helm, repo_root};

/// The command that regenerates `k8s/deploy/` (run from the workspace root).
pub const DEPLOYGEN_COMMAND: &str = "cargo run -p vpblu-e2e --bin deploygen";

/// The release name and namespace `k8s/deploy/` is rendered for.
pub const DEPLOY_RELEASE: &str = "vpblu";
/// The namespace of `k8s/deploy/` (and the lab, and the tests).
pub const DEPLOY_NAMESPACE: &str = "vpblu-system";

/// kustomize's file, which deploygen writes beside the manifests.
pub const KUSTOMIZATION: &str = "kustomization.yaml";

/// `chart/vpblu`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("chart").join("vpblu")
}

/// The values `k8s/deploy/` is rendered with.
pub fn deploy_values() -> PathBuf {
    chart_dir().join("ci").join("k8s-deploy-values.yaml")
}

/// `k8s/deploy`.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("k8s").join("deploy")
}

/// Runs the pinned helm with `args` from the repository root, with helm's
/// own config, cache and data directories pointed away from the user's
/// (rendering needs none of them; nothing of the user's leaks in).
pub fn run_helm(args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join("vpblu-helm-home");
    let mut command = Command::new(helm());
    command
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_DATA_HOME", scratch.join("data"))
        .env_remove("KUBECONFIG");
    command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", helm().display()))
}

/// `helm template RELEASE chart/vpblu -n NAMESPACE -f VALUES...`: the
/// rendered YAML, or helm's error text.
pub fn template(release: &str, namespace: &str, values: &[&Path]) -> Result<String, String> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    let values: Vec<String> = values.iter().map(|v| v.to_string_lossy().into_owned()).collect();
    for file in &values {
        args.extend(["--values", file.as_str()]);
    }
    let output = run_helm(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() { Ok(stdout) } else { Err(format!("{}\n{stderr}", output.status)) }
}

/// Splits `helm template` output by the template each document came from:
/// `controller-rbac.yaml` → its documents, joined by `---`. NOTES.txt and
/// templates that rendered nothing are absent.
pub fn by_template(rendered: &str) -> Result<BTreeMap<String, String>, String> {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for document in rendered.split("\n---\n").map(|d| d.trim_start_matches("---\n")) {
        let Some(first) = document.lines().next() else { continue };
        let Some(source) = first.strip_prefix("# Source: ") else {
            if document.trim().is_empty() {
                continue;
            }
            return Err(format!("a rendered document does not start with '# Source:': {first:?}"));
        };
        let name = source.rsplit('/').next().unwrap_or(source).to_owned();
        let body = document[first.len()..].trim_start_matches('\n').trim_end().to_owned();
        files.entry(name).or_default().push(body);
    }
    Ok(files.into_iter().map(|(name, docs)| (name, docs.join("\n---\n") + "\n")).collect())
}

/// What `k8s/deploy/` must hold apart from `samples/`: one file per chart
/// template (namespace.yaml, controller-rbac.yaml, …), each with a header
/// saying where it comes from, and the `kustomization.yaml` listing them.
pub fn render_deploy() -> Result<Vec<(String, String)>, String> {
    let values = deploy_values();
    let rendered = template(DEPLOY_RELEASE, DEPLOY_NAMESPACE, &[&values])
        .map_err(|e| format!("helm template with {} failed: {e}", values.display()))?;
    let header = format!(
        "# Generated from chart/vpblu by `{DEPLOYGEN_COMMAND}`\n\
         # (helm template with chart/vpblu/ci/k8s-deploy-values.yaml).\n\
         # Do not edit: change the chart and rerun it.\n"
    );
    let mut files: Vec<(String, String)> =
        by_template(&rendered)?.into_iter().map(|(name, body)| (name, format!("{header}{body}"))).collect();
    // Namespace first, then what the workloads need before they start.
    let order = |name: &str| {
        ["namespace.yaml", "controller-rbac.yaml", "daemon-rbac.yaml"]
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX)
    };
    let mut listed: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    listed.sort_by_key(|name| (order(name), name.to_string()));
    let mut kustomization = format!(
        "# Generated by `{DEPLOYGEN_COMMAND}`.\n\
         # kubectl apply -k k8s/deploy   installs CRDs, RBAC, controller and daemon.\n\
         # Samples are not included: apply them once the CRDs exist\n\
         # (kubectl apply -f k8s/deploy/samples/). The stream certificate is not\n\
         # either: see tls in chart/vpblu/values.yaml.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n  \
         # The generated CRDs (a kustomization of their own, so kustomize's\n  \
         # load restrictor accepts files outside this directory).\n  \
         - ../crds\n"
    );
    for name in listed {
        kustomization.push_str(&format!("  - {name}\n"));
    }
    files.push((KUSTOMIZATION.to_owned(), kustomization));
    Ok(files)
}
