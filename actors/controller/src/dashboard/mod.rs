//! The web dashboard on `--dashboard-addr`: the mesh at a glance, read-only.
//!
//! Every replica serves it, leader or standby, so the page can say which it
//! is: only the leader has the daemons' streams, and so the peer matrix
//! (handshakes and counters per peer, from their Observed messages); a
//! standby's page says it stands by and names the leader instead of
//! showing an empty or old matrix. Everything else comes from the
//! informers' caches (warm on both) and two reads of its own (the Lease and
//! recent Events, see [`api_reads`]), made into one [`vpblu_view::MeshView`].
//!
//! A view is rebuilt once a second while a page or an event stream is
//! open, and on demand for a JSON request; nobody watching, nothing is
//! built (the matrix grows with the square of the nodes).

pub mod api_reads;
mod peers;
mod routes;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use vpblu_messages::NodeName;
use vpblu_runtime::{ChildSpec, Forward, broadcast_messages, forward};
use vpblu_view::{Inputs, LinkView, MeshView, Served};

use crate::Args;
use crate::informers::Caches;
use crate::stream::{Desired, StreamEvent};
use api_reads::{ApiRead, LeaseRef};
use peers::PeerBook;
use timeline::Timeline;

/// How often an open page gets a new view.
const TICK: Duration = Duration::from_secs(1);

/// Events are listed every this many reads (they change less than the
/// Lease, and there are many).
const EVENTS_EVERY: u64 = 5;

/// How long a stopping dashboard waits for its connections to close.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The dashboard actor: serves the page and keeps what the view needs
/// beyond the caches (the peer matrix, the rotation timeline, the Lease,
/// Events).
#[derive(Debug, Default)]
pub struct Dashboard;

impl Dashboard {
    /// The supervised child, from the controller's flags and the tree's
    /// shared parts.
    pub fn child(
        args: &Args,
        client: &Client,
        caches: &Caches,
        events: &broadcast::Sender<StreamEvent>,
        desired: &Desired,
        leading: &watch::Receiver<bool>,
    ) -> ChildSpec {
        let args = DashboardArgs {
            addr: args.dashboard_addr,
            client: client.clone(),
            caches: caches.clone(),
            events: events.clone(),
            desired: desired.clone(),
            leading: leading.clone(),
            lease: LeaseRef { namespace: args.lease_namespace.clone(), name: args.lease_name.clone() },
            identity: args.identity.clone(),
        };
        ChildSpec::new("dashboard", move || (Dashboard, args.clone()))
    }
}

/// What the dashboard reads.
#[derive(Clone)]
pub struct DashboardArgs {
    /// Where to listen.
    pub addr: SocketAddr,
    /// For the Lease and Events.
    pub client: Client,
    /// The informers' caches.
    pub caches: Caches,
    /// The streams' events (the leader's daemons).
    pub events: broadcast::Sender<StreamEvent>,
    /// What each node's device should hold (the peers' endpoints).
    pub desired: Desired,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The leader Lease.
    pub lease: LeaseRef,
    /// This replica's identity in it.
    pub identity: String,
}

// `kube::Client` has no Debug.
impl std::fmt::Debug for DashboardArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardArgs")
            .field("addr", &self.addr)
            .field("lease", &self.lease)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Messages the dashboard takes.
#[derive(Debug)]
pub enum DashboardMsg {
    /// A daemon's Hello or Observed, or a stream closing.
    Stream(StreamEvent),
    /// The events channel dropped this many events (the matrix catches up
    /// with the next Observed of each node).
    Lagged(u64),
    /// Once a second: note rotation phases; rebuild when someone watches.
    Tick,
    /// A request wants a view built now.
    Refresh,
    /// A read of the Lease (and maybe Events) finished.
    Read(Box<ApiRead>),
}

/// The running dashboard.
#[derive(Debug)]
pub struct DashboardState {
    args: DashboardArgs,
    view: Arc<watch::Sender<Arc<str>>>,
    book: PeerBook,
    timeline: Timeline,
    /// The VpbluNode cache's event count the timeline last observed.
    timeline_events: Option<u64>,
    lease: Option<Lease>,
    events: Vec<Event>,
    notes: ReadNotes,
    reads: u64,
    reading: bool,
    was_leading: bool,
    stopping: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    _events: Forward,
    _tick: JoinHandle<()>,
}

/// What the last reads could not read, said in the view.
#[derive(Debug, Default)]
struct ReadNotes {
    lease: Option<String>,
    events: Option<String>,
}

