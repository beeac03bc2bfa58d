//! Removing vpblu from a node.
//!
//! A daemon that stops leaves its data plane in force (see
//! [`crate::run`]): an upgrade or a restart costs no packet. When vpblu is
//! being removed instead (`helm uninstall`, `kubectl delete` of the
//! DaemonSet), the stopping daemon takes away everything it put on the
//! node, after its supervision tree has stopped (so nothing re-attaches or
//! re-adds behind it):
//!
//! 1. classify and deliver off tc ingress: in netlink mode each filter is
//!    deleted; in tcx mode the links live only in their pins, so step 2
//!    detaches them;
//! 2. the pin directory (maps, links) on bpffs;
//! 3. the fwmark rules, the mesh table's routes and the MSS clamp table;
//! 4. the WireGuard devices: a wireguard-go stopped (it deletes its TUN
//!    device), a kernel device deleted;
//! 5. the private keys (overwritten, then unlinked) and the applied
//!    generation.
//!
//! Every step is tried even when an earlier one fails; the report says
//! what each removed and the error lists what is left.
//!
//! Whether it is a removal is [`Decision`]'s business: `--remove-on-stop`
//! says `always`, `never`, or `auto` (the default): remove when the
//! daemon's own DaemonSet is gone or being deleted ([`owner`]).

mod links;
pub mod owner;

use std::fmt;
use std::time::Duration;

use crate::bpf::{AttachMode, ProgramKind, bpffs, dataplane};
use crate::data_plane::{Config, GenerationFile};
use crate::pod_interfaces;
use crate::routing::{CleanupReport, Routing};
use crate::{keys, wireguard};

pub use self::owner::{Decision, Owner, RemoveOnStop};

/// How long a stopping daemon waits for the API server's answer about its
/// DaemonSet (the pod's grace period is 30 s; removal needs a few).
const ASK_OWNER_WITHIN: Duration = Duration::from_secs(10);

/// How long a wireguard-go gets to exit after SIGTERM before SIGKILL.
const WIREGUARD_GO_STOP: Duration = Duration::from_secs(5);

/// What a removal took away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Interfaces a netlink-mode filter was deleted from.
    pub filters: Vec<String>,
    /// Whether the pin directory was there and was removed.
    pub pins: bool,
    /// Rules, routes and the MSS clamp.
    pub routing: CleanupReport,
    /// WireGuard devices removed.
    pub devices: Vec<String>,
    /// wireguard-go processes stopped.
    pub wireguard_go: Vec<u32>,
    /// Key files scrubbed.
    pub key_files: usize,
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tc filter(s), pins {}, {} rule(s), {} route(s), MSS clamp {}, devices [{}], wireguard-go {:?}, \
             {} key file(s)",
            self.filters.len(),
            if self.pins { "removed" } else { "absent" },
            self.routing.rules,
            self.routing.routes,
            if self.routing.mss_clamp { "removed" } else { "absent" },
            self.devices.join(", "),
            self.wireguard_go,
            self.key_files,
        )
    }
}

/// Steps that failed, each with what is left on the node.
#[derive(Debug, thiserror::Error)]
#[error("removing vpblu from this node left something behind: {}", .0.join("; "))]
pub struct RemovalError(pub Vec<String>);

/// What a daemon whose tree stopped in order does with the data plane:
/// decides per `mode`, asking the API server about DaemonSet `owner`
/// (name, namespace) in `auto` mode, and removes vpblu from the node when
/// that is the decision. An error when the removal left something.
pub async fn at_stop(
    mode: RemoveOnStop,
    owner: Option<(&str, &str)>,
    config: &Config,
) -> Result<(), RemovalError> {
    let state = match (mode, owner) {
        (RemoveOnStop::Auto, Some((name, namespace))) => {
            Some(owner::daemonset(namespace, name, ASK_OWNER_WITHIN).await)
        }
        _ => None,
    };
    match Decision::of(mode, owner.map(|(name, _)| name), state.as_ref()) {
        Decision::Keep(why) => {
            tracing::info!(reason = %why, "stopped; the data plane stays in force for the next daemon");
            Ok(())
        }
        Decision::Remove(why) => {
            tracing::info!(reason = %why, "stopped; removing vpblu from this node");
            match remove_from_node(config).await {
                Ok(removal) => {
                    tracing::info!(removed = %removal, "vpblu removed from this node");
                    Ok(())
                }
                Err((removal, e)) => {
                    tracing::error!(removed = %removal, error = %e, "vpblu was not entirely removed from this node");
                    Err(e)
                }
            }
        }
    }
}

