//! TLS on the stream, no API server needed: a daemon refuses a controller
//! whose certificate it cannot verify, the controller refuses plaintext,
//! and a renewed certificate serves new connections while open streams
//! stay up.

mod stream_support;

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use vpblu_controller::stream::{
    Desired, NodeAuth, RefusalEvents, RejectReason, ServerTls, ServerTransport, StreamConfig, TlsFiles,
};
use vpblu_daemon::stream::StreamSecurity;
use vpblu_e2e::stream_pki::StreamPki;
use vpblu_messages::{Backend, Generation, Hello, Upstream};
use vpblu_proto as pb;
use vpblu_proto::mesh::mesh_client::MeshClient;

use stream_support::{Controller, Daemon, QUIET, cluster, eventually, key, mesh, name, teardown, until};

/// Waits until `daemon` has failed to connect at least twice and returns
/// why; it must never have connected.
async fn refused(daemon: &Daemon) -> String {
    let reason = until(&format!("{} to fail to connect", daemon.node), async || {
        let status = daemon.status().await;
        (status.epoch >= 2).then_some(status.last_error).flatten()
    })
    .await;
    let status = daemon.status().await;
    assert_eq!((status.connected, status.connects), (false, 0), "{status:?}");
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_refuses_a_controller_it_cannot_verify() {
    let pki = Arc::new(StreamPki::new());
    let (cert_file, key_file) = pki.self_signed();
    let impostor =
        ServerTls::load(TlsFiles { cert_file, key_file }).expect("the impostor's certificate loads");
    let controller = Controller::start_serving(
        "127.0.0.1:0".parse().unwrap(),
        Desired::new(),
        StreamConfig::default(),
        ServerTransport::Tls(impostor),
        Arc::clone(&pki),
        NodeAuth::TrustAll,
        RefusalEvents::disabled(),
    )
    .await;
    controller.desired.publish(mesh(&["node-a"]));

    // Right name, wrong issuer: a self-signed certificate.
    let a = Daemon::start("node-a", 0, &controller.endpoint).await;
    let reason = refused(&a).await;
    assert!(reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"), "{reason}");
    assert!(a.commands().is_empty(), "nothing may be applied from an unverified controller");
    a.stop().await;
    // The controller saw failed handshakes, never a Hello. The daemon
    // gives up on its side of a handshake before the server task counts
    // it, so the count is awaited rather than read once; a handshake the
    // daemon dropped before its ClientHello is counted only when the
    // server's handshake timeout (10 s) fires, so the wait outlasts it.
    // Only the first attempt is sure to have reached the server: `refused`
    // returns once the second has *started* (epoch 2), and the daemon is
    // stopped then, perhaps before that one connected (seen under CI load:
    // counted 1 after 15 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while controller.metrics.rejected_count(RejectReason::TlsHandshake) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused handshakes were not counted within 15 s (counted {})",
            controller.metrics.rejected_count(RejectReason::TlsHandshake)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(controller.connected().await.is_empty());
    controller.stop().await;

    // The real certificate, but the daemon expects another name.
    let controller = Controller::start(StreamConfig::default()).await;
    let mut other_name = controller.endpoint.clone();
    if let Some(tls) = &mut other_name.security.tls {
        tls.server_name = "someone-else.example".to_owned();
    }
    let a = Daemon::start("node-a", 0, &other_name).await;
    let reason = refused(&a).await;
    assert!(reason.contains("certificate not valid for name \"someone-else.example\""), "{reason}");
    a.stop().await;

    // A CA bundle that is not there: the daemon says which file.
    let missing = controller.endpoint.trusting(&pki.dir().join("no-such-ca.crt"));
    let a = Daemon::start("node-a", 0, &missing).await;
    let reason = refused(&a).await;
    assert!(reason.contains("no-such-ca.crt") && reason.contains("--ca-file"), "{reason}");
    a.stop().await;

    // TLS configured but an http:// endpoint: refused before dialing, not
    // silently sent in plaintext.
    let mut plain_url = controller.endpoint.clone();
    plain_url.url = plain_url.url.replace("https://", "http://");
    let a = Daemon::start("node-a", 0, &plain_url).await;
    let reason = refused(&a).await;
    assert!(reason.contains("must start with https://"), "{reason}");
    a.stop().await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_controller_refuses_plaintext() {
    let (controller, daemons) = cluster(&["node-a"], StreamConfig::default()).await;
    let before = controller.metrics.rejected_count(RejectReason::TlsHandshake);

    // A daemon in --insecure-dev mode against a TLS controller.
    let mut insecure = controller.endpoint.clone();
    insecure.url = insecure.url.replace("https://", "http://");
    insecure.security = StreamSecurity::insecure_dev();
    let b = Daemon::start("node-b", 1, &insecure).await;
    let reason = refused(&b).await;
    assert!(reason.contains("cannot connect") || reason.contains("closed"), "{reason}");
    b.stop().await;

    // A raw plaintext HTTP/2 client gets no answer to a Hello either.
    let channel = Channel::from_shared(format!("http://{}", controller.addr)).unwrap().connect().await;
    if let Ok(channel) = channel {
        let hello = pb::DaemonMessage::from(&Upstream::Hello(Hello {
            node: name("node-x"),
            public_key: key(9),
            staged_public_key: None,
            applied_generation: Generation(0),
            backend: Backend::Kernel,
            mtu: 1420,
            version: "test".into(),
            digest_key: None,
            held: None,
        }));
        let result = MeshClient::new(channel).session(tokio_stream::iter(vec![hello])).await;
        assert!(result.is_err(), "a plaintext session must fail");
    }
    eventually("the plaintext handshakes to be counted", async || {
        controller.metrics.rejected_count(RejectReason::TlsHandshake) >= before + 2
    })
    .await;
    assert_eq!(controller.connected().await, vec![name("node-a")]);
    assert_eq!(daemons[0].status().await.connects, 1, "the TLS daemon never noticed");
    teardown(controller, daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_and_keeps_open_streams() {
    let nodes = ["node-a", "node-b"];
    let (controller, daemons) = cluster(&nodes[..1], StreamConfig::default()).await;
    let a = &daemons[0];

    // The Secret is updated: a certificate from a new CA.
    let new_ca = controller.pki.rotate_to_new_ca();

    // node-a's open stream is untouched and still carries changes.
    let mut states = mesh(&nodes[..1]);
    states.get_mut(&name("node-a")).expect("node-a").settings.listen_port = 51999;
    controller.desired.publish(states.clone());
    a.wait_state(&states[&name("node-a")]).await;
    controller.wait_acked("node-a").await;
    assert_eq!(a.status().await.connects, 1, "the renewal must not drop open streams");

    // A new connection gets the new certificate: a daemon that trusts only
    // the old CA cannot connect, one with the new bundle can.
    let stale = Daemon::start("node-b", 1, &controller.endpoint).await;
    let reason = refused(&stale).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    stale.stop().await;
    controller.desired.publish(mesh(&nodes));
    let b = Daemon::start("node-b", 1, &controller.endpoint.trusting(&new_ca)).await;
    b.wait_state(&mesh(&nodes)[&name("node-b")]).await;
    controller.wait_acked("node-b").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(a.status().await.connects, 1);
    b.stop().await;
    teardown(controller, daemons).await;
}
