//! The three views of the mesh (issue #18) on one lab: the controller's
//! JSON API and live event stream, the dashboard page in headless Chromium
//! (screenshots kept under `<target>/vpblu-artifacts/dashboard/`),
//! `vpblu status` against the lab's API server, and meshtop through tmux.
//!
//! One lab for the whole file (bringing one up costs about 30 s). Needs
//! root, the lab's tools, chromium and tmux (tools/install-deps.sh installs
//! them); fails, never skips, when one is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use vpblu_e2e::chromium;
use vpblu_e2e::lab::{Lab, LabBinaries, rotation};
use vpblu_e2e::process::http_get;
use vpblu_k8s::{BlockPolicy, BlockPolicySpec, BlockRule, VpbluNode};
use vpblu_view::{API_PATH, LinkState, MeshView, STREAM_PATH};

#[test]
fn the_mesh_at_a_glance_on_the_lab() {
    let chromium = chromium::require();
    let tmux = require_tool("tmux");
    vpblu_e2e::lab::with_lab(5, async |lab| {
        let (leader, standby) = leader_and_standby(lab).await;
        let started = Instant::now();
        json_api_shows_the_mesh(lab, leader, standby);
        event_stream_carries_views(leader);
        println!("JSON API and event stream checked in {:.1} s", started.elapsed().as_secs_f64());

        let started = Instant::now();
        let artifacts = artifacts_dir();
        dashboard_page_shows_the_mesh(&chromium, leader, standby, &artifacts);
        block_policy_appears_on_the_page(lab, &chromium, leader, &artifacts).await;
        rotation_shows_its_phases(lab, &chromium, leader, &artifacts).await;
        println!(
            "dashboard checked in Chromium in {:.1} s; screenshots in {}",
            started.elapsed().as_secs_f64(),
            artifacts.display()
        );

        let started = Instant::now();
        vpblu_status_reads_the_api(lab);
        println!("vpblu status checked in {:.1} s", started.elapsed().as_secs_f64());

        let started = Instant::now();
        meshtop_shows_the_matrix(&tmux, leader);
        println!("meshtop checked through tmux in {:.1} s", started.elapsed().as_secs_f64());

        // Last: it takes a node out of the lab.
        deleted_node_disappears(lab, &chromium, leader, &artifacts).await;
    });
}

/// A node leaves the cluster: its Node is deleted and, with it, its
/// VpbluNode (whose owner reference is the Node; the lab runs no garbage
/// collector, so the test deletes it as the collector would). The view and
/// the page drop the node.
async fn deleted_node_disappears(lab: &Lab, chromium_bin: &Path, leader: SocketAddr, artifacts: &Path) {
    let gone = lab.topology.node(3).name.clone();
    lab.delete_node_object(3).await;
    let api: Api<VpbluNode> = Api::all(lab.cluster.client());
    api.delete(&gone, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {gone}'s VpbluNode as the garbage collector would: {e}"));
    let view = wait_view(leader, "the deleted node gone from the view", Duration::from_secs(30), |v| {
        v.nodes.iter().all(|n| n.name != gone) && v.links.iter().all(|l| l.from != gone && l.to != gone)
    });
    assert_eq!(
        view.nodes.len(),
        2,
        "two nodes left: {:?}",
        view.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
    );
    let page = dom(chromium_bin, leader);
    assert!(!page.contains(&format!("data-node=\"{gone}\"")), "{gone} is still on the page:\n{page}");
    assert!(page.contains("data-node=\"node-1\""), "node-1 is still on the page:\n{page}");
    screenshot(chromium_bin, leader, &artifacts.join("node-deleted.png"));
}

/// The dashboards of the leading and the standing-by controller.
async fn leader_and_standby(lab: &Lab) -> (SocketAddr, SocketAddr) {
    let leader = lab.leader().await.expect("the lab has a leader");
    let standby = (leader + 1) % lab.controllers.len();
    (lab.controllers[leader].dashboard, lab.controllers[standby].dashboard)
}

fn require_tool(name: &str) -> PathBuf {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().expect("run sh");
    assert!(
        found.status.success(),
        "{name} is not installed: this test needs it (tools/install-deps.sh installs it; or apt-get install {name})"
    );
    PathBuf::from(String::from_utf8_lossy(&found.stdout).trim())
}

/// `<target>/vpblu-artifacts/dashboard`, fresh for this run.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target
    let target = exe.ancestors().nth(3).expect("the test runs from target/<profile>/deps");
    let dir = target.join("vpblu-artifacts").join("dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn view(dashboard: SocketAddr) -> MeshView {
    let (status, body) = http_get(dashboard, API_PATH)
        .unwrap_or_else(|| panic!("nothing answers on http://{dashboard}{API_PATH}"));
    assert_eq!(status, 200, "GET {API_PATH} on {dashboard}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{API_PATH} is not a MeshView ({e}): {body}"))
}

