//! Bad input on one stream closes that stream, with a status that says
//! why, counts it, and leaves the server and every other stream working.

mod stream_support;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use vpblu_controller::stream::{RejectReason, StreamConfig};
use vpblu_messages::{Backend, Command, Generation, Hello, Upstream};
use vpblu_proto as pb;

use stream_support::{
    Controller, Daemon, Endpoint, WAIT, cluster, eventually, key, mesh, name, peer, teardown,
};

const FIVE_MIB: usize = 5 * 1024 * 1024;

fn hello(node: &str) -> pb::DaemonMessage {
    pb::DaemonMessage::from(&Upstream::Hello(Hello {
        node: name(node),
        public_key: key(9),
        staged_public_key: None,
        applied_generation: Generation(0),
        backend: Backend::Userspace,
        mtu: 1420,
        version: "test".into(),
        digest_key: None,
        held: None,
    }))
}

fn ack(generation: u64) -> pb::DaemonMessage {
    pb::DaemonMessage::from(&Upstream::Ack { generation: Generation(generation), result: Ok(()) })
}

/// A raw client: opens a session, sends `messages`, and keeps the request
/// half open (the returned sender) so the server decides how it ends.
async fn raw_session(
    endpoint: &Endpoint,
    messages: Vec<pb::DaemonMessage>,
) -> (mpsc::Sender<pb::DaemonMessage>, Result<Streaming<pb::ControllerMessage>, Status>) {
    let mut client = endpoint.raw_client().await.max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    for message in messages {
        tx.send(message).await.expect("queue has room");
    }
    let response = tokio::time::timeout(WAIT, client.session(ReceiverStream::new(rx)))
        .await
        .expect("the server answers in time");
    (tx, response.map(tonic::Response::into_inner))
}

/// Reads the stream until it ends and returns the status it ended with.
async fn end_status(mut stream: Streaming<pb::ControllerMessage>) -> Status {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends in time")
}

/// The status a session ends with, whether the server refused it at once
/// or closed it after accepting the Hello.
async fn refusal(endpoint: &Endpoint, messages: Vec<pb::DaemonMessage>) -> Status {
    let (_keep_open, response) = raw_session(endpoint, messages).await;
    match response {
        Err(status) => status,
        Ok(stream) => end_status(stream).await,
    }
}

fn assert_status(status: &Status, code: Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{:?} should say {says:?}", status.message());
}

