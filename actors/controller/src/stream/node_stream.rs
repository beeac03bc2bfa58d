//! One connected daemon: its outbound half, its generations, what it was
//! last sent, and which of those it has acked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tonic::Status;
use vpblu_messages::wire::WireError;
use vpblu_messages::{
    Command, DigestKey, Downstream, Envelope, Generation, Hello, NodeDesiredState, NodeName, StateDigest,
    Upstream, diff,
};
use vpblu_proto as pb;

use super::encode::PeerEncodings;
use super::refusal_events::{CLOSED, Regarding};
use super::rejection::is_too_large;
use super::{Desired, RefusalEvents, Rejection, StreamConfig, StreamEvent, StreamMetrics};

/// The daemon's half of the stream.
pub(crate) type Inbound = BoxStream<'static, Result<pb::DaemonMessage, Status>>;
/// The controller's half: what feeds the tonic response stream.
pub(crate) type Outbound = mpsc::Sender<Result<Bytes, Status>>;

/// How long a closing status may wait for room in a full outbound queue.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages a node stream takes.
#[derive(Debug)]
pub enum NodeStreamMsg {
    /// The node's entry in the desired store changed: send the difference
    /// from what was last sent (all of it when nothing was sent yet; a new
    /// stream sends itself this first).
    Changed,
    /// Send the whole desired state again (periodic resync, or a retry after
    /// an error ack).
    Resync,
    /// A message the daemon sent, already converted.
    Received(Upstream),
    /// A message from the daemon that is not valid on the wire.
    Malformed(WireError),
    /// The daemon's half ended: `None` when it closed it, the status on a
    /// transport error or an oversized message.
    InboundEnded(Option<Status>),
    /// A newer stream of the same node took over: close this one.
    Replaced,
    /// This stream's ack tracking, for status.
    Status(RpcReplyPort<NodeStreamStatus>),
}

/// A command the daemon refused or failed to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckError {
    /// The command's generation.
    pub generation: Generation,
    /// What the daemon said.
    pub error: String,
}

/// What a node stream knows about its daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStreamStatus {
    /// The Hello the stream opened with.
    pub hello: Hello,
    /// The newest generation sent on this stream.
    pub last_sent: Option<Generation>,
    /// Generations sent and not acked yet, oldest first.
    pub unacked: Vec<Generation>,
    /// The newest generation the daemon acked as applied.
    pub last_acked: Option<Generation>,
    /// The newest error ack; the daemon has recovered once `last_acked`
    /// is past its generation.
    pub last_error: Option<AckError>,
}

/// The actor. Empty: everything lives in [`NodeStreamState`].
#[derive(Debug, Default)]
pub(crate) struct NodeStream;

/// What a node stream starts with.
pub(crate) struct NodeStreamArgs {
    pub hello: Hello,
    pub inbound: Inbound,
    pub outbound: Outbound,
    pub desired: Desired,
    pub config: StreamConfig,
    pub metrics: StreamMetrics,
    pub events: broadcast::Sender<StreamEvent>,
    pub refusals: RefusalEvents,
    pub encodings: Arc<PeerEncodings>,
}

/// The running stream of one node.
pub(crate) struct NodeStreamState {
    node: NodeName,
    hello: Hello,
    /// Taken in `post_stop`: ractor hands a stopped actor's state to its
    /// supervisor, and the response stream ends only when this drops.
    outbound: Option<Outbound>,
    desired: Desired,
    config: StreamConfig,
    metrics: StreamMetrics,
    events: broadcast::Sender<StreamEvent>,
    refusals: RefusalEvents,
    encodings: Arc<PeerEncodings>,
    /// Shared with the desired store while it holds the same state.
    last_sent: Option<Arc<NodeDesiredState>>,
    last_sent_generation: Option<Generation>,
    /// The generation of the newest SyncState sent: an error for anything
    /// older is already repaired.
    last_full_sync: Option<Generation>,
    /// The KeepStates sent and not acked yet. A refusal of one means the
    /// daemon holds another state, and a SyncState goes at once. Neither
    /// they nor their acks go to the status writer: a state confirmed
    /// without a change moves no generation in a node's status (as a
    /// resync moves no `observedGeneration` in Kubernetes).
    keeps: BTreeSet<Generation>,
    /// The digest of a desired state under the daemon's key, so a resync
    /// of an unchanged state does not walk its peers again. The state is
    /// held weakly: a stream must not keep an old state's peers alive (and
    /// the allocation a `Weak` keeps means no other state can take its
    /// address).
    digest: Option<(Weak<NodeDesiredState>, StateDigest)>,
    unacked: BTreeSet<Generation>,
    /// When each unacked generation was sent, for the convergence histogram.
    sent_at: BTreeMap<Generation, Instant>,
    last_acked: Option<Generation>,
    last_error: Option<AckError>,
    /// An error ack means the daemon may not hold `last_sent`: the next
    /// update is a full SyncState rather than a diff.
    needs_full_sync: bool,
    retry_scheduled: bool,
    reader: JoinHandle<()>,
    resync: JoinHandle<()>,
}

