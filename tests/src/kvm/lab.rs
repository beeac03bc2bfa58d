//! The lab with guests for nodes: the same control plane, controller and
//! objects as [`crate::lab::Lab`], but every node is a QEMU guest whose
//! kernel has WireGuard, running `vpblu-daemon --backend kernel` (or the
//! backend asked for) with one pod namespace (`pod-N-2`, `10.244.N.2`).

use std::path::Path;
use std::time::{Duration, Instant};

use vpblu_k8s::VpbluNodeStatus;

use super::guest::{Guest, GuestSpec};
use super::image::{Accel, GuestImage};
use crate::cluster::TestCluster;
use crate::lab::processes::{CONTROLLER_SERVER_NAME, StreamTls};
use crate::lab::topology::{PREFIX, Topology, underlay_prefix};
use crate::lab::{CONTROLLER_PORTS, Controller, LabBinaries, POD_NAMESPACE, SYSTEM_NAMESPACE, leftovers};

/// Memory per guest, MiB (~300 MB host RSS each at 256).
pub const GUEST_MEMORY_MB: u32 = 320;

/// A running lab of guests. Fields drop in order: guests, controller, the
/// underlay, the control plane, the directory.
#[derive(Debug)]
pub struct GuestLab {
    /// One per node, in node order.
    pub guests: Vec<Guest>,
    /// The one controller replica.
    pub controller: Controller,
    /// The underlay bridge and the host's leg (no namespace nodes).
    pub topology: Topology,
    /// The control plane.
    pub cluster: TestCluster,
    /// The image the guests booted.
    pub image: GuestImage,
    /// How they were accelerated.
    pub accel: Accel,
    /// When the last guest was launched.
    pub launched: Instant,
    /// The lab's directory (serial logs, shares, TLS, tokens).
    pub dir: tempfile::TempDir,
    /// The binaries the controller runs (to restart it).
    pub binaries: LabBinaries,
    id: u8,
}

impl GuestLab {
    /// Builds the image (cached), starts the control plane and one
    /// controller on the host, boots `nodes` guests on an underlay bridge
    /// and starts a daemon with `backend` in each; returns once every
    /// daemon answers (not yet meshed: see [`GuestLab::wait_mesh`]).
    pub async fn up(id: u8, nodes: u8, backend: &str) -> GuestLab {
        crate::netns::require_root_and(&["ip", "tcpdump", "qemu-system-x86_64", "debootstrap"]);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let image = GuestImage::build(&repo);
        let accel = Accel::detect();
        let binaries = LabBinaries::find();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{id}-kvm-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the lab directory: {e}"));
        let cluster = crate::lab::start_control_plane().await;
        let topology = Topology::underlay_only(id);
        let net = underlay_prefix(id);
        for n in 1..=nodes {
            let name = format!("node-{n}");
            let v4 = format!("{net}.{n}");
            cluster
                .register_node(
                    &name,
                    &v4,
                    &[&format!("10.244.{n}.0/24"), &format!("fd00:244:{n}::/64")],
                    true,
                )
                .await;
            cluster
                .register_pod(
                    POD_NAMESPACE,
                    &format!("pod-{n}-2"),
                    &name,
                    &format!("10.244.{n}.2"),
                    None,
                    &[("app", "lab")],
                )
                .await;
        }
        let tls = StreamTls::issue(dir.path());
        let controller = Controller::start(&cluster, &binaries, &topology, &tls, dir.path(), 0, false).await;
        let bin_dir = binaries.daemon.parent().expect("the daemon lives in a directory").to_owned();
        let spec = GuestSpec {
            image: &image,
            accel,
            memory_mb: GUEST_MEMORY_MB,
            underlay: &topology.underlay,
            lab_id: id,
            bin_dir: &bin_dir,
            dir: dir.path(),
        };
        let guests: Vec<Guest> = (1..=nodes).map(|n| Guest::boot(&spec, n, &format!("{net}.{n}"))).collect();
        let launched = Instant::now();
        let mut lab =
            GuestLab { guests, controller, topology, cluster, image, accel, launched, dir, binaries, id };
        lab.record_processes();
        for i in 0..lab.guests.len() {
            lab.guests[i].wait_ready(Duration::from_secs(120));
            let (name, v4) = (lab.guests[i].name.clone(), lab.guests[i].v4.clone());
            let (pod, uid) = crate::lab::register_daemon_pod_on(&lab.cluster, &name, &v4).await;
            let token =
                lab.cluster.token_for(SYSTEM_NAMESPACE, "vpblu-daemon", &["vpblu"], Some((&pod, &uid))).await;
            let guest = &lab.guests[i];
            std::fs::write(guest.share.join("token"), token)
                .expect("write the daemon's token into its share");
            std::fs::copy(&tls.ca, guest.share.join("ca.crt")).expect("copy the stream CA into the share");
            // For --backend userspace/auto without the module.
            std::fs::copy(&lab.binaries.wireguard_go, guest.share.join("wireguard-go"))
                .expect("copy wireguard-go into the share");
            let others: Vec<String> = lab
                .guests
                .iter()
                .filter(|o| o.index != guest.index)
                .map(|o| format!("{}:{}", o.index, o.v4))
                .collect();
            guest.exec_ok(
                &format!("sh /vpblu/guest-node.sh {} {}/24 1 {}", guest.index, guest.v4, others.join(" ")),
                Duration::from_secs(60),
            );
            lab.start_daemon(i, backend);
        }
        lab
    }

