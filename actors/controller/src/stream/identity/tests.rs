use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use tonic::metadata::MetadataValue;

use super::*;

fn account() -> ServiceAccountName {
    "system:serviceaccount:vpblu-system:vpblu-daemon".parse().unwrap()
}

fn review(
    authenticated: bool,
    audiences: &[&str],
    user: &str,
    pod: Option<(&str, &str)>,
) -> TokenReviewStatus {
    let mut extra = BTreeMap::new();
    if let Some((name, uid)) = pod {
        extra.insert(POD_NAME_EXTRA.to_owned(), vec![name.to_owned()]);
        extra.insert(POD_UID_EXTRA.to_owned(), vec![uid.to_owned()]);
    }
    TokenReviewStatus {
        authenticated: Some(authenticated),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        error: (!authenticated).then(|| "token has expired".to_owned()),
        user: Some(UserInfo { username: Some(user.to_owned()), extra: Some(extra), ..UserInfo::default() }),
    }
}

fn pod(uid: &str, account: &str, node: Option<&str>, owner: Option<(&str, &str, bool)>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("vpblu-daemon-abcde".into()),
            namespace: Some("vpblu-system".into()),
            uid: Some(uid.into()),
            owner_references: owner.map(|(kind, name, controller)| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: "ds-uid".into(),
                    controller: Some(controller),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(account.into()),
            node_name: node.map(str::to_owned),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

const USER: &str = "system:serviceaccount:vpblu-system:vpblu-daemon";

#[test]
fn service_account_names_parse_or_say_what_is_wrong() {
    assert_eq!(
        account(),
        ServiceAccountName { namespace: "vpblu-system".into(), name: "vpblu-daemon".into() }
    );
    assert_eq!(account().to_string(), USER);
    for bad in ["vpblu-daemon", "system:serviceaccount:ns", "system:serviceaccount::x", "user:a:b:c"] {
        let err = bad.parse::<ServiceAccountName>().unwrap_err();
        assert!(err.contains(&format!("{bad:?}")) && err.contains("NAMESPACE:NAME"), "{err}");
    }
}

#[test]
fn bearer_tokens_are_read_and_never_printed() {
    let mut metadata = MetadataMap::new();
    assert!(bearer_token(&metadata).unwrap().is_none());
    metadata.insert("authorization", MetadataValue::from_static("Bearer s3cr3t-t0ken"));
    let token = bearer_token(&metadata).unwrap().unwrap();
    assert_eq!(token.expose_secret(), "s3cr3t-t0ken");
    assert!(!format!("{token:?}").contains("s3cr3t"), "{token:?}");
    for (value, says) in [("Basic abc", "not a Bearer"), ("Bearer", "not `<scheme>"), ("Bearer  ", "empty")] {
        metadata.insert("authorization", MetadataValue::try_from(value).unwrap());
        let err = bearer_token(&metadata).unwrap_err();
        assert!(err.to_string().contains(says), "{value:?}: {err}");
    }
}

#[test]
fn reviews_decide_the_bound_pod() {
    let ok = review(true, &["vpblu"], USER, Some(("vpblu-daemon-abcde", "uid-1")));
    assert_eq!(
        check_review(&ok, "vpblu", &account()).unwrap(),
        BoundPod { namespace: "vpblu-system".into(), name: "vpblu-daemon-abcde".into(), uid: "uid-1".into() }
    );
    let cases = [
        (review(false, &[], USER, None), RejectReason::TokenRejected, "token has expired"),
        (review(true, &["other"], USER, Some(("p", "u"))), RejectReason::WrongAudience, "\"other\""),
        (
            review(true, &["vpblu"], "system:serviceaccount:vpblu-system:intruder", Some(("p", "u"))),
            RejectReason::WrongServiceAccount,
            "intruder",
        ),
        (review(true, &["vpblu"], USER, None), RejectReason::NotPodBound, "not bound to a Pod"),
    ];
    for (status, reason, says) in cases {
        let err = check_review(&status, "vpblu", &account()).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}

#[test]
fn pods_must_be_the_daemon_on_the_claimed_node() {
    let bound =
        BoundPod { namespace: "vpblu-system".into(), name: "vpblu-daemon-abcde".into(), uid: "uid-1".into() };
    let node = NodeName::new("node-a").unwrap();
    let owner = Some(("DaemonSet", "vpblu-daemon", true));
    let good = pod("uid-1", "vpblu-daemon", Some("node-a"), owner);
    check_pod(&good, &bound, &account(), Some("vpblu-daemon"), &node).unwrap();
    check_pod(&pod("uid-1", "vpblu-daemon", Some("node-a"), None), &bound, &account(), None, &node).unwrap();
    let cases = [
        (pod("uid-2", "vpblu-daemon", Some("node-a"), owner), RejectReason::PodMismatch, "uid-2"),
        (pod("uid-1", "default", Some("node-a"), owner), RejectReason::WrongServiceAccount, "\"default\""),
        (pod("uid-1", "vpblu-daemon", Some("node-a"), None), RejectReason::NotDaemonSetPod, "vpblu-daemon"),
        (
            pod("uid-1", "vpblu-daemon", Some("node-a"), Some(("ReplicaSet", "vpblu-daemon", true))),
            RejectReason::NotDaemonSetPod,
            "DaemonSet",
        ),
        (
            pod("uid-1", "vpblu-daemon", Some("node-a"), Some(("DaemonSet", "vpblu-daemon", false))),
            RejectReason::NotDaemonSetPod,
            "DaemonSet",
        ),
        (
            pod("uid-1", "vpblu-daemon", Some("node-b"), owner),
            RejectReason::WrongNode,
            "runs on node node-b,",
        ),
        (pod("uid-1", "vpblu-daemon", None, owner), RejectReason::WrongNode, "claims node node-a"),
    ];
    for (pod, reason, says) in cases {
        let err = check_pod(&pod, &bound, &account(), Some("vpblu-daemon"), &node).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}