/// The stream can no longer be written: stop.
struct Closed;

/// The name of an upstream message's kind, for errors and logs.
pub(crate) fn upstream_kind(message: &Upstream) -> &'static str {
    match message {
        Upstream::Hello(_) => "Hello",
        Upstream::Ack { .. } => "Ack",
        Upstream::Observed(_) => "Observed",
        Upstream::RotationReport(_) => "RotationReport",
    }
}

/// Reads the daemon's half and casts each message into the stream actor;
/// ends with the stream, at the first malformed message, or when the actor
/// is gone.
async fn read_inbound(mut inbound: Inbound, stream: ActorRef<NodeStreamMsg>) {
    loop {
        let (msg, last) = match inbound.next().await {
            Some(Ok(raw)) => match Upstream::try_from(&raw) {
                Ok(message) => (NodeStreamMsg::Received(message), false),
                Err(e) => (NodeStreamMsg::Malformed(e), true),
            },
            Some(Err(status)) => (NodeStreamMsg::InboundEnded(Some(status)), true),
            None => (NodeStreamMsg::InboundEnded(None), true),
        };
        if stream.cast(msg).is_err() || last {
            return;
        }
    }
}

/// `desired`'s digest under `key`, from `cache` when that holds the same
/// state (a `Weak` keeps its allocation, so no other state can have taken
/// its address), else computed and cached.
fn digest_of(
    cache: &mut Option<(Weak<NodeDesiredState>, StateDigest)>,
    desired: &Arc<NodeDesiredState>,
    key: &DigestKey,
) -> StateDigest {
    match cache {
        Some((state, digest)) if std::ptr::eq(state.as_ptr(), Arc::as_ptr(desired)) => *digest,
        _ => {
            let digest = desired.digest(key);
            *cache = Some((Arc::downgrade(desired), digest));
            digest
        }
    }
}

/// [`NodeStreamState::whole`], given what it reads: `desired`, what was last
/// sent, the digest the Hello said the daemon holds, the daemon's key
/// (`None`: no key, or a full state is due), and how to digest `desired`
/// under that key (called at most once).
fn whole_command(
    desired: &Arc<NodeDesiredState>,
    last_sent: Option<&Arc<NodeDesiredState>>,
    held: Option<StateDigest>,
    key: Option<DigestKey>,
    digest: impl FnOnce(&DigestKey) -> StateDigest,
) -> Command {
    let keep = key.and_then(|key| match last_sent {
        Some(last) if Arc::ptr_eq(last, desired) || last == desired => Some(digest(&key)),
        // A change not sent yet: the daemon holds `last`, not `desired`.
        Some(_) => None,
        None => held.filter(|held| *held == digest(&key)),
    });
    match keep {
        Some(digest) => Command::KeepState(digest),
        None => Command::SyncState(NodeDesiredState::clone(desired)),
    }
}

/// Above this many targeted commands for one change, a full state is sent
/// instead.
const MAX_TARGETED_COMMANDS: usize = 16;

impl NodeStreamState {
    /// Sends what changed in the node's desired state since it was last
    /// sent, or all of it when `full` (or after an error ack). Sends
    /// nothing while the store has no entry for the node.
    fn update(&mut self, full: bool) -> Result<(), Closed> {
        let Some(desired) = self.desired.get_shared(&self.node) else {
            tracing::debug!(node = %self.node, "no desired state for this node yet; sending nothing");
            return Ok(());
        };
        let commands = match &self.last_sent {
            Some(last) if !full && !self.needs_full_sync => {
                if Arc::ptr_eq(last, &desired) {
                    return Ok(());
                }
                diff(last, &desired)
            }
            Some(_) | None => vec![self.whole(&desired)],
        };
        // A change that touches many peers at once (a FullMesh policy over
        // a large cluster) goes as one full state: one converge on the node
        // instead of one per peer, and one message instead of hundreds.
        let commands = if commands.len() > MAX_TARGETED_COMMANDS {
            vec![Command::SyncState(NodeDesiredState::clone(&desired))]
        } else {
            commands
        };
        if matches!(commands.first(), Some(Command::SyncState(_))) {
            self.needs_full_sync = false;
        }
        self.last_sent = Some(desired);
        let confirms_only = matches!(commands.as_slice(), [Command::KeepState(_)]);
        for command in commands {
            self.send(command)?;
        }
        if let Some(generation) = self.last_sent_generation.filter(|_| !confirms_only) {
            // The status writer shows how far behind the node is.
            let _no_subscriber = self.events.send(StreamEvent::Sent(self.node.clone(), generation));
        }
        Ok(())
    }

