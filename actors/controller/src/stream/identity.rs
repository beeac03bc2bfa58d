//! Who is on a stream. A daemon sends its projected service-account token
//! (audience `vpblu`, bound to its Pod, rotated by the kubelet) as
//! `authorization: Bearer …`. The controller asks the API server
//! (TokenReview) whose token it is, reads the Pod the token is bound to, and
//! accepts the stream only if that Pod is a daemon Pod (the daemons'
//! service account, optionally owned by their DaemonSet) running on the
//! node the Hello names. So a node can only ever speak for itself.
//!
//! The decisions ([`check_review`], [`check_pod`]) are pure; [`NodeAuth`]
//! does the two API calls around them. Tokens are held as
//! [`SecretString`] and never appear in a message, a log line or `Debug`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataMap;
use vpblu_messages::NodeName;

use super::RejectReason;

/// `user.extra` key of a pod-bound token: the Pod's name.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// `user.extra` key of a pod-bound token: the Pod's UID.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// How long the TokenReview and the Pod lookup together may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// How the stream server decides who may speak for a node.
#[derive(Clone, Debug)]
pub enum NodeAuth {
    /// Every Hello is believed: whoever reaches the port can publish a key
    /// for any node. Only `--insecure-dev` and in-process tests of other
    /// stream behaviour choose this.
    TrustAll,
    /// A TokenReview and the bound Pod decide (see the module docs).
    TokenReview(TokenReviewAuth),
}

/// What a daemon token must prove.
#[derive(Clone)]
pub struct TokenReviewAuth {
    /// Creates TokenReviews and reads Pods (the controller's own account).
    pub client: kube::Client,
    /// The audience the token must be issued for (`vpblu`).
    pub audience: String,
    /// The daemons' service account.
    pub service_account: ServiceAccountName,
    /// The DaemonSet (in the service account's namespace) that must
    /// control the daemon's Pod; `None`: not checked.
    pub daemonset: Option<String>,
}

impl fmt::Debug for TokenReviewAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewAuth")
            .field("audience", &self.audience)
            .field("service_account", &self.service_account.to_string())
            .field("daemonset", &self.daemonset)
            .finish_non_exhaustive()
    }
}

/// A service account, as TokenReview names it:
/// `system:serviceaccount:NAMESPACE:NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountName {
    /// Its namespace (where the daemon Pods live).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl FromStr for ServiceAccountName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["system", "serviceaccount", namespace, name] if !namespace.is_empty() && !name.is_empty() => {
                Ok(ServiceAccountName { namespace: (*namespace).to_owned(), name: (*name).to_owned() })
            }
            _ => Err(format!(
                "{text:?} is not a service account user name: use system:serviceaccount:NAMESPACE:NAME, such as \
                 system:serviceaccount:vpblu-system:vpblu-daemon"
            )),
        }
    }
}

impl fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// The Pod a reviewed token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    /// Its namespace (the service account's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The UID the token was issued for.
    pub uid: String,
}

