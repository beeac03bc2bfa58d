//! The stream client actor: owns the connection to the controller and
//! applies what comes down it.

use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vpblu_messages::wire::WireError;
use vpblu_messages::{
    Command, DigestKey, Downstream, Generation, Hello, NodeDesiredState, NodeName, PeerObservation,
    RotationPhase, RotationReport, StateDigest, Upstream, apply,
};
use vpblu_proto as pb;
use vpblu_runtime::Backoff;

use super::{DataPlane, Refusal, StreamSecurity, connection};

/// Reconnect delays: from up to 100 ms, doubling to up to 10 s, with full
/// jitter so a controller restart is not met by every daemon of the
/// cluster at the same instant.
pub const RECONNECT: Backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10) };

/// Tunables of the stream client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Reconnect delays. A stream that stayed up for `backoff.max` resets
    /// them to the start.
    pub backoff: Backoff,
    /// Limit for the TCP connect and for the controller's answer to Hello.
    pub connect_timeout: Duration,
    /// Largest message accepted from the controller (a full SyncState of a
    /// large cluster is several MiB).
    pub max_message_size: usize,
    /// Daemon version, for the Hello.
    pub version: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backoff: RECONNECT,
            connect_timeout: Duration::from_secs(5),
            max_message_size: 64 * 1024 * 1024,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What the stream client starts with.
#[derive(Debug)]
pub struct StreamClientArgs<D> {
    /// The node this daemon runs on.
    pub node: NodeName,
    /// The controller's stream endpoint, `https://HOST:PORT` (host
    /// network; `http://` only with [`StreamSecurity::insecure_dev`]). Several,
    /// separated by commas, are tried in turn: after each failed attempt or
    /// closed stream the next one is dialled (replicas without a Service in
    /// front, as in the lab; only the leader serves streams).
    pub endpoint: String,
    /// Where commands are applied.
    pub data_plane: D,
    /// Tunables.
    pub config: ClientConfig,
    /// TLS and token (no default: plaintext must be asked for by name).
    pub security: StreamSecurity,
}

/// Messages the stream client takes.
#[derive(Debug)]
pub enum StreamClientMsg {
    /// Open a stream (sent to itself at start and after each backoff).
    Connect,
    /// Stream `epoch` is open; acks and reports go to `outbound`.
    Connected {
        /// Which stream.
        epoch: u64,
        /// Its request half.
        outbound: mpsc::Sender<pb::DaemonMessage>,
    },
    /// A command arrived on stream `epoch` (the connection task casts
    /// these; a test may cast one to replay a command on the current stream).
    Received {
        /// Which stream.
        epoch: u64,
        /// The command's generation.
        generation: Generation,
        /// The command, or why it did not convert.
        body: Result<Downstream, WireError>,
    },
    /// Stream `epoch` ended or never opened.
    Disconnected {
        /// Which stream.
        epoch: u64,
        /// Why, for the log.
        reason: String,
    },
    /// Per-peer observations for the controller (dropped while disconnected).
    Observed(Vec<PeerObservation>),
    /// A rotation step's outcome for the controller (dropped while
    /// disconnected). With a data plane that reports
    /// ([`DataPlane::rotation_reports`]) only the report of the phase in
    /// force goes, once per stream, and again on the next stream.
    RotationReport(RotationReport),
    /// What the client knows, for status and tests.
    Status(RpcReplyPort<ClientStatus>),
}

/// The stream client's view of its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    /// Whether a stream is open.
    pub connected: bool,
    /// The current (or last) stream; a replayed `Received` must carry it.
    pub epoch: u64,
    /// Streams opened so far.
    pub connects: u64,
    /// The data plane's applied generation.
    pub applied: Generation,
    /// Commands ignored by the generation guard.
    pub ignored_stale: u64,
    /// KeepStates applied: whole states confirmed by their digest instead
    /// of sent.
    pub kept: u64,
    /// Commands refused or failed (acked with an error).
    pub refused: u64,
    /// Why the last stream ended or did not open (the controller's refusal,
    /// a TLS error, an unreadable token...); `None` before any.
    pub last_error: Option<String>,
}