    /// The command that gives the daemon all of `desired`: a KeepState when
    /// the daemon holds it already (on connect, when its Hello showed that
    /// state's digest; on a resync, when `desired` is what was last sent:
    /// the daemon refuses a digest not its own), a SyncState otherwise (no
    /// digest key from the daemon, an error ack since, or a resync that
    /// meets a change not sent yet).
    fn whole(&mut self, desired: &Arc<NodeDesiredState>) -> Command {
        let key = self.hello.digest_key.filter(|_| !self.needs_full_sync);
        let cache = &mut self.digest;
        whole_command(desired, self.last_sent.as_ref(), self.hello.held, key, |key| {
            digest_of(cache, desired, key)
        })
    }

    fn send(&mut self, command: Command) -> Result<(), Closed> {
        let generation = self.desired.next_generation(&self.node, self.hello.applied_generation);
        let kind = command.kind();
        let full = matches!(command, Command::SyncState(_));
        let keep = matches!(command, Command::KeepState(_));
        let envelope = Envelope { generation, body: Downstream::State(command) };
        let Some(outbound) = &self.outbound else {
            return Err(Closed);
        };
        match outbound.try_send(Ok(self.encodings.frame(&envelope))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::info!(node = %self.node, "daemon stream gone");
                return Err(Closed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    node = %self.node,
                    queued = self.config.outbound_capacity,
                    "daemon is not reading its stream; closing it (it reconnects and gets a full state)"
                );
                self.close(Status::resource_exhausted("the daemon did not read its stream; reconnect"));
                return Err(Closed);
            }
        }
        tracing::debug!(node = %self.node, %generation, kind, "sent");
        self.last_sent_generation = Some(generation);
        if full {
            self.last_full_sync = Some(generation);
        }
        if keep {
            self.keeps.insert(generation);
        }
        self.unacked.insert(generation);
        self.sent_at.insert(generation, Instant::now());
        if self.unacked.len() > self.config.max_unacked {
            self.reject(Rejection::Unacked(self.unacked.len()));
            return Err(Closed);
        }
        Ok(())
    }

    /// Ends the stream with `status`. The status may have to wait for room
    /// in the queue, so a short task delivers it; the actor stops anyway.
    fn close(&self, status: Status) {
        let Some(outbound) = self.outbound.clone() else {
            return;
        };
        vpblu_runtime::spawn(async move {
            let _gone = tokio::time::timeout(CLOSE_TIMEOUT, outbound.send(Err(status))).await;
        });
    }

    fn reject(&self, rejection: Rejection) {
        tracing::warn!(node = %self.node, reason = rejection.reason().as_str(), error = %rejection, "closing a daemon stream");
        self.metrics.rejected(rejection.reason());
        self.refusals.record(Regarding::Node(self.node.clone()), CLOSED, &rejection, None);
        self.close(rejection.status());
    }

    fn ack(&mut self, myself: &ActorRef<NodeStreamMsg>, generation: Generation, result: Result<(), String>) {
        let sent_at = self.sent_at.remove(&generation);
        let kept = self.keeps.remove(&generation);
        if !kept {
            // The status writer shows what each node has applied.
            let ack = Upstream::Ack { generation, result: result.clone() };
            let _no_subscriber = self.events.send(StreamEvent::Message(self.node.clone(), ack));
        }
        match result {
            Ok(()) => {
                self.last_acked = self.last_acked.max(Some(generation));
                if let Some(at) = sent_at {
                    self.metrics.converged(at.elapsed());
                }
            }
            Err(error) => {
                tracing::warn!(node = %self.node, %generation, %error, "daemon could not apply a command");
                self.last_error = Some(AckError { generation, error });
                if self.last_full_sync > Some(generation) {
                    return; // a full state sent since then repairs it
                }
                self.needs_full_sync = true;
                if kept {
                    // Not a failure to apply: the daemon holds another
                    // state than the digest said. Nothing to wait for.
                    let _stopping = myself.cast(NodeStreamMsg::Resync);
                } else if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    myself.send_after(self.config.error_retry, || NodeStreamMsg::Resync);
                }
            }
        }
    }

    fn status(&self) -> NodeStreamStatus {
        NodeStreamStatus {
            hello: self.hello.clone(),
            last_sent: self.last_sent_generation,
            unacked: self.unacked.iter().copied().collect(),
            last_acked: self.last_acked,
            last_error: self.last_error.clone(),
        }
    }
}

