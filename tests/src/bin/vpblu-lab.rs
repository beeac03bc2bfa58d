//! `vpblu-lab`: the whole mesh on this machine (`make lab`), its cleanup
//! (`make lab-down`), and the capture classifier the kind run shares.
//!
//! ```text
//! vpblu-lab up        bring the 3-node lab up, show it, run a demo, stay up until Ctrl-C
//! vpblu-lab down      remove whatever a killed lab left behind
//! vpblu-lab classify  sort a tcpdump capture (stdin) into WireGuard / control / other;
//!                     exit 1 if pod traffic crossed in clear
//! ```

use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vpblu_e2e::lab::capture::{Expect, Seen};
use vpblu_e2e::lab::pair_traffic::PairTraffic;
use vpblu_e2e::lab::{Lab, LabOptions, leftovers, rotation, traffic};
use vpblu_k8s::conditions::READY;

#[derive(Debug, Parser)]
#[command(name = "vpblu-lab", about = "vpblu's lab: the whole mesh on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring the lab up and keep it up until Ctrl-C (the default).
    Up {
        /// Lab id: the underlay is 10.240.ID.0/24.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..250))]
        id: u8,
        /// Nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
        nodes: u8,
        /// Bring it up, show it, run the demo, and stop (no waiting for Ctrl-C).
        #[arg(long)]
        once: bool,
    },
    /// Remove the leftovers of labs that were killed before cleaning up.
    Down,
    /// Sort a tcpdump -n -t capture read from stdin.
    Classify {
        /// Prefix every underlay address starts with, e.g. `172.18.0.`.
        #[arg(long)]
        underlay_prefix: String,
        /// WireGuard listen port(s).
        #[arg(long = "mesh-port", required = true)]
        mesh_ports: Vec<u16>,
        /// TCP ports of the host network's own traffic (comma list).
        #[arg(long, value_delimiter = ',')]
        allow_other_ports: Vec<u16>,
        /// Text that marks a pod address, e.g. `10.244.`.
        #[arg(long = "pod-marker", required = true)]
        pod_markers: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Up { id: 1, nodes: 3, once: false }) {
        Cmd::Up { id, nodes, once } => {
            up(LabOptions { id, nodes, pods_per_node: 2, controllers: 2, fault_injection: false }, once)
        }
        Cmd::Down => {
            let removed = leftovers::down();
            println!(
                "lab leftovers removed: {} processes, {} network namespaces, {} links/pins/sockets",
                removed.processes, removed.namespaces, removed.other
            );
            ExitCode::SUCCESS
        }
        Cmd::Classify { underlay_prefix, mesh_ports, allow_other_ports, pod_markers } => {
            let expect =
                Expect { underlay_prefix, mesh_ports, control_ports: allow_other_ports, pod_markers };
            let lines: Vec<String> = std::io::stdin().lock().lines().map_while(Result::ok).collect();
            let seen = Seen::of(lines, &expect);
            println!("capture: {}", seen.summary());
            if seen.other.is_empty() && seen.wireguard > 0 {
                println!("pod traffic crossed the underlay only as WireGuard");
                ExitCode::SUCCESS
            } else {
                for line in seen.other.iter().take(20) {
                    println!("  not WireGuard: {line}");
                }
                if seen.wireguard == 0 {
                    println!("no WireGuard packet was captured at all");
                }
                ExitCode::FAILURE
            }
        }
    }
}

fn up(options: LabOptions, once: bool) -> ExitCode {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "vpblu-lab: the lab creates network namespaces and loads eBPF programs: run it as root (sudo make lab)"
        );
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async move {
        let removed = leftovers::down();
        if removed.namespaces + removed.processes > 0 {
            println!(
                "removed the leftovers of an earlier lab ({} namespaces, {} processes)",
                removed.namespaces, removed.processes
            );
        }
        println!(
            "bringing the lab up: control plane, {} nodes, 2 controllers, {} daemons ...",
            options.nodes, options.nodes
        );
        let started = std::time::Instant::now();
        let lab = Lab::up(options).await;
        println!("lab up in {:.1} s\n", started.elapsed().as_secs_f64());
        print_status(&lab).await;
        demo(&lab);
        rotation_demo(&lab).await;
        print_status(&lab).await;
        println!(
            "\nThe lab's API server, for kubectl:\n  export KUBECONFIG={}",
            lab.cluster.kubeconfig_path().display()
        );
        println!("  kubectl get vpblunodes");
        // The three views of the mesh (issue #18), next to the binaries.
        let bin = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.display().to_string()));
        let bin = bin.unwrap_or_else(|| "target/debug".to_owned());
        let leader = lab.leader().await.map_or(0, |i| i);
        for c in &lab.controllers {
            println!("Dashboard of {}: http://{}/ (JSON: /api/v1/mesh)", c.identity, c.dashboard);
        }
        println!("The mesh at a glance from the API server (same KUBECONFIG):\n  {bin}/vpblu status");
        println!("Live in the terminal:\n  {bin}/meshtop --url http://{}", lab.controllers[leader].dashboard);
        println!("Try a block next:\n  kubectl apply -f k8s/deploy/samples/blockpolicy.yaml");
        println!("Or rotate every key again:\n  kubectl annotate rotationpolicy lab-demo vpblu.dev/rotate-now=$(date +%s) --overwrite");
        println!("Logs: {}", lab.dir().display());
        if once {
            return ExitCode::SUCCESS;
        }
        println!("\nCtrl-C tears everything down.");
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => print_status(&lab).await,
            }
        }
        println!("tearing the lab down");
        ExitCode::SUCCESS
    })
}

