//! The warm stream end to end on loopback: a controller StreamServer and
//! real daemon StreamClients over RecordingDataPlanes.

mod stream_support;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vpblu_controller::stream::{Desired, RejectReason, StreamConfig, StreamEvent};
use vpblu_daemon::stream::StreamClientMsg;
use vpblu_messages::{
    Backend, Command, DigestKey, Downstream, Envelope, Generation, Hello, PeerObservation, StateDigest,
    Upstream,
};
use vpblu_proto as pb;

use stream_support::{
    Controller, Daemon, QUIET, WAIT, cluster, eventually, key, mesh, name, peer, teardown, until,
};

const ALL_REASONS: [RejectReason; 7] = [
    RejectReason::NotHello,
    RejectReason::HelloTimeout,
    RejectReason::Malformed,
    RejectReason::TooLarge,
    RejectReason::SecondHello,
    RejectReason::UnknownAck,
    RejectReason::Unacked,
];

fn last_generation(daemon: &Daemon) -> Generation {
    daemon.commands().last().expect("a command was recorded").generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sends_the_full_state_and_acks_are_tracked() {
    let nodes = ["node-a", "node-b", "node-c"];
    let (mut controller, daemons) = cluster(&nodes, StreamConfig::default()).await;
    for (i, daemon) in daemons.iter().enumerate() {
        let commands = daemon.commands();
        assert_eq!(commands.len(), 1, "{}: one full state, nothing else: {commands:?}", daemon.node);
        let want = controller.desired.get(&daemon.node).expect("published");
        assert_eq!(commands[0].command, Command::SyncState(want.clone()));
        assert_eq!(commands[0].result, Ok(()));
        assert_eq!(daemon.plane.state(), want);

        let status = controller.status(daemon.node.as_str()).await.expect("connected");
        assert_eq!(status.hello.public_key, key(i));
        assert_eq!(status.last_sent, Some(commands[0].generation));
        assert_eq!(status.last_acked, Some(commands[0].generation));
        assert!(status.unacked.is_empty() && status.last_error.is_none(), "{status:?}");
        assert_eq!(daemon.status().await.applied, commands[0].generation);
    }
    let (mut hellos, mut acks, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    while let Ok(event) = controller.events.try_recv() {
        let message = match event {
            StreamEvent::Message(node, message) => (node, message),
            // The status writer shows each node's desired generation.
            StreamEvent::Sent(node, generation) => {
                sent.push((node, generation));
                continue;
            }
            StreamEvent::Closed(_) => panic!("no stream closed: {event:?}"),
        };
        let (node, message) = message;
        match message {
            Upstream::Hello(ref h) if h.node == node => hellos.push(node),
            // The status writer shows each node's applied generation.
            Upstream::Ack { result: Ok(()), .. } => acks.push(node),
            other => panic!("only Hellos and ok Acks are announced here: {other:?}"),
        }
    }
    hellos.sort();
    acks.sort();
    assert_eq!(hellos, nodes.map(name).to_vec(), "one Hello event per daemon");
    assert_eq!(acks, nodes.map(name).to_vec(), "one Ack event per daemon (its SyncState)");
    sent.sort();
    let want: Vec<_> = daemons.iter().map(|d| (d.node.clone(), last_generation(d))).collect();
    assert_eq!(sent, want, "one Sent event per daemon, naming its SyncState's generation");
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_only_its_node_as_a_targeted_command() {
    let nodes = ["node-a", "node-b", "node-c"];
    let (controller, daemons) = cluster(&nodes, StreamConfig::default()).await;
    let first = last_generation(&daemons[0]);

    // A route policy sends 10.96.0.0/16 through node-b, as seen from node-a only.
    let mut states = mesh(&nodes);
    let via_b = peer("node-b", 1, &["10.96.0.0/16"]);
    states.get_mut(&name("node-a")).expect("node-a").peers.insert(name("node-b"), via_b.clone());
    let changed = controller.desired.publish(states.clone());
    assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec![name("node-a")]);

    daemons[0].wait_state(&states[&name("node-a")]).await;
    let commands = daemons[0].commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[1].command, Command::PeerUpsert(via_b), "a targeted upsert, not a full state");
    assert!(commands[1].generation > first);
    let status = controller.wait_acked("node-a").await;
    assert_eq!(status.last_acked, Some(commands[1].generation));

    // The same desired state again changes nothing anywhere.
    assert!(controller.desired.publish(states).is_empty());
    tokio::time::sleep(QUIET).await;
    assert_eq!(daemons[0].commands().len(), 2);
    for other in &daemons[1..] {
        assert_eq!(other.commands().len(), 1, "{} was sent something: {:?}", other.node, other.commands());
    }
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_daemon_gets_a_newer_full_state_and_ignores_replays() {
    let nodes = ["node-a", "node-b"];
    let (controller, mut daemons) = cluster(&nodes, StreamConfig::default()).await;
    let a = daemons.remove(0);
    let before = last_generation(&a);
    let old_state = a.plane.state();
    let plane = a.plane.clone();
    a.stop().await;
    eventually("node-a's stream to close", async || !controller.connected().await.contains(&name("node-a")))
        .await;

    // Desired state moves on while node-a is away; its data plane does not.
    let mut states = mesh(&nodes);
    states
        .get_mut(&name("node-a"))
        .expect("node-a")
        .peers
        .insert(name("node-b"), peer("node-b", 1, &["10.96.0.0/16"]));
    controller.desired.publish(states.clone());
    tokio::time::sleep(QUIET).await;
    assert_eq!(plane.state(), old_state, "nothing changes while disconnected");

    let a = Daemon::start_with("node-a", plane, &controller.endpoint).await;
    a.wait_state(&states[&name("node-a")]).await;
    let commands = a.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(matches!(commands[1].command, Command::SyncState(_)), "a full state on reconnect");
    assert!(commands[1].generation > before, "{} must be above {before}", commands[1].generation);
    let status = controller.wait_acked("node-a").await;
    assert_eq!(status.hello.applied_generation, before, "the Hello carries what was applied");

    // Replays of old generations are ignored and not acked.
    let epoch = a.status().await.epoch;
    for generation in [before, commands[1].generation] {
        let body = Ok(Downstream::State(Command::SyncState(old_state.clone())));
        a.client.cast(StreamClientMsg::Received { epoch, generation, body }).expect("client is running");
    }
    eventually("both replays to be ignored", async || a.status().await.ignored_stale == 2).await;
    assert_eq!(a.commands().len(), 2, "the data plane saw no replay");
    assert_eq!(a.plane.state(), states[&name("node-a")]);
    let status = controller.status("node-a").await.expect("still connected");
    assert!(status.unacked.is_empty() && status.last_error.is_none(), "{status:?}");
    for reason in ALL_REASONS {
        assert_eq!(controller.metrics.rejected_count(reason), 0, "{reason:?}");
    }
    a.stop().await;
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stream_of_a_node_replaces_the_old_one() {
    let nodes = ["node-a", "node-b"];
    let (controller, daemons) = cluster(&nodes, StreamConfig::default()).await;
    let first = last_generation(&daemons[0]);

    // A second connection says Hello as node-a: it gets node-a's full state,
    // counted on from where node-a's generations were.
    let (tx, mut second) = raw_session(&controller, Generation(0), None, None).await;
    let sync = next_command(&mut second).await;
    assert!(matches!(sync.body, Downstream::State(Command::SyncState(_))), "{sync:?}");
    assert!(sync.generation > first);

    // The daemon's old stream was closed; it reconnects and in turn
    // replaces the second connection, which ends with Aborted.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match second.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the replaced stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the replaced stream ends in time");
    assert_eq!(ended.code(), tonic::Code::Aborted, "{ended:?}");
    assert!(ended.message().contains("replaced"), "{ended:?}");
    until("node-a to get a second full state", async || (daemons[0].commands().len() == 2).then_some(()))
        .await;
    let commands = daemons[0].commands();
    assert!(matches!(commands[1].command, Command::SyncState(_)), "{commands:?}");
    assert!(commands[1].generation > sync.generation);
    assert_eq!(daemons[0].status().await.connects, 2);
    controller.wait_acked("node-a").await;
    drop(tx);
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_counts_on_from_the_daemons_generation() {
    let nodes = ["node-a", "node-b"];
    let (controller, daemons) = cluster(&nodes, StreamConfig::default()).await;
    // Move node-a's generation on a little so it differs from node-b's.
    let mut states = mesh(&nodes);
    states.get_mut(&name("node-a")).expect("node-a").settings.listen_port = 51823;
    controller.desired.publish(states.clone());
    daemons[0].wait_state(&states[&name("node-a")]).await;
    let before: Vec<Generation> = daemons.iter().map(last_generation).collect();
    let (addr, pki) = (controller.addr, controller.pki.clone());
    controller.stop().await;

    // A new controller (a new leader) knows no generations; the Hellos
    // tell it where each node is.
    let controller = Controller::start_at(addr, Desired::new(), StreamConfig::default(), pki).await;
    let mut states = mesh(&nodes);
    states.get_mut(&name("node-a")).expect("node-a").settings.listen_port = 51823;
    states.get_mut(&name("node-b")).expect("node-b").settings.listen_port = 51822;
    controller.desired.publish(states.clone());
    for (daemon, before) in daemons.iter().zip(before) {
        daemon.wait_state(&states[&daemon.node]).await;
        let status = controller.wait_acked(daemon.node.as_str()).await;
        assert_eq!(status.hello.applied_generation, before);
        let last = last_generation(daemon);
        assert!(last > before, "{}: {last} must be above {before}", daemon.node);
        assert_eq!(daemon.status().await.ignored_stale, 0);
    }
    // node-a already held what the new leader has for it: confirmed by its
    // digest, not sent (its data plane still applied it again, above its
    // old generation). node-b's changed: sent whole.
    assert_eq!(daemons[0].status().await.kept, 1);
    assert_eq!(daemons[1].status().await.kept, 0);
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_failure_is_acked_recorded_and_the_next_change_applies() {
    let nodes = ["node-a", "node-b"];
    let config = StreamConfig { error_retry: Duration::from_secs(60), ..StreamConfig::default() };
    let (controller, daemons) = cluster(&nodes, config).await;
    let a = &daemons[0];
    let old_state = a.plane.state();

    a.plane.fail_next("EBUSY: wg-mesh is busy");
    let mut states = mesh(&nodes);
    states
        .get_mut(&name("node-a"))
        .expect("node-a")
        .peers
        .insert(name("node-b"), peer("node-b", 1, &["10.96.0.0/16"]));
    controller.desired.publish(states);
    let failed = until("the error ack", async || controller.status("node-a").await?.last_error).await;
    assert!(failed.error.contains("EBUSY: wg-mesh is busy"), "{failed:?}");
    assert_eq!(a.commands().last().expect("recorded").generation, failed.generation);
    assert_eq!(a.plane.state(), old_state, "a failed apply changes nothing");
    let status = controller.status("node-a").await.expect("connected");
    assert!(status.unacked.is_empty(), "an error ack is an ack: {status:?}");
    assert!(status.last_acked < Some(failed.generation));

    // The next good change applies; after an error it comes as a full state.
    let mut states = mesh(&nodes);
    states
        .get_mut(&name("node-a"))
        .expect("node-a")
        .peers
        .insert(name("node-b"), peer("node-b", 1, &["10.97.0.0/16"]));
    controller.desired.publish(states.clone());
    a.wait_state(&states[&name("node-a")]).await;
    assert!(matches!(a.commands().last().expect("recorded").command, Command::SyncState(_)));
    let status = controller.wait_acked("node-a").await;
    assert!(status.last_acked > Some(failed.generation), "recovered: {status:?}");
    assert_eq!(status.last_error, Some(failed), "the last error stays visible, with its generation");
    assert_eq!(daemons[1].commands().len(), 1);
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_desired_state_is_refused_and_the_previous_one_stays() {
    let nodes = ["node-a", "node-b", "node-c"];
    let config = StreamConfig { error_retry: Duration::from_secs(60), ..StreamConfig::default() };
    let (controller, daemons) = cluster(&nodes, config).await;
    let a = &daemons[0];
    let old_state = a.plane.state();

    // node-c also claims node-b's pod CIDR: WireGuard would silently give it to one of them.
    let mut states = mesh(&nodes);
    states
        .get_mut(&name("node-a"))
        .expect("node-a")
        .peers
        .insert(name("node-c"), peer("node-c", 2, &["10.244.1.0/24"]));
    controller.desired.publish(states);
    let refused = until("the refusal", async || controller.status("node-a").await?.last_error).await;
    assert!(refused.error.contains("10.244.1.0/24") && refused.error.contains("node-b"), "{refused:?}");
    assert_eq!(a.commands().len(), 1, "the data plane was not even asked");
    assert_eq!(a.plane.state(), old_state);
    let status = a.status().await;
    assert_eq!((status.refused, status.applied), (1, last_generation(a)));

    // A valid state applies again.
    let states = mesh(&nodes);
    let mut fixed = states.clone();
    fixed.get_mut(&name("node-a")).expect("node-a").settings.listen_port = 51823;
    controller.desired.publish(fixed.clone());
    a.wait_state(&fixed[&name("node-a")]).await;
    controller.wait_acked("node-a").await;
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_resync_applies_the_whole_state_again_confirmed_by_its_digest() {
    let config = StreamConfig { resync_interval: Duration::from_millis(200), ..StreamConfig::default() };
    let (mut controller, daemons) = cluster(&["node-a"], config).await;
    eventually("two resyncs", async || daemons[0].commands().len() >= 3).await;
    let commands = daemons[0].commands();
    let want = controller.desired.get(&name("node-a")).expect("published");
    // The data plane gets the whole state each time (a resync repairs what
    // changed behind the daemon's back)...
    assert!(commands.iter().all(|c| c.command == Command::SyncState(want.clone()) && c.result.is_ok()));
    assert!(commands.windows(2).all(|w| w[0].generation < w[1].generation), "{commands:?}");
    // ...but only the first crossed the wire: the resyncs were KeepStates.
    let status = daemons[0].status().await;
    assert!(status.kept >= 2 && status.refused == 0, "{status:?}");
    let acked = controller.wait_acked("node-a").await;
    assert!(acked.last_error.is_none(), "{acked:?}");
    // The status writer hears of the first state only: a resync that
    // changes nothing moves no generation in the node's status.
    let first = commands[0].generation;
    let mut generations = Vec::new();
    while let Ok(event) = controller.events.try_recv() {
        match event {
            StreamEvent::Sent(_, generation) | StreamEvent::Message(_, Upstream::Ack { generation, .. }) => {
                generations.push(generation);
            }
            _ => {}
        }
    }
    assert_eq!(generations, [first, first], "one Sent and one Ack, of the first state");
    teardown(controller, daemons).await;
}

/// A raw stream as node-a whose Hello says it applied `applied`, digests
/// under `digest_key` and holds `held`; returns the request half and the
/// response stream.
async fn raw_session(
    controller: &Controller,
    applied: Generation,
    digest_key: Option<DigestKey>,
    held: Option<StateDigest>,
) -> (mpsc::Sender<pb::DaemonMessage>, tonic::Streaming<pb::ControllerMessage>) {
    let mut rpc = controller.endpoint.raw_client().await;
    let (tx, rx) = mpsc::channel(4);
    let hello = Hello {
        node: name("node-a"),
        public_key: key(0),
        staged_public_key: None,
        applied_generation: applied,
        backend: Backend::Kernel,
        mtu: 1420,
        version: "test".into(),
        digest_key,
        held,
    };
    tx.send(pb::DaemonMessage::from(&Upstream::Hello(hello))).await.expect("queue has room");
    let stream = tokio::time::timeout(WAIT, rpc.session(ReceiverStream::new(rx)))
        .await
        .expect("answered in time")
        .expect("accepted")
        .into_inner();
    (tx, stream)
}

async fn next_command(stream: &mut tonic::Streaming<pb::ControllerMessage>) -> Envelope {
    let message = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a command in time")
        .expect("no error")
        .expect("not ended");
    Envelope::try_from(&message).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_state_is_confirmed_by_its_digest_and_a_refusal_gets_the_full_state_at_once() {
    // No retry timer in the way: a refused KeepState is answered at once.
    let config = StreamConfig { error_retry: Duration::from_secs(600), ..StreamConfig::default() };
    let controller = Controller::start(config).await;
    controller.desired.publish(mesh(&["node-a", "node-b"]));
    let want = controller.desired.get(&name("node-a")).expect("published");
    let key = DigestKey::from_bytes([3; 16]);

    // The Hello shows the state the controller has for node-a: KeepState.
    let (tx, mut stream) = raw_session(&controller, Generation(7), Some(key), Some(want.digest(&key))).await;
    let keep = next_command(&mut stream).await;
    assert_eq!(keep.body, Downstream::State(Command::KeepState(want.digest(&key))), "{keep:?}");
    assert_eq!(keep.generation, Generation(8), "counted on from the Hello's applied generation");
    // The daemon says it holds something else after all: the full state
    // follows without waiting for the error retry.
    let refusal = Upstream::Ack { generation: keep.generation, result: Err("digest differs".into()) };
    tx.send(pb::DaemonMessage::from(&refusal)).await.expect("stream open");
    let full = next_command(&mut stream).await;
    assert_eq!(full.body, Downstream::State(Command::SyncState(want.clone())), "{full:?}");
    assert!(full.generation > keep.generation);
    tx.send(pb::DaemonMessage::from(&Upstream::Ack { generation: full.generation, result: Ok(()) }))
        .await
        .expect("stream open");
    let status = controller.wait_acked("node-a").await;
    assert_eq!(status.last_error.map(|e| e.generation), Some(keep.generation));
    drop((tx, stream));

    // A Hello with another state's digest, with none, or without a key:
    // the full state.
    let mut other = want.clone();
    other.settings.listen_port += 10;
    let cases = [(Some(key), Some(other.digest(&key))), (Some(key), None), (None, Some(want.digest(&key)))];
    for (digest_key, held) in cases {
        let (tx, mut stream) = raw_session(&controller, Generation(7), digest_key, held).await;
        let first = next_command(&mut stream).await;
        assert_eq!(
            first.body,
            Downstream::State(Command::SyncState(want.clone())),
            "key {digest_key:?}, held {held:?}"
        );
        drop((tx, stream));
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_state_with_another_digest_is_refused_and_changes_nothing() {
    let (controller, daemons) = cluster(&["node-a", "node-b"], StreamConfig::default()).await;
    let a = &daemons[0];
    let before = a.commands();
    let status = a.status().await;
    let wrong = StateDigest::from_bytes([0xee; 16]);
    let body = Ok(Downstream::State(Command::KeepState(wrong)));
    let generation = Generation(status.applied.0 + 1);
    a.client
        .cast(StreamClientMsg::Received { epoch: status.epoch, generation, body })
        .expect("client is running");
    eventually("the refusal", async || a.status().await.refused == 1).await;
    assert_eq!(a.commands(), before, "the data plane was not asked");
    assert_eq!(a.status().await.kept, 0);
    // The controller never sent that generation, so it closes the stream;
    // the daemon reconnects holding its state, which is confirmed, not sent.
    eventually("a second stream", async || a.status().await.connects == 2).await;
    eventually("the state confirmed", async || a.status().await.kept == 1).await;
    let want = controller.desired.get(&name("node-a")).expect("published");
    assert_eq!(a.plane.state(), want);
    assert_eq!(controller.metrics.rejected_count(RejectReason::UnknownAck), 1);
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_reach_the_events_channel() {
    let (mut controller, daemons) = cluster(&["node-a", "node-b"], StreamConfig::default()).await;
    let seen = vec![PeerObservation {
        node: name("node-b"),
        public_key: key(1),
        last_handshake_age: Some(Duration::from_secs(7)),
        rx_bytes: 1000,
        tx_bytes: 2000,
    }];
    daemons[0].client.cast(StreamClientMsg::Observed(seen.clone())).expect("client is running");
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match controller.events.recv().await.expect("events flow") {
                StreamEvent::Message(node, Upstream::Observed(peers)) => return (node, peers),
                StreamEvent::Message(
                    _,
                    Upstream::Hello(_) | Upstream::Ack { .. } | Upstream::RotationReport(_),
                )
                | StreamEvent::Closed(_)
                | StreamEvent::Sent(..) => {}
            }
        }
    })
    .await
    .expect("the observation arrives in time");
    assert_eq!(event, (name("node-a"), seen));
    // And they are valid wire messages both ways.
    let wire = pb::DaemonMessage::from(&Upstream::Observed(event.1.clone()));
    assert_eq!(Upstream::try_from(&wire).expect("converts back"), Upstream::Observed(event.1));
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_for_another_node_is_refused() {
    let controller = Controller::start(StreamConfig::default()).await;
    let mut states = mesh(&["node-a", "node-b"]);
    let for_b = states[&name("node-b")].clone();
    states.insert(name("node-a"), for_b);
    controller.desired.publish(states);
    let a = Daemon::start("node-a", 0, &controller.endpoint).await;
    let refused = until("the refusal", async || controller.status("node-a").await?.last_error).await;
    assert!(refused.error.contains("this daemon runs on node node-a"), "{refused:?}");
    assert!(a.commands().is_empty(), "the data plane was not asked");
    assert_eq!(a.plane.state(), vpblu_messages::NodeDesiredState::empty(name("node-a")));
    assert_eq!(a.status().await.applied, Generation(0));
    a.stop().await;
    controller.stop().await;
}

/// The status writer hears that a node's stream closed, and only then: a
/// stream replaced by a newer one of the same node is no disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_is_announced_and_a_replaced_one_is_not() {
    let (mut controller, mut daemons) = cluster(&["node-a", "node-b"], StreamConfig::default()).await;
    let drain = |controller: &mut stream_support::Controller| {
        std::iter::from_fn(|| controller.events.try_recv().ok()).collect::<Vec<_>>()
    };
    drain(&mut controller);

    // node-b's daemon goes away: one Closed for node-b, nothing for node-a.
    daemons.pop().expect("two daemons").stop().await;
    let mut seen = Vec::new();
    until("node-b's close", async || {
        seen.extend(drain(&mut controller));
        seen.contains(&StreamEvent::Closed(name("node-b"))).then_some(())
    })
    .await;
    assert_eq!(seen, vec![StreamEvent::Closed(name("node-b"))], "exactly one event");
    assert_eq!(controller.connected().await, vec![name("node-a")]);

    // A second stream of node-a replaces the first (a daemon restarted
    // before the old connection broke): node-a never counts as closed.
    let first = daemons.pop().expect("node-a's daemon");
    let again = Daemon::start("node-a", 0, &controller.endpoint).await;
    let hello =
        |e: &StreamEvent| matches!(e, StreamEvent::Message(n, Upstream::Hello(_)) if *n == name("node-a"));
    let mut seen = Vec::new();
    until("node-a's second Hello", async || {
        seen.extend(drain(&mut controller));
        seen.iter().any(hello).then_some(())
    })
    .await;
    // The first client is told it was replaced and would reconnect; it
    // stops here instead, while its stream is (or soon is) not the current one.
    first.stop().await;
    eventually("node-a served by the new daemon alone", async || {
        again.status().await.connected && controller.connected().await == vec![name("node-a")]
    })
    .await;
    tokio::time::sleep(QUIET).await;
    seen.extend(drain(&mut controller));
    let last = seen.iter().rev().find(|e| matches!(e, StreamEvent::Closed(_)) || hello(e));
    assert!(last.is_some_and(hello), "node-a is connected, so its last event is a Hello: {seen:?}");

    again.stop().await;
    until("node-a's close", async || {
        drain(&mut controller).contains(&StreamEvent::Closed(name("node-a"))).then_some(())
    })
    .await;
    assert!(controller.connected().await.is_empty());
    controller.stop().await;
}
