//! The Helm chart, `chart/vpblu`: `helm lint --strict`, the values schema
//! refusing bad values by name, `k8s/deploy/` generated from it, the
//! rendered objects (what a node agent needs, flags the binaries really
//! have, the RBAC the API-server tests prove), and every value set accepted
//! by a real kube-apiserver in a server-side dry run.
//!
//! helm is built from the Go module proxy by tools/helm/build.sh (`make
//! helm`; `make test` builds it first). A missing helm fails the tests with
//! the build's output; nothing is skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};
use vpblu_e2e::chart::{self, DEPLOY_NAMESPACE, DEPLOYGEN_COMMAND};
use vpblu_e2e::cluster::{TestCluster, yaml_files};
use vpblu_e2e::lab::LabBinaries;

/// The non-default value sets the API server must accept, each with the
/// namespace it is installed into.
const SERVER_VALUE_SETS: [(&str, &str); 4] = [
    ("k8s-deploy-values.yaml", DEPLOY_NAMESPACE),
    ("userspace-values.yaml", "mesh"),
    ("kernel-values.yaml", "vpblu-kernel"),
    ("single-controller-values.yaml", "vpblu-small"),
];

/// Needs the cert-manager and Prometheus-operator CRDs, which the test API
/// server does not have: its render is checked here, not its admission.
const OPERATOR_VALUE_SET: &str = "cert-manager-monitoring-values.yaml";

fn ci_values(file: &str) -> PathBuf {
    chart::chart_dir().join("ci").join(file)
}

/// Renders the chart with `values` (none: the defaults) into `namespace`,
/// panicking with helm's message when it refuses.
fn render(values: Option<&str>, namespace: &str) -> String {
    let files: Vec<PathBuf> = values.into_iter().map(ci_values).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    chart::template("vpblu", namespace, &refs)
        .unwrap_or_else(|e| panic!("helm template with {values:?} failed: {e}"))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered; kinds: {:?}", kinds(docs)))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"])).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

fn volume<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name} in {}", workload["metadata"]["name"]))
}

fn mount<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["volumeMounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no mount of {name} in container {}", container["name"]))
}

// ------------------------------------------------------------------- lint

