//! What the dashboard reads from the API itself, beside the informers'
//! caches: the leader Lease (who leads, and whether its holder still
//! renews it) and recent Events. Neither has an informer: the Lease
//! changes every renewal and Events are many.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Events listed per read: enough for the newest few dozen about vpblu in
/// a busy cluster, small enough to list every few seconds.
const EVENT_PAGE: u32 = 500;

/// Which Lease.
#[derive(Clone, Debug)]
pub struct LeaseRef {
    /// Its namespace (the controller's).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl LeaseRef {
    /// `namespace/name`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The outcome of one round of reads.
#[derive(Debug)]
pub struct ApiRead {
    /// The Lease (`Ok(None)`: it does not exist).
    pub lease: Result<Option<Lease>, String>,
    /// Events, when they were read this round.
    pub events: Option<Result<Vec<Event>, String>>,
}

/// Reads the Lease, and the Events when `with_events`.
pub async fn read(client: Client, lease: LeaseRef, with_events: bool) -> ApiRead {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let lease_read = match tokio::time::timeout(READ_TIMEOUT, leases.get_opt(&lease.name)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(format!("cannot read Lease {}: {e}", lease.display())),
        Err(_) => Err(format!("reading Lease {} took longer than {READ_TIMEOUT:?}", lease.display())),
    };
    let events = if with_events {
        let api: Api<Event> = Api::all(client);
        let listed =
            tokio::time::timeout(READ_TIMEOUT, api.list(&ListParams::default().limit(EVENT_PAGE))).await;
        Some(match listed {
            Ok(Ok(list)) => Ok(list.items),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => Err(format!(
                "Events not shown: the controller may not list events ({}); grant list on events to show them",
                status.message
            )),
            Ok(Err(e)) => Err(format!("Events not shown: cannot list events: {e}")),
            Err(_) => Err(format!("Events not shown: listing events took longer than {READ_TIMEOUT:?}")),
        })
    } else {
        None
    };
    ApiRead { lease: lease_read, events }
}
