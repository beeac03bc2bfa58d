//! The observer: reads back what the data plane holds and tells the
//! controller and `/metrics`.
//!
//! Every observe interval it reads the WireGuard device (peers, last
//! handshakes, byte counters), the lane device for the metrics only, and
//! the BPF packet counters, names each peer
//! by its node (a device peer under a key the desired state does not name
//! is counted but not labelled), replaces the metrics' [`Observation`] and
//! casts the per-peer facts to the stream client as `Observed` (which
//! drops them while the stream is down).
//!
//! Every second it asks the stream client how its stream is doing, for the
//! `stream_connected` gauge, the `stream_reconnects` counter and readiness.
//! The stream client is a sibling under the same supervisor, restarted with
//! a new actor id, so it is looked up by its child name each time.
//!
//! A failed read is logged and retried on the next tick; it does not stop
//! the observer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use vpblu_messages::{NodeName, PeerObservation, PublicKey};
use vpblu_runtime::SupervisorMsg;

use super::metrics::{DaemonMetrics, LaneObservation, Observation, ObservedPeer};
use super::readiness::Readiness;
use super::shared_data_plane::SharedDataPlane;
use crate::bpf::Verdict;
use crate::stream::{ClientStatus, StreamClientMsg};
use crate::wireguard::DeviceState;

/// How often the stream client's status is read.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on asking the supervisor or the stream client (a stream client in
/// the middle of a long apply answers late; the next tick asks again).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The pure part: what the device and the counters say, with each peer
/// named by `node_of` its key, at `now`.
pub fn observation(
    device: &DeviceState,
    packets: BTreeMap<Verdict, u64>,
    node_of: impl Fn(&PublicKey) -> Option<NodeName>,
    now: SystemTime,
) -> (Observation, Vec<PeerObservation>) {
    let mut peers = BTreeMap::new();
    let mut observed = Vec::new();
    for peer in &device.peers {
        let Some(node) = node_of(&peer.public_key) else { continue };
        peers.insert(
            node.clone(),
            ObservedPeer {
                last_handshake: peer.last_handshake,
                rx_bytes: peer.rx_bytes,
                tx_bytes: peer.tx_bytes,
            },
        );
        observed.push(PeerObservation {
            node,
            public_key: peer.public_key,
            last_handshake_age: peer
                .last_handshake
                .map(|at| now.duration_since(at).unwrap_or(Duration::ZERO)),
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
        });
    }
    (Observation { configured_peers: device.peers.len(), peers, lane: None, packets }, observed)
}

/// The lane device as the metrics show it, each peer named by `node_of`
/// its key (the controller hears only of the main device).
pub fn lane_observation(
    lane: &DeviceState,
    node_of: impl Fn(&PublicKey) -> Option<NodeName>,
) -> LaneObservation {
    let peers = lane
        .peers
        .iter()
        .filter_map(|peer| {
            let node = node_of(&peer.public_key)?;
            let seen = ObservedPeer {
                last_handshake: peer.last_handshake,
                rx_bytes: peer.rx_bytes,
                tx_bytes: peer.tx_bytes,
            };
            Some((node, seen))
        })
        .collect();
    LaneObservation { configured_peers: lane.peers.len(), peers }
}

/// Stream opens seen so far in this process, kept outside the observer so
/// a restarted observer does not count the same opens again.
#[derive(Clone, Debug, Default)]
pub struct StreamTally(Arc<Mutex<Tally>>);

#[derive(Debug, Default)]
struct Tally {
    /// The stream client last asked, and how many opens it reported.
    client: Option<(ActorId, u64)>,
    /// Opens over every stream client of the process.
    opened: u64,
}

impl StreamTally {
    /// Takes in a status from stream client `client`; returns how many
    /// reconnects (opens after the first one of the process) are new.
    fn record(&self, client: ActorId, connects: u64) -> u64 {
        let mut tally = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let new = match tally.client {
            Some((id, seen)) if id == client => connects.saturating_sub(seen),
            _ => connects,
        };
        tally.client = Some((client, connects));
        let before = tally.opened.saturating_sub(1);
        tally.opened += new;
        tally.opened.saturating_sub(1) - before
    }
}

/// What the observer starts with.
#[derive(Debug)]
pub struct ObserverArgs {
    /// The node's data plane.
    pub data_plane: SharedDataPlane,
    /// How often to read the device and the counters.
    pub interval: Duration,
    /// Where the readings go.
    pub metrics: DaemonMetrics,
    /// Told when the stream is open.
    pub readiness: Readiness,
    /// The stream client's child name under the observer's supervisor.
    pub stream_child: String,
    /// Stream opens counted so far.
    pub tally: StreamTally,
}

/// Messages the observer takes (it sends them to itself on timers).
#[derive(Debug)]
pub enum ObserverMsg {
    /// Read the device and the counters.
    Observe,
    /// Read the stream client's status.
    CheckStream,
}

/// The observer actor. Empty: everything lives in [`ObserverState`].
#[derive(Debug, Default)]
pub struct Observer;

/// The running observer.
#[derive(Debug)]
pub struct ObserverState {
    args: ObserverArgs,
    timers: Vec<JoinHandle<()>>,
}

