//! [`NodeDataPlane`]: the real [`DataPlane`] behind the stream client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vpblu_messages::{
    Backend, Cidr, Command, Generation, NodeDesiredState, NodeName, NodeRotation, PublicKey, RotationPhase,
    RotationReport, apply,
};

use super::applied_generation::GenerationFile;
use super::lane::Lane;
use super::mesh_link::MeshLink;
use super::plan::{self, Plan};
use super::rotation::{self};
use super::rotation_reports::RotationReports;
use super::{Config, DataPlaneError};
use super::{blocking, lock};
use crate::bpf::{AttachMode, Dataplane, Verdict};
use crate::keys::KeyStore;
use crate::pod_interfaces::PodInterfaces;
use crate::routing::Routing;
use crate::stream::{DataPlane, HelloFacts};
use crate::wireguard::{BackendReason, DeviceState, WireGuard, WireGuardDevice};

mod converge;
mod rotation_step;

/// The node's WireGuard device, routing and BPF programs, driven as one
/// data plane. See the module docs for the order of the steps.
pub struct NodeDataPlane {
    node: NodeName,
    config: Config,
    keys: Arc<Mutex<KeyStore>>,
    backend: Backend,
    /// Why that backend (`--backend`, or what `auto` found).
    backend_reason: BackendReason,
    device: Arc<Mutex<WireGuardDevice>>,
    link: MeshLink,
    /// The lane device; `None` when the configuration has none.
    lane: Option<Lane>,
    routing: Routing,
    bpf: Arc<Mutex<Dataplane>>,
    pods: PodInterfaces,
    generation_file: GenerationFile,
    applied: Generation,
    /// The desired state in force; `None` until the first SyncState.
    state: Option<NodeDesiredState>,
    /// What the components were last brought to (for targeted commands).
    plan: Plan,
    tombstones: BTreeSet<Cidr>,
    /// The endpoints the mesh MTU was last sized for.
    sized_for: Option<Vec<IpAddr>>,
    mtu: u32,
    /// A converge failed part-way: the next one redoes every component.
    dirty: bool,
    /// The key the main device was last given.
    main_key: PublicKey,
    /// When this process added each main peer, or switched the main key
    /// under it (a rotation's Retire waits for a newer handshake).
    main_configured: BTreeMap<PublicKey, SystemTime>,
    /// This node's part in the key rotation in force.
    rotation: Progress,
    reports: RotationReports,
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
    /// Opens (or creates) the key, ensures (or adopts) the WireGuard device
    /// and brings it up, installs the fwmark rules, loads the BPF programs
    /// (reusing pinned maps), writes the mark and strict mode, attaches
    /// deliver to the device, and starts watching pod interfaces. Nothing
    /// already configured is torn down: a restarted daemon keeps forwarding
    /// as before until the first full state converges it.
    ///
    /// The listen port comes with the first full state (`SelfSettings`);
    /// until then an adopted device keeps its port and a new one has
    /// whatever wireguard-go picked.
    ///
    /// Runs inside a tokio runtime in the node's network namespace.
    pub async fn start(node: NodeName, config: Config) -> Result<Self, DataPlaneError> {
        config.validate()?;
        if let Some(phase) = config.fail_rotation_phase {
            tracing::warn!(
                phase = %phase,
                "TEST-ONLY fault injection is on: this node will fail its part of every key rotation at \
                 this phase (--fail-rotation-phase)"
            );
        }
        let (keys, generation_file, applied) = open_keys(&config).await?;

        let wireguard = match config.backend {
            Some(backend) => WireGuard::new(backend, config.userspace.clone()),
            None => WireGuard::detect(config.userspace.clone()),
        };
        let (backend, backend_reason) = (wireguard.backend(), wireguard.reason());
        let (device, keys) = ensure_device(&wireguard, &config.interface, keys).await?;
        let device = Arc::new(Mutex::new(device));
        let main_key = keys.public_key();
        let keys = Arc::new(Mutex::new(keys));

        let link = MeshLink::connect(&config.interface)?;
        let mtu = link.ensure_up().await?;
        let routing = Routing::connect(config.routing.clone()).map_err(DataPlaneError::Routing)?;
        let lane = match &config.lane_interface {
            Some(name) => {
                let lane = Lane::open(wireguard.clone(), name.clone(), Arc::clone(&keys)).await?;
                routing.ensure_lane_mtu(mtu).await.map_err(DataPlaneError::Routing)?;
                Some(lane)
            }
            None => None,
        };
        routing.ensure_rule().await.map_err(DataPlaneError::Routing)?;

        let bpf = load_bpf(&config).await?;
        let bpf = Arc::new(Mutex::new(bpf));
        let pods = PodInterfaces::start(
            config.pod_interfaces.clone(),
            config.interface.clone(),
            Arc::clone(&bpf),
            config.pod_interface_resync,
        )
        .await
        .map_err(DataPlaneError::PodInterfaces)?;

        tracing::info!(
            node = %node,
            device = %config.interface,
            lane = config.lane_interface.as_deref().unwrap_or("(none)"),
            backend = backend.as_str(),
            applied = %applied,
            mtu,
            "data plane started"
        );
        Ok(NodeDataPlane {
            node,
            config,
            keys,
            backend,
            backend_reason,
            device,
            link,
            lane,
            routing,
            bpf,
            pods,
            generation_file,
            applied,
            state: None,
            plan: Plan::default(),
            tombstones: BTreeSet::new(),
            sized_for: None,
            mtu,
            dirty: true,
            main_key,
            main_configured: BTreeMap::new(),
            rotation: Progress::default(),
            reports: RotationReports::default(),
        })
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

    /// The wireguard-go process (userspace backend only).
    pub fn wireguard_pid(&self) -> Option<u32> {
        lock(&self.device).pid()
    }

    /// The lane's wireguard-go process (userspace backend, with a lane).
    pub fn lane_wireguard_pid(&self) -> Option<u32> {
        self.lane.as_ref().and_then(Lane::pid)
    }

    fn public_key(&self) -> PublicKey {
        lock(&self.keys).public_key()
    }

    /// The UAPI socket (userspace backend only).
    pub fn wireguard_socket(&self) -> Option<PathBuf> {
        lock(&self.device).socket().map(PathBuf::from)
    }

    /// Interfaces classify is attached to now.
    pub fn pod_interfaces(&self) -> Vec<String> {
        self.pods.attached()
    }

    /// Packets per verdict since the pinned maps were created.
    pub async fn counters(&self) -> Result<BTreeMap<Verdict, u64>, DataPlaneError> {
        self.reader().counters().await
    }

    /// A handle that reads the device and the counters without waiting
    /// for an apply in progress (which holds `&mut self`).
    pub fn reader(&self) -> DataPlaneReader {
        DataPlaneReader {
            device: Arc::clone(&self.device),
            lane: self.lane.as_ref().map(Lane::device),
            bpf: Arc::clone(&self.bpf),
        }
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
        plan::check(&next, &self.public_key()).map_err(DataPlaneError::Refused)?;

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
            if self.lane.is_none() && !rotation.lane.is_empty() {
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
        if let Some(lane) = &mut self.lane
            && everything
        {
            lane.forget();
        }
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
                    None => self.report_when_done(&acted, rotation),
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

/// Ensures (or adopts) the main WireGuard device under the active key.
/// The key store moves to the blocking thread and back: the private key
/// is lent to the device by reference, never copied.
async fn ensure_device(
    wireguard: &WireGuard,
    interface: &str,
    keys: KeyStore,
) -> Result<(WireGuardDevice, KeyStore), DataPlaneError> {
    let (name, wireguard) = (interface.to_owned(), wireguard.clone());
    blocking("wireguard", move || {
        let device = wireguard.ensure_device(&name, 0, keys.active()).map_err(DataPlaneError::WireGuard)?;
        Ok((device, keys))
    })
    .await
}

/// Opens (or creates) the node's key and the applied-generation file.
async fn open_keys(config: &Config) -> Result<(KeyStore, GenerationFile, Generation), DataPlaneError> {
    let key_dir = config.key_dir.clone();
    let state_dir = config.state_dir.clone();
    blocking("keys", move || {
        let keys = KeyStore::open(&key_dir).map_err(DataPlaneError::Keys)?;
        let (file, applied) = GenerationFile::open(&state_dir)
            .map_err(|source| DataPlaneError::StateDir { path: state_dir.clone(), source })?;
        Ok((keys, file, applied))
    })
    .await
}

/// Loads the BPF programs (reusing pinned maps), writes the mark and
/// strict mode, and attaches deliver to the mesh device and the lane.
async fn load_bpf(config: &Config) -> Result<Dataplane, DataPlaneError> {
    let pin_dir = config.pin_dir.clone();
    let mode = config.attach_mode.unwrap_or_else(AttachMode::for_running_kernel);
    let (mark, strict, interface) = (config.routing.fwmark, config.strict, config.interface.clone());
    let lane = config.lane_interface.clone();
    blocking("bpf", move || {
        let mut bpf = Dataplane::load(&pin_dir, mode).map_err(DataPlaneError::Bpf)?;
        // Before any PEER entry: an entry marks with whatever mark is set.
        bpf.set_config(mark, strict).map_err(DataPlaneError::Bpf)?;
        bpf.attach_deliver(&interface).map_err(DataPlaneError::Bpf)?;
        // Traffic arrives on the lane while a key rotates: blocks hold there too.
        if let Some(lane) = &lane {
            bpf.attach_deliver(lane).map_err(DataPlaneError::Bpf)?;
        }
        Ok(bpf)
    })
    .await
}

/// Reads what the node's WireGuard device and BPF programs hold, for
/// observation; see [`NodeDataPlane::reader`]. Each read takes the
/// component's lock for the length of one read-back.
#[derive(Clone)]
pub struct DataPlaneReader {
    device: Arc<Mutex<WireGuardDevice>>,
    lane: Option<Arc<Mutex<WireGuardDevice>>>,
    bpf: Arc<Mutex<Dataplane>>,
}

impl fmt::Debug for DataPlaneReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlaneReader").finish_non_exhaustive()
    }
}

impl DataPlaneReader {
    /// The device read back: its peers with handshakes and byte counters.
    pub async fn device(&self) -> Result<DeviceState, DataPlaneError> {
        let device = Arc::clone(&self.device);
        blocking("wireguard", move || lock(&device).read_back().map_err(DataPlaneError::WireGuard)).await
    }

    /// The lane device read back, when the daemon has one.
    pub async fn lane(&self) -> Result<Option<DeviceState>, DataPlaneError> {
        let Some(lane) = self.lane.clone() else { return Ok(None) };
        blocking("wireguard (lane)", move || {
            lock(&lane).read_back().map(Some).map_err(DataPlaneError::WireGuard)
        })
        .await
    }

    /// Packets per verdict since the pinned maps were created.
    pub async fn counters(&self) -> Result<BTreeMap<Verdict, u64>, DataPlaneError> {
        let bpf = Arc::clone(&self.bpf);
        blocking("bpf", move || lock(&bpf).counters().map_err(DataPlaneError::Bpf)).await
    }
}

impl DataPlane for NodeDataPlane {
    async fn apply(&mut self, generation: Generation, command: &Command) -> Result<(), String> {
        match self.apply_command(generation, command).await {
            Ok(()) => {
                tracing::info!(generation = %generation, command = command.kind(), "applied");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(generation = %generation, command = command.kind(), error = %e, "not applied");
                Err(e.to_string())
            }
        }
    }

    fn applied_generation(&self) -> Generation {
        self.applied
    }

    fn hello_facts(&self) -> HelloFacts {
        // One guard: a second lock in the same expression would deadlock.
        let (public_key, staged_public_key) = {
            let keys = lock(&self.keys);
            (keys.public_key(), keys.staged_public_key())
        };
        HelloFacts { public_key, staged_public_key, backend: self.backend, mtu: self.mtu }
    }

    fn rotation_reports(&self) -> Option<watch::Receiver<Option<RotationReport>>> {
        Some(self.reports.subscribe())
    }
}