/// The stream client actor, generic over its data plane. Empty: everything
/// lives in [`StreamClientState`].
pub struct StreamClient<D>(PhantomData<fn() -> D>);

impl<D> StreamClient<D> {
    /// The actor.
    pub fn new() -> Self {
        StreamClient(PhantomData)
    }
}

impl<D> Default for StreamClient<D> {
    fn default() -> Self {
        StreamClient::new()
    }
}

impl<D> fmt::Debug for StreamClient<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamClient")
    }
}

/// The running client.
#[derive(Debug)]
pub struct StreamClientState<D> {
    node: NodeName,
    /// Where to dial, tried in turn; never empty.
    endpoints: Vec<String>,
    /// Which endpoint the next attempt dials (modulo their number).
    next_endpoint: usize,
    config: ClientConfig,
    security: StreamSecurity,
    data_plane: D,
    /// What the data plane holds as far as the controller told us; `None`
    /// until the first full state since this client started.
    current: Option<NodeDesiredState>,
    /// The key `current` is digested under for the Hello and KeepState:
    /// random, drawn at start (see `vpblu_messages::digest`).
    digest_key: DigestKey,
    epoch: u64,
    /// The connection task of `epoch`, while it runs.
    task: Option<JoinHandle<()>>,
    /// The open stream's request half.
    outbound: Option<mpsc::Sender<pb::DaemonMessage>>,
    connected_at: Option<Instant>,
    attempt: u32,
    connects: u64,
    ignored_stale: u64,
    kept: u64,
    refused: u64,
    last_error: Option<String>,
    /// The data plane's rotation report, when it takes part in rotations.
    reports: Option<watch::Receiver<Option<RotationReport>>>,
    /// Casts each new report to the client.
    forwarder: Option<JoinHandle<()>>,
    /// The (rotation, phase) reports sent on the current stream.
    reported: BTreeSet<(u64, RotationPhase)>,
}

/// `a,b , c` → `["a", "b", "c"]`; an empty list stays one (empty)
/// endpoint so the connect error names it.
fn split_endpoints(text: &str) -> Vec<String> {
    let endpoints: Vec<String> =
        text.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect();
    if endpoints.is_empty() { vec![text.to_owned()] } else { endpoints }
}

impl<D: DataPlane> StreamClientState<D> {
    fn connect(&mut self, myself: &ActorRef<StreamClientMsg>) {
        if self.task.is_some() {
            return; // a stream is open or opening
        }
        self.epoch += 1;
        let facts = self.data_plane.hello_facts();
        let hello = Upstream::Hello(Hello {
            node: self.node.clone(),
            public_key: facts.public_key,
            staged_public_key: facts.staged_public_key,
            applied_generation: self.data_plane.applied_generation(),
            backend: facts.backend,
            mtu: facts.mtu,
            version: self.config.version.clone(),
            digest_key: Some(self.digest_key),
            held: self.current.as_ref().map(|state| state.digest(&self.digest_key)),
        });
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        tracing::debug!(epoch = self.epoch, endpoint = %endpoint, "connecting to the controller");
        self.task = Some(vpblu_runtime::spawn(connection::run(
            myself.clone(),
            self.epoch,
            endpoint,
            pb::DaemonMessage::from(&hello),
            self.config.clone(),
            self.security.clone(),
        )));
    }

