//! Helpers for tests that talk to the testbed's kube-apiserver about
//! vpblu's kinds: dynamic clients per kind, kubectl's Table format, and the
//! authorizer's answers (who am I, can I, which rules) for RBAC checks.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams, WatchParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// vpblu's five kinds: (kind, plural).
pub const KINDS: [(&str, &str); 5] = [
    ("VpbluNode", "vpblunodes"),
    ("TunnelPolicy", "tunnelpolicies"),
    ("RoutePolicy", "routepolicies"),
    ("BlockPolicy", "blockpolicies"),
    ("RotationPolicy", "rotationpolicies"),
];

/// The controller's service account, as the authorizer names it.
pub const CONTROLLER_USER: &str = "system:serviceaccount:vpblu-system:vpblu-controller";
/// The daemon's service account, as the authorizer names it.
pub const DAEMON_USER: &str = "system:serviceaccount:vpblu-system:vpblu-daemon";

/// A dynamic client for one vpblu kind.
pub fn vpblu_api(client: Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("vpblu.dev", "v1alpha1", kind);
    Api::all_with(client, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// A vpblu list in kubectl's table format (`kubectl get` asks for this).
pub async fn get_table(client: &Client, version: &str, plural: &str) -> Value {
    let request = http::Request::get(format!("/apis/vpblu.dev/{version}/{plural}"))
        .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("a valid request");
    let text = client.request_text(request).await.unwrap_or_else(|e| panic!("GET {plural} as a Table: {e}"));
    let table: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{plural}: Table is not JSON: {e}"));
    assert_eq!(table["kind"], "Table", "{plural}: not a Table: {text}");
    table
}

/// A vpblu object of `kind` named `name` with `spec`.
pub fn vpblu_object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    from_json(
        json!({"apiVersion": "vpblu.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}),
    )
}

/// The plural of a vpblu kind; panics on any other kind.
pub fn plural_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("not a vpblu kind: {kind}"))
}

/// A typed object from test JSON; panics when it does not match.
pub fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object matches its type")
}

/// The authenticated user's name and extra attributes (SelfSubjectReview).
pub async fn whoami(client: &Client) -> (String, BTreeMap<String, Vec<String>>) {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    let user = review.status.and_then(|s| s.user_info).expect("SelfSubjectReview names the user");
    (user.username.unwrap_or_default(), user.extra.unwrap_or_default())
}

/// What the authorizer answers for this client (SelfSubjectAccessReview).
pub async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    namespace: Option<&str>,
) -> bool {
    let review: SelfSubjectAccessReview = from_json(json!({"spec": {"resourceAttributes": {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "namespace": namespace.unwrap_or(""),
    }}}));
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview");
    answer.status.expect("access review has a status").allowed
}

/// The resource rules the authorizer lists for this client in `namespace`
/// (SelfSubjectRulesReview), as sorted (groups, resources, verbs).
pub async fn rules_in(client: &Client, namespace: &str) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let review: SelfSubjectRulesReview = from_json(json!({"spec": {"namespace": namespace}}));
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectRulesReview")
        .status
        .expect("rules review has a status");
    assert!(!status.incomplete, "incomplete rules review: {:?}", status.evaluation_error);
    let mut rules: Vec<_> = status
        .resource_rules
        .into_iter()
        .map(|r| (r.api_groups.unwrap_or_default(), r.resources.unwrap_or_default(), r.verbs))
        .collect();
    rules.sort();
    rules
}

/// Panics unless `result` is the API server's 403 Forbidden.
pub fn expect_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Opens a watch (1 s server-side timeout) and reads its first event:
/// authorization is checked when the watch starts.
pub async fn expect_watch_ok<K>(api: &Api<K>, what: &str)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap_or_else(|e| panic!("watch {what}: {e}"));
    if let Some(Err(e)) = std::pin::pin!(stream).next().await {
        panic!("watch {what}: {e}");
    }
}

/// The Node's InternalIP address.
pub fn internal_ip(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    addresses.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone())
}

/// The status of the Node's Ready condition.
pub fn ready_status(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}
