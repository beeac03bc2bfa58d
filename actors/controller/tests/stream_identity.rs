//! Node identity on the stream against the real API server: tokens from
//! TokenRequest bound to real Pod objects, checked by the controller with
//! a TokenReview and a Pod lookup made with the controller's own
//! least-privileged service account (k8s/deploy RBAC).
//!
//! The legitimate daemon of a node connects; every other client (another
//! node's token, another service account, an expired token, the wrong
//! audience, no token, a Pod that is gone or not the DaemonSet's, a token
//! bound to no Pod) is refused with PermissionDenied and a reason, counted,
//! recorded as a Warning Event, and changes nothing: its Hello never
//! reaches the rest of the controller (so no status write and no key
//! published), and the other streams carry on. No token appears in any
//! log line, status message or Event.

mod stream_support;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tonic::{Code, Status};
use vpblu_controller::stream::{
    Desired, NodeAuth, REFUSED, RefusalEvents, RejectReason, StreamConfig, StreamEvent, TokenReviewAuth,
};
use vpblu_e2e::cluster::{DAEMON_AUDIENCE, DAEMON_NAME, DAEMON_NAMESPACE, TestCluster};
use vpblu_e2e::stream_pki::StreamPki;
use vpblu_k8s::{VpbluNode, VpbluNodeSpec};
use vpblu_messages::{Backend, Generation, Hello, Upstream};
use vpblu_proto as pb;

use stream_support::{Controller, Daemon, QUIET, eventually, key, mesh, name, until};

/// Every log line of this test process, to search for tokens.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        std::io::stdout().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

fn hello(node: &str) -> pb::DaemonMessage {
    pb::DaemonMessage::from(&Upstream::Hello(Hello {
        node: name(node),
        public_key: key(7),
        staged_public_key: None,
        applied_generation: Generation(0),
        backend: Backend::Userspace,
        mtu: 1420,
        version: "intruder".into(),
        digest_key: None,
        held: None,
    }))
}

fn assert_refused(status: &Status, code: Code, says: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for part in says {
        assert!(status.message().contains(part), "{:?} should say {part:?}", status.message());
    }
}

