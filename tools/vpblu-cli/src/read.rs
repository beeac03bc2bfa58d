//! Reads what `vpblu status` shows from the Kubernetes API alone (it must
//! work when the controller is down), and turns every way that can fail
//! into one line saying what and what to do.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use vpblu_k8s::{BlockPolicy, RotationPolicy, RoutePolicy, TunnelPolicy, VpbluNode};
use vpblu_view::{Inputs, MeshView, Served};

/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Events listed: enough for the newest few dozen about vpblu.
const EVENT_PAGE: u32 = 500;

/// Where to look.
#[derive(Clone, Debug)]
pub struct Target {
    /// A kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, or the
    /// pod's service account, as kubectl does.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the controller's Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
}

/// Why the cluster could not be read. Each says what and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No usable kubeconfig.
    #[error("no usable Kubernetes configuration: {0} (set KUBECONFIG or pass --kubeconfig)")]
    Config(String),
    /// The API server did not answer.
    #[error(
        "cannot reach the Kubernetes API server at {url}: {cause} (is the cluster up, and is KUBECONFIG the right one?)"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// The innermost cause.
        cause: String,
    },
    /// The API server does not serve a vpblu kind.
    #[error(
        "the API server at {url} does not serve {plural}.vpblu.dev: vpblu's CRDs are not installed (kubectl apply -f k8s/crds/)"
    )]
    MissingCrd {
        /// The server's URL.
        url: String,
        /// The kind's plural.
        plural: String,
    },
    /// RBAC said no.
    #[error(
        "RBAC denied reading {what}: {message} (grant get/list on it to this user, or use another kubeconfig)"
    )]
    Forbidden {
        /// What was being read.
        what: String,
        /// The API server's words.
        message: String,
    },
    /// The credentials were refused.
    #[error(
        "the API server at {url} refused the credentials: {message} (renew the token or certificate in the kubeconfig)"
    )]
    Unauthorized {
        /// The server's URL.
        url: String,
        /// The API server's words.
        message: String,
    },
    /// Anything else the API server said.
    #[error("reading {what} failed: {message}")]
    Other {
        /// What was being read.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// A client for `target`, with short timeouts so a dead server fails fast.
pub async fn connect(target: &Target) -> Result<(Client, String), ReadError> {
    let mut config = match &target.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                ReadError::Config(format!("cannot read {}: {}", path.display(), innermost(&e)))
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| ReadError::Config(format!("{}: {}", path.display(), innermost(&e))))?
        }
        None => Config::infer().await.map_err(|e| {
            let from = std::env::var("KUBECONFIG").map(|k| format!("KUBECONFIG={k}: ")).unwrap_or_default();
            ReadError::Config(format!("{from}{}", innermost(&e)))
        })?,
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ReadError::Config(innermost(&e)))?;
    Ok((client, url))
}

/// Reads everything and builds the view.
pub async fn read(client: &Client, url: &str, target: &Target) -> Result<MeshView, ReadError> {
    let nodes: Vec<VpbluNode> = list(client, url).await?;
    let tunnels: Vec<TunnelPolicy> = list(client, url).await?;
    let routes: Vec<RoutePolicy> = list(client, url).await?;
    let blocks: Vec<BlockPolicy> = list(client, url).await?;
    let rotations: Vec<RotationPolicy> = list(client, url).await?;
    let lease_name = format!("{}/{}", target.namespace, target.lease);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &target.namespace);
    let lease =
        leases.get_opt(&target.lease).await.map_err(|e| classify(e, url, &format!("Lease {lease_name}")))?;
    let mut notes = Vec::new();
    let events: Api<Event> = Api::all(client.clone());
    let events = match events.list(&ListParams::default().limit(EVENT_PAGE)).await {
        Ok(list) => list.items,
        // Events are a nicety: without them the verdict still stands.
        Err(e) => {
            notes.push(format!("Events not shown: {}", classify(e, url, "events")));
            Vec::new()
        }
    };
    Ok(vpblu_view::build(Inputs {
        now: Timestamp::now(),
        served: Served { by: None, leading: false },
        lease_name,
        lease: lease.as_ref(),
        vpblu_nodes: nodes.iter().collect(),
        tunnel_policies: tunnels.iter().collect(),
        route_policies: routes.iter().collect(),
        block_policies: blocks.iter().collect(),
        rotation_policies: rotations.iter().collect(),
        events: events.iter().collect(),
        notes,
        ..Inputs::default()
    }))
}

async fn list<K>(client: &Client, url: &str) -> Result<Vec<K>, ReadError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let plural = K::plural(&()).to_string();
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(ReadError::MissingCrd { url: url.to_owned(), plural })
        }
        Err(e) => Err(classify(e, url, &format!("{plural}.vpblu.dev"))),
    }
}

fn classify(error: kube::Error, url: &str, what: &str) -> ReadError {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            ReadError::Forbidden { what: what.to_owned(), message: status.message }
        }
        kube::Error::Api(status) if status.code == 401 => {
            ReadError::Unauthorized { url: url.to_owned(), message: status.message }
        }
        kube::Error::Api(status) => ReadError::Other { what: what.to_owned(), message: status.message },
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            ReadError::Unreachable { url: url.to_owned(), cause: innermost(&error) }
        }
        other => ReadError::Other { what: what.to_owned(), message: innermost(&other) },
    }
}

/// The innermost cause of an error chain (say "Connection refused", not
/// "client error (Connect)"), on one line.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().replace('\n', " ")
}