    /// Forgets the current stream and schedules the next attempt.
    fn disconnected(&mut self, myself: &ActorRef<StreamClientMsg>, reason: &str) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.outbound = None;
        self.last_error = Some(reason.to_owned());
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        if self.connected_at.take().is_some_and(|at| at.elapsed() >= self.config.backoff.max) {
            self.attempt = 0;
        }
        let delay = self.config.backoff.full_jitter(self.attempt, &mut rand::rng());
        self.attempt = self.attempt.saturating_add(1);
        tracing::warn!(
            epoch = self.epoch,
            %reason,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "controller stream down; the data plane keeps its last state"
        );
        myself.send_after(delay, || StreamClientMsg::Connect);
    }

    fn send(&mut self, myself: &ActorRef<StreamClientMsg>, message: &Upstream) {
        let Some(outbound) = &self.outbound else {
            return;
        };
        if let Err(e) = outbound.try_send(pb::DaemonMessage::from(message)) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "the controller is not reading the stream",
                mpsc::error::TrySendError::Closed(_) => "the stream closed",
            };
            self.disconnected(myself, reason);
        }
    }

    /// Checks a state command and applies it through the data plane.
    /// A targeted command is checked by what it touches and applied to the
    /// current state in place; only one the quick check cannot vouch for
    /// is tried on a copy and validated whole.
    async fn apply(&mut self, generation: Generation, command: Command) -> Result<(), Refusal> {
        if let Command::KeepState(digest) = command {
            return self.keep(generation, digest).await;
        }
        match (&command, &self.current) {
            (Command::SyncState(full), _) if full.node != self.node => {
                return Err(Refusal::OtherNode { node: self.node.clone(), got: full.node.clone() });
            }
            (Command::SyncState(full), _) => full.validate().map_err(Refusal::Invalid)?,
            (_, None) => return Err(Refusal::NoBaseState { kind: command.kind() }),
            (_, Some(current)) if !current.stays_valid_after(&command) => {
                let mut next = current.clone();
                apply(&mut next, &command);
                next.validate().map_err(Refusal::Invalid)?;
            }
            (_, Some(_)) => {}
        }
        self.data_plane.apply(generation, &command).await.map_err(|e| Refusal::DataPlane(Box::new(e)))?;
        match (command, &mut self.current) {
            (Command::SyncState(full), current) => *current = Some(full),
            (command, Some(current)) => apply(current, &command),
            (_, None) => {} // refused above
        }
        Ok(())
    }

    /// The controller says the node's desired state is the one held here
    /// (by its digest under this client's key): checks that, then applies
    /// the held state again, as a full state would be, so a resync still
    /// repairs a data plane changed behind the daemon's back.
    async fn keep(&mut self, generation: Generation, digest: StateDigest) -> Result<(), Refusal> {
        let Some(current) = &self.current else {
            return Err(Refusal::NoBaseState { kind: "KeepState" });
        };
        let held = current.digest(&self.digest_key);
        if held != digest {
            return Err(Refusal::StateDiffers { held, sent: digest });
        }
        let again = Command::SyncState(current.clone());
        self.data_plane.apply(generation, &again).await.map_err(|e| Refusal::DataPlane(Box::new(e)))?;
        self.kept += 1;
        Ok(())
    }

    async fn received(
        &mut self,
        myself: &ActorRef<StreamClientMsg>,
        generation: Generation,
        body: Result<Downstream, WireError>,
    ) {
        let applied = self.data_plane.applied_generation();
        if generation <= applied {
            // Not acked: see the module docs.
            self.ignored_stale += 1;
            tracing::info!(%generation, %applied, "ignoring a command no newer than what is applied");
            return;
        }
        let outcome = match body {
            Err(e) => Err(Refusal::Malformed(e)),
            Ok(Downstream::State(command)) => {
                let kind = command.kind();
                let outcome = self.apply(generation, command).await;
                tracing::debug!(%generation, kind, ok = outcome.is_ok(), "command handled");
                outcome
            }
        };
        let result = outcome.map_err(|refusal| {
            self.refused += 1;
            tracing::warn!(%generation, error = %refusal, "command not applied");
            refusal.to_string()
        });
        self.send(myself, &Upstream::Ack { generation, result });
        self.flush_report(myself);
    }

    /// Sends `report` to the controller, once per stream and only while
    /// its phase is the one in force (a report of a data plane that
    /// reports); any other report as it comes.
    fn report(&mut self, myself: &ActorRef<StreamClientMsg>, report: RotationReport) {
        if self.outbound.is_none() {
            return;
        }
        if self.reports.is_some() {
            let in_force = self.current.as_ref().and_then(|s| s.rotation.as_ref()).map(|r| (r.id, r.phase));
            let step = (report.rotation_id, report.phase);
            if in_force != Some(step) || !self.reported.insert(step) {
                return;
            }
            tracing::info!(rotation = step.0, phase = %step.1, ok = report.result.is_ok(), "rotation report sent");
        }
        self.send(myself, &Upstream::RotationReport(report));
    }

    /// Sends the data plane's latest report if this stream has not had it
    /// (a new stream, so a new controller leader hears it; or a report
    /// that arrived before the command that put its phase in force).
    fn flush_report(&mut self, myself: &ActorRef<StreamClientMsg>) {
        let latest = self.reports.as_ref().and_then(|r| r.borrow().clone());
        if let Some(report) = latest {
            self.report(myself, report);
        }
    }

    fn status(&self) -> ClientStatus {
        ClientStatus {
            connected: self.outbound.is_some(),
            epoch: self.epoch,
            connects: self.connects,
            applied: self.data_plane.applied_generation(),
            ignored_stale: self.ignored_stale,
            kept: self.kept,
            refused: self.refused,
            last_error: self.last_error.clone(),
        }
    }
}