impl fmt::Display for BoundPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a stream was not allowed to speak for the node in its Hello. None
/// of these carries the token.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No `authorization` metadata.
    #[error(
        "no bearer token: a daemon must send its projected service-account token (audience {audience}) as \
         `authorization: Bearer <token>` (is --token-file mounted?)"
    )]
    NoToken {
        /// The audience expected.
        audience: String,
    },
    /// `authorization` is not `Bearer <token>`.
    #[error("the authorization metadata is {0}: send `Bearer <token>`")]
    BadAuthorization(&'static str),
    /// The API server did not authenticate the token (expired, wrong
    /// audience, bound Pod gone, not signed by this cluster...).
    #[error("the token did not pass a TokenReview for audience {audience}: {error}")]
    NotAuthenticated {
        /// The audience asked for.
        audience: String,
        /// The API server's reason.
        error: String,
    },
    /// Authenticated, but not for our audience.
    #[error("the token is for audiences {got:?}, not {audience}")]
    WrongAudience {
        /// The audience expected.
        audience: String,
        /// What the review reported.
        got: Vec<String>,
    },
    /// Another user or service account.
    #[error("the token belongs to {got}, not to the daemons' service account {want}")]
    WrongServiceAccount {
        /// The account expected.
        want: String,
        /// Whose token it is.
        got: String,
    },
    /// A service-account token not bound to a Pod says nothing about a node.
    #[error(
        "the token of {user} is not bound to a Pod: only a Pod's projected token tells which node it runs on"
    )]
    NotPodBound {
        /// Whose token it is.
        user: String,
    },
    /// The bound Pod does not exist (any more).
    #[error("the token's Pod {pod} does not exist")]
    PodNotFound {
        /// The Pod.
        pod: BoundPod,
    },
    /// The Pod of that name is another Pod than the token's.
    #[error("Pod {pod} has UID {pod_uid}, but the token was issued for UID {}: the Pod was replaced", pod.uid)]
    PodReplaced {
        /// The Pod named by the token.
        pod: BoundPod,
        /// The UID it has now.
        pod_uid: String,
    },
    /// The Pod runs as another service account than the token's.
    #[error("Pod {pod} runs as service account {got:?}, not {want}")]
    PodAccount {
        /// The Pod.
        pod: BoundPod,
        /// Its `spec.serviceAccountName`.
        got: String,
        /// The daemons' account.
        want: String,
    },
    /// The Pod is not one of the daemon DaemonSet's.
    #[error("Pod {pod} is not controlled by DaemonSet {}/{daemonset}", pod.namespace)]
    NotDaemonSetPod {
        /// The Pod.
        pod: BoundPod,
        /// The DaemonSet expected.
        daemonset: String,
    },
    /// The Pod runs on another node than the Hello claims.
    #[error(
        "Pod {pod} runs on node {}, but its Hello claims node {claimed}",
        runs_on.as_deref().unwrap_or("(none: not scheduled)")
    )]
    WrongNode {
        /// The Pod.
        pod: BoundPod,
        /// The node named in the Hello.
        claimed: NodeName,
        /// Its `spec.nodeName` (`None`: not scheduled).
        runs_on: Option<String>,
    },
    /// The API server could not be asked; not the daemon's fault.
    #[error("cannot check the daemon's identity now: {0}; the daemon should retry")]
    Unavailable(String),
}

impl IdentityError {
    /// The bounded metric label.
    pub fn reason(&self) -> RejectReason {
        match self {
            IdentityError::NoToken { .. } | IdentityError::BadAuthorization(_) => RejectReason::NoToken,
            IdentityError::NotAuthenticated { .. } => RejectReason::TokenRejected,
            IdentityError::WrongAudience { .. } => RejectReason::WrongAudience,
            IdentityError::WrongServiceAccount { .. } | IdentityError::PodAccount { .. } => {
                RejectReason::WrongServiceAccount
            }
            IdentityError::NotPodBound { .. } => RejectReason::NotPodBound,
            IdentityError::PodNotFound { .. } | IdentityError::PodReplaced { .. } => {
                RejectReason::PodMismatch
            }
            IdentityError::NotDaemonSetPod { .. } => RejectReason::NotDaemonSetPod,
            IdentityError::WrongNode { .. } => RejectReason::WrongNode,
            IdentityError::Unavailable(_) => RejectReason::AuthUnavailable,
        }
    }
}

/// The bearer token of a request: `Ok(None)` without `authorization`.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<SecretString>, IdentityError> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| IdentityError::BadAuthorization("not ASCII"))?;
    let (scheme, token) =
        text.split_once(' ').ok_or(IdentityError::BadAuthorization("not `<scheme> <credentials>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::BadAuthorization("not a Bearer credential"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(IdentityError::BadAuthorization("an empty Bearer credential"));
    }
    Ok(Some(SecretString::from(token)))
}

