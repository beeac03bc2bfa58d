//! [`NodeDataPlane`]: the real [`DataPlane`] behind the stream client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vpblu_messages::{Backend, Cidr, Command, Generation, NodeDesiredState, NodeName, apply};

use super::applied_generation::GenerationFile;
use super::mesh_link::MeshLink;
use super::plan::{self, Plan};
use super::{Config, DataPlaneError};
use crate::bpf::{AttachMode, Dataplane, Verdict};
use crate::keys::KeyStore;
use crate::pod_interfaces::PodInterfaces;
use crate::routing::Routing;
use crate::stream::{DataPlane, HelloFacts};
use crate::wireguard::{DeviceState, WireGuard, WireGuardDevice};

/// The node's WireGuard device, routing and BPF programs, driven as one
/// data plane. See the module docs for the order of the steps.
pub struct NodeDataPlane {
    node: NodeName,
    config: Config,
    keys: KeyStore,
    backend: Backend,
    device: Arc<Mutex<WireGuardDevice>>,
    link: MeshLink,
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
        if config.routing.mesh_interface != config.interface {
            return Err(DataPlaneError::Config(format!(
                "the routing mesh interface {:?} is not the WireGuard device {:?}",
                config.routing.mesh_interface, config.interface
            )));
        }
        let (keys, generation_file, applied) = {
            let key_dir = config.key_dir.clone();
            let state_dir = config.state_dir.clone();
            blocking("keys", move || {
                let keys = KeyStore::open(&key_dir).map_err(DataPlaneError::Keys)?;
                let (file, applied) = GenerationFile::open(&state_dir)
                    .map_err(|source| DataPlaneError::StateDir { path: state_dir.clone(), source })?;
                Ok((keys, file, applied))
            })
            .await?
        };

        let wireguard = match config.backend {
            Some(backend) => WireGuard::new(backend, config.userspace.clone()),
            None => WireGuard::detect(config.userspace.clone()),
        };
        let backend = wireguard.backend();
        // The key store moves to the blocking thread and back: the private
        // key is lent to the device by reference, never copied.
        let (device, keys) = {
            let name = config.interface.clone();
            blocking("wireguard", move || {
                let device =
                    wireguard.ensure_device(&name, 0, keys.active()).map_err(DataPlaneError::WireGuard)?;
                Ok((device, keys))
            })
            .await?
        };
        let device = Arc::new(Mutex::new(device));

        let link = MeshLink::connect(&config.interface)?;
        let mtu = link.ensure_up().await?;
        let routing = Routing::connect(config.routing.clone()).map_err(DataPlaneError::Routing)?;
        routing.ensure_rule().await.map_err(DataPlaneError::Routing)?;

