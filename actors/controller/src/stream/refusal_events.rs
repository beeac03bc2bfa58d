//! Kubernetes Events for refused and closed daemon streams, so
//! `kubectl describe vpblunode NODE` and `kubectl get events` say why a
//! node's daemon is not connected (a metric counts; an Event explains).
//!
//! Events are regarding the VpbluNode the Hello claimed, or the controller
//! itself when there was no valid Hello. They are published by one
//! background task, throttled per (object, cause), so a client hammering
//! the port cannot turn into an API write per attempt; the metric still
//! counts every one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use vpblu_k8s::VpbluNode;
use vpblu_messages::NodeName;

use super::Rejection;

/// Event reason when a stream is refused before it is attached (identity,
/// a bad or missing Hello).
pub const REFUSED: &str = "StreamRefused";
/// Event reason when an attached stream is closed for what it sent.
pub const CLOSED: &str = "StreamClosed";
/// At most one Event per object and cause within this window.
const THROTTLE: Duration = Duration::from_secs(10);
/// Events waiting for the API; more are dropped (and logged).
const QUEUE: usize = 64;
/// The API allows 1 KiB of note.
const MAX_NOTE: usize = 1024;

/// What a refusal is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Regarding {
    /// The VpbluNode of the node the Hello named.
    Node(NodeName),
    /// The controller itself (no valid Hello, so no node to name).
    Controller,
}

#[derive(Debug)]
struct Refusal {
    regarding: Regarding,
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// Where refusals go to become Events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RefusalEvents {
    queue: Option<mpsc::Sender<Refusal>>,
}

impl RefusalEvents {
    /// No Events (in-process tests without an API server): refusals are
    /// still logged and counted.
    pub fn disabled() -> Self {
        RefusalEvents { queue: None }
    }

    /// Starts the publishing task, which writes Events with `client` as
    /// reporter `vpblu-controller`, `controller` being the object Events
    /// without a node are about (the controller's Pod). The task ends when
    /// the last clone is dropped. Call inside a Tokio runtime.
    pub fn start(client: kube::Client, controller: ObjectReference) -> Self {
        let (queue, refusals) = mpsc::channel(QUEUE);
        vpblu_runtime::spawn(publish(client, controller, refusals));
        RefusalEvents { queue: Some(queue) }
    }

    /// Records `rejection` regarding `regarding` as a Warning Event with
    /// `reason` ([`REFUSED`] or [`CLOSED`]); never waits.
    pub(crate) fn record(
        &self,
        regarding: Regarding,
        reason: &'static str,
        rejection: &Rejection,
        remote: Option<SocketAddr>,
    ) {
        let Some(queue) = &self.queue else { return };
        let from = remote.map_or_else(|| "a daemon".to_owned(), |addr| format!("the daemon at {addr}"));
        let mut note = format!("{from}: {rejection}");
        if note.len() > MAX_NOTE {
            let mut end = MAX_NOTE - 3;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
            note.push_str("...");
        }
        let refusal = Refusal { regarding, reason, action: rejection.reason().event_action(), note };
        if let Err(e) = queue.try_send(refusal) {
            tracing::warn!(error = %e, "too many stream refusals queued; not recording this one as an Event");
        }
    }
}

async fn publish(client: kube::Client, controller: ObjectReference, mut refusals: mpsc::Receiver<Refusal>) {
    let reporter = Reporter { controller: vpblu_k8s::FIELD_MANAGER.into(), instance: None };
    let recorder = Recorder::new(client.clone(), reporter);
    let nodes: kube::Api<VpbluNode> = kube::Api::all(client);
    let mut last: HashMap<(Regarding, &'static str), Instant> = HashMap::new();
    while let Some(refusal) = refusals.recv().await {
        last.retain(|_, at| at.elapsed() < THROTTLE);
        let key = (refusal.regarding.clone(), refusal.action);
        if last.contains_key(&key) {
            continue;
        }
        last.insert(key, Instant::now());
        let reference = match &refusal.regarding {
            Regarding::Controller => controller.clone(),
            // With its UID when it exists, so `kubectl describe` finds it.
            Regarding::Node(node) => match nodes.get_opt(node.as_str()).await {
                Ok(Some(object)) => object.object_ref(&()),
                Ok(None) | Err(_) => ObjectReference {
                    api_version: Some(VpbluNode::api_version(&()).into_owned()),
                    kind: Some(VpbluNode::kind(&()).into_owned()),
                    name: Some(node.to_string()),
                    ..ObjectReference::default()
                },
            },
        };
        let event = Event {
            type_: EventType::Warning,
            reason: refusal.reason.into(),
            note: Some(refusal.note),
            action: refusal.action.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(regarding = ?refusal.regarding, error = %e, "could not record a stream refusal Event");
        }
    }
}