impl Actor for Dashboard {
    type Msg = DashboardMsg;
    type State = DashboardState;
    type Arguments = DashboardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DashboardArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listener = tokio::net::TcpListener::bind(args.addr).await.map_err(|e| {
            format!("cannot listen on {} for the dashboard: {e} (pick another --dashboard-addr)", args.addr)
        })?;
        tracing::info!(addr = %args.addr, "serving the dashboard");
        let view = Arc::new(watch::Sender::new(Arc::<str>::from("")));
        let (stopping, stopping_rx) = watch::channel(false);
        let served = routes::Served { view: view.clone(), builder: myself.clone(), stopping: stopping_rx };
        let (stop, stopped) = oneshot::channel::<()>();
        let failed = myself.clone();
        let server = vpblu_runtime::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) =
                axum::serve(listener, routes::router(served)).with_graceful_shutdown(shutdown).await
            {
                tracing::error!(error = %e, "dashboard server failed");
                failed.stop(Some(format!("dashboard server failed: {e}")));
            }
        });
        let stream_events = broadcast_messages(args.events.subscribe()).map(|event| match event {
            Ok(event) => DashboardMsg::Stream(event),
            Err(lost) => DashboardMsg::Lagged(lost),
        });
        let was_leading = *args.leading.borrow();
        Ok(DashboardState {
            _events: forward(stream_events, myself.clone()),
            _tick: myself.send_interval(TICK, || DashboardMsg::Tick),
            was_leading,
            args,
            view,
            book: PeerBook::default(),
            timeline: Timeline::default(),
            timeline_events: None,
            lease: None,
            events: Vec::new(),
            notes: ReadNotes::default(),
            reads: 0,
            reading: false,
            stopping,
            stop: Some(stop),
            server,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state._tick.abort();
        state.stopping.send_replace(true);
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_GRACE, &mut state.server).await.is_err() {
            state.server.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DashboardMsg::Stream(event) => state.book.record(event, Instant::now()),
            DashboardMsg::Lagged(lost) => {
                tracing::debug!(lost, "the dashboard fell behind the stream events");
            }
            DashboardMsg::Tick => {
                state.follow_leadership();
                // Phases change only with a VpbluNode: an unchanged cache
                // is not walked (5000 nodes every second).
                let events = state.args.caches.vpblu_nodes.events();
                if state.timeline_events != Some(events) {
                    state.timeline_events = Some(events);
                    let nodes = state.args.caches.vpblu_nodes.shared();
                    state.timeline.observe(nodes.iter().map(|n| n.as_ref()), &Timestamp::now().to_string());
                }
                // Someone has a page or an event stream open.
                if state.view.receiver_count() > 0 {
                    state.read(&myself);
                }
            }
            // A read running now publishes when it ends, soon enough.
            DashboardMsg::Refresh => state.read(&myself),
            DashboardMsg::Read(read) => {
                state.reading = false;
                state.take(*read);
                state.publish();
            }
        }
        Ok(())
    }
}

impl DashboardState {
    /// A replica that stops leading hears no daemon any more: forget what
    /// it heard rather than show it as current.
    fn follow_leadership(&mut self) {
        let leading = *self.args.leading.borrow();
        if self.was_leading && !leading {
            self.book.clear();
        }
        self.was_leading = leading;
    }

    /// Starts a read of the Lease (and every few reads the Events) unless
    /// one runs; its result rebuilds the view.
    fn read(&mut self, myself: &ActorRef<DashboardMsg>) {
        if self.reading {
            return;
        }
        self.reading = true;
        let with_events = self.reads.is_multiple_of(EVENTS_EVERY);
        self.reads += 1;
        let (client, lease, myself) = (self.args.client.clone(), self.args.lease.clone(), myself.clone());
        vpblu_runtime::spawn(async move {
            let read = api_reads::read(client, lease, with_events).await;
            let _stopped = myself.cast(DashboardMsg::Read(Box::new(read)));
        });
    }

    fn take(&mut self, read: ApiRead) {
        match read.lease {
            Ok(lease) => {
                self.lease = lease;
                self.notes.lease = None;
            }
            Err(e) => self.notes.lease = Some(e),
        }
        match read.events {
            Some(Ok(events)) => {
                self.events = events;
                self.notes.events = None;
            }
            Some(Err(e)) => {
                self.events.clear();
                self.notes.events = Some(e);
            }
            None => {}
        }
    }

    fn publish(&mut self) {
        let view = self.build();
        match serde_json::to_string(&view) {
            Ok(json) => {
                self.view.send_replace(Arc::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize the dashboard's view"),
        }
    }

    /// The matrix, each cell with the endpoint the reporting node was told
    /// to use for the peer (VpbluNode status does not carry it).
    fn links(&self) -> Vec<LinkView> {
        let mut links = self.book.links(Instant::now());
        for link in &mut links {
            let (Ok(from), Ok(to)) = (link.from.parse::<NodeName>(), link.to.parse::<NodeName>()) else {
                continue;
            };
            let state = self.args.desired.get_shared(&from);
            link.endpoint = state.and_then(|s| s.peers.get(&to).map(|p| p.endpoint.to_string()));
        }
        links
    }

    fn build(&self) -> MeshView {
        let caches = &self.args.caches;
        let leading = *self.args.leading.borrow();
        let (nodes, tunnels, routes) =
            (caches.vpblu_nodes.shared(), caches.tunnel_policies.shared(), caches.route_policies.shared());
        let (blocks, rotations) = (caches.block_policies.shared(), caches.rotation_policies.shared());
        let mut notes: Vec<String> =
            [&self.notes.lease, &self.notes.events].into_iter().flatten().cloned().collect();
        let unsynced = caches.unsynced();
        if !unsynced.is_empty() {
            notes
                .push(format!("still listing {unsynced:?} from the API server: this view may be incomplete"));
        }
        if !leading {
            notes.push(format!(
                "{} is the standby: only the leader has the daemons' streams, so no per-peer matrix here",
                self.args.identity
            ));
        }
        vpblu_view::build(Inputs {
            now: Timestamp::now(),
            served: Served { by: Some(self.args.identity.clone()), leading },
            lease_name: self.args.lease.display(),
            lease: self.lease.as_ref(),
            vpblu_nodes: nodes.iter().map(|n| n.as_ref()).collect(),
            tunnel_policies: tunnels.iter().map(|p| p.as_ref()).collect(),
            route_policies: routes.iter().map(|p| p.as_ref()).collect(),
            block_policies: blocks.iter().map(|p| p.as_ref()).collect(),
            rotation_policies: rotations.iter().map(|p| p.as_ref()).collect(),
            events: self.events.iter().collect(),
            links: if leading { self.links() } else { Vec::new() },
            daemons: self.book.daemons(),
            rotation_history: self.timeline.steps(),
            notes,
        })
    }
}