impl ObserverState {
    /// The stream client running now, if any.
    async fn stream_client(&self, myself: &ActorRef<ObserverMsg>) -> Option<ActorRef<StreamClientMsg>> {
        let supervisor: ActorRef<SupervisorMsg> = myself.try_get_supervisor()?.into();
        let name = self.args.stream_child.clone();
        match supervisor.call(|reply| SupervisorMsg::Child(name, reply), Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(cell)) => cell.map(ActorRef::from),
            _ => None,
        }
    }

    async fn observe(&self, myself: &ActorRef<ObserverMsg>) {
        let reader = self.args.data_plane.reader();
        let (device, lane, packets) = match (
            reader.device().await,
            reader.lane().await,
            reader.counters().await,
        ) {
            (Ok(device), Ok(lane), Ok(packets)) => (device, lane, packets),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                tracing::warn!(error = %e, "could not read the data plane back; trying again next interval");
                return;
            }
        };
        let data_plane = &self.args.data_plane;
        let (mut observation, peers) =
            observation(&device, packets, |key| data_plane.peer_node(key), SystemTime::now());
        observation.lane = lane.map(|lane| lane_observation(&lane, |key| data_plane.peer_node(key)));
        self.args.metrics.observed(observation);
        if let Some(client) = self.stream_client(myself).await {
            let _stopping = client.cast(StreamClientMsg::Observed(peers));
        }
    }

    async fn check_stream(&self, myself: &ActorRef<ObserverMsg>) {
        let Some(client) = self.stream_client(myself).await else {
            self.args.metrics.set_stream_connected(false);
            return;
        };
        let status: ClientStatus = match client.call(StreamClientMsg::Status, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(status)) => status,
            // Busy applying, or restarting: the next tick asks again.
            _ => return,
        };
        self.args.metrics.set_stream_connected(status.connected);
        self.args.metrics.reconnected(self.args.tally.record(client.get_id(), status.connects));
        if status.connected {
            self.args.readiness.connected();
        }
    }
}

impl Actor for Observer {
    type Msg = ObserverMsg;
    type State = ObserverState;
    type Arguments = ObserverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ObserverArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A first reading right away, then on the timers.
        myself.send_message(ObserverMsg::Observe)?;
        let timers = vec![
            myself.send_interval(args.interval, || ObserverMsg::Observe),
            myself.send_interval(STATUS_INTERVAL, || ObserverMsg::CheckStream),
        ];
        Ok(ObserverState { args, timers })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for timer in state.timers.drain(..) {
            timer.abort();
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
            ObserverMsg::Observe => state.observe(&myself).await,
            ObserverMsg::CheckStream => state.check_stream(&myself).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::PeerState;

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; 32])
    }

    fn node(name: &str) -> NodeName {
        NodeName::new(name).unwrap()
    }

    fn peer(byte: u8, handshake: Option<SystemTime>, rx: u64, tx: u64) -> PeerState {
        PeerState {
            public_key: key(byte),
            endpoint: Some("192.0.2.1:51820".parse().unwrap()),
            allowed_ips: Vec::new(),
            last_handshake: handshake,
            rx_bytes: rx,
            tx_bytes: tx,
            persistent_keepalive: None,
        }
    }

    #[test]
    fn lane_peers_are_named_by_node_and_counted_whatever_their_key() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let lane = DeviceState {
            public_key: Some(key(1)),
            listen_port: 51821,
            peers: vec![peer(4, Some(now), 3, 5), peer(9, None, 0, 0)],
        };
        // key 4: node-3 under the new key its rotation staged.
        let names = BTreeMap::from([(key(4), node("node-3"))]);
        let seen = lane_observation(&lane, |k| names.get(k).cloned());
        assert_eq!(seen.configured_peers, 2);
        assert_eq!(
            seen.peers,
            BTreeMap::from([(
                node("node-3"),
                ObservedPeer { last_handshake: Some(now), rx_bytes: 3, tx_bytes: 5 }
            )])
        );
    }

    #[test]
    fn peers_are_named_by_node_and_unknown_keys_only_counted() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let device = DeviceState {
            public_key: Some(key(1)),
            listen_port: 51820,
            peers: vec![
                peer(2, Some(now - Duration::from_secs(7)), 10, 20),
                peer(3, None, 0, 148),
                peer(9, Some(now), 1, 1), // a key the desired state does not name
            ],
        };
        let names = BTreeMap::from([(key(2), node("node-2")), (key(3), node("node-3"))]);
        let packets = BTreeMap::from([(Verdict::ToMesh, 5)]);
        let (observation, sent) = observation(&device, packets.clone(), |k| names.get(k).cloned(), now);
        assert_eq!(observation.configured_peers, 3);
        assert_eq!(observation.packets, packets);
        assert_eq!(
            observation.peers.keys().cloned().collect::<Vec<_>>(),
            vec![node("node-2"), node("node-3")]
        );
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].node, node("node-2"));
        assert_eq!(sent[0].last_handshake_age, Some(Duration::from_secs(7)));
        assert_eq!((sent[0].rx_bytes, sent[0].tx_bytes), (10, 20));
        assert_eq!(sent[1].last_handshake_age, None);
    }

    #[test]
    fn reconnects_count_opens_after_the_first_across_client_restarts() {
        let tally = StreamTally::default();
        let (a, b) = (ActorId::Local(1), ActorId::Local(2));
        assert_eq!(tally.record(a, 0), 0, "not connected yet");
        assert_eq!(tally.record(a, 1), 0, "the first open is no reconnect");
        assert_eq!(tally.record(a, 1), 0, "nothing new");
        assert_eq!(tally.record(a, 3), 2);
        assert_eq!(tally.record(b, 1), 1, "a restarted client's first open is a reconnect");
        assert_eq!(tally.record(b, 1), 0);
    }
}
