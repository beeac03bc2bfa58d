//! [`NodeDataPlane`]: the real [`DataPlane`] behind the stream client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vpblu_messages::{
    Backend, Cidr, Command, Generation, NodeDesiredState, NodeName, NodeRotation, RotationPhase,
    RotationReport, apply,
};
use vpblu_runtime::{ChildSpec, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg};

use super::actors::{
    self, BpfMsg, BpfOpener, BpfPart, KeyFacts, Opened, Part as _, PartSlots, Processes, RoutingPart,
    WireGuardMsg, WireGuardOpener, WireGuardPart, ask, query,
};
use super::applied_generation::GenerationFile;
use super::plan::{self, Plan};
use super::rotation::{self, Device};
use super::rotation_reports::RotationReports;
use super::{Config, DataPlaneError, blocking};
use crate::bpf::{AttachMode, Verdict};
use crate::stream::{DataPlane, HelloFacts};
use crate::wireguard::{BackendReason, DeviceState, WireGuard};

mod converge;
mod rotation_step;

/// The node's data plane as the stream client drives it: the desired
/// state in force and what each component was last brought to, and the
/// WireGuard, Routing and BPF-map actors that own the components (see
/// [`actors`]). Applying a command sends them typed messages in the order
/// the module docs give and gathers their answers into one result.
pub struct NodeDataPlane {
    node: NodeName,
    config: Config,
    backend: Backend,
    /// Why that backend (`--backend`, or what `auto` found).
    backend_reason: BackendReason,
    parts: PartSlots,
    /// The parts' supervisor, when this data plane runs them itself
    /// ([`NodeDataPlane::start`]); the daemon's tree runs them instead.
    own_supervisor: Option<OwnSupervisor>,
    has_lane: bool,
    generation_file: GenerationFile,
    applied: Generation,
    /// The desired state in force; `None` until the first SyncState.
    state: Option<NodeDesiredState>,
    /// What the components were last brought to (for targeted commands).
    plan: Plan,
    tombstones: BTreeSet<Cidr>,
    /// The mesh MTU, as the Routing actor last said.
    mtu: u32,
    /// The node's public keys, as the WireGuard actor last said.
    keys: KeyFacts,
    /// A converge failed part-way: the next one redoes every component.
    dirty: bool,
    /// This node's part in the key rotation in force.
    rotation: Progress,
    reports: RotationReports,
}

/// Stops the parts' supervisor (and so the parts) when dropped.
struct OwnSupervisor(ActorRef<SupervisorMsg>);

impl Drop for OwnSupervisor {
    fn drop(&mut self) {
        self.0.stop(Some("the data plane was dropped".into()));
    }
}

/// Where this node stands in a key rotation.
#[derive(Debug, Default)]
struct Progress {
    /// The (rotation, phase) in force; `None`: no rotation.
    step: Option<(u64, RotationPhase)>,
    /// The rotation the devices and routes follow: the one in force, or,
    /// when this node's part of its phase failed (or a fault was
    /// injected), the one before it, so the node stays as it was.
    effective: Option<NodeRotation>,
    /// This step's part failed.
    failed: bool,
    /// The task waiting for this step's handshakes.
    wait: Option<JoinHandle<()>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(wait) = self.wait.take() {
            wait.abort();
        }
    }
}