async fn print_status(lab: &Lab) {
    println!(
        "{:<8} {:<6} {:<10} {:>10} {:>15} {:<10} {:>5} {:>14}",
        "NODE", "READY", "KEY", "PEERS UP", "LAST HANDSHAKE", "BACKEND", "MTU", "APPLIED/WANT"
    );
    for (name, status) in lab.statuses().await {
        let peers = format!("{}/{}", status.peers_up.unwrap_or(0), status.peers.unwrap_or(0));
        let handshake = status.last_handshake_seconds.map_or("-".to_owned(), |s| format!("{s} s ago"));
        let backend = status.backend.map_or("-".to_owned(), |b| format!("{b:?}").to_lowercase());
        let generation = |g: Option<i64>| g.map_or("-".to_owned(), |g| g.to_string());
        let ready = status.conditions.iter().find(|c| c.type_ == READY);
        println!(
            "{:<8} {:<6} {:<10} {:>10} {:>15} {:<10} {:>5} {:>14}",
            name,
            ready.map_or("-", |c| c.status.as_str()),
            status.short_key.as_deref().unwrap_or("-"),
            peers,
            handshake,
            backend,
            status.mtu.map_or("-".to_owned(), |m| m.to_string()),
            format!("{}/{}", generation(status.applied_generation), generation(status.desired_generation)),
        );
        if let Some(ready) = ready.filter(|c| c.status != "True") {
            println!("         {}: {}", ready.reason, ready.message);
        }
    }
}

/// Every node's key rotates in turn while every pod pair pings at 100/s
/// and streams TCP; what was lost.
async fn rotation_demo(lab: &Lab) {
    println!("\ndemo: rotating every node's key while every pod pair pings at 100/s and streams TCP");
    let traffic = PairTraffic::start(&lab.topology, Duration::from_millis(10), Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nodes: Vec<String> = lab.topology.nodes.iter().map(|n| n.name.clone()).collect();
    let since = rotation::now_rfc3339();
    let started = std::time::Instant::now();
    rotation::rotate_now(lab, "lab-demo", 1, None, &since).await;
    rotation::wait_rotated(lab, &nodes, &since).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = traffic.finish();
    for (name, status) in lab.statuses().await {
        println!("  {name}: {}", rotation::rotation_of(&status));
    }
    println!(
        "  {} keys rotated in {:.1} s; {} of {} pings lost, longest TCP gap {} ms",
        nodes.len(),
        took.as_secs_f64(),
        result.lost(),
        result.sent(),
        result.max_tcp_gap().as_millis()
    );
}

/// Pod-to-pod traffic across every node pair under a capture, and what
/// crossed the underlay.
fn demo(lab: &Lab) {
    println!("\ndemo: every pod pings every pod on the other nodes (IPv4 and IPv6), then one TCP transfer");
    let capture = lab.capture();
    for a in &lab.topology.nodes {
        for b in lab.topology.nodes.iter().filter(|b| b.index != a.index) {
            let (mut sent, mut received) = (0, 0);
            for from in &a.pods {
                for to in &b.pods {
                    for address in [&to.v4, &to.v6] {
                        let result = traffic::ping(&from.ns, address, &["-q", "-c", "3", "-i", "0.05"]);
                        sent += result.sent;
                        received += result.received;
                    }
                }
            }
            println!("  {} pods -> {} pods: {received}/{sent} pings answered", a.name, b.name);
        }
    }
    let (a, b) = (&lab.topology.nodes[0].pods[0], &lab.topology.nodes[1].pods[0]);
    let took = traffic::bulk_tcp(&a.ns, &b.ns, &b.v4, 5201, 20 << 20);
    println!(
        "  20 MiB TCP {} -> {}: {:.0} Mbit/s",
        a.name,
        b.name,
        (20.0 * 8.0 * 1.048_576) / took.as_secs_f64()
    );
    let seen = capture.finish(&lab.expect());
    println!("underlay capture: {}", seen.summary());
    if seen.other.is_empty() {
        println!("no pod packet crossed the underlay in clear");
    } else {
        println!("WARNING: pod traffic crossed in clear:");
        for line in seen.other.iter().take(10) {
            println!("  {line}");
        }
    }
}
