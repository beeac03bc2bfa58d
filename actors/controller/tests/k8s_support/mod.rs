//! What the Kubernetes tests share: the controller's Kubernetes half
//! (informers, Recompute and optionally a Leader, under a real Supervisor)
//! publishing into a recording sink, a stand-in for the daemon publishing
//! its key, and waiting with a deadline (a broken test fails, never hangs).

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use ractor::{Actor, ActorCell, ActorRef};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vpblu_controller::informers::{Caches, InformerMetrics};
use vpblu_controller::leader::{Leader, LeaderArgs, LeaderConfig, LeaderMetrics};
use vpblu_controller::recompute::{
    DesiredSink, Recompute, RecomputeArgs, RecomputeConfig, RecomputeHandle, RecomputeMetrics,
};
use vpblu_e2e::cluster::TestCluster;
use vpblu_engine::Finding;
use vpblu_k8s::VpbluNode;
use vpblu_messages::{NodeDesiredState, NodeName, PublicKey};
use vpblu_runtime::{ChildSpec, Health, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg};

/// The longest an ordinary wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// The namespace of the test Lease.
pub const LEASE_NAMESPACE: &str = "vpblu-system";

pub fn name(text: &str) -> NodeName {
    NodeName::new(text).expect("test node names are valid")
}

/// One call of [`DesiredSink::publish`].
#[derive(Debug)]
pub struct Published {
    pub states: BTreeMap<NodeName, Arc<NodeDesiredState>>,
    pub findings: Vec<Finding>,
}

impl Published {
    /// The peers of `node`, by name; empty when it has no state.
    pub fn peers_of(&self, node: &str) -> Vec<&str> {
        self.states.get(&name(node)).map_or_else(Vec::new, |s| s.peers.keys().map(NodeName::as_str).collect())
    }

    /// Exactly `nodes` have a state, and each peers all the others.
    pub fn is_full_mesh_of(&self, nodes: &[&str]) -> bool {
        let want: BTreeSet<&str> = nodes.iter().copied().collect();
        let have: BTreeSet<&str> = self.states.keys().map(NodeName::as_str).collect();
        have == want
            && nodes.iter().all(|n| {
                let peers: BTreeSet<&str> = self.peers_of(n).into_iter().collect();
                peers == want.iter().copied().filter(|p| p != n).collect()
            })
    }

    /// One line per node, for failure messages.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for (node, state) in &self.states {
            let peers: Vec<&str> = state.peers.keys().map(NodeName::as_str).collect();
            text.push_str(&format!("  {node}: peers {peers:?}, {} blocks\n", state.blocks.len()));
        }
        for finding in &self.findings {
            text.push_str(&format!("  finding: {finding}\n"));
        }
        text
    }
}

/// Records every publish.
#[derive(Debug, Default)]
pub struct RecordingSink {
    published: Mutex<Vec<Arc<Published>>>,
}

impl DesiredSink for RecordingSink {
    fn publish(&self, states: BTreeMap<NodeName, Arc<NodeDesiredState>>, findings: Vec<Finding>) {
        let mut published = self.published.lock().unwrap_or_else(PoisonError::into_inner);
        published.push(Arc::new(Published { states, findings }));
    }
}

impl RecordingSink {
    /// Publishes so far.
    pub fn count(&self) -> usize {
        self.published.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The last publish.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.published.lock().unwrap_or_else(PoisonError::into_inner).last().cloned()
    }