impl<D: DataPlane> Actor for StreamClient<D> {
    type Msg = StreamClientMsg;
    type State = StreamClientState<D>;
    type Arguments = StreamClientArgs<D>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: StreamClientArgs<D>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = StreamClientState {
            node: args.node,
            endpoints: split_endpoints(&args.endpoint),
            next_endpoint: 0,
            config: args.config,
            security: args.security,
            data_plane: args.data_plane,
            current: None,
            digest_key: DigestKey::from_bytes(rand::random()),
            epoch: 0,
            task: None,
            outbound: None,
            connected_at: None,
            attempt: 0,
            connects: 0,
            ignored_stale: 0,
            kept: 0,
            refused: 0,
            last_error: None,
            reports: None,
            forwarder: None,
            reported: BTreeSet::new(),
        };
        if let Some(mut reports) = state.data_plane.rotation_reports() {
            state.reports = Some(reports.clone());
            let myself = myself.clone();
            state.forwarder = Some(vpblu_runtime::spawn(async move {
                while reports.changed().await.is_ok() {
                    let report = reports.borrow_and_update().clone();
                    if let Some(report) = report
                        && myself.cast(StreamClientMsg::RotationReport(report)).is_err()
                    {
                        break;
                    }
                }
            }));
        }
        state.connect(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // ractor hands a stopped actor's state to its supervisor: end the
        // request half now rather than when that drops it.
        state.outbound = None;
        if let Some(task) = state.task.take() {
            task.abort();
        }
        if let Some(forwarder) = state.forwarder.take() {
            forwarder.abort();
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
            StreamClientMsg::Connect => state.connect(&myself),
            StreamClientMsg::Connected { epoch, outbound } => {
                if epoch == state.epoch && state.task.is_some() {
                    tracing::info!(epoch, "controller stream open");
                    state.outbound = Some(outbound);
                    state.connected_at = Some(Instant::now());
                    state.connects += 1;
                    state.reported.clear();
                    state.flush_report(&myself);
                }
            }
            StreamClientMsg::Received { epoch, generation, body } => {
                if epoch == state.epoch && state.outbound.is_some() {
                    state.received(&myself, generation, body).await;
                } else {
                    // A closed stream's leftovers: its commands were never
                    // acked, and the next stream starts with a full state.
                    tracing::debug!(epoch, %generation, "dropping a command from a closed stream");
                }
            }
            StreamClientMsg::Disconnected { epoch, reason } => {
                if epoch == state.epoch && state.task.is_some() {
                    state.disconnected(&myself, &reason);
                }
            }
            StreamClientMsg::Observed(peers) => state.send(&myself, &Upstream::Observed(peers)),
            StreamClientMsg::RotationReport(report) => state.report(&myself, report),
            StreamClientMsg::Status(reply) => {
                let _caller_gone = reply.send(state.status());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_endpoints;

    #[test]
    fn several_endpoints_are_split_and_trimmed() {
        assert_eq!(split_endpoints("https://a:1"), ["https://a:1"]);
        assert_eq!(split_endpoints("https://a:1, https://b:2,"), ["https://a:1", "https://b:2"]);
        assert_eq!(split_endpoints(""), [""]);
    }
}
