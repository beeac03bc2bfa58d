//! What the node's data plane is built from.

use std::path::PathBuf;
use std::time::Duration;

use vpblu_messages::{Backend, RotationPhase};

use super::{DataPlaneError, DeviceLost};
use crate::bpf::AttachMode;
use crate::pod_interfaces;
use crate::routing::RoutingConfig;
use crate::wireguard::UserspaceOptions;

/// Paths, names and switches of the node's data plane.
#[derive(Clone, Debug)]
pub struct Config {
    /// The key directory (0700; `private.key` 0600 inside).
    pub key_dir: PathBuf,
    /// Where the applied generation is recorded.
    pub state_dir: PathBuf,
    /// The bpffs directory the maps and links are pinned in.
    pub pin_dir: PathBuf,
    /// The WireGuard device, e.g. `wg-mesh`; unique on the machine for the
    /// userspace backend. Must equal `routing.mesh_interface`.
    pub interface: String,
    /// The lane device, e.g. `wg-lane`: a second WireGuard device on
    /// `SelfSettings::lane_port` that carries traffic while a key rotates
    /// (see [`super::rotation`]). Unique on the machine like `interface`;
    /// must equal `routing.lane_interface`. `None`: no lane, and a desired
    /// state with lane peers is refused. The daemon always has one.
    pub lane_interface: Option<String>,
    /// Test-only fault injection: on reaching this rotation phase the data
    /// plane does not do its part and reports an error instead.
    pub fail_rotation_phase: Option<RotationPhase>,
    /// Kernel or userspace WireGuard; `None` picks the kernel when it has
    /// the module.
    pub backend: Option<Backend>,
    /// Which wireguard-go to start (or adopt), its sockets and logs.
    pub userspace: UserspaceOptions,
    /// fwmark, table, rule priority, MTU overhead. The BPF mark is this
    /// fwmark, so the two always agree.
    pub routing: RoutingConfig,
    /// Drop traffic to cluster CIDRs without a tunnel rather than let it
    /// leave in clear.
    pub strict: bool,
    /// Names of pod-facing interfaces (`veth*` style prefixes allowed).
    pub pod_interfaces: Vec<String>,
    /// How often the pod interface watcher relists the links.
    pub pod_interface_resync: Duration,
    /// How classify and deliver are attached; `None`: tcx where the
    /// kernel has it.
    pub attach_mode: Option<AttachMode>,
    /// Where the WireGuard actor reports a device gone for good (the
    /// daemon watches it and stops).
    pub device_lost: DeviceLost,
}

impl Config {
    /// Defaults (strict, the default pod interface patterns, detected
    /// backend, wireguard-go found automatically) for these directories and
    /// device name.
    pub fn new(
        key_dir: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        pin_dir: impl Into<PathBuf>,
        interface: impl Into<String>,
    ) -> Self {
        let interface = interface.into();
        Config {
            key_dir: key_dir.into(),
            state_dir: state_dir.into(),
            pin_dir: pin_dir.into(),
            routing: RoutingConfig::new(interface.clone()),
            interface,
            lane_interface: None,
            fail_rotation_phase: None,
            backend: None,
            userspace: UserspaceOptions::default(),
            strict: true,
            pod_interfaces: pod_interfaces::DEFAULT_PATTERNS.iter().map(|p| (*p).to_owned()).collect(),
            pod_interface_resync: pod_interfaces::DEFAULT_RESYNC,
            attach_mode: None,
            device_lost: DeviceLost::default(),
        }
    }

    /// Refuses a configuration whose parts disagree: routing must steer
    /// into the devices this data plane runs, and the lane is a device of
    /// its own.
    pub fn validate(&self) -> Result<(), DataPlaneError> {
        if self.routing.mesh_interface != self.interface {
            return Err(DataPlaneError::Config(format!(
                "the routing mesh interface {:?} is not the WireGuard device {:?}",
                self.routing.mesh_interface, self.interface
            )));
        }
        if self.routing.lane_interface != self.lane_interface {
            return Err(DataPlaneError::Config(format!(
                "the routing lane interface {:?} is not the lane device {:?}",
                self.routing.lane_interface, self.lane_interface
            )));
        }
        if self.lane_interface.as_ref() == Some(&self.interface) {
            return Err(DataPlaneError::Config(format!(
                "the lane device and the mesh device are both {:?}: give --lane-interface another name",
                self.interface
            )));
        }
        Ok(())
    }

    /// The same, with lane device `lane` (in the routing config too).
    pub fn with_lane(mut self, lane: impl Into<String>) -> Self {
        let lane = lane.into();
        self.routing.lane_interface = Some(lane.clone());
        self.lane_interface = Some(lane);
        self
    }
}