/// After bad clients, the daemons still get changes.
async fn still_working(controller: &Controller, daemons: &[Daemon], nodes: &[&str], extra: &str) {
    let mut states = mesh(nodes);
    for (i, node) in nodes.iter().enumerate() {
        let next = (i + 1) % nodes.len();
        let via = peer(nodes[next], next, &[extra]);
        states.get_mut(&name(node)).expect("node").peers.insert(name(nodes[next]), via);
    }
    controller.desired.publish(states.clone());
    for daemon in daemons {
        daemon.wait_state(&states[&daemon.node]).await;
        controller.wait_acked(daemon.node.as_str()).await;
        assert!(matches!(daemon.commands().last().expect("recorded").command, Command::PeerUpsert(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_stream_and_is_counted() {
    let nodes = ["node-a", "node-b"];
    let config = StreamConfig { hello_timeout: Duration::from_millis(300), ..StreamConfig::default() };
    let (controller, daemons) = cluster(&nodes, config).await;
    let endpoint = controller.endpoint.clone();

    let status = refusal(&endpoint, vec![ack(1)]).await;
    assert_status(&status, Code::InvalidArgument, "must be Hello, got Ack");

    let mut short_key = hello("node-x");
    if let Some(pb::daemon_message::Msg::Hello(h)) = &mut short_key.msg {
        h.public_key = vec![7; 31];
    }
    let status = refusal(&endpoint, vec![short_key]).await;
    assert_status(&status, Code::InvalidArgument, "hello.public_key");
    assert!(status.message().contains("31 bytes"), "{status:?}");

    let mut far_future = hello("node-x");
    if let Some(pb::daemon_message::Msg::Hello(h)) = &mut far_future.msg {
        h.applied_generation = u64::MAX;
    }
    let status = refusal(&endpoint, vec![far_future]).await;
    assert_status(&status, Code::InvalidArgument, "hello.applied_generation");

    let status = refusal(&endpoint, vec![]).await;
    assert_status(&status, Code::InvalidArgument, "no Hello within");

    let mut huge_hello = hello("node-x");
    if let Some(pb::daemon_message::Msg::Hello(h)) = &mut huge_hello.msg {
        h.version = "x".repeat(FIVE_MIB);
    }
    let status = refusal(&endpoint, vec![huge_hello]).await;
    assert_status(&status, Code::ResourceExhausted, "too large");

    // After a good Hello (for a node with no desired state: nothing is sent).
    let status = refusal(&endpoint, vec![hello("node-x"), hello("node-x")]).await;
    assert_status(&status, Code::InvalidArgument, "second Hello");

    let status = refusal(&endpoint, vec![hello("node-x"), ack(999)]).await;
    assert_status(&status, Code::InvalidArgument, "generation 999");

    let bad_observation = pb::DaemonMessage {
        msg: Some(pb::daemon_message::Msg::Observed(pb::Observed {
            peers: vec![pb::PeerObservation { node: "Not_A_Node".into(), ..Default::default() }],
        })),
    };
    let status = refusal(&endpoint, vec![hello("node-x"), bad_observation]).await;
    assert_status(&status, Code::InvalidArgument, "Not_A_Node");

    let huge_ack = pb::DaemonMessage {
        msg: Some(pb::daemon_message::Msg::Ack(pb::Ack {
            generation: 1,
            ok: false,
            error: "x".repeat(FIVE_MIB),
        })),
    };
    let status = refusal(&endpoint, vec![hello("node-x"), huge_ack]).await;
    assert_status(&status, Code::ResourceExhausted, "too large");

    for (reason, count) in [
        (RejectReason::NotHello, 1),
        (RejectReason::Malformed, 3),
        (RejectReason::HelloTimeout, 1),
        (RejectReason::TooLarge, 2),
        (RejectReason::SecondHello, 1),
        (RejectReason::UnknownAck, 1),
        (RejectReason::Unacked, 0),
    ] {
        assert_eq!(controller.metrics.rejected_count(reason), count, "{reason:?}");
    }
    let metrics = controller.health.render();
    assert!(metrics.contains("vpblu_controller_stream_rejected_total{reason=\"too_large\"} 2"), "{metrics}");

    // The real daemons never noticed.
    for daemon in &daemons {
        let status = daemon.status().await;
        assert_eq!(status.connects, 1, "{}: {status:?}", daemon.node);
    }
    still_working(&controller, &daemons, &nodes, "10.96.0.0/16").await;
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_keeps_working_when_a_daemon_dies_mid_stream() {
    let nodes = ["node-a", "node-b", "node-c"];
    let (controller, mut daemons) = cluster(&nodes, StreamConfig::default()).await;

    // A daemon killed outright: no orderly close, no post_stop.
    let b = daemons.remove(1);
    let plane = b.plane.clone();
    let before = plane.commands().last().expect("recorded").generation;
    b.client.kill();
    eventually("node-b's stream to go", async || !controller.connected().await.contains(&name("node-b")))
        .await;

    // A raw client that vanishes after its Hello.
    let (gone, response) = raw_session(&controller.endpoint, vec![hello("node-x")]).await;
    let stream = response.expect("the Hello is accepted");
    drop((gone, stream));
    eventually("node-x's stream to go", async || !controller.connected().await.contains(&name("node-x")))
        .await;

    let others = [daemons.remove(0), daemons.remove(0)];
    let mut states = mesh(&nodes);
    for node in ["node-a", "node-c"] {
        states.get_mut(&name(node)).expect("node").settings.listen_port = 51999;
    }
    controller.desired.publish(states.clone());
    for daemon in &others {
        daemon.wait_state(&states[&daemon.node]).await;
        controller.wait_acked(daemon.node.as_str()).await;
    }

    // node-b comes back (a restarted daemon over the same data plane).
    let b = Daemon::start_with("node-b", plane, &controller.endpoint).await;
    b.wait_state(&states[&name("node-b")]).await;
    let status = controller.wait_acked("node-b").await;
    assert!(status.last_acked > Some(before), "{status:?}");
    b.stop().await;
    for daemon in others {
        daemon.stop().await;
    }
    controller.stop().await;
}
