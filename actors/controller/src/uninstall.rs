//! `vpblu-controller uninstall`: removes vpblu from every node, for Helm's
//! pre-delete hook.
//!
//! A daemon removes what it put on its node when it stops and its
//! DaemonSet is gone or being deleted (`--remove-on-stop=auto`); it asks the
//! API server, with its own RBAC. Were the DaemonSet deleted together with
//! the rest of the release, that RBAC (and the daemon's ServiceAccount)
//! would be gone before the daemons ask, and they would keep the data
//! plane. So the hook runs first, while everything else is still there:
//! it deletes the DaemonSet with foreground propagation (the object stays,
//! marked, until its pods are gone), then waits until every daemon pod has
//! stopped and the DaemonSet is gone. Only then does Helm delete the rest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};

use crate::informers::DAEMON_POD_SELECTOR;

/// How often the hook looks again.
const POLL: Duration = Duration::from_millis(500);

/// What the hook saw go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// Daemon pods there were when the DaemonSet was deleted.
    pub pods: usize,
    /// How long until the last was gone.
    pub took: Duration,
}

/// Why the hook failed.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    /// The API server refused or did not answer.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Daemon pods still there at the deadline.
    #[error(
        "after {waited:?}, {} daemon pod(s) had not stopped: {}. Each removes vpblu from its node as it \
         stops; see `kubectl -n {namespace} describe pod` and `kubectl -n {namespace} logs` for them. \
         `helm uninstall --no-hooks` deletes the release without waiting (nodes whose daemon did not \
         stop keep vpblu's devices, programs and rules until their daemon stops)",
        left.len(),
        left.iter().map(|(pod, node)| format!("{pod} (node {node})")).collect::<Vec<_>>().join(", ")
    )]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The namespace.
        namespace: String,
        /// Pods left, with their nodes.
        left: BTreeMap<String, String>,
    },
}

/// Runs the job for `args` (in-cluster API access): exit 0 once every
/// daemon pod is gone.
pub async fn run(args: &crate::Args, timeout: Duration) -> vpblu_runtime::RootExit {
    let (namespace, daemonset) = (&args.lease_namespace, &args.daemon_daemonset);
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(e) => return vpblu_runtime::RootExit::Failed(format!("no Kubernetes API client: {e}")),
    };
    match remove_daemons(client, namespace, daemonset, timeout).await {
        Ok(removed) => {
            tracing::info!(pods = removed.pods, took = ?removed.took, "vpblu removed from every node");
            vpblu_runtime::RootExit::Stopped
        }
        Err(e) => vpblu_runtime::RootExit::Failed(e.to_string()),
    }
}

/// Deletes DaemonSet `namespace/daemonset` in the foreground and waits, at
/// most `timeout`, until it and every daemon pod are gone.
pub async fn remove_daemons(
    client: Client,
    namespace: &str,
    daemonset: &str,
    timeout: Duration,
) -> Result<Removed, UninstallError> {
    let started = Instant::now();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let api = |what: String| move |source| UninstallError::Api { what, source };

    let at_start = daemon_pods(&pods).await?;
    match daemonsets.delete(daemonset, &DeleteParams::foreground()).await {
        Ok(_) => tracing::info!(
            daemonset,
            namespace,
            pods = at_start.len(),
            "deleting the daemon DaemonSet in the foreground: each daemon removes vpblu from its node as it stops"
        ),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(daemonset, namespace, "the daemon DaemonSet is already gone");
        }
        Err(e) => return Err(api(format!("deleting DaemonSet {namespace}/{daemonset}"))(e)),
    }

    let mut reported = usize::MAX;
    loop {
        let left = daemon_pods(&pods).await?;
        let present = daemonsets
            .get_opt(daemonset)
            .await
            .map_err(api(format!("reading DaemonSet {namespace}/{daemonset}")))?
            .is_some();
        if left.is_empty() && !present {
            let took = started.elapsed();
            tracing::info!(pods = at_start.len(), took = ?took, "every daemon pod is gone");
            return Ok(Removed { pods: at_start.len(), took });
        }
        if started.elapsed() >= timeout {
            return Err(UninstallError::Timeout { waited: timeout, namespace: namespace.to_owned(), left });
        }
        if left.len() != reported {
            reported = left.len();
            let names: Vec<&str> = left.keys().map(String::as_str).collect();
            tracing::info!(left = reported, pods = ?names, "waiting for daemon pods to stop");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The daemon pods, by name, with their nodes.
async fn daemon_pods(pods: &Api<Pod>) -> Result<BTreeMap<String, String>, UninstallError> {
    let list = pods
        .list(&ListParams::default().labels(DAEMON_POD_SELECTOR))
        .await
        .map_err(|source| UninstallError::Api { what: "listing the daemon pods".into(), source })?;
    Ok(list
        .items
        .into_iter()
        .map(|pod| {
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_else(|| "unscheduled".into());
            (pod.metadata.name.unwrap_or_default(), node)
        })
        .collect())
}