impl fmt::Debug for NodeDataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeDataPlane")
            .field("node", &self.node)
            .field("interface", &self.config.interface)
            .field("backend", &self.backend)
            .field("applied", &self.applied)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl NodeDataPlane {
    /// [`NodeDataPlane::open`], with the actors run under a supervisor of
    /// its own (stopped when the data plane is dropped): for programs that
    /// embed a data plane without the daemon's tree.
    pub async fn start(node: NodeName, config: Config) -> Result<Self, DataPlaneError> {
        let (mut data_plane, children) = NodeDataPlane::open(node, config).await?;
        let args = SupervisorArgs { children, policy: RestartPolicy::default(), on_exit: None };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args)
            .await
            .map_err(|e| DataPlaneError::Config(format!("could not start the data plane's actors: {e}")))?;
        data_plane.own_supervisor = Some(OwnSupervisor(supervisor));
        Ok(data_plane)
    }

    /// Opens (or creates) the key, ensures (or adopts) the WireGuard device
    /// and brings it up, installs the fwmark rules, loads the BPF programs
    /// (reusing pinned maps), writes the mark and strict mode, attaches
    /// deliver to the device, and starts watching pod interfaces. Nothing
    /// already configured is torn down: a restarted daemon keeps forwarding
    /// as before until the first full state converges it.
    ///
    /// Returns the data plane and its actors' child specs (WireGuard,
    /// Routing, BPF maps), for a supervisor to start before the data plane
    /// is used; their first incarnations take over what was opened here.
    ///
    /// The listen port comes with the first full state (`SelfSettings`);
    /// until then an adopted device keeps its port and a new one has
    /// whatever wireguard-go picked.
    ///
    /// Runs inside a tokio runtime in the node's network namespace.
    pub async fn open(node: NodeName, config: Config) -> Result<(Self, Vec<ChildSpec>), DataPlaneError> {
        config.validate()?;
        if let Some(phase) = config.fail_rotation_phase {
            tracing::warn!(
                phase = %phase,
                "TEST-ONLY fault injection is on: this node will fail its part of every key rotation at \
                 this phase (--fail-rotation-phase)"
            );
        }
        let state_dir = config.state_dir.clone();
        let (generation_file, applied) = blocking("state directory", move || {
            GenerationFile::open(&state_dir)
                .map_err(|source| DataPlaneError::StateDir { path: state_dir.clone(), source })
        })
        .await?;

        let wireguard = match config.backend {
            Some(backend) => WireGuard::new(backend, config.userspace.clone()),
            None => WireGuard::detect(config.userspace.clone()),
        };
        let (backend, backend_reason) = (wireguard.backend(), wireguard.reason());
        let wireguard_opener = WireGuardOpener {
            wireguard,
            key_dir: config.key_dir.clone(),
            interface: config.interface.clone(),
            lane_interface: config.lane_interface.clone(),
            lost: config.device_lost.clone(),
        };
        let wireguard = WireGuardPart::open(&wireguard_opener).await?;
        let keys = wireguard.key_facts();
        let routing = RoutingPart::open(&config.routing).await?;
        let mtu = routing.mtu();
        let bpf_opener = BpfOpener {
            pin_dir: config.pin_dir.clone(),
            mode: config.attach_mode.unwrap_or_else(AttachMode::for_running_kernel),
            mark: config.routing.fwmark,
            strict: config.strict,
            interface: config.interface.clone(),
            lane_interface: config.lane_interface.clone(),
            pod_interfaces: config.pod_interfaces.clone(),
            pod_interface_resync: config.pod_interface_resync,
        };
        let bpf = BpfPart::open(&bpf_opener).await?;

        tracing::info!(
            device = %config.interface,
            lane = config.lane_interface.as_deref().unwrap_or("(none)"),
            backend = backend.as_str(),
            applied = %applied,
            mtu,
            "data plane started"
        );
        let parts = PartSlots::new();
        let opened = Opened {
            wireguard: (wireguard, wireguard_opener),
            routing: (routing, config.routing.clone()),
            bpf: (bpf, bpf_opener),
        };
        let children = actors::children(opened, &parts);
        let data_plane = NodeDataPlane {
            node,
            has_lane: config.lane_interface.is_some(),
            config,
            backend,
            backend_reason,
            parts,
            own_supervisor: None,
            generation_file,
            applied,
            state: None,
            plan: Plan::default(),
            tombstones: BTreeSet::new(),
            mtu,
            keys,
            dirty: true,
            rotation: Progress::default(),
            reports: RotationReports::default(),
        };
        Ok((data_plane, children))
    }

    /// The node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The WireGuard backend it drives, and why that one.
    pub fn backend(&self) -> (Backend, BackendReason) {
        (self.backend, self.backend_reason)
    }

    /// The desired state in force (`None` before the first full state).
    pub fn state(&self) -> Option<&NodeDesiredState> {
        self.state.as_ref()
    }

    /// The wireguard-go processes and the UAPI socket (userspace backend).
    pub async fn processes(&self) -> Result<Processes, DataPlaneError> {
        query(&self.parts.wireguard, WireGuardMsg::Processes).await
    }

    /// Interfaces classify is attached to now.
    pub async fn pod_interfaces(&self) -> Result<Vec<String>, DataPlaneError> {
        query(&self.parts.bpf, BpfMsg::PodInterfaces).await
    }

    /// Packets per verdict since the pinned maps were created.
    pub async fn counters(&self) -> Result<BTreeMap<Verdict, u64>, DataPlaneError> {
        self.reader().counters().await
    }

    /// A handle that reads the devices and the counters from the actors
    /// that own them, between the steps of an apply in progress.
    pub fn reader(&self) -> DataPlaneReader {
        DataPlaneReader { parts: self.parts.clone(), has_lane: self.has_lane }
    }

    /// Applies one command; see [`DataPlane::apply`]. On error the desired
    /// state in force is the previous one.
    pub async fn apply_command(
        &mut self,
        generation: Generation,
        command: &Command,
    ) -> Result<(), DataPlaneError> {
        let next = self.next_state(command)?;
        next.validate().map_err(DataPlaneError::Invalid)?;
        self.keys = query(&self.parts.wireguard, WireGuardMsg::Keys).await?;
        plan::check(&next, &self.keys.public_key).map_err(DataPlaneError::Refused)?;

        // This node's part of a rotation phase happens once, when the phase
        // comes in force; the state acted on carries the rotation the
        // devices and routes follow.
        let step = next.rotation.as_ref().map(|r| (r.id, r.phase));
        let new_step = step != self.rotation.step;
        let (effective, failure) = if new_step {
            match self.begin_step(next.rotation.as_ref()).await? {
                Ok(()) => (next.rotation.clone(), None),
                Err(reason) => (self.rotation.effective.clone(), Some(reason)),
            }
        } else if self.rotation.failed {
            (self.rotation.effective.clone(), None)
        } else {
            (next.rotation.clone(), None)
        };
        let acted = NodeDesiredState { rotation: effective.clone(), ..next.clone() };
        if let Some(rotation) = &acted.rotation {
            if !self.has_lane && !rotation.lane.is_empty() {
                return Err(DataPlaneError::NoLane { rotating: rotation.node.clone() });
            }
            let lane_key = self.lane_public_key(rotation::lane_key(Some(rotation), &self.node));
            plan::check_lane(&acted, &lane_key).map_err(DataPlaneError::Refused)?;
        }

        let authoritative = matches!(command, Command::SyncState(_) | Command::SetUnreachable(_));
        let unrouted = Plan::of(&acted, &BTreeSet::new()).routes;
        let tombstones = plan::next_tombstones(
            self.config.strict,
            authoritative,
            &self.tombstones,
            &self.plan.routes,
            &unrouted,
        );
        let target = Plan::of(&acted, &tombstones);
        // A full state redoes everything (a periodic resync repairs drift);
        // a targeted command touches only the components it changes.
        let everything = self.dirty || matches!(command, Command::SyncState(_));
        self.dirty = true;
        self.converge(&acted, &target, everything).await?;
        self.dirty = false;
        self.plan = target;
        self.tombstones = tombstones;
        self.discard_staged_unless_rotating(effective.as_ref()).await?;
        if new_step {
            self.rotation = Progress { step, effective, failed: failure.is_some(), wait: None };
            self.reports.begin(step);
            if let Some(rotation) = &next.rotation {
                match failure {
                    Some(reason) => {
                        self.reports.publish(self.report(rotation, Err(reason)));
                    }
                    // Without a failure the state acted on is the desired one.
                    None => self.report_when_done(&acted, rotation).await?,
                }
            }
        } else {
            self.rotation.effective = effective;
        }
        self.state = Some(next);

        self.record(generation).await?;
        self.applied = generation;
        Ok(())
    }

    /// The desired state `command` leads to from the one in force.
    fn next_state(&self, command: &Command) -> Result<NodeDesiredState, DataPlaneError> {
        match (command, &self.state) {
            (Command::SyncState(full), _) if full.node != self.node => {
                Err(DataPlaneError::OtherNode { node: self.node.clone(), got: full.node.clone() })
            }
            (Command::SyncState(full), _) => Ok(full.clone()),
            (_, None) => Err(DataPlaneError::NoBaseState { kind: command.kind() }),
            (_, Some(current)) => {
                let mut next = current.clone();
                apply(&mut next, command);
                Ok(next)
            }
        }
    }

    /// Writes `generation` to the state directory, so a restarted daemon
    /// says what it last applied.
    async fn record(&self, generation: Generation) -> Result<(), DataPlaneError> {
        let file = self.generation_file.clone();
        blocking("state directory", move || {
            file.store(generation).map_err(|source| DataPlaneError::Record {
                generation,
                path: file.path(),
                source,
            })
        })
        .await
    }
}

