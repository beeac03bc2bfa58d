//! Every Node gets its VpbluNode: the leader creates the missing ones by
//! server-side apply under [`vpblu_k8s::FIELD_MANAGER`], with an owner
//! reference so Kubernetes collects each with its Node. It only creates:
//! it never deletes one nor touches a spec it did not write.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use ractor::ActorRef;
use serde_json::json;
use tokio::sync::Semaphore;
use vpblu_k8s::{FIELD_MANAGER, VpbluNode};

use super::RecomputeMsg;
use crate::informers::Snapshot;

/// How long one VpbluNode apply may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay before a failed VpbluNode apply is tried again.
const APPLY_RETRY: Duration = Duration::from_secs(2);

/// Applies sent to the API server at once. A fresh install on a large
/// cluster has a VpbluNode to create for every Node: 5000 at once kept the
/// API server past [`APPLY_TIMEOUT`] and every timeout came back as a
/// retry; queued here, each waits its turn instead (and its timeout runs
/// from when it is sent).
const APPLIES_IN_FLIGHT: usize = 32;

/// Why a VpbluNode could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server answered with an error.
    #[error("the API server refused the apply: {0}")]
    Api(#[from] kube::Error),
    /// The API server did not answer in time.
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
}

/// The applies queued or in flight, one per node at most.
pub(super) struct VpbluNodeCreator {
    api: Api<VpbluNode>,
    applying: BTreeSet<String>,
    /// [`APPLIES_IN_FLIGHT`] permits.
    in_flight: Arc<Semaphore>,
}

impl VpbluNodeCreator {
    pub(super) fn new(api: Api<VpbluNode>) -> Self {
        VpbluNodeCreator {
            api,
            applying: BTreeSet::new(),
            in_flight: Arc::new(Semaphore::new(APPLIES_IN_FLIGHT)),
        }
    }

    /// Starts a server-side apply for every Node in `snapshot` without a
    /// VpbluNode (and none in flight). Each reports back to `myself` with
    /// [`RecomputeMsg::Applied`].
    pub(super) fn ensure(&mut self, myself: &ActorRef<RecomputeMsg>, snapshot: &Snapshot) {
        let existing: BTreeSet<&str> =
            snapshot.vpblu_nodes.iter().filter_map(|v| v.metadata.name.as_deref()).collect();
        for node in &snapshot.nodes {
            let name = node.name_any();
            if node.metadata.deletion_timestamp.is_some()
                || existing.contains(name.as_str())
                || self.applying.contains(&name)
            {
                continue;
            }
            let Some(uid) = node.metadata.uid.clone() else { continue };
            self.applying.insert(name.clone());
            let api = self.api.clone();
            let me = myself.clone();
            let in_flight = Arc::clone(&self.in_flight);
            vpblu_runtime::spawn(async move {
                // Never closed: a permit always comes.
                let _permit = in_flight.acquire_owned().await;
                let result = apply(&api, &name, &uid).await;
                let _stopped = me.cast(RecomputeMsg::Applied { node: name, result });
            });
        }
    }

    /// Takes the outcome of the apply for `node`; a failure is retried
    /// after [`APPLY_RETRY`]. Returns whether it failed.
    pub(super) fn applied(
        &mut self,
        myself: &ActorRef<RecomputeMsg>,
        node: &str,
        result: Result<(), ApplyError>,
    ) -> bool {
        self.applying.remove(node);
        match result {
            Ok(()) => {
                tracing::info!(%node, "created VpbluNode");
                false
            }
            Err(error) => {
                tracing::warn!(%node, %error, "cannot create VpbluNode; will retry");
                myself.send_after(APPLY_RETRY, || RecomputeMsg::EnsureVpbluNodes);
                true
            }
        }
    }
}

/// Creates VpbluNode `name` owned by the Node with `uid`, or leaves an
/// existing one as it is: the apply sets no field but the owner reference.
async fn apply(api: &Api<VpbluNode>, name: &str, uid: &str) -> Result<(), ApplyError> {
    let object = json!({
        "apiVersion": "vpblu.dev/v1alpha1",
        "kind": "VpbluNode",
        "metadata": {
            "name": name,
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid }],
        },
        "spec": {},
    });
    let params = PatchParams::apply(FIELD_MANAGER);
    match tokio::time::timeout(APPLY_TIMEOUT, api.patch(name, &params, &Patch::Apply(&object))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ApplyError::Api(e)),
        Err(_) => Err(ApplyError::Timeout(APPLY_TIMEOUT)),
    }
}