/// What a TokenReview must say: authenticated, for `audience`, as
/// `account`, bound to a Pod. Returns that Pod.
pub fn check_review(
    status: &TokenReviewStatus,
    audience: &str,
    account: &ServiceAccountName,
) -> Result<BoundPod, IdentityError> {
    if status.authenticated != Some(true) {
        let error = status.error.clone().filter(|e| !e.is_empty());
        return Err(IdentityError::NotAuthenticated {
            audience: audience.to_owned(),
            error: error.unwrap_or_else(|| "not authenticated (no reason given)".to_owned()),
        });
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(IdentityError::WrongAudience { audience: audience.to_owned(), got: audiences });
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    if username != account.to_string() {
        return Err(IdentityError::WrongServiceAccount { want: account.to_string(), got: username });
    }
    let extra = user.extra.unwrap_or_default();
    let single = |key: &str| match extra.get(key).map(Vec::as_slice) {
        Some([value]) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    match (single(POD_NAME_EXTRA), single(POD_UID_EXTRA)) {
        (Some(name), Some(uid)) => Ok(BoundPod { namespace: account.namespace.clone(), name, uid }),
        _ => Err(IdentityError::NotPodBound { user: username }),
    }
}

/// What the bound Pod must be: the same Pod (UID), running as `account`,
/// controlled by `daemonset` (when given), on `node`.
pub fn check_pod(
    pod: &Pod,
    bound: &BoundPod,
    account: &ServiceAccountName,
    daemonset: Option<&str>,
    node: &NodeName,
) -> Result<(), IdentityError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid != bound.uid {
        return Err(IdentityError::PodReplaced { pod: bound.clone(), pod_uid: uid });
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let runs_as = spec.service_account_name.unwrap_or_default();
    if runs_as != account.name {
        return Err(IdentityError::PodAccount {
            pod: bound.clone(),
            got: runs_as,
            want: account.to_string(),
        });
    }
    if let Some(daemonset) = daemonset {
        let owned = pod.metadata.owner_references.iter().flatten().any(|owner| {
            owner.controller == Some(true)
                && owner.kind == "DaemonSet"
                && owner.api_version == "apps/v1"
                && owner.name == daemonset
        });
        if !owned {
            return Err(IdentityError::NotDaemonSetPod {
                pod: bound.clone(),
                daemonset: daemonset.to_owned(),
            });
        }
    }
    if spec.node_name.as_deref() != Some(node.as_str()) {
        return Err(IdentityError::WrongNode {
            pod: bound.clone(),
            claimed: node.clone(),
            runs_on: spec.node_name,
        });
    }
    Ok(())
}

impl NodeAuth {
    /// Whether the holder of `token` may speak for `node`. The Pod it
    /// proved to be (`None` with [`NodeAuth::TrustAll`]).
    pub async fn verify(
        &self,
        token: Option<&SecretString>,
        node: &NodeName,
    ) -> Result<Option<BoundPod>, IdentityError> {
        match self {
            NodeAuth::TrustAll => Ok(None),
            NodeAuth::TokenReview(auth) => {
                let token =
                    token.ok_or_else(|| IdentityError::NoToken { audience: auth.audience.clone() })?;
                tokio::time::timeout(REVIEW_TIMEOUT, auth.verify(token, node))
                    .await
                    .map_err(|_| {
                        IdentityError::Unavailable(format!(
                            "the TokenReview and Pod lookup took longer than {REVIEW_TIMEOUT:?}"
                        ))
                    })?
                    .map(Some)
            }
        }
    }
}

impl TokenReviewAuth {
    async fn verify(&self, token: &SecretString, node: &NodeName) -> Result<BoundPod, IdentityError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                audiences: Some(vec![self.audience.clone()]),
                token: token.expose_secret().to_owned(),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| IdentityError::Unavailable(format!("TokenReview failed: {e}")))?;
        drop(review);
        let status = reviewed.status.unwrap_or_default();
        let bound = check_review(&status, &self.audience, &self.service_account)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &bound.namespace);
        let pod = pods
            .get_opt(&bound.name)
            .await
            .map_err(|e| IdentityError::Unavailable(format!("cannot read Pod {bound}: {e}")))?
            .ok_or_else(|| IdentityError::PodNotFound { pod: bound.clone() })?;
        check_pod(&pod, &bound, &self.service_account, self.daemonset.as_deref(), node)?;
        Ok(bound)
    }
}

#[cfg(test)]
mod tests;