/// Reads what the node's WireGuard device and BPF programs hold, for
/// observation; see [`NodeDataPlane::reader`]. Each read is a message to
/// the actor that owns the component, answered between two steps of
/// whatever it is doing.
#[derive(Clone)]
pub struct DataPlaneReader {
    parts: PartSlots,
    has_lane: bool,
}

impl fmt::Debug for DataPlaneReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlaneReader").finish_non_exhaustive()
    }
}

impl DataPlaneReader {
    /// The device read back: its peers with handshakes and byte counters.
    pub async fn device(&self) -> Result<DeviceState, DataPlaneError> {
        ask(&self.parts.wireguard, |reply| WireGuardMsg::ReadBack(Device::Main, reply)).await
    }

    /// The lane device read back, when the daemon has one.
    pub async fn lane(&self) -> Result<Option<DeviceState>, DataPlaneError> {
        if !self.has_lane {
            return Ok(None);
        }
        ask(&self.parts.wireguard, |reply| WireGuardMsg::ReadBack(Device::Lane, reply)).await.map(Some)
    }

    /// Packets per verdict since the pinned maps were created.
    pub async fn counters(&self) -> Result<BTreeMap<Verdict, u64>, DataPlaneError> {
        ask(&self.parts.bpf, BpfMsg::Counters).await
    }
}

impl DataPlane for NodeDataPlane {
    type Error = DataPlaneError;

    async fn apply(&mut self, generation: Generation, command: &Command) -> Result<(), DataPlaneError> {
        match self.apply_command(generation, command).await {
            Ok(()) => {
                tracing::info!(generation = %generation, command = command.kind(), "applied");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(generation = %generation, command = command.kind(), error = %e, "not applied");
                Err(e)
            }
        }
    }

    fn applied_generation(&self) -> Generation {
        self.applied
    }

    fn hello_facts(&self) -> HelloFacts {
        let KeyFacts { public_key, staged_public_key } = self.keys;
        HelloFacts { public_key, staged_public_key, backend: self.backend, mtu: self.mtu }
    }

    fn rotation_reports(&self) -> Option<watch::Receiver<Option<RotationReport>>> {
        Some(self.reports.subscribe())
    }
}