impl Actor for NodeStream {
    type Msg = NodeStreamMsg;
    type State = NodeStreamState;
    type Arguments = NodeStreamArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: NodeStreamArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let node = args.hello.node.clone();
        // Attach before reading the store: a publish in between is then
        // either read below or announced by a Changed.
        args.desired.attach(&node, myself.clone());
        let reader = vpblu_runtime::spawn(read_inbound(args.inbound, myself.clone()));
        let resync = resync_timer(myself.clone(), &node, args.config.resync_interval);
        let _no_subscriber =
            args.events.send(StreamEvent::Message(node.clone(), Upstream::Hello(args.hello.clone())));
        let state = NodeStreamState {
            node,
            hello: args.hello,
            outbound: Some(args.outbound),
            desired: args.desired,
            config: args.config,
            metrics: args.metrics,
            events: args.events,
            refusals: args.refusals,
            encodings: args.encodings,
            last_sent: None,
            last_sent_generation: None,
            last_full_sync: None,
            keeps: BTreeSet::new(),
            digest: None,
            unacked: BTreeSet::new(),
            sent_at: BTreeMap::new(),
            last_acked: None,
            last_error: None,
            needs_full_sync: false,
            retry_scheduled: false,
            reader,
            resync,
        };
        // The first full state is built by the stream itself, as its first
        // message (with nothing sent yet, a change means all of it): the
        // stream server starts streams one at a time, and 1000 daemons
        // reconnecting after a failover would otherwise wait on each
        // other's SyncState.
        myself.cast(NodeStreamMsg::Changed)?;
        tracing::info!(node = %state.node, applied = %state.hello.applied_generation, "daemon stream open");
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.outbound = None;
        state.reader.abort();
        state.resync.abort();
        state.desired.detach(&state.node, myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match msg {
            NodeStreamMsg::Changed => state.update(false),
            NodeStreamMsg::Resync => {
                state.retry_scheduled = false;
                state.update(true)
            }
            NodeStreamMsg::Received(Upstream::Hello(_)) => {
                state.reject(Rejection::SecondHello);
                Err(Closed)
            }
            NodeStreamMsg::Received(Upstream::Ack { generation, result }) => {
                if state.unacked.remove(&generation) {
                    state.ack(&myself, generation, result);
                    Ok(())
                } else {
                    state.reject(Rejection::UnknownAck(generation));
                    Err(Closed)
                }
            }
            NodeStreamMsg::Received(message @ (Upstream::Observed(_) | Upstream::RotationReport(_))) => {
                let _no_subscriber = state.events.send(StreamEvent::Message(state.node.clone(), message));
                Ok(())
            }
            NodeStreamMsg::Malformed(error) => {
                state.reject(Rejection::Malformed(error));
                Err(Closed)
            }
            NodeStreamMsg::InboundEnded(None) => {
                tracing::info!(node = %state.node, "daemon closed its stream");
                Err(Closed)
            }
            NodeStreamMsg::InboundEnded(Some(status)) if is_too_large(&status) => {
                state.reject(Rejection::TooLarge(status.message().to_owned()));
                Err(Closed)
            }
            NodeStreamMsg::InboundEnded(Some(status)) => {
                tracing::info!(node = %state.node, code = ?status.code(), error = status.message(), "daemon stream broke");
                Err(Closed)
            }
            NodeStreamMsg::Replaced => {
                tracing::info!(node = %state.node, "a newer stream of this node replaces this one");
                state.close(Status::aborted(format!(
                    "a newer stream of node {} replaced this one",
                    state.node
                )));
                Err(Closed)
            }
            NodeStreamMsg::Status(reply) => {
                let _caller_gone = reply.send(state.status());
                Ok(())
            }
        };
        if let Err(Closed) = outcome {
            myself.stop(None);
        }
        Ok(())
    }
}

/// The periodic resync. Its first tick falls at a point of
/// [interval/2, 3·interval/2) fixed by the node's name, then every
/// interval: streams that open together (every daemon after a failover)
/// resync spread over the interval instead of in one burst of full states.
fn resync_timer(myself: ActorRef<NodeStreamMsg>, node: &NodeName, every: Duration) -> JoinHandle<()> {
    // The flag refuses zero; a config built in code gets 1 ms, not a panic.
    let every = every.max(Duration::from_millis(1));
    let first = every / 2 + spread(node, every);
    vpblu_runtime::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if myself.cast(NodeStreamMsg::Resync).is_err() {
                return;
            }
        }
    })
}