/// Removes everything the daemon configured from `config` puts on the node,
/// in the calling thread's network namespace. Run it only once nothing of
/// the daemon runs any more.
pub async fn remove_from_node(config: &Config) -> Result<Removal, (Removal, RemovalError)> {
    let mut removal = Removal::default();
    let mut errors = Vec::new();
    let devices: Vec<&str> =
        std::iter::once(config.interface.as_str()).chain(config.lane_interface.as_deref()).collect();

    let names = match links::names().await {
        Ok(names) => names,
        Err(e) => {
            errors.push(format!("listing the interfaces: {e}"));
            Vec::new()
        }
    };

    // 1. tc filters (netlink mode; tcx links go with their pins).
    if config.attach_mode.unwrap_or_else(AttachMode::for_running_kernel) == AttachMode::Netlink {
        let pods = names
            .iter()
            .filter(|name| {
                !devices.contains(&name.as_str()) && pod_interfaces::matches(&config.pod_interfaces, name)
            })
            .map(|name| (ProgramKind::Classify, name.as_str()));
        let meshes = names
            .iter()
            .filter(|n| devices.contains(&n.as_str()))
            .map(|n| (ProgramKind::Deliver, n.as_str()));
        for (program, interface) in pods.chain(meshes) {
            match dataplane::detach_netlink(program, interface) {
                Ok(true) => removal.filters.push(interface.to_owned()),
                Ok(false) => {}
                Err(e) => errors.push(format!("the {} filter on {interface}: {e}", program.name())),
            }
        }
    }

    // 2. Pins: maps and tcx links (unpinning the last reference detaches).
    // Not on bpffs (not mounted) or not there: nothing of ours is pinned.
    if bpffs::is_bpffs(&config.pin_dir).unwrap_or(false) {
        match std::fs::remove_dir_all(&config.pin_dir) {
            Ok(()) => removal.pins = true,
            Err(e) => errors.push(format!("the pins under {}: {e}", config.pin_dir.display())),
        }
    }

    // 3. Rules, routes, MSS clamp.
    match Routing::connect(config.routing.clone()) {
        Ok(routing) => match routing.cleanup().await {
            Ok(report) => removal.routing = report,
            Err(e) => errors.push(format!("rules, routes or the MSS clamp: {e}")),
        },
        Err(e) => errors.push(format!("rules, routes or the MSS clamp: {e}")),
    }

    // 4. Devices: stop a wireguard-go serving one, delete what is left.
    for &device in &devices {
        let options = config.userspace.clone();
        let name = device.to_owned();
        let stopped = tokio::task::spawn_blocking(move || {
            wireguard::stop_wireguard_go(&name, &options, WIREGUARD_GO_STOP)
        })
        .await;
        // A stopped wireguard-go deletes its TUN device as it exits: give it
        // the time to; a kernel device goes at once.
        let mut wait = Duration::ZERO;
        match stopped {
            Ok(Ok(Some(pid))) => {
                removal.wireguard_go.push(pid);
                wait = WIREGUARD_GO_STOP;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => errors.push(format!("wireguard-go of {device}: {e}")),
            Err(e) => errors.push(format!("wireguard-go of {device}: {e}")),
        }
        match links::remove(device, wait).await {
            Ok(existed) => {
                if existed || names.iter().any(|name| name == device) {
                    removal.devices.push(device.to_owned());
                }
            }
            Err(e) => errors.push(format!("the device {device}: {e}")),
        }
    }

    // 5. Keys and the applied generation.
    if let Err(e) = GenerationFile::remove(&config.state_dir) {
        errors.push(format!("the applied generation in {}: {e}", config.state_dir.display()));
    }
    match keys::remove_all(&config.key_dir) {
        Ok(n) => removal.key_files = n,
        Err(e) => errors.push(format!("the private keys: {e}")),
    }

    if errors.is_empty() { Ok(removal) } else { Err((removal, RemovalError(errors))) }
}