/// Polls the leader's view until `done` holds, panicking with the last view.
fn wait_view(
    dashboard: SocketAddr,
    what: &str,
    within: Duration,
    done: impl Fn(&MeshView) -> bool,
) -> MeshView {
    let deadline = Instant::now() + within;
    loop {
        let view = view(dashboard);
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}; the last view: {view:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn json_api_shows_the_mesh(lab: &Lab, leader: SocketAddr, standby: SocketAddr) {
    let view = wait_view(leader, "6 links up, 3 nodes Ready", Duration::from_secs(30), |v| {
        v.links.len() == 6
            && v.links.iter().all(|l| l.state == LinkState::Up && !l.stale)
            && v.verdict.healthy
    });
    assert!(view.served.leading, "{:?}", view.served);
    let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);
    for node in &view.nodes {
        assert_eq!(node.short_key.as_ref().map(String::len), Some(8), "{node:?}");
        assert_eq!((node.peers, node.peers_up), (Some(2), Some(2)), "{node:?}");
        assert!(node.version.is_some(), "the daemon's Hello gives its version: {node:?}");
    }
    assert!(view.links.iter().all(|l| l.endpoint.is_some() && l.short_key.is_some()), "{:?}", view.links);
    assert_eq!(view.leader.holder.as_deref(), view.served.by.as_deref(), "the leader serves as leader");

    // Never a private key or a token, whatever is asked.
    let (_, body) = http_get(leader, API_PATH).expect("the leader answers");
    let (_, page) = http_get(leader, "/").expect("the leader serves its page");
    for daemon in &lab.daemons {
        let private =
            std::fs::read_to_string(daemon.key_dir.join("private.key")).expect("the daemon's key file");
        let private = private.trim();
        assert!(
            !body.contains(private) && !page.contains(private),
            "{}'s private key is served",
            daemon.node_name
        );
    }
    assert!(!body.contains("eyJ"), "no JWT (a service account token) in the view: {body}");

    let standing = view_of_standby(standby);
    assert!(!standing.served.leading);
    assert_eq!(standing.leader.holder, view.leader.holder, "the standby names the leader");
    assert!(standing.links.is_empty(), "a standby has no streams, so no matrix: {:?}", standing.links);
    assert!(standing.notes.iter().any(|n| n.contains("standby")), "{:?}", standing.notes);
    assert_eq!(standing.nodes.len(), 3, "its caches are warm");
    println!(
        "JSON API: {} nodes, {} links up, leader {}, standby {} says so",
        view.nodes.len(),
        view.links.len(),
        view.leader.holder.as_deref().unwrap_or("?"),
        standing.served.by.as_deref().unwrap_or("?")
    );
}

fn view_of_standby(standby: SocketAddr) -> MeshView {
    view(standby)
}

/// The event stream sends a view at once and new ones as they are built.
fn event_stream_carries_views(leader: SocketAddr) {
    let mut stream = TcpStream::connect(leader).expect("connect to the dashboard");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    write!(stream, "GET {STREAM_PATH} HTTP/1.1\r\nHost: {leader}\r\nAccept: text/event-stream\r\n\r\n")
        .expect("send the request");
    let mut lines = BufReader::new(stream).lines();
    let mut views = Vec::new();
    let started = Instant::now();
    while views.len() < 2 {
        let line = lines.next().expect("the stream stays open").expect("read the event stream");
        if let Some(data) = line.strip_prefix("data: ") {
            let view: MeshView =
                serde_json::from_str(data).unwrap_or_else(|e| panic!("event data ({e}): {data}"));
            views.push(view.generated_at);
        }
    }
    assert_ne!(views[0], views[1], "a second, newer view followed");
    println!("event stream: 2 views in {:.1} s", started.elapsed().as_secs_f64());
}

fn dom(chromium_bin: &Path, dashboard: SocketAddr) -> String {
    chromium::dom(chromium_bin, &format!("http://{dashboard}/"))
}

fn screenshot(chromium_bin: &Path, dashboard: SocketAddr, file: &Path) {
    chromium::screenshot(chromium_bin, &format!("http://{dashboard}/"), file, (1400, 1400), 10_000);
}

fn dashboard_page_shows_the_mesh(
    chromium_bin: &Path,
    leader: SocketAddr,
    standby: SocketAddr,
    artifacts: &Path,
) {
    let page = dom(chromium_bin, leader);
    for n in 1..=3 {
        assert!(page.contains(&format!("data-node=\"node-{n}\"")), "node-{n} is on the page:\n{page}");
    }
    let up = page.matches("data-state=\"Up\"").count();
    assert_eq!(up, 6, "every cell of the matrix shows Up:\n{page}");
    assert!(page.contains(">healthy<"), "the verdict says healthy:\n{page}");
    assert!(page.contains(">live<"), "the page is live, not stale:\n{page}");
    screenshot(chromium_bin, leader, &artifacts.join("leader.png"));

    let page = dom(chromium_bin, standby);
    assert!(page.contains("This is the standby"), "the standby's page says so:\n{page}");
    assert!(page.contains("Not available on the standby."), "and shows no old matrix:\n{page}");
    screenshot(chromium_bin, standby, &artifacts.join("standby.png"));
}

async fn block_policy_appears_on_the_page(
    lab: &Lab,
    chromium_bin: &Path,
    leader: SocketAddr,
    artifacts: &Path,
) {
    let (from, to) = (&lab.topology.node(1).pod_cidrs[0], &lab.topology.node(2).pod_cidrs[0]);
    let policy = BlockPolicy::new(
        "dashboard-block",
        BlockPolicySpec {
            blocks: vec![BlockRule { from: from.clone(), to: to.clone(), bidirectional: false }],
            ..BlockPolicySpec::default()
        },
    );
    let api: Api<BlockPolicy> = Api::all(lab.cluster.client());
    api.create(&PostParams::default(), &policy).await.expect("create the BlockPolicy");
    let view = wait_view(leader, "the BlockPolicy with a Ready condition", Duration::from_secs(30), |v| {
        v.policies.iter().any(|p| p.name == "dashboard-block" && p.state.is_some())
    });
    let state = view.policies.iter().find(|p| p.name == "dashboard-block").and_then(|p| p.state.clone());
    let state = state.expect("its state");
    let page = dom(chromium_bin, leader);
    assert!(page.contains("data-policy=\"BlockPolicy/dashboard-block\""), "the policy is listed:\n{page}");
    let shown = format!("{} · {}", state.status, state.reason);
    assert!(page.contains(&shown), "its state \"{shown}\" is shown:\n{page}");
    assert!(page.contains(&format!("{from} -&gt; {to}")), "and what it blocks:\n{page}");
    screenshot(chromium_bin, leader, &artifacts.join("blockpolicy.png"));
    println!("dashboard: BlockPolicy dashboard-block shown as {shown}");
}

/// A key rotation of node-3: its phases land in the leader's timeline and
/// on the page, ending Idle with its result.
async fn rotation_shows_its_phases(lab: &Lab, chromium_bin: &Path, leader: SocketAddr, artifacts: &Path) {
    let since = rotation::now_rfc3339();
    rotation::rotate_now(lab, "dashboard-rotation", 1, Some("node-3"), "mesh-views").await;
    rotation::wait_rotated(lab, &["node-3".to_owned()], &since).await;
    let view = wait_view(leader, "node-3's rotation in the timeline, ended", Duration::from_secs(10), |v| {
        let steps: Vec<_> = v.rotation_history.iter().filter(|s| s.node == "node-3").collect();
        steps.iter().any(|s| s.phase != "Idle") && steps.last().is_some_and(|s| s.phase == "Idle")
    });
    let steps: Vec<String> = view
        .rotation_history
        .iter()
        .filter(|s| s.node == "node-3")
        .map(|s| format!("{}{}", s.phase, s.result.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()))
        .collect();
    assert!(steps.last().is_some_and(|s| s.contains("Succeeded")), "the rotation succeeded: {steps:?}");
    let page = dom(chromium_bin, leader);
    for step in view.rotation_history.iter().filter(|s| s.node == "node-3") {
        let marker = format!("data-step=\"node-3:{}\"", step.phase);
        assert!(page.contains(&marker), "the page's timeline shows {marker}:\n{page}");
    }
    screenshot(chromium_bin, leader, &artifacts.join("rotation.png"));
    println!("dashboard: node-3's rotation seen as {}", steps.join(" -> "));
}

fn workspace_binary(name: &str) -> PathBuf {
    let controller = LabBinaries::find().controller;
    let path = controller.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

fn vpblu_status_reads_the_api(lab: &Lab) {
    let vpblu = workspace_binary("vpblu");
    let kubeconfig = lab.cluster.kubeconfig_path();
    let run = |args: &[&str]| {
        Command::new(&vpblu)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", vpblu.display()))
    };
    let table = run(&["status", "--wait", "--timeout", "30s"]);
    let text = String::from_utf8_lossy(&table.stdout);
    println!("vpblu status on the lab:\n{text}");
    assert!(table.status.success(), "healthy exits 0: {text}{}", String::from_utf8_lossy(&table.stderr));
    assert!(text.contains("Mesh:     healthy") && text.contains("Daemons:  3/3 ready"), "{text}");
    for n in 1..=3 {
        assert!(text.lines().any(|l| l.starts_with(&format!("node-{n} ")) && l.contains("2/2")), "{text}");
    }
    assert!(text.contains("BlockPolicy dashboard-block") == text.contains("Policies not Ready"), "{text}");

    let json = run(&["status", "-o", "json"]);
    let view: MeshView = serde_json::from_slice(&json.stdout).expect("-o json prints a MeshView");
    assert_eq!(view.nodes.len(), 3);
    assert!(view.served.by.is_none(), "read from the API, not a controller");
    assert_eq!(view.leader.state, vpblu_view::LeaseState::Held);
}

fn meshtop_shows_the_matrix(tmux: &Path, leader: SocketAddr) {
    let meshtop = workspace_binary("meshtop");
    let session = format!("meshtop-test-{}", std::process::id());
    let tmux_run = |args: &[&str]| {
        let output = Command::new(tmux).args(args).output().unwrap_or_else(|e| panic!("run tmux: {e}"));
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let command = format!("{} --url http://{leader}", meshtop.display());
    tmux_run(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "45", &command]);
    let _kill = KillSession { tmux: tmux.to_owned(), session: session.clone() };
    let capture = || tmux_run(&["capture-pane", "-p", "-t", &session]);
    let wait_screen = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = capture();
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "meshtop shows {what} within 15 s; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let matrix = wait_screen("the peer matrix with 6 links up", &|s| {
        s.contains("Peer matrix") && s.matches(" up ").count() >= 6
    });
    println!("meshtop, matrix view:\n{matrix}");
    tmux_run(&["send-keys", "-t", &session, "2"]);
    // The tab bar always names every view: wait for the node table's header.
    let nodes = wait_screen("the node view", &|s| {
        s.contains("KEY AGE") && (1..=3).all(|n| s.contains(&format!("node-{n}")))
    });
    assert_eq!(nodes.matches("True Applied").count(), 3, "every node Ready:\n{nodes}");
    tmux_run(&["send-keys", "-t", &session, "3"]);
    wait_screen("the policy view with the BlockPolicy", &|s| {
        s.contains("dashboard-block") && s.contains("PROBLEM")
    });
    tmux_run(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Command::new(tmux).args(["has-session", "-t", &session]).status().is_ok_and(|s| s.success()) {
        assert!(Instant::now() < deadline, "q quits meshtop (its session ends); the screen:\n{}", capture());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends the tmux session however the test ends.
struct KillSession {
    tmux: PathBuf,
    session: String,
}

impl Drop for KillSession {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux).args(["kill-session", "-t", &self.session]).status();
    }
}
