//! The BPF-map actor: owns the loaded programs, their links and pinned
//! maps, and the watcher that attaches classify to pod interfaces.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::RpcReplyPort;

use super::Part;
use crate::bpf::{AttachMode, Dataplane, DstEntry, Verdict};
use crate::data_plane::{DataPlaneError, blocking, lock};
use crate::pod_interfaces::PodInterfaces;
use vpblu_messages::{BlockRule, Cidr};

type Reply<T> = RpcReplyPort<Result<T, DataPlaneError>>;

/// What the BPF-map actor opens, and re-adopts after a restart.
#[derive(Debug)]
pub struct BpfOpener {
    /// Where the maps and links are pinned.
    pub pin_dir: PathBuf,
    /// How programs attach.
    pub mode: AttachMode,
    /// The fwmark classify sets.
    pub mark: u32,
    /// Strict mode.
    pub strict: bool,
    /// The mesh device (deliver attaches to it).
    pub interface: String,
    /// The lane device (deliver attaches to it too).
    pub lane_interface: Option<String>,
    /// The pod interface patterns classify attaches to.
    pub pod_interfaces: Vec<String>,
    /// How often the pod interfaces are listed again.
    pub pod_interface_resync: Duration,
}

/// What the BPF-map actor does.
#[derive(Debug)]
pub enum BpfMsg {
    /// Makes the block rules exactly these, never opening a pair that
    /// stays blocked.
    SyncBlocks(Vec<BlockRule>, Reply<()>),
    /// Makes classify's destinations exactly these.
    SyncDestinations(Vec<(Cidr, DstEntry)>, Reply<()>),
    /// Packets per verdict since the pinned maps were created.
    Counters(Reply<BTreeMap<Verdict, u64>>),
    /// The interfaces classify is attached to now.
    PodInterfaces(RpcReplyPort<Vec<String>>),
}

/// The programs, maps and pod interface watcher.
#[derive(Debug)]
pub struct BpfPart {
    dataplane: Arc<Mutex<Dataplane>>,
    pods: PodInterfaces,
}

impl Part for BpfPart {
    type Msg = BpfMsg;
    type Opener = BpfOpener;
    const NAME: &'static str = "bpf";

    /// Loads the programs (reusing pinned maps), writes the mark and
    /// strict mode, attaches deliver to the mesh device and the lane, and
    /// starts watching pod interfaces.
    async fn open(opener: &BpfOpener) -> Result<Self, DataPlaneError> {
        let (pin_dir, mode, mark, strict) = (opener.pin_dir.clone(), opener.mode, opener.mark, opener.strict);
        let (interface, lane) = (opener.interface.clone(), opener.lane_interface.clone());
        let dataplane = blocking("bpf", move || {
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
        .await?;
        let dataplane = Arc::new(Mutex::new(dataplane));
        let pods = PodInterfaces::start(
            opener.pod_interfaces.clone(),
            opener.interface.clone(),
            Arc::clone(&dataplane),
            opener.pod_interface_resync,
        )
        .await
        .map_err(DataPlaneError::PodInterfaces)?;
        Ok(BpfPart { dataplane, pods })
    }

    async fn handle(&mut self, msg: BpfMsg) {
        match msg {
            BpfMsg::SyncBlocks(rules, reply) => {
                let result = self.on_maps(move |bpf| bpf.sync_blocks(&rules).map(|_| ())).await;
                let _ = reply.send(result);
            }
            BpfMsg::SyncDestinations(entries, reply) => {
                let result = self.on_maps(move |bpf| bpf.sync_destinations(&entries).map(|_| ())).await;
                let _ = reply.send(result);
            }
            BpfMsg::Counters(reply) => {
                let _ = reply.send(self.on_maps(|bpf| bpf.counters()).await);
            }
            BpfMsg::PodInterfaces(reply) => {
                let _ = reply.send(self.pods.attached());
            }
        }
    }
}

impl BpfPart {
    /// Runs `f` on the programs and maps on a blocking thread (bpf(2)).
    async fn on_maps<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Dataplane) -> Result<T, crate::bpf::BpfError> + Send + 'static,
    ) -> Result<T, DataPlaneError> {
        let dataplane = Arc::clone(&self.dataplane);
        blocking("bpf", move || f(&mut lock(&dataplane)).map_err(DataPlaneError::Bpf)).await
    }
}
