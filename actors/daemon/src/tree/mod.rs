//! The daemon's supervision tree.
//!
//! [`run`] first opens the node's data plane ([`NodeDataPlane::open`]:
//! key, WireGuard device, fwmark rules, BPF programs, pod interface
//! watcher), adopting whatever a previous daemon left in force. If that
//! fails, the daemon logs what failed and exits non-zero before anything
//! else runs. Then the root supervisor runs, one-for-one:
//!
//! - `health`: `/healthz`, `/readyz`, `/metrics` ([`metrics`]);
//! - `wireguard`, `routing`, `bpf`: the actors that own the key store and
//!   devices, the link, rules, routes and MTU, and the programs and maps
//!   (their first incarnations take over what was opened; a restarted one
//!   re-adopts what the kernel holds, flushing nothing);
//! - `stream`: the [`StreamClient`] to the controller, applying commands
//!   through a [`SharedDataPlane`] that sends each step to those three
//!   actors (a restarted stream client gets a clone: the state in force
//!   and the plan are not restarted with it);
//! - `observer`: reads the device and the BPF counters back every
//!   `--observe-interval` for the controller and `/metrics`, and the stream
//!   client's status every second ([`observer`]).
//!
//! # Readiness
//!
//! `/readyz` turns ready once the data plane has started and either
//!
//! - this process applied a command from the controller, or
//! - the state directory held a generation above 0 at start (a previous
//!   daemon's state is in force in the device and the maps) and the stream
//!   to the controller has opened,
//!
//! and stays ready from then on ([`readiness`]). A fresh node with no
//! controller is never ready: nothing would forward its pods' traffic.
//!
//! # Stopping
//!
//! SIGTERM stops the children in order and exits 0, and leaves the data
//! plane exactly as it is: the WireGuard device (and a userspace
//! wireguard-go, which runs detached), the routes and rules, the pinned BPF
//! programs and maps keep forwarding. Nothing is torn down, so an upgrade or
//! a restart of the daemon costs no packet; the next daemon adopts all of
//! it.
//!
//! Unless vpblu is being removed: with `--remove-on-stop=auto` (the
//! chart's), a stopping daemon asks the API server whether its DaemonSet
//! still exists; when it is gone or being deleted (`helm uninstall`), the
//! daemon removes everything it put on the node once the tree has stopped
//! ([`crate::uninstall`]), and exits non-zero if something is left.
//!
//! A WireGuard device gone for good (its wireguard-go exited, the kernel
//! device was deleted) stops the daemon too, with exit 1 and the rest of
//! the data plane left as it is ([`crate::data_plane::DeviceLost`]): the
//! kubelet starts a new daemon, which creates the device again and gets the
//! full state on its first stream.

mod metrics;
mod observer;
mod readiness;
mod shared_data_plane;

pub use metrics::examples as metrics_examples;

use vpblu_runtime::{ChildSpec, Health, HealthServer, RestartPolicy, RootExit, run_root};

use self::metrics::DaemonMetrics;
use self::observer::{Observer, ObserverArgs, StreamTally};
use self::readiness::Readiness;
use self::shared_data_plane::SharedDataPlane;
use crate::Args;
use crate::args::FaultPhase;
use crate::data_plane::{Config, NodeDataPlane};
use crate::stream::{ClientConfig, DataPlane as _, StreamClient, StreamClientArgs, StreamSecurity};
use crate::uninstall;

/// The stream client's child name (the observer finds it by it).
const STREAM_CHILD: &str = "stream";