    /// Waits up to `within` for a publish that satisfies `test`; panics
    /// saying `what` and showing the last publish.
    pub async fn wait_within(
        &self,
        within: Duration,
        what: &str,
        test: impl Fn(&Published) -> bool,
    ) -> Arc<Published> {
        let deadline = Instant::now() + within;
        loop {
            let latest = self.latest();
            if let Some(p) = latest.as_ref().filter(|p| test(p)) {
                return Arc::clone(p);
            }
            if Instant::now() >= deadline {
                let shown = latest.map_or_else(|| "  (nothing published)\n".to_owned(), |p| p.describe());
                panic!(
                    "no publish within {within:?} where {what}; {} publishes, the last:\n{shown}",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`wait_within`](Self::wait_within) [`WAIT`].
    pub async fn wait_for(&self, what: &str, test: impl Fn(&Published) -> bool) -> Arc<Published> {
        self.wait_within(WAIT, what, test).await
    }
}

/// Waits up to `within` for `test` to hold; panics saying `what`.
pub async fn eventually(within: Duration, what: &str, mut test: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !test() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node number `i`'s key: 32 bytes of `i`.
pub fn key(i: u8) -> PublicKey {
    PublicKey::from_bytes([i; 32])
}

/// Writes VpbluNode `node`'s `status.publicKey` as the status writer will
/// when the daemon says Hello: node number `i`'s [`key`].
pub async fn publish_key(cluster: &TestCluster, node: &str, i: u8) {
    write_public_key(cluster, node, &key(i).to_base64()).await;
}

/// Writes `text` as VpbluNode `node`'s `status.publicKey`, verbatim. The
/// VpbluNode itself is the controller's to create: this waits for it.
pub async fn write_public_key(cluster: &TestCluster, node: &str, text: &str) {
    let api: Api<VpbluNode> = Api::all(cluster.client());
    let patch = json!({ "status": { "publicKey": text } });
    let deadline = Instant::now() + WAIT;
    loop {
        match api.patch_status(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot write the key of VpbluNode {node} (did the controller create it?): {e}"),
        }
    }
}

/// A Lease config for the tests: 3 s lease, renewed every second.
pub fn lease(identity: &str) -> LeaderConfig {
    LeaderConfig {
        namespace: LEASE_NAMESPACE.to_owned(),
        name: "vpblu-controller".to_owned(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(3),
        renew: Duration::from_secs(1),
        outage_grace: Duration::from_secs(60),
    }
}

/// The Kubernetes half of one controller replica, under a Supervisor.
#[derive(Debug)]
pub struct Controller {
    pub supervisor: ActorRef<SupervisorMsg>,
    done: JoinHandle<()>,
    pub sink: Arc<RecordingSink>,
    pub caches: Caches,
    pub recompute: RecomputeHandle,
    pub informer_metrics: InformerMetrics,
    pub health: Health,
    pub leading: watch::Receiver<bool>,
    // Keeps an always-leading replica leading.
    _always: Option<watch::Sender<bool>>,
}

impl Controller {
    /// Informers and a Recompute that always leads (no Lease).
    pub async fn start(client: Client, config: RecomputeConfig) -> Controller {
        let (always, leading) = watch::channel(true);
        Controller::spawn(client, config, leading, Some(always), None).await
    }

    /// Informers, Recompute and a Leader on [`lease`]`(identity)`.
    pub async fn start_with_leader(client: Client, identity: &str) -> Controller {
        let (flag, leading) = watch::channel(false);
        let leader = (flag, lease(identity));
        Controller::spawn(client, RecomputeConfig::default(), leading, None, Some(leader)).await
    }

    async fn spawn(
        client: Client,
        config: RecomputeConfig,
        leading: watch::Receiver<bool>,
        always: Option<watch::Sender<bool>>,
        leader: Option<(watch::Sender<bool>, LeaderConfig)>,
    ) -> Controller {
        let health = Health::new();
        let sink = Arc::new(RecordingSink::default());
        let caches = Caches::new();
        let recompute = RecomputeHandle::new();
        let informer_metrics = InformerMetrics::register(&health);
        let mut children: Vec<ChildSpec> = vec![Recompute::child(RecomputeArgs {
            caches: caches.clone(),
            sink: sink.clone(),
            client: client.clone(),
            leading: leading.clone(),
            handle: recompute.clone(),
            config,
            metrics: RecomputeMetrics::register(&health),
            health: health.clone(),
        })];
        children.extend(caches.informers(&client, LEASE_NAMESPACE, &recompute, &informer_metrics));
        if let Some((flag, config)) = leader {
            let metrics = LeaderMetrics::register(&health);
            children.push(Leader::child(LeaderArgs {
                client: client.clone(),
                config,
                leading: flag,
                metrics,
            }));
        }
        let args = SupervisorArgs { children, policy: RestartPolicy::default(), on_exit: None };
        let (supervisor, handle) =
            Actor::spawn(None, Supervisor, args).await.expect("the controller's supervisor starts");
        let done = tokio::spawn(async move {
            let _ = handle.await;
        });
        Controller {
            supervisor,
            done,
            sink,
            caches,
            recompute,
            informer_metrics,
            health,
            leading,
            _always: always,
        }
    }

    /// The running child `name` (`leader`, `recompute`, `informer-Node`, …).
    pub async fn child(&self, name: &str) -> ActorCell {
        ractor::call_t!(self.supervisor, SupervisorMsg::Child, 5_000, name.to_owned())
            .expect("the supervisor answers")
            .unwrap_or_else(|| panic!("child {name} is not running"))
    }

    /// Whether this replica leads.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops the tree in order (the Leader releases its Lease) and waits.
    pub async fn stop(self) {
        self.supervisor.stop(Some("test done".into()));
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("the controller stops within 15 s")
            .expect("the supervisor task ends");
    }
}