#[test]
fn helm_lint_strict_passes_with_the_defaults_and_every_value_set() {
    let chart_dir = chart::chart_dir();
    let chart_dir = chart_dir.to_string_lossy();
    let mut sets: Vec<Option<PathBuf>> = vec![None];
    sets.extend(yaml_files(&chart::chart_dir().join("ci")).into_iter().map(Some));
    assert!(sets.len() >= 6, "expected the defaults and at least 5 value sets in chart/vpblu/ci: {sets:?}");
    for values in sets {
        let mut args = vec!["lint".to_owned(), "--strict".to_owned(), chart_dir.to_string()];
        if let Some(file) = &values {
            args.extend(["--values".to_owned(), file.to_string_lossy().into_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = chart::run_helm(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "helm lint --strict with {values:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        println!("helm lint --strict {values:?}: {}", stdout.lines().last().unwrap_or_default());
    }
}

// ----------------------------------------------------------------- schema

#[test]
fn bad_values_are_refused_naming_the_value() {
    let files = yaml_files(&chart::chart_dir().join("ci-bad"));
    assert!(
        files.len() >= 10,
        "chart/vpblu/ci-bad holds {} bad values files; at least 10 expected",
        files.len()
    );
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} must start with '# expect: TEXT'", file.display()));
        match chart::template("vpblu", "vpblu-system", &[&file]) {
            Ok(_) => panic!("{} was accepted; the chart must refuse it naming {expect:?}", file.display()),
            Err(message) => {
                assert!(
                    message.contains(expect),
                    "{}: refused, but the message does not name {expect:?}:\n{message}",
                    file.display()
                );
                println!(
                    "{}: refused naming {expect}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                );
            }
        }
    }
}

// ------------------------------------------------------------- k8s/deploy

#[test]
fn k8s_deploy_is_what_the_chart_renders() {
    let files = chart::render_deploy().unwrap_or_else(|e| panic!("cannot render k8s/deploy: {e}"));
    let problems = vpblu_k8s::generated_dir_problems(&chart::deploy_dir(), "k8s/deploy", &files);
    assert!(
        problems.is_empty(),
        "k8s/deploy is out of date with chart/vpblu:\n  {}\nRegenerate with `{DEPLOYGEN_COMMAND}` (from the workspace root) and commit the result.",
        problems.join("\n  ")
    );
}

// -------------------------------------------------------- rendered objects

#[test]
fn uninstall_runs_a_pre_delete_hook_that_deletes_the_daemonset_first() {
    let docs = documents(&render(None, "vpblu-system"));
    let job = object(&docs, "Job", "vpblu-uninstall");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vpblu-uninstall");
    assert_eq!(pod["restartPolicy"], "Never");
    let args = strings(&container(job, "uninstall")["args"]);
    assert!(args.contains(&"uninstall".to_owned()) && args.contains(&"--timeout=2m".to_owned()), "{args:?}");
    // Its RBAC exists before the Job (lower weight) and is a hook too, so
    // it is there when Helm runs the Job and gone with it.
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        let annotations = &object(&docs, kind, "vpblu-uninstall")["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "pre-delete", "{kind}");
        assert_eq!(annotations["helm.sh/hook-weight"], "-10", "{kind}");
    }
    let rules = &object(&docs, "Role", "vpblu-uninstall")["rules"];
    assert_eq!(rules[0]["resourceNames"], json!(["vpblu-daemon"]), "only the daemon DaemonSet: {rules}");

    // Plain manifests (k8s/deploy) carry no hook: applying them must not
    // run an uninstall.
    let deploy = documents(&render(Some("k8s-deploy-values.yaml"), DEPLOY_NAMESPACE));
    let hooks: Vec<String> = kinds(&deploy).into_iter().filter(|k| k.contains("vpblu-uninstall")).collect();
    assert!(hooks.is_empty(), "{hooks:?}");
}

#[test]
fn a_daemon_that_never_removes_itself_gets_no_api_token_and_no_role() {
    let auto = documents(&render(None, "vpblu-system"));
    let role = object(&auto, "Role", "vpblu-daemon");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["vpblu-daemon"], "verbs": ["get"]}]),
        "removeOnStop=auto: get on its own DaemonSet, nothing else"
    );
    object(&auto, "RoleBinding", "vpblu-daemon");

    let never = documents(&render(Some("kernel-values.yaml"), "vpblu-system"));
    let pod = &object(&never, "DaemonSet", "vpblu-daemon")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false, "removeOnStop=never: no Kubernetes API token");
    assert!(strings(&pod["containers"][0]["args"]).contains(&"--remove-on-stop=never".to_owned()));
    let daemon_roles: Vec<String> =
        kinds(&never).into_iter().filter(|k| k.contains("Role") && k.contains("vpblu-daemon")).collect();
    assert!(daemon_roles.is_empty(), "no Role for the daemon: {daemon_roles:?}");
}