/// Runs the daemon until SIGTERM/SIGINT (→ [`RootExit::Stopped`]) or until
/// the data plane cannot start or the tree gives up (→ [`RootExit::Failed`]).
pub async fn run(args: Args) -> RootExit {
    // Every flag is named here, so one added to `Args` and used nowhere
    // does not compile (unused binding) instead of being silently ignored.
    let Args {
        node_name,
        controller_addr,
        ca_file,
        controller_server_name,
        token_file,
        insecure_dev,
        // main.rs: before the tree starts.
        fault_injection: _,
        log_format: _,
        key_dir,
        bpffs,
        interface,
        lane_interface,
        fail_rotation_phase,
        mtu_overhead,
        metrics_addr,
        state_dir,
        strict,
        pod_interfaces,
        backend,
        wireguard_go,
        observe_interval,
        remove_on_stop,
        daemonset,
        pod_namespace,
    } = args;
    // Bad stream flags stop the daemon before it touches the node.
    let security = match StreamSecurity::from_flags(
        &controller_addr,
        insecure_dev,
        &ca_file,
        &controller_server_name,
        &token_file,
    ) {
        Ok(security) => security,
        Err(e) => return RootExit::Failed(e),
    };
    let mut config = Config::new(&key_dir, &state_dir, &bpffs, interface.clone()).with_lane(lane_interface);
    config.fail_rotation_phase = fail_rotation_phase.map(FaultPhase::phase);
    config.routing.mtu_overhead = mtu_overhead;
    config.backend = backend.backend();
    if let Some(program) = wireguard_go {
        config.userspace.program = program;
    }
    config.strict = strict;
    config.pod_interfaces = pod_interfaces;
    let removal_config = config.clone();
    let lost = config.device_lost.clone();
    let (data_plane, data_plane_actors) = match NodeDataPlane::open(node_name.clone(), config).await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(
                device = %interface,
                error = %e,
                "the data plane did not start; nothing was changed"
            );
            return RootExit::Failed(format!("the data plane of node {node_name} did not start: {e}"));
        }
    };
    let restored = data_plane.applied_generation();
    let (backend, backend_reason) = data_plane.backend();

    let health = Health::new();
    let metrics = DaemonMetrics::register(&health, backend, backend_reason);
    let readiness = Readiness::new(health.clone(), restored);
    let shared = SharedDataPlane::new(data_plane, metrics.clone(), readiness.clone());

    let stream = {
        let (node, endpoint, shared) = (node_name.clone(), controller_addr.clone(), shared.clone());
        ChildSpec::new(STREAM_CHILD, move || {
            let args = StreamClientArgs {
                node: node.clone(),
                endpoint: endpoint.clone(),
                data_plane: shared.clone(),
                config: ClientConfig::default(),
                security: security.clone(),
            };
            (StreamClient::<SharedDataPlane>::new(), args)
        })
    };
    let observer = {
        let (interval, tally) = (observe_interval, StreamTally::default());
        ChildSpec::new("observer", move || {
            let args = ObserverArgs {
                data_plane: shared.clone(),
                interval,
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                stream_child: STREAM_CHILD.to_owned(),
                tally: tally.clone(),
            };
            (Observer, args)
        })
    };
    let mut children = vec![HealthServer::child(metrics_addr, &health)];
    children.extend(data_plane_actors);
    children.extend([stream, observer]);
    // A signal, or a WireGuard device gone for good, stops the tree.
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                signal = vpblu_runtime::shutdown_signal() => signal,
                _ = lost.wait() => "a lost WireGuard device",
            }
        }
    };
    let exit = run_root(children, RestartPolicy::default(), stop).await;
    if let Some(reason) = lost.reason() {
        // Not an uninstall: the data plane stays for the next daemon,
        // which recreates the device and gets the full state again.
        return RootExit::Failed(format!("{reason}; exiting so that a new daemon recreates the device"));
    }
    if !matches!(exit, RootExit::Stopped) {
        // A daemon that gave up keeps the data plane: the kubelet restarts it.
        return exit;
    }
    let owner = daemonset.as_deref().zip(pod_namespace.as_deref());
    match uninstall::at_stop(remove_on_stop, owner, &removal_config).await {
        Ok(()) => exit,
        Err(e) => RootExit::Failed(e.to_string()),
    }
}
