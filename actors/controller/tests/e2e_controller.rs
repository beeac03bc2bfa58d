//! The real controller binary, the real API server, real daemon stream
//! clients (recording data planes) that connect the way deployed daemons
//! do: TLS checked against the stream CA, each presenting the projected
//! token of its own DaemonSet Pod (TokenReview). Keys published in Hello reach every
//! peer, node joins and deletes and BlockPolicies reach the daemons they
//! concern, and a controller killed and replaced by another replica changes
//! nothing in the data plane.

mod stream_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::cluster::TestCluster;
use vpblu_e2e::process::free_addr;
use vpblu_e2e::stream_pki::StreamPki;
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule, Route, RoutePolicy, RoutePolicySpec};
use vpblu_messages::{Command as MeshCommand, NodeDesiredState};

use stream_support::controller_process::ControllerProcess;
use stream_support::{Daemon, deployed_daemon, key};

/// Generous: a change crosses API server, informer, recompute, stream.
const CONVERGE: Duration = Duration::from_secs(30);

async fn converge(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < CONVERGE {
        if check() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {CONVERGE:?} waiting for {what}");
}

/// Waits for a policy's condition of `type_` (written by the leader).
async fn until_condition<K>(api: &Api<K>, name: &str, type_: &str) -> Condition
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    let start = Instant::now();
    while start.elapsed() < CONVERGE {
        let object = serde_json::to_value(api.get(name).await.expect("read the policy")).expect("json");
        let conditions = object["status"]["conditions"].clone();
        if let Ok(list) = serde_json::from_value::<Vec<Condition>>(conditions)
            && let Some(c) = list.into_iter().find(|c| c.type_ == type_)
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never got a {type_} condition");
}

fn peers_of(state: &NodeDesiredState) -> Vec<String> {
    state.peers.keys().map(|n| n.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_follows_the_api_through_the_real_controller() {
    let cluster = TestCluster::start().await;
    cluster.install_crds().await;
    // Namespace, daemon account and DaemonSet (whose Pods the daemons are).
    cluster.install_daemonset().await;
    let pki = Arc::new(StreamPki::new());
    for i in 1..=3 {
        cluster
            .register_node(
                &format!("node-{i}"),
                &format!("192.0.2.{i}"),
                &[&format!("10.244.{i}.0/24")],
                true,
            )
            .await;
    }
    let grpc = free_addr().to_string();
    let first = tokio::task::block_in_place(|| {
        ControllerProcess::start(&cluster, "controller-0", &grpc, &pki, "info")
    });

    let mut daemons = Vec::new();
    for i in 1..=3 {
        daemons.push(deployed_daemon(&cluster, &pki, &grpc, i).await);
    }
    // Keys travel Hello -> status writer -> VpbluNode -> informer ->
    // recompute -> stream: every daemon ends up with the other two, keyed
    // by what they said in their Hello.
    let took = converge("a full mesh of 3", || {
        daemons.iter().all(|d| {
            let state = d.plane.state();
            state.peers.len() == 2
                && state.peers.values().all(|p| {
                    let i: usize = p.node.as_str().trim_start_matches("node-").parse().unwrap();
                    p.public_key == key(i)
                })
        })
    })
    .await;
    println!("full mesh of 3 formed {took:.2?} after the daemons started");

    // node-1's daemon token, claiming node-2 with another key: refused,
    // and node-2's published key and every peer set stay as they were.
    let node1_token = std::fs::read_to_string(pki.dir().join("node-1.token")).expect("node-1's token");
    let impostor =
        vpblu_proto::DaemonMessage::from(&vpblu_messages::Upstream::Hello(vpblu_messages::Hello {
            node: vpblu_messages::NodeName::new("node-2").unwrap(),
            public_key: key(9),
            staged_public_key: None,
            applied_generation: vpblu_messages::Generation(0),
            backend: vpblu_messages::Backend::Userspace,
            mtu: 1420,
            version: "impostor".into(),
            digest_key: None,
            held: None,
        }));
    let endpoint = stream_support::Endpoint {
        url: format!("https://{grpc}"),
        security: vpblu_daemon::stream::StreamSecurity::tls(pki.ca_file(), "unused", "unused"),
        pki: Arc::clone(&pki),
    };
    let status = endpoint.attempt(Some(&node1_token), impostor).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("runs on node node-1, but its Hello claims node node-2"), "{status:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let node2 =
        Api::<vpblu_k8s::VpbluNode>::all(cluster.client()).get("node-2").await.expect("VpbluNode node-2");
    let published = node2.status.and_then(|s| s.public_key);
    assert_eq!(published, Some(key(2).to_base64()), "the refused Hello must not publish its key");
    for d in &daemons {
        assert!(d.plane.state().peers.values().all(|p| p.public_key != key(9)), "{}: impostor key", d.node);
    }

    // A node joins: everyone gets it.
    cluster.register_node("node-4", "192.0.2.4", &["10.244.4.0/24"], true).await;
    daemons.push(deployed_daemon(&cluster, &pki, &grpc, 4).await);
    let took =
        converge("node-4 in every peer set", || daemons.iter().all(|d| d.plane.state().peers.len() == 3))
            .await;
    println!("node join reached every daemon in {took:.2?}");

    // A node is deleted: its peer disappears everywhere (12.5).
    cluster.delete_node("node-2").await;
    let took = converge("node-2 gone from every peer set", || {
        daemons
            .iter()
            .filter(|d| d.node.as_str() != "node-2")
            .all(|d| !peers_of(&d.plane.state()).contains(&"node-2".to_owned()))
    })
    .await;
    println!("node delete reached every daemon in {took:.2?}");

    // A BlockPolicy reaches the two nodes at its ends, and only them.
    let blocks: Api<BlockPolicy> = Api::all(cluster.client());
    let policy = BlockPolicy::new(
        "one-to-three",
        BlockPolicySpec {
            blocks: vec![BlockRule {
                from: "10.244.1.0/24".into(),
                to: "10.244.3.0/24".into(),
                bidirectional: false,
            }],
            ..BlockPolicySpec::default()
        },
    );
    let before_node4 = daemons[3].commands().len();
    blocks.create(&PostParams::default(), &policy).await.expect("create the BlockPolicy");
    let took = converge("the block on node-1 and node-3", || {
        [0, 2].iter().all(|&i| daemons[i].plane.state().blocks.len() == 1)
    })
    .await;
    println!("BlockPolicy create -> applied on both ends in {took:.2?}");
    assert!(
        daemons[3].commands()[before_node4..].iter().all(|c| !matches!(c.command, MeshCommand::SetBlocks(_))),
        "node-4 is not at either end of the block and must not be sent it"
    );
    let ready = until_condition(&blocks, "one-to-three", "Ready").await;
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Applied"), "{ready:?}");

    // A policy naming a node that does not exist: the API server cannot
    // know, so the engine reports it on the policy and applies the rest.
    let routes: Api<RoutePolicy> = Api::all(cluster.client());
    let bad = RoutePolicy::new(
        "via-nowhere",
        RoutePolicySpec {
            routes: vec![Route { cidr: "192.168.50.0/24".into(), via: "nowhere".into() }],
            ..RoutePolicySpec::default()
        },
    );
    routes.create(&PostParams::default(), &bad).await.expect("the API server accepts the RoutePolicy");
    let ready = until_condition(&routes, "via-nowhere", "Ready").await;
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "UnknownNode"), "{ready:?}");
    assert!(ready.message.contains("nowhere"), "the message names the bad value: {}", ready.message);
    println!("RoutePolicy via an unknown node -> Ready=False/UnknownNode: {}", ready.message);
    // ...and a Warning Event says so (cluster-scoped objects: namespace default).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cluster.client(), "default");
    let start = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.expect("list Events");
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("UnknownNode")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("via-nowhere")
        });
        if found {
            break;
        }
        assert!(start.elapsed() < CONVERGE, "no Warning Event for via-nowhere: {:?}", list.items);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    blocks.delete("one-to-three", &DeleteParams::default()).await.expect("delete the BlockPolicy");
    converge("the block gone", || [0, 2].iter().all(|&i| daemons[i].plane.state().blocks.is_empty())).await;

    // The controller dies without a goodbye; another replica takes the
    // Lease and the streams. The data plane must not change at all.
    let live: Vec<&Daemon> = daemons.iter().filter(|d| d.node.as_str() != "node-2").collect();
    let states: Vec<NodeDesiredState> = live.iter().map(|d| d.plane.state()).collect();
    let counts: Vec<usize> = live.iter().map(|d| d.commands().len()).collect();
    drop(first);
    let killed = Instant::now();
    let _second = tokio::task::block_in_place(|| {
        ControllerProcess::start(&cluster, "controller-1", &grpc, &pki, "info")
    });
    converge("every daemon reconnected to the new leader", || {
        live.iter().zip(&counts).all(|(d, n)| d.commands().len() > *n)
    })
    .await;
    println!("leader killed -> every daemon resynced by the new leader in {:.2?}", killed.elapsed());
    // No daemon token in anything the controllers logged.
    for name in ["controller-0", "controller-1"] {
        let log = std::fs::read_to_string(cluster.dir().join(format!("{name}.log"))).expect("controller log");
        for i in 1..=4 {
            let token = std::fs::read_to_string(pki.dir().join(format!("node-{i}.token"))).expect("token");
            let signature = token.rsplit('.').next().expect("a JWT");
            assert!(!log.contains(signature), "node-{i}'s token is in {name}'s log");
        }
    }
    for ((daemon, state), count) in live.iter().zip(&states).zip(&counts) {
        assert_eq!(daemon.plane.state(), *state, "{}: the handover changed the data plane", daemon.node);
        let after = &daemon.commands()[*count..];
        assert!(
            after.iter().all(|c| matches!(c.command, MeshCommand::SyncState(_))),
            "{}: only a full, identical SyncState may follow a handover, got {after:?}",
            daemon.node
        );
    }
}