        let bpf = {
            let pin_dir = config.pin_dir.clone();
            let mode = config.attach_mode.unwrap_or_else(AttachMode::for_running_kernel);
            let (mark, strict, interface) = (config.routing.fwmark, config.strict, config.interface.clone());
            blocking("bpf", move || {
                let mut bpf = Dataplane::load(&pin_dir, mode).map_err(DataPlaneError::Bpf)?;
                // Before any PEER entry: an entry marks with whatever mark is set.
                bpf.set_config(mark, strict).map_err(DataPlaneError::Bpf)?;
                bpf.attach_deliver(&interface).map_err(DataPlaneError::Bpf)?;
                Ok(bpf)
            })
            .await?
        };
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
            device,
            link,
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
        })
    }

    /// The node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The desired state in force (`None` before the first full state).
    pub fn state(&self) -> Option<&NodeDesiredState> {
        self.state.as_ref()
    }

    /// The wireguard-go process (userspace backend only).
    pub fn wireguard_pid(&self) -> Option<u32> {
        lock(&self.device).pid()
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
        DataPlaneReader { device: Arc::clone(&self.device), bpf: Arc::clone(&self.bpf) }
    }

    /// Applies one command; see [`DataPlane::apply`]. On error the desired
    /// state in force is the previous one.
    pub async fn apply_command(
        &mut self,
        generation: Generation,
        command: &Command,
    ) -> Result<(), DataPlaneError> {
        let next = match (command, &self.state) {
            (Command::SyncState(full), _) if full.node != self.node => {
                return Err(DataPlaneError::OtherNode { node: self.node.clone(), got: full.node.clone() });
            }
            (Command::SyncState(full), _) => full.clone(),
            (_, None) => return Err(DataPlaneError::NoBaseState { kind: command.kind() }),
            (_, Some(current)) => {
                let mut next = current.clone();
                apply(&mut next, command);
                next
            }
        };
        next.validate().map_err(DataPlaneError::Invalid)?;
        plan::check(&next, &self.keys.public_key()).map_err(DataPlaneError::Refused)?;

        let authoritative = matches!(command, Command::SyncState(_) | Command::SetUnreachable(_));
        let unrouted = Plan::of(&next, &BTreeSet::new()).routes;
        let tombstones = plan::next_tombstones(
            self.config.strict,
            authoritative,
            &self.tombstones,
            &self.plan.routes,
            &unrouted,
        );
        let target = Plan::of(&next, &tombstones);
        // A full state redoes everything (a periodic resync repairs drift);
        // a targeted command touches only the components it changes.
        let everything = self.dirty || matches!(command, Command::SyncState(_));
        self.dirty = true;
        self.converge(&next, &target, everything).await?;
        self.dirty = false;
        self.plan = target;
        self.tombstones = tombstones;
        self.state = Some(next);

        let file = self.generation_file.clone();
        blocking("state directory", move || {
            file.store(generation).map_err(|source| DataPlaneError::Record {
                generation,
                path: file.path(),
                source,
            })
        })
        .await?;
        self.applied = generation;
        Ok(())
    }

    /// Brings every component from `self.plan` to `target`. The order keeps
    /// traffic encrypted or dropped throughout, never in clear: new peers and
    /// routes exist before classify marks traffic for them; a removed CIDR
    /// stops being marked (or is marked unreachable) before its route goes,
    /// since a marked packet without a route in the mesh table would fall
    /// through to the main table, i.e. the underlay.
    async fn converge(
        &mut self,
        state: &NodeDesiredState,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        if everything {
            // Someone may have set it down; v4 routes need it up.
            self.mtu = self.link.ensure_up().await?;
        }
        let mut old = self.plan.clone();
        if everything {
            // After a restart or a failed converge the plan does not know
            // every route in the table; removing one before classify stops
            // marking its CIDR would send that traffic out in clear.
            let installed = self.routing.installed_routes().await.map_err(DataPlaneError::Routing)?;
            old.routes =
                old.routes.into_iter().chain(installed).collect::<BTreeSet<_>>().into_iter().collect();
        }
        let peers_changed = everything || self.state.as_ref().is_none_or(|s| s.peers != state.peers);

        if target.listen_port != 0 && (everything || old.listen_port != target.listen_port) {
            let (device, port) = (Arc::clone(&self.device), target.listen_port);
            blocking("wireguard", move || {
                lock(&device).set_listen_port(port).map_err(DataPlaneError::WireGuard)
            })
            .await?;
        }
        if everything || old.mesh_address != target.mesh_address {
            self.link.ensure_source_check(target.mesh_address).await?;
        }
        if peers_changed {
            let (device, peers) = (Arc::clone(&self.device), state.peers.clone());
            let diff = blocking("wireguard", move || {
                lock(&device).apply_peers(&peers).map_err(DataPlaneError::WireGuard)
            })
            .await?;
            if !diff.is_empty() {
                tracing::debug!(
                    added = diff.add.len(),
                    updated = diff.update.len(),
                    removed = diff.remove.len(),
                    "peers"
                );
            }
        }
        if !target.endpoints.is_empty() && (everything || self.sized_for.as_ref() != Some(&target.endpoints))
        {
            self.size_mtu(&target.endpoints).await?;
        }

        let routes_changed = everything || old.routes != target.routes;
        let shrinking = routes_changed && !old.routes.iter().all(|r| target.routes.contains(r));
        if routes_changed {
            // Add first; what goes is removed after classify stopped marking it.
            let first: Vec<Cidr> = if shrinking {
                old.routes
                    .iter()
                    .chain(&target.routes)
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            } else {
                target.routes.clone()
            };
            self.routing.sync_routes(&first).await.map_err(DataPlaneError::Routing)?;
        }
        if everything || old.blocks != target.blocks {
            let (bpf, blocks) = (Arc::clone(&self.bpf), target.blocks.clone());
            blocking("bpf", move || lock(&bpf).sync_blocks(&blocks).map_err(DataPlaneError::Bpf)).await?;
        }
        if everything || old.destinations != target.destinations {
            let (bpf, destinations) = (Arc::clone(&self.bpf), target.destinations.clone());
            blocking("bpf", move || lock(&bpf).sync_destinations(&destinations).map_err(DataPlaneError::Bpf))
                .await?;
        }
        if shrinking {
            self.routing.sync_routes(&target.routes).await.map_err(DataPlaneError::Routing)?;
        }
        Ok(())
    }

    /// Mesh MTU = underlay MTU − overhead, and the MSS clamp to match.
    async fn size_mtu(&mut self, endpoints: &[IpAddr]) -> Result<(), DataPlaneError> {
        let underlay = self.routing.detect_underlay_mtu(endpoints).await.map_err(DataPlaneError::Routing)?;
        let (mtu, _) = self.routing.ensure_mesh_mtu(underlay.mtu).await.map_err(DataPlaneError::Routing)?;
        self.routing.ensure_mss_clamp(mtu).await.map_err(DataPlaneError::Routing)?;
        if mtu != self.mtu {
            tracing::info!(underlay = %underlay.interface, underlay_mtu = underlay.mtu, mtu, "mesh MTU set");
        }
        self.mtu = mtu;
        self.sized_for = Some(endpoints.to_vec());
        Ok(())
    }
}

/// Reads what the node's WireGuard device and BPF programs hold, for
/// observation; see [`NodeDataPlane::reader`]. Each read takes the
/// component's lock for the length of one read-back.
#[derive(Clone)]
pub struct DataPlaneReader {
    device: Arc<Mutex<WireGuardDevice>>,
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
        HelloFacts {
            public_key: self.keys.public_key(),
            staged_public_key: self.keys.staged_public_key(),
            backend: self.backend,
            mtu: self.mtu,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a blocking step (UAPI, bpf(2), files) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    component: &'static str,
    f: impl FnOnce() -> Result<T, DataPlaneError> + Send + 'static,
) -> Result<T, DataPlaneError> {
    tokio::task::spawn_blocking(f).await.map_err(|source| DataPlaneError::Task { component, source })?
}