    /// Starts (or starts again) guest `i`'s daemon with `backend`.
    pub fn start_daemon(&self, i: usize, backend: &str) {
        let guest = &self.guests[i];
        let controllers = format!("https://{}:{}", self.topology.host_v4, CONTROLLER_PORTS[0]);
        guest.exec_ok(
            &format!(
                "sh /vpblu/guest-daemon.sh {} {controllers} {CONTROLLER_SERVER_NAME} {backend}",
                guest.name
            ),
            Duration::from_secs(30),
        );
    }

    /// Records the host's processes (control plane, controller, QEMU) so
    /// `make kvm-down` (the lab's `down`) stops them if this dies uncleanly.
    pub fn record_processes(&self) {
        let mut pids = self.cluster.control_plane_pids();
        pids.extend(self.controller.pid());
        pids.extend(self.guests.iter().filter_map(Guest::pid));
        leftovers::record(self.id, &pids);
    }

    /// Every VpbluNode's status, by node name, in node order.
    pub async fn statuses(&self) -> Vec<(String, VpbluNodeStatus)> {
        let names: Vec<&str> = self.guests.iter().map(|g| g.name.as_str()).collect();
        crate::lab::statuses_of(&self.cluster, &names).await
    }

    /// Waits until every node reports every other node as a peer that is up
    /// (pinging each other's pod meanwhile, to start handshakes).
    pub async fn wait_mesh(&self, within: Duration) -> Duration {
        let start = Instant::now();
        let want = self.guests.len() as i32 - 1;
        loop {
            for a in &self.guests {
                for b in self.guests.iter().filter(|b| b.index != a.index) {
                    let _ = a.exec(
                        &format!("ip netns exec pod-{}-2 ping -n -c 1 -W 1 10.244.{}.2", a.index, b.index),
                        Duration::from_secs(10),
                    );
                }
            }
            let statuses = self.statuses().await;
            if statuses.iter().all(|(_, s)| s.peers == Some(want) && s.peers_up == Some(want)) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                self.dump_logs();
                panic!("the guests' mesh did not form within {within:?}; statuses:\n{statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ping from node `from`'s pod to node `to`'s pod: `ping ARGS`'s output.
    pub fn pod_ping(
        &self,
        from: u8,
        to: u8,
        args: &str,
        within: Duration,
    ) -> crate::lab::traffic::PingResult {
        let guest = &self.guests[usize::from(from - 1)];
        let (_, out) =
            guest.exec(&format!("ip netns exec pod-{from}-2 ping -n {args} 10.244.{to}.2"), within);
        crate::lab::traffic::PingResult::parse(out)
    }

    /// Prints every guest's serial console tail and daemon log tail, and the
    /// controller's log tail.
    pub fn dump_logs(&self) {
        for guest in &self.guests {
            eprintln!("==== {} serial ====\n{}", guest.name, tail(&guest.serial(), 30));
            eprintln!("==== {} daemon ====\n{}", guest.name, tail(&guest.daemon_log(), 60));
        }
        crate::lab::processes::print_tail(self.controller.log());
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for GuestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.guests.clear();
        leftovers::forget(self.id);
    }
}
