//! Nodes and Pods as a kubelet and a CNI would register them (and the
//! DaemonSet a chart would create). Nothing else
//! runs in the test control plane (no scheduler, no kubelet), so the spec
//! says where a Pod runs and the status subresource says what a kubelet
//! would have reported.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::TestCluster;

/// The image of every registered Pod; nothing pulls it.
pub const POD_IMAGE: &str = "vpblu/pause";

impl TestCluster {
    /// Creates Node `name` with `spec.podCIDR`/`podCIDRs` (the first CIDR is
    /// `podCIDR`), then reports through the status subresource its
    /// `InternalIP` and `Hostname` addresses and a `Ready` condition.
    /// Returns the Node as stored after the status update.
    pub async fn register_node(
        &self,
        name: &str,
        internal_ip: &str,
        pod_cidrs: &[&str],
        ready: bool,
    ) -> Node {
        let api: Api<Node> = Api::all(self.client());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidrs.first().map(|c| c.to_string()),
                pod_cidrs: Some(pod_cidrs.iter().map(|c| c.to_string()).collect()),
                ..NodeSpec::default()
            }),
            ..Node::default()
        };
        api.create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("cannot create Node {name}: {e}"));
        let now = now();
        let status = json!({
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": internal_ip},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [ready_condition(ready, &now, &now)],
            }
        });
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
            .await
            .unwrap_or_else(|e| panic!("cannot set the status of Node {name}: {e}"))
    }

    /// Sets Node `name`'s `Ready` condition (heartbeat now; transition time
    /// now only if the status changes), as a kubelet's status update would.
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> Node {
        let api: Api<Node> = Api::all(self.client());
        let node = api.get(name).await.unwrap_or_else(|e| panic!("cannot get Node {name}: {e}"));
        let previous = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        let now = now();
        let transition = match previous {
            Some(c) if c.status == condition_status(ready) => {
                c.last_transition_time.unwrap_or_else(|| now.clone())
            }
            _ => now.clone(),
        };
        let status = json!({"status": {"conditions": [ready_condition(ready, &now, &transition)]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
            .await
            .unwrap_or_else(|e| panic!("cannot set Node {name} Ready={ready}: {e}"))
    }

    /// Deletes Node `name` (it has no finalizers: it is gone on return).
    pub async fn delete_node(&self, name: &str) {
        let api: Api<Node> = Api::all(self.client());
        api.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete Node {name}: {e}"));
    }

    /// Creates DaemonSet `namespace/name` (the namespace must exist), its
    /// pods labelled `app.kubernetes.io/name: NAME`, as the chart's. No
    /// controller runs here: it never gets a pod.
    pub async fn create_daemonset(&self, namespace: &str, name: &str) -> DaemonSet {
        let labels = json!({ "app.kubernetes.io/name": name });
        let daemonset: DaemonSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": { "name": name, "namespace": namespace },
            "spec": {
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": { "containers": [{ "name": "main", "image": POD_IMAGE }] }
                }
            }
        }))
        .expect("a DaemonSet");
        Api::<DaemonSet>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &daemonset)
            .await
            .unwrap_or_else(|e| panic!("create DaemonSet {namespace}/{name}: {e}"))
    }

    /// Creates Pod `namespace/name` on `node_name` (the namespace and the
    /// service account, `default` if `None`, are created if missing), with
    /// one container `vpblu/pause`, then reports through the status
    /// subresource phase `Running`, `Ready`, `podIP`/`podIPs` = `pod_ip`
    /// and, if the Node exists, its InternalIP as `hostIP`. Returns the Pod
    /// as stored after the status update (with its UID).
    pub async fn register_pod(
        &self,
        namespace: &str,
        name: &str,
        node_name: &str,
        pod_ip: &str,
        service_account: Option<&str>,
        labels: &[(&str, &str)],
    ) -> Pod {
        // The ServiceAccount admission plugin rejects Pods whose account does
        // not exist, and no controller creates `default` here.
        let account = service_account.unwrap_or("default");
        self.ensure_service_account(namespace, account).await;
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node_name.to_owned()),
                service_account_name: Some(account.to_owned()),
                containers: vec![Container {
                    name: "pause".to_owned(),
                    image: Some(POD_IMAGE.to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        api.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("cannot create Pod {namespace}/{name}: {e}"));

        let now = now();
        let mut status = json!({
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        });
        if let Some(host_ip) = self.internal_ip(node_name).await {
            status["hostIP"] = json!(host_ip);
            status["hostIPs"] = json!([{"ip": host_ip}]);
        }
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(json!({"status": status})))
            .await
            .unwrap_or_else(|e| panic!("cannot set the status of Pod {namespace}/{name}: {e}"))
    }

    /// The InternalIP of Node `name`, if the Node exists and reports one.
    async fn internal_ip(&self, name: &str) -> Option<String> {
        let api: Api<Node> = Api::all(self.client());
        let node = api.get_opt(name).await.unwrap_or_else(|e| panic!("cannot get Node {name}: {e}"))?;
        let addresses = node.status?.addresses?;
        addresses.into_iter().find(|a| a.type_ == "InternalIP").map(|a| a.address)
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn condition_status(ready: bool) -> &'static str {
    if ready { "True" } else { "False" }
}

/// A `Ready` NodeCondition with the kubelet's reasons.
fn ready_condition(ready: bool, heartbeat: &Time, transition: &Time) -> Value {
    let (reason, message) = if ready {
        ("KubeletReady", "kubelet is posting ready status")
    } else {
        ("KubeletNotReady", "container runtime network not ready")
    };
    json!({
        "type": "Ready",
        "status": condition_status(ready),
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": heartbeat,
        "lastTransitionTime": transition,
    })
}