#[test]
fn the_daemon_gets_the_node_and_nothing_more_than_it_needs() {
    let docs = documents(&render(None, "vpblu-system"));
    let ds = object(&docs, "DaemonSet", "vpblu-daemon");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "the daemon configures the host network namespace");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "every taint is tolerated");
    assert_eq!(pod["automountServiceAccountToken"], true, "an API token, to read its DaemonSet at stop");
    assert!(strings(&container(ds, "daemon")["args"]).contains(&"--remove-on-stop=auto".to_owned()));
    assert_eq!(pod["serviceAccountName"], "vpblu-daemon");
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);

    let token = &volume(ds, "vpblu-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "vpblu", "the token is only good for the controller");
    assert_eq!(token["path"], "token");
    assert!(token["expirationSeconds"].as_i64().is_some_and(|s| (600..=3600).contains(&s)), "{token}");
    assert_eq!(volume(ds, "bpffs")["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(volume(ds, "key-dir")["hostPath"]["path"], "/var/lib/vpblu");
    assert_eq!(volume(ds, "controller-ca")["configMap"]["name"], "vpblu-controller-ca");

    let daemon = container(ds, "daemon");
    let security = &daemon["securityContext"];
    let mut caps = strings(&security["capabilities"]["add"]);
    caps.sort();
    assert_eq!(caps, ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"], "capabilities: {security}");
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    // Privileged by default only for Bidirectional propagation of bpffs.
    assert_eq!(security["privileged"], true);
    assert_eq!(mount(daemon, "bpffs")["mountPropagation"], "Bidirectional");
    assert_eq!(mount(daemon, "vpblu-token")["mountPath"], "/var/run/secrets/vpblu");
    assert_probe(daemon, "livenessProbe", "/healthz");
    assert_probe(daemon, "readinessProbe", "/readyz");
    let args = strings(&daemon["args"]);
    for want in [
        "--token-file=/var/run/secrets/vpblu/token",
        "--ca-file=/etc/vpblu/ca/ca.crt",
        "--controller-server-name=vpblu-controller.vpblu-system.svc",
        "--controller-addr=https://vpblu-controller.vpblu-system.svc:9443",
        "--backend=auto",
        "--strict=true",
        "--mtu-overhead=80",
        "--pod-interfaces=cni0,veth*,lxc*",
    ] {
        assert!(args.iter().any(|a| a == want), "daemon args lack {want}: {args:?}");
    }

    // Without privileged: the capability list alone, bpffs seen from the host.
    let docs = documents(&render(Some("userspace-values.yaml"), "mesh"));
    let ds = object(&docs, "DaemonSet", "vpblu-daemon");
    let daemon = container(ds, "daemon");
    assert_eq!(daemon["securityContext"]["privileged"], false);
    assert_eq!(daemon["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(mount(daemon, "bpffs")["mountPropagation"], "HostToContainer");
}

fn assert_probe(container: &Value, probe: &str, path: &str) {
    let get = &container[probe]["httpGet"];
    assert_eq!(get["path"], path, "{probe} of {}: {get}", container["name"]);
    assert_eq!(get["port"], "metrics", "{probe} of {} is on the health port", container["name"]);
}

#[test]
fn the_controller_is_highly_available_and_unprivileged() {
    let docs = documents(&render(None, "vpblu-system"));
    let deployment = object(&docs, "Deployment", "vpblu-controller");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["serviceAccountName"], "vpblu-controller");
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(&anti["podAffinityTerm"]["labelSelector"]["matchLabels"], selector);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let controller = container(deployment, "controller");
    let security = &controller["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(security["capabilities"]["add"].is_null(), "the controller adds no capability: {security}");
    assert_probe(controller, "livenessProbe", "/healthz");
    assert_probe(controller, "readinessProbe", "/readyz");
    let args = strings(&controller["args"]);
    assert!(
        args.contains(&"--daemon-service-account=system:serviceaccount:vpblu-system:vpblu-daemon".to_owned())
    );

    let pdb = object(&docs, "PodDisruptionBudget", "vpblu-controller");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector, "the PDB covers the controller pods");

    // The generated stream certificate: a CA for the daemons, a key pair for the controller.
    let ca = object(&docs, "ConfigMap", "vpblu-controller-ca");
    let ca_pem = ca["data"]["ca.crt"].as_str().unwrap_or_default();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "ca.crt: {ca_pem}");
    let secret = object(&docs, "Secret", "vpblu-controller-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        assert!(secret["data"][key].as_str().is_some_and(|v| !v.is_empty()), "{key} is empty");
    }
}

/// The rules of every Role and ClusterRole in `docs`, by kind and name,
/// but the uninstall hook's (actors/controller/tests/k8s_uninstall.rs
/// proves those).
fn rbac(docs: &[Value]) -> Vec<(String, String, Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null())
        .map(|d| (d["kind"].to_string(), d["metadata"]["name"].to_string(), d["rules"].clone()))
        .collect()
}

#[test]
fn rbac_is_what_the_api_server_tests_prove_for_every_value_set() {
    // tests/tests/kube_rbac.rs proves k8s/deploy's RBAC on a real API
    // server (the controller can do its job and no more, the daemon read its
    // own DaemonSet); every value set must render exactly those rules, but
    // the daemon's Role only with daemon.removeOnStop=auto.
    let read = |file: &str| {
        std::fs::read_to_string(chart::deploy_dir().join(file))
            .unwrap_or_else(|e| panic!("cannot read k8s/deploy/{file}: {e}"))
    };
    let controller = rbac(&documents(&read("controller-rbac.yaml")));
    assert_eq!(controller.len(), 2, "a ClusterRole and the leader-election Role: {controller:?}");
    let daemon = rbac(&documents(&read("daemon-rbac.yaml")));
    assert_eq!(daemon.len(), 1, "the daemon's Role: {daemon:?}");
    let mut sets: Vec<(Option<&str>, &str)> = vec![(None, "vpblu-system")];
    sets.extend(SERVER_VALUE_SETS.iter().map(|(file, ns)| (Some(*file), *ns)));
    sets.push((Some(OPERATOR_VALUE_SET), "vpblu-system"));
    for (values, namespace) in sets {
        let docs = documents(&render(values, namespace));
        let ds = object(&docs, "DaemonSet", "vpblu-daemon");
        let auto = strings(&container(ds, "daemon")["args"]).contains(&"--remove-on-stop=auto".to_owned());
        let mut proven = controller.clone();
        if auto {
            proven.extend(daemon.iter().cloned());
        }
        assert_eq!(rbac(&docs), proven, "{values:?}: RBAC rules differ from the proven ones");
        let bindings =
            docs.iter().filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding");
        for binding in bindings.filter(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null()) {
            for subject in binding["subjects"].as_array().into_iter().flatten() {
                assert_eq!(subject["namespace"], namespace, "{values:?}: {binding}");
                if subject["name"] == "vpblu-daemon" {
                    assert!(auto, "{values:?}: a daemon that never removes itself needs no role");
                    assert_eq!(binding["kind"], "RoleBinding", "{values:?}: {binding}");
                    assert_eq!(binding["roleRef"]["name"], "vpblu-daemon", "{values:?}: {binding}");
                }
            }
        }
    }
}

#[test]
fn non_default_values_reach_the_binaries_flags() {
    let docs = documents(&render(Some("userspace-values.yaml"), "mesh"));
    let daemon = container(object(&docs, "DaemonSet", "vpblu-daemon"), "daemon");
    let args: BTreeSet<String> = strings(&daemon["args"]).into_iter().collect();
    for want in [
        "--backend=userspace",
        "--strict=false",
        "--mtu-overhead=60",
        "--pod-interfaces=eth*,cali*",
        "--interface=wgm0",
        "--lane-interface=wgm1",
        "--observe-interval=500ms",
        "--metrics-addr=0.0.0.0:10091",
        "--key-dir=/opt/vpblu/keys",
        "--log-format=text",
        "--controller-server-name=vpblu-controller.mesh.svc",
        "--controller-addr=https://vpblu-controller.mesh.svc:10443",
    ] {
        assert!(args.contains(want), "daemon args lack {want}: {args:?}");
    }
    assert_eq!(daemon["image"], "registry.example.com/vpblu/daemon:v0.1.0-3-gabcdef0");
    assert_eq!(
        daemon["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "RUST_LOG"))
            .map(|v| &v["value"]),
        Some(&json!("debug"))
    );
    let deployment = object(&docs, "Deployment", "vpblu-controller");
    let controller = container(deployment, "controller");
    let args: BTreeSet<String> = strings(&controller["args"]).into_iter().collect();
    for want in [
        "--lease-duration=4s",
        "--lease-renew=1s",
        "--dashboard-addr=[::]:10082",
        "--grpc-addr=0.0.0.0:10443",
    ] {
        assert!(args.contains(want), "controller args lack {want}: {args:?}");
    }
    let ports = &controller["ports"];
    assert!(
        ports
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "dashboard" && p["containerPort"] == 10082)
    );
    assert!(!deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_null());
    let tp = object(&docs, "TunnelPolicy", "cluster");
    assert_eq!(tp["spec"]["listenPort"], 51000);
    assert!(tp["spec"]["persistentKeepaliveSeconds"].is_null(), "0 means no keepalive field");
    assert_eq!(object(&docs, "RotationPolicy", "nightly")["spec"]["paused"], true);

    // cert-manager and the Prometheus operator.
    let docs = documents(&render(Some(OPERATOR_VALUE_SET), "vpblu-system"));
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "cert-manager, not helm, makes the Secret");
    let certificate = object(&docs, "Certificate", "vpblu-controller");
    assert_eq!(certificate["spec"]["secretName"], "vpblu-controller-tls");
    assert!(
        strings(&certificate["spec"]["dnsNames"]).contains(&"vpblu-controller.vpblu-system.svc".to_owned())
    );
    assert_eq!(certificate["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let monitor = object(&docs, "ServiceMonitor", "vpblu-controller");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        object(&docs, "PodMonitor", "vpblu-daemon")["spec"]["podMetricsEndpoints"][0]["interval"],
        "15s"
    );
}

/// `--flag` names in a binary's `--help`.
fn flags_of(binary: &Path) -> BTreeSet<String> {
    let output = Command::new(binary)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --help: {e}", binary.display()));
    assert!(output.status.success(), "{} --help failed", binary.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split(['=', ' ', ',', '<', '[']).next().unwrap_or_default().to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn every_flag_the_chart_sets_exists_in_the_binary() {
    let binaries = LabBinaries::find();
    let known = [("controller", flags_of(&binaries.controller)), ("daemon", flags_of(&binaries.daemon))];
    let mut sets: Vec<Option<&str>> = vec![None, Some(OPERATOR_VALUE_SET)];
    sets.extend(SERVER_VALUE_SETS.iter().map(|(file, _)| Some(*file)));
    for values in sets {
        let docs = documents(&render(values, "vpblu-system"));
        for (component, flags) in &known {
            let workload = docs
                .iter()
                .find(|d| {
                    d["metadata"]["name"] == format!("vpblu-{component}") && d["spec"]["template"].is_object()
                })
                .unwrap_or_else(|| panic!("no vpblu-{component} workload rendered"));
            for arg in strings(&container(workload, component)["args"]) {
                let flag = arg.trim_start_matches("--").split('=').next().unwrap_or_default().to_owned();
                assert!(
                    flags.contains(&flag),
                    "{values:?}: the chart passes {arg} but vpblu-{component} has no --{flag}"
                );
            }
        }
    }
}

// ------------------------------------------------------------- API server

#[tokio::test]
async fn every_value_set_is_accepted_by_the_api_server() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let mut sets: Vec<(Option<&str>, &str)> = vec![(None, "vpblu-system")];
    sets.extend(SERVER_VALUE_SETS.iter().map(|(file, ns)| (Some(*file), *ns)));
    for (values, namespace) in sets {
        // helm install --create-namespace makes it before the objects.
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        namespaces
            .patch(namespace, &PatchParams::apply("vpblu-e2e"), &Patch::Apply(&ns))
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {namespace}: {e}"));
        let rendered = render(values, namespace);
        let expected = documents(&rendered);
        let accepted = cluster.dry_run_apply(&rendered, &format!("helm template with {values:?}")).await;
        assert_eq!(accepted.len(), expected.len(), "{values:?}: objects rendered {:?}", kinds(&expected));
        println!(
            "{values:?} in {namespace}: {} objects accepted ({})",
            accepted.len(),
            kinds(&expected).join(", ")
        );
    }
    // A dry run stores nothing.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(cluster.client(), "mesh");
    let stored = deployments.list(&Default::default()).await.expect("list Deployments in mesh");
    assert!(stored.items.is_empty(), "a server-side dry run stored {} Deployments", stored.items.len());
}
