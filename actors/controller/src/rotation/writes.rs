//! The scheduler's writes to the API, each with a timeout: merge patches
//! of VpbluNode status (rotation, staged and public key), server-side
//! apply of RotationPolicy status, and Events.
//!
//! VpbluNode status is patched (JSON merge patch, field manager
//! [`ROTATION_FIELD_MANAGER`]) rather than applied: the status writer
//! applies the fields it owns under [`FIELD_MANAGER`], and an apply only
//! takes away fields its own manager applied before, so neither clobbers
//! the other. RotationPolicy status belongs to the scheduler alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use vpblu_k8s::{FIELD_MANAGER, ROTATION_FIELD_MANAGER, RotationPolicy, VpbluNode};

/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's limit on an Event note.
const MAX_NOTE: usize = 1024;

/// A write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed it.
    #[error("{what}: {source}")]
    Api {
        /// What was being written.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// No answer in time.
    #[error("{what}: no answer from the API server within {WRITE_TIMEOUT:?}")]
    Timeout {
        /// What was being written.
        what: String,
    },
}

/// Merge-patches VpbluNode `name`'s status with `status` (a JSON object;
/// `null` removes a field). Returns the object as stored.
pub async fn patch_vpblu_node(
    api: &Api<VpbluNode>,
    name: &str,
    status: serde_json::Value,
) -> Result<VpbluNode, WriteError> {
    let what = format!("patch the rotation status of VpbluNode {name}");
    let params = PatchParams { field_manager: Some(ROTATION_FIELD_MANAGER.into()), ..PatchParams::default() };
    let patch = serde_json::json!({ "status": status });
    match tokio::time::timeout(WRITE_TIMEOUT, api.patch_status(name, &params, &Patch::Merge(&patch))).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(source)) => Err(WriteError::Api { what, source }),
        Err(_) => Err(WriteError::Timeout { what }),
    }
}

/// Applies `status` as RotationPolicy `name`'s whole status.
pub async fn apply_policy_status(
    api: &Api<RotationPolicy>,
    name: &str,
    status: serde_json::Value,
) -> Result<RotationPolicy, WriteError> {
    let what = format!("write the status of RotationPolicy {name}");
    let patch = serde_json::json!({
        "apiVersion": "vpblu.dev/v1alpha1",
        "kind": "RotationPolicy",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match tokio::time::timeout(WRITE_TIMEOUT, api.patch_status(name, &params, &Patch::Apply(&patch))).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(source)) => Err(WriteError::Api { what, source }),
        Err(_) => Err(WriteError::Timeout { what }),
    }
}

/// Records an Event about `regarding`; a failure is logged, never fatal.
pub async fn record(
    recorder: &Recorder,
    regarding: &ObjectReference,
    warning: bool,
    reason: &str,
    action: &str,
    mut note: String,
) {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    match tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&event, regarding)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(?regarding.name, reason, error = %e, "could not record an Event"),
        Err(_) => tracing::warn!(?regarding.name, reason, "recording an Event timed out"),
    }
}