async fn pod_token(cluster: &TestCluster, pod: &Pod, account: &str, audiences: &[&str]) -> String {
    let (name, uid) = (pod.metadata.name.as_deref().unwrap(), pod.metadata.uid.as_deref().unwrap());
    cluster.token_for(DAEMON_NAMESPACE, account, audiences, Some((name, uid))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_daemon_of_a_node_may_speak_for_it() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug,h2=info,hyper=info,tower=info,rustls=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let daemonset = cluster.install_daemonset().await;
    cluster.apply_manifest("k8s/deploy/controller-rbac.yaml").await;
    let admin = cluster.client();
    for (i, node) in ["node-a", "node-b"].iter().enumerate() {
        cluster
            .register_node(node, &format!("192.0.2.{}", i + 1), &[&format!("10.244.{i}.0/24")], true)
            .await;
        Api::<VpbluNode>::all(admin.clone())
            .create(&PostParams::default(), &VpbluNode::new(node, VpbluNodeSpec::default()))
            .await
            .expect("create the VpbluNode");
    }
    let pod_a =
        cluster.daemon_pod("vpblu-daemon-a", "node-a", "192.0.2.1", DAEMON_NAME, Some(&daemonset)).await;
    let pod_b =
        cluster.daemon_pod("vpblu-daemon-b", "node-b", "192.0.2.2", DAEMON_NAME, Some(&daemonset)).await;

    // The stream server as the controller binary runs it, with the
    // controller's own service account (not admin): TokenReview create and
    // Pod get are all it needs.
    let as_controller = cluster.client_as(DAEMON_NAMESPACE, "vpblu-controller", &[], None).await;
    let auth = NodeAuth::TokenReview(TokenReviewAuth {
        client: as_controller.clone(),
        audience: DAEMON_AUDIENCE.to_owned(),
        service_account: format!("system:serviceaccount:{DAEMON_NAMESPACE}:{DAEMON_NAME}").parse().unwrap(),
        daemonset: Some(DAEMON_NAME.to_owned()),
    });
    let me = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(DAEMON_NAMESPACE.into()),
        name: Some("vpblu-controller-test".into()),
        ..ObjectReference::default()
    };
    let refusals = RefusalEvents::start(as_controller, me);
    let pki = Arc::new(StreamPki::new());
    let config = StreamConfig { hello_timeout: Duration::from_secs(2), ..StreamConfig::default() };
    let mut controller = Controller::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Desired::new(),
        config,
        Arc::clone(&pki),
        auth,
        refusals,
    )
    .await;
    let nodes = ["node-a", "node-b"];
    controller.desired.publish(mesh(&nodes));

    // --- The legitimate daemons connect with their Pods' projected tokens.
    let a_token =
        cluster.write_pod_token(&pod_a, DAEMON_NAME, &[DAEMON_AUDIENCE], &pki.dir().join("a")).await;
    let b_token =
        cluster.write_pod_token(&pod_b, DAEMON_NAME, &[DAEMON_AUDIENCE], &pki.dir().join("b")).await;
    let a = Daemon::start("node-a", 0, &controller.endpoint.with_token(&a_token)).await;
    let b = Daemon::start("node-b", 1, &controller.endpoint.with_token(&b_token)).await;
    for daemon in [&a, &b] {
        daemon.wait_state(&controller.desired.get(&daemon.node).expect("published")).await;
        controller.wait_acked(daemon.node.as_str()).await;
    }
    let mut hellos = Vec::new();
    while let Ok(event) = controller.events.try_recv() {
        if let StreamEvent::Message(node, Upstream::Hello(h)) = event {
            assert_eq!(h.node, node);
            hellos.push(node);
        }
    }
    hellos.sort();
    assert_eq!(hellos, vec![name("node-a"), name("node-b")]);
    let mut tokens =
        vec![std::fs::read_to_string(&a_token).unwrap(), std::fs::read_to_string(&b_token).unwrap()];

    // --- A real daemon client with node-a's token claiming node-b.
    let hijack = Daemon::start("node-b", 9, &controller.endpoint.with_token(&a_token)).await;
    let reason = until("the hijacking daemon to be refused twice", async || {
        let status = hijack.status().await;
        (status.epoch >= 2).then_some(status.last_error).flatten()
    })
    .await;
    assert!(reason.contains("PermissionDenied") && reason.contains("claims node node-b"), "{reason}");
    assert!(hijack.commands().is_empty() && hijack.status().await.connects == 0);
    hijack.stop().await;

    // --- The same and every other impostor by hand, for the exact status.
    let endpoint = controller.endpoint.clone();
    let a_jwt = tokens[0].clone();
    let status = endpoint.attempt(Some(&a_jwt), hello("node-b")).await;
    assert_refused(
        &status,
        Code::PermissionDenied,
        &["Pod vpblu-system/vpblu-daemon-a runs on node node-a, but its Hello claims node node-b"],
    );

    // Another service account, with a real Pod on node-b.
    let intruder = cluster.daemon_pod("intruder-b", "node-b", "192.0.2.2", "intruder", None).await;
    let token = pod_token(&cluster, &intruder, "intruder", &[DAEMON_AUDIENCE]).await;
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(
        &status,
        Code::PermissionDenied,
        &["system:serviceaccount:vpblu-system:intruder", "not to the daemons' service account"],
    );
    tokens.push(token);

    // Expired: a real token for node-b's Pod, re-dated an hour into the
    // past and re-signed with the cluster's signing key.
    let (b_name, b_uid) = (pod_b.metadata.name.as_deref().unwrap(), pod_b.metadata.uid.as_deref().unwrap());
    let token =
        cluster.expired_token(DAEMON_NAMESPACE, DAEMON_NAME, &[DAEMON_AUDIENCE], Some((b_name, b_uid))).await;
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(
        &status,
        Code::PermissionDenied,
        &["did not pass a TokenReview", "service account token has expired"],
    );
    tokens.push(token);

    // node-b's Pod, but a token for the API server's audience.
    let token = pod_token(&cluster, &pod_b, DAEMON_NAME, &[]).await;
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(
        &status,
        Code::PermissionDenied,
        &["did not pass a TokenReview for audience vpblu", "is invalid for the target audiences"],
    );
    tokens.push(token);

    // No token at all.
    let status = endpoint.attempt(None, hello("node-b")).await;
    assert_refused(&status, Code::PermissionDenied, &["no bearer token"]);

    // A daemon-account token bound to no Pod says nothing about a node.
    let token = cluster.token_for(DAEMON_NAMESPACE, DAEMON_NAME, &[DAEMON_AUDIENCE], None).await;
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(&status, Code::PermissionDenied, &["not bound to a Pod"]);
    tokens.push(token);

    // A Pod of the daemon account on node-b that the DaemonSet does not control.
    let bare = cluster.daemon_pod("handmade-b", "node-b", "192.0.2.2", DAEMON_NAME, None).await;
    let token = pod_token(&cluster, &bare, DAEMON_NAME, &[DAEMON_AUDIENCE]).await;
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(
        &status,
        Code::PermissionDenied,
        &["handmade-b is not controlled by DaemonSet vpblu-system/vpblu-daemon"],
    );
    tokens.push(token);

    // A DaemonSet Pod that is gone: its bound token dies with it.
    let gone =
        cluster.daemon_pod("vpblu-daemon-gone", "node-b", "192.0.2.2", DAEMON_NAME, Some(&daemonset)).await;
    let token = pod_token(&cluster, &gone, DAEMON_NAME, &[DAEMON_AUDIENCE]).await;
    Api::<Pod>::namespaced(admin.clone(), DAEMON_NAMESPACE)
        .delete(
            "vpblu-daemon-gone",
            &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() },
        )
        .await
        .expect("delete the Pod");
    let status = endpoint.attempt(Some(&token), hello("node-b")).await;
    assert_refused(&status, Code::PermissionDenied, &["did not pass a TokenReview", "invalidated"]);
    tokens.push(token);

    // Bad input before any Hello (issue 5): refused, and an Event too.
    let ack = pb::DaemonMessage::from(&Upstream::Ack { generation: Generation(1), result: Ok(()) });
    let status = endpoint.attempt(Some(&a_jwt), ack).await;
    assert_refused(&status, Code::InvalidArgument, &["must be Hello, got Ack"]);

    // --- Counted by reason.
    for (reason, count) in [
        (RejectReason::WrongNode, 2), // the hijacking daemon at least once, once by hand
        (RejectReason::WrongServiceAccount, 1),
        (RejectReason::TokenRejected, 3), // expired, wrong audience, Pod gone
        (RejectReason::NoToken, 1),
        (RejectReason::NotPodBound, 1),
        (RejectReason::NotDaemonSetPod, 1),
        (RejectReason::NotHello, 1),
        (RejectReason::AuthUnavailable, 0),
    ] {
        let counted = controller.metrics.rejected_count(reason);
        if reason == RejectReason::WrongNode {
            assert!(counted >= count, "{reason:?}: {counted}");
        } else {
            assert_eq!(counted, count, "{reason:?}");
        }
    }
    assert!(
        controller.health.render().contains("vpblu_controller_stream_rejected_total{reason=\"no_token\"} 1")
    );

    // --- Nothing changed: no refused Hello reached the rest of the
    // controller (the status writer's only input), node-b is still served
    // by its own daemon on its first stream, and both still get changes.
    tokio::time::sleep(QUIET).await;
    while let Ok(event) = controller.events.try_recv() {
        assert!(
            !matches!(event, StreamEvent::Message(_, Upstream::Hello(_))),
            "a refused Hello leaked: {event:?}"
        );
    }
    assert_eq!(controller.connected().await, vec![name("node-a"), name("node-b")]);
    for daemon in [&a, &b] {
        assert_eq!(daemon.status().await.connects, 1, "{}", daemon.node);
    }
    let mut states = mesh(&nodes);
    for state in states.values_mut() {
        state.settings.listen_port = 51999;
    }
    controller.desired.publish(states.clone());
    for daemon in [&a, &b] {
        daemon.wait_state(&states[&daemon.node]).await;
        controller.wait_acked(daemon.node.as_str()).await;
    }
    let vpblu_b = Api::<VpbluNode>::all(admin.clone()).get("node-b").await.expect("read VpbluNode node-b");
    assert!(vpblu_b.status.is_none(), "nobody wrote node-b's status here: {:?}", vpblu_b.status);

    // --- Warning Events: about the claimed VpbluNode (with its UID, so
    // `kubectl describe vpblunode node-b` shows them), or about the
    // controller when there was no Hello.
    let default_events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let node_b_uid = vpblu_b.metadata.uid.clone();
    let events = until("Events about VpbluNode node-b", async || {
        let list = default_events.list(&Default::default()).await.expect("list Events");
        let about_b: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-b"))
            .collect();
        let actions: Vec<&str> = about_b.iter().filter_map(|e| e.action.as_deref()).collect();
        let all = [
            "WrongNode",
            "WrongServiceAccount",
            "TokenRejected",
            "NoToken",
            "NotPodBound",
            "NotDaemonSetPod",
        ];
        all.iter().all(|a| actions.contains(a)).then_some(about_b)
    })
    .await;
    for event in &events {
        assert_eq!(event.reason.as_deref(), Some(REFUSED));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        let regarding = event.regarding.as_ref().expect("regarding");
        assert_eq!(
            (regarding.kind.as_deref(), regarding.uid.clone()),
            (Some("VpbluNode"), node_b_uid.clone())
        );
    }
    let wrong_node = events.iter().find(|e| e.action.as_deref() == Some("WrongNode")).expect("WrongNode");
    assert!(wrong_node.note.as_deref().is_some_and(|n| n.contains("claims node node-b")), "{wrong_node:?}");
    let own_events: Api<Event> = Api::namespaced(admin.clone(), DAEMON_NAMESPACE);
    eventually("an Event about the controller for the missing Hello", async || {
        own_events.list(&Default::default()).await.expect("list Events").items.iter().any(|e| {
            e.action.as_deref() == Some("NotHello")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("vpblu-controller-test")
        })
    })
    .await;

    // --- No token anywhere: not in the logs, Events or statuses.
    let mut everything = logs.text();
    for list in [default_events.list(&Default::default()).await, own_events.list(&Default::default()).await] {
        everything.push_str(&serde_json::to_string(&list.expect("list Events").items).unwrap());
    }
    assert!(everything.contains("refusing a daemon stream"), "the logs were captured");
    for token in &tokens {
        let signature = token.trim().rsplit('.').next().expect("a JWT");
        assert!(!everything.contains(signature), "a token leaked into the logs or Events");
    }

    a.stop().await;
    b.stop().await;
    controller.stop().await;
}
