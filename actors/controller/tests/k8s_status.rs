//! The status writer against the real API server: a daemon's Hello, Acks
//! and Observed reports become its VpbluNode's status, and an unchanged
//! report writes nothing.

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use ractor::Actor;
use tokio::sync::broadcast;
use vpblu_controller::status_writer::{StatusWriter, StatusWriterArgs};
use vpblu_e2e::cluster::TestCluster;
use vpblu_k8s::{VpbluNode, VpbluNodeSpec, VpbluNodeStatus};
use vpblu_messages::{Backend, Generation, Hello, NodeName, PeerObservation, PublicKey, Upstream};

async fn status_until(
    api: &Api<VpbluNode>,
    name: &str,
    what: &str,
    ok: impl Fn(&VpbluNodeStatus) -> bool,
) -> VpbluNodeStatus {
    for _ in 0..100 {
        let node = api.get(name).await.expect("read the VpbluNode");
        if let Some(status) = node.status.filter(|s| ok(s)) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("VpbluNode {name} status never showed {what}: {:?}", api.get(name).await.map(|n| n.status));
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_reports_become_vpblunode_status() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    let api: Api<VpbluNode> = Api::all(cluster.client());
    api.create(&PostParams::default(), &VpbluNode::new("node-s", VpbluNodeSpec::default()))
        .await
        .expect("create the VpbluNode");

    let (events, _) = broadcast::channel(16);
    let args = StatusWriterArgs { client: cluster.client(), events: events.clone() };
    let (writer, handle) = Actor::spawn(None, StatusWriter, args).await.expect("status writer starts");
    let node = NodeName::new("node-s").unwrap();
    let key = PublicKey::from_bytes([42; 32]);

    events
        .send((
            node.clone(),
            Upstream::Hello(Hello {
                node: node.clone(),
                public_key: key,
                staged_public_key: None,
                applied_generation: Generation(3),
                backend: Backend::Userspace,
                mtu: 1420,
                version: "test".into(),
            }),
        ))
        .expect("a subscriber listens");
    let status = status_until(&api, "node-s", "the key", |s| s.public_key.is_some()).await;
    assert_eq!(status.public_key.as_deref(), Some(key.to_base64().as_str()));
    assert_eq!(status.short_key.as_deref(), Some(&key.to_base64()[..8]));
    assert_eq!(status.mtu, Some(1420));
    assert_eq!(status.applied_generation, Some(3));

    events.send((node.clone(), Upstream::Ack { generation: Generation(7), result: Ok(()) })).unwrap();
    events
        .send((node.clone(), Upstream::Ack { generation: Generation(8), result: Err("boom".into()) }))
        .unwrap();
    status_until(&api, "node-s", "generation 7", |s| s.applied_generation == Some(7)).await;

    let peer = |name: &str, age: Option<u64>| PeerObservation {
        node: NodeName::new(name).unwrap(),
        public_key: PublicKey::from_bytes([1; 32]),
        last_handshake_age: age.map(Duration::from_secs),
        rx_bytes: 10,
        tx_bytes: 20,
    };
    events.send((node.clone(), Upstream::Observed(vec![peer("a", Some(5)), peer("b", None)]))).unwrap();
    let status = status_until(&api, "node-s", "peers", |s| s.peers == Some(2)).await;
    assert_eq!(status.peers_up, Some(1), "only the peer with a recent handshake is up");
    assert_eq!(status.applied_generation, Some(7), "a failed apply does not move the generation");

    // The same report again writes nothing: the resourceVersion stays.
    let before = api.get("node-s").await.unwrap().metadata.resource_version;
    events.send((node.clone(), Upstream::Observed(vec![peer("a", Some(5)), peer("b", None)]))).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get("node-s").await.unwrap().metadata.resource_version, before);

    writer.stop(None);
    handle.await.expect("status writer joins");
}