/// A point of [0, `every`) from `node`'s name (FNV-1a: the same in every
/// replica and release, so a restart does not bunch the resyncs up).
fn spread(node: &NodeName, every: Duration) -> Duration {
    let hash = node
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    let nanos = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(hash % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the daemon in these tests.
    fn key() -> DigestKey {
        DigestKey::from_bytes([3; 16])
    }

    fn state(listen_port: u16) -> Arc<NodeDesiredState> {
        let mut state = NodeDesiredState::empty(NodeName::new("node-1").expect("a valid name"));
        state.settings.listen_port = listen_port;
        Arc::new(state)
    }

    /// `whole_command` for `desired`, and how many digests it computed.
    fn whole_of(
        desired: &Arc<NodeDesiredState>,
        last_sent: Option<&Arc<NodeDesiredState>>,
        held: Option<StateDigest>,
        key: Option<DigestKey>,
    ) -> (Command, usize) {
        let mut digests = 0;
        let command = whole_command(desired, last_sent, held, key, |key| {
            digests += 1;
            desired.digest(key)
        });
        (command, digests)
    }

    #[test]
    fn a_resync_confirms_the_state_last_sent_by_its_digest() {
        let sent = state(51820);
        let (command, digests) = whole_of(&sent, Some(&sent), None, Some(key()));
        assert_eq!(command, Command::KeepState(sent.digest(&key())));
        assert_eq!(digests, 1);
        // Equal but built anew (a recompute that changed nothing for it).
        let again = state(51820);
        assert_eq!(
            whole_of(&again, Some(&sent), None, Some(key())).0,
            Command::KeepState(sent.digest(&key()))
        );
    }

    #[test]
    fn a_resync_that_meets_a_change_not_sent_yet_sends_the_whole_new_state() {
        // The daemon holds `sent`; a KeepState of `desired`'s digest would
        // be refused, and one of `sent`'s would confirm the wrong state.
        let (sent, desired) = (state(51820), state(51821));
        let (command, digests) = whole_of(&desired, Some(&sent), Some(sent.digest(&key())), Some(key()));
        assert_eq!(command, Command::SyncState(NodeDesiredState::clone(&desired)));
        assert_eq!(digests, 0, "no digest is computed for a state the daemon cannot hold");
    }

    #[test]
    fn on_connect_the_hellos_digest_decides() {
        let desired = state(51820);
        let (command, _) = whole_of(&desired, None, Some(desired.digest(&key())), Some(key()));
        assert_eq!(command, Command::KeepState(desired.digest(&key())), "it holds this state");
        let other = state(51821).digest(&key());
        let (command, _) = whole_of(&desired, None, Some(other), Some(key()));
        assert_eq!(command, Command::SyncState(NodeDesiredState::clone(&desired)), "it holds another state");
        let (command, digests) = whole_of(&desired, None, None, Some(key()));
        assert_eq!(command, Command::SyncState(NodeDesiredState::clone(&desired)), "it holds nothing");
        assert_eq!(digests, 0);
    }

    #[test]
    fn without_a_key_every_whole_state_is_sent() {
        // An older daemon's Hello, or a full state due after an error ack.
        let desired = state(51820);
        for (last, held) in [(Some(&desired), None), (None, Some(desired.digest(&key())))] {
            let (command, digests) = whole_of(&desired, last, held, None);
            assert_eq!(command, Command::SyncState(NodeDesiredState::clone(&desired)));
            assert_eq!(digests, 0);
        }
    }

    #[test]
    fn resyncs_of_streams_opened_together_spread_over_the_interval() {
        let every = Duration::from_secs(300);
        let mut buckets = [0u32; 10];
        for i in 0..1000 {
            let node = NodeName::new(format!("node-{i}")).expect("a valid name");
            let at = spread(&node, every);
            assert!(at < every, "{node}: {at:?} is outside the interval");
            assert_eq!(at, spread(&node, every), "{node}: the same name, the same point");
            buckets[(at.as_secs() / 30) as usize] += 1;
        }
        // 100 expected per 30 s; a burst would put most in one bucket.
        assert!(buckets.iter().all(|b| (50..=150).contains(b)), "{buckets:?}");
        let node = NodeName::new("node-0").expect("a valid name");
        assert_eq!(spread(&node, Duration::ZERO), Duration::ZERO, "a zero interval has one point");
    }
}
