//! `kubectl get vpblunodes` tells the truth, on the lab: every node READY
//! once the mesh is up; a killed daemon's node READY=False (Disconnected)
//! within 10 s and True again once it is back; a leader change leaves no
//! stale `Connected=True` for a daemon that never reached the new leader;
//! a default route and a block over the underlay are refused with a reason
//! (and the route accepted once its policy opts in).
//!
//! Needs root, ip, ping, tcpdump, nft and Go; fails, never skips, when one
//! is missing.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::lab::Lab;
use vpblu_k8s::conditions::{CONNECTED, READY, reasons};
use vpblu_k8s::{
    BlockPolicy, BlockPolicySpec, BlockRule, Route, RoutePolicy, RoutePolicySpec, VpbluNodeStatus,
};

fn condition<'s>(status: &'s VpbluNodeStatus, kind: &str) -> Option<&'s Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

fn is(status: &VpbluNodeStatus, kind: &str, value: &str) -> bool {
    condition(status, kind).is_some_and(|c| c.status == value)
}

/// Waits until `ok` holds for node `n`'s status; how long that took.
async fn until_node(
    lab: &Lab,
    n: u8,
    within: Duration,
    what: &str,
    ok: impl Fn(&VpbluNodeStatus) -> bool,
) -> Duration {
    let start = Instant::now();
    let name = lab.topology.node(n).name.clone();
    loop {
        let statuses = lab.statuses().await;
        let status = &statuses.iter().find(|(node, _)| *node == name).expect("the node's status").1;
        if ok(status) {
            return start.elapsed();
        }
        if start.elapsed() > within {
            lab.dump_logs();
            panic!("{name} never showed {what} within {within:?}: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl get vpblunodes`, as the API server renders it for kubectl
/// (a meta.k8s.io Table built from the CRD's printer columns).
async fn get_vpblunodes(lab: &Lab) -> String {
    let request = http::Request::get("/apis/vpblu.dev/v1alpha1/vpblunodes")
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("a request");
    let table: serde_json::Value =
        lab.cluster.client().request(request).await.expect("the API server renders vpblunodes as a Table");
    // kubectl shows the priority-0 columns; every row has a cell for each
    // column, whatever its priority.
    let shown: Vec<(usize, &str)> = table["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .enumerate()
        .filter(|(_, c)| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("?")))
        .collect();
    let mut lines =
        vec![shown.iter().map(|(_, name)| name.to_uppercase().replace(' ', "-")).collect::<Vec<_>>()];
    for row in table["rows"].as_array().expect("rows") {
        let cells = row["cells"].as_array().expect("cells");
        lines.push(
            shown
                .iter()
                .map(|(i, _)| match &cells[*i] {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Null => "<none>".to_owned(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let columns = &lines[0];
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| lines.iter().map(|l| l.get(i).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("   "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ready_column(table: &str) -> Vec<String> {
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    let at = header.find("READY").expect("a READY column");
    lines.map(|l| l.get(at..).unwrap_or("").split_whitespace().next().unwrap_or("").to_owned()).collect()
}

#[test]
fn vpblunodes_ready_follows_a_daemon_outage_and_a_failover() {
    vpblu_e2e::lab::with_lab(7, async |lab| {
        for n in 1..=3 {
            until_node(lab, n, Duration::from_secs(60), "Ready=True", |s| is(s, READY, "True")).await;
        }
        let table = get_vpblunodes(lab).await;
        println!("kubectl get vpblunodes, mesh up:\n{table}");
        assert_eq!(ready_column(&table), vec!["True"; 3], "{table}");
        let status = &lab.statuses().await[0].1;
        assert_eq!(status.desired_generation, status.applied_generation, "{status:#?}");
        assert!(status.desired_generation.is_some(), "desiredGeneration is written: {status:#?}");

        // A daemon dies: its node turns READY=False (Disconnected) within 10 s.
        lab.daemon_mut(2).kill();
        let took =
            until_node(lab, 2, Duration::from_secs(10), "Ready=False", |s| is(s, READY, "False")).await;
        let status = lab.statuses().await[1].1.clone();
        let ready = condition(&status, READY).expect("Ready");
        assert_eq!(ready.reason, reasons::DISCONNECTED, "{ready:?}");
        let table = get_vpblunodes(lab).await;
        println!(
            "kubectl get vpblunodes, {:.1} s after node-2's daemon was killed:\n{table}",
            took.as_secs_f64()
        );
        println!("node-2 Ready: {} {}: {}", ready.status, ready.reason, ready.message);
        assert_eq!(ready_column(&table), vec!["True", "False", "True"], "{table}");

        // It comes back: READY=True again.
        let topology = &lab.topology;
        lab.daemons[1].restart(topology);
        let took =
            until_node(lab, 2, Duration::from_secs(60), "Ready=True again", |s| is(s, READY, "True")).await;
        println!("node-2 READY=True {:.1} s after its daemon restarted", took.as_secs_f64());

        // The leader and node-3's daemon die together: the old leader never
        // says node-3's stream closed, and node-3 never reaches the new
        // leader. The new leader must not leave Connected=True standing.
        let leader = lab.leader().await.expect("a leader");
        lab.controllers[leader].kill();
        lab.daemon_mut(3).kill();
        let took = until_node(lab, 3, Duration::from_secs(30), "Connected=False after the failover", |s| {
            is(s, CONNECTED, "False")
        })
        .await;
        let status = lab.statuses().await[2].1.clone();
        let connected = condition(&status, CONNECTED).expect("Connected");
        println!(
            "node-3 Connected={} ({}) {:.1} s after the leader and its daemon died",
            connected.status,
            connected.reason,
            took.as_secs_f64()
        );
        assert_eq!(connected.reason, reasons::NO_STREAM, "{connected:?}");
        assert!(is(&status, READY, "False"), "{status:#?}");
        for n in [1, 2] {
            until_node(lab, n, Duration::from_secs(30), "Connected=True to the new leader", |s| {
                is(s, CONNECTED, "True") && is(s, READY, "True")
            })
            .await;
        }
        let topology = &lab.topology;
        lab.daemons[2].restart(topology);
        until_node(lab, 3, Duration::from_secs(60), "Ready=True after all", |s| is(s, READY, "True")).await;
    });
}

/// The policy's `Ready` condition once its status describes its current
/// generation.
async fn policy_ready<K>(api: &Api<K>, name: &str) -> Condition
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let object = api.get(name).await.expect("read the policy");
        let value = serde_json::to_value(&object).expect("a policy serializes");
        let ready = value["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == READY)
            .map(|c| serde_json::from_value::<Condition>(c.clone()).expect("a condition"));
        let observed = value["status"]["observedGeneration"] == value["metadata"]["generation"];
        if let Some(ready) = ready.filter(|_| observed) {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "policy {name} got no Ready condition for its generation: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn dangerous_routes_and_blocks_are_refused_with_a_reason() {
    vpblu_e2e::lab::with_lab(8, async |lab| {
        let client = lab.cluster.client();
        let node1 = lab.topology.node(1).name.clone();
        let routes: Api<RoutePolicy> = Api::all(client.clone());
        let egress = RoutePolicy::new(
            "egress-via-node-1",
            RoutePolicySpec {
                routes: vec![Route { cidr: "0.0.0.0/0".into(), via: node1.clone() }],
                ..RoutePolicySpec::default()
            },
        );
        routes.create(&PostParams::default(), &egress).await.expect("the API server takes the RoutePolicy");
        let ready = policy_ready(&routes, "egress-via-node-1").await;
        println!(
            "RoutePolicy 0.0.0.0/0 via {node1}: Ready={} {}: {}",
            ready.status, ready.reason, ready.message
        );
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DefaultRoute"), "{ready:?}");
        assert!(
            ready.message.contains("allowEgressViaNode"),
            "the message says how to opt in: {}",
            ready.message
        );

        // Opted in: accepted and applied.
        let mut opted = routes.get("egress-via-node-1").await.expect("read it back");
        opted.spec.allow_egress_via_node = true;
        routes.replace("egress-via-node-1", &PostParams::default(), &opted).await.expect("opt in");
        let ready = policy_ready(&routes, "egress-via-node-1").await;
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Applied"), "{ready:?}");
        routes.delete("egress-via-node-1", &DeleteParams::default()).await.expect("delete it");

        // A block over the underlay would cut the daemons' streams: refused.
        let underlay = format!("{}.0/24", vpblu_e2e::lab::topology::underlay_prefix(lab.options().id));
        let blocks: Api<BlockPolicy> = Api::all(client);
        let cut = BlockPolicy::new(
            "cut-the-underlay",
            BlockPolicySpec {
                blocks: vec![BlockRule {
                    from: "10.244.1.0/24".into(),
                    to: underlay.clone(),
                    bidirectional: true,
                }],
                ..BlockPolicySpec::default()
            },
        );
        blocks.create(&PostParams::default(), &cut).await.expect("the API server takes the BlockPolicy");
        let ready = policy_ready(&blocks, "cut-the-underlay").await;
        println!(
            "BlockPolicy 10.244.1.0/24 <-> {underlay}: Ready={} {}: {}",
            ready.status, ready.reason, ready.message
        );
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CoversUnderlay"), "{ready:?}");
        for (name, status) in lab.statuses().await {
            assert!(
                is(&status, READY, "True") || is(&status, CONNECTED, "True"),
                "{name} lost its stream: {status:#?}"
            );
        }
    });
}
