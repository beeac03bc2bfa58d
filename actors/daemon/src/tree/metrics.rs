//! The daemon's metrics, all under `vpblu_daemon_` (one sub-registry, so
//! no name repeats the prefix and none collides with the controller's).
//!
//! Two kinds:
//!
//! - **Events the daemon counts itself** (registered metrics): how long
//!   each apply took and which failed, by command kind; whether the stream
//!   is connected and how often it reconnected; the applied generation;
//!   which WireGuard backend runs and why (fixed for the process).
//! - **What the data plane holds** (a [`Collector`] over the last
//!   [`Observation`]): the peers the WireGuard device has, each one's
//!   handshake age and byte counters, and the BPF programs' packet counters
//!   by verdict, with the drops also by reason; the same peer families for
//!   the lane device under `lane_`. The devices and the pinned
//!   maps own these numbers (they survive a daemon restart), so they are
//!   read back and mirrored, not counted here; a peer that leaves the device
//!   leaves the output.
//!
//! Labels stay bounded: a peer is named by its node, never by its key or
//! endpoint. The peer families follow the WireGuard exporters operators
//! know: byte counters per peer and the latest handshake as a Unix
//! timestamp (0: none yet), so an age is `time() - ...` in PromQL and a
//! scrape never computes one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vpblu_messages::{Backend, Command, Generation, NodeName};
use vpblu_runtime::Health;

use crate::bpf::Verdict;
use crate::wireguard::BackendReason;

/// The kind of a state command, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CommandKind {
    /// A full state.
    SyncState,
    /// Listen port, pod CIDRs, isolate/drain.
    SetSettings,
    /// One peer added or changed.
    PeerUpsert,
    /// One peer removed.
    PeerRemove,
    /// The block rules.
    SetBlocks,
    /// The unreachable CIDRs.
    SetUnreachable,
    /// The rotation this node takes part in.
    SetRotation,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 7] = [
        CommandKind::SyncState,
        CommandKind::SetSettings,
        CommandKind::PeerUpsert,
        CommandKind::PeerRemove,
        CommandKind::SetBlocks,
        CommandKind::SetUnreachable,
        CommandKind::SetRotation,
    ];
}

impl From<&Command> for CommandKind {
    fn from(command: &Command) -> Self {
        match command {
            // The stream client hands a confirmed KeepState to the data
            // plane as the full state it holds.
            Command::SyncState(_) | Command::KeepState(_) => CommandKind::SyncState,
            Command::SetSettings(_) => CommandKind::SetSettings,
            Command::PeerUpsert(_) => CommandKind::PeerUpsert,
            Command::PeerRemove(_) => CommandKind::PeerRemove,
            Command::SetBlocks(_) => CommandKind::SetBlocks,
            Command::SetUnreachable(_) => CommandKind::SetUnreachable,
            Command::SetRotation(_) => CommandKind::SetRotation,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: CommandKind,
}

/// The one series of `wireguard_backend`: an info-style gauge at 1.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
    reason: &'static str,
}

type ApplyHistogram = Family<CommandLabels, Histogram, fn() -> Histogram>;

/// 1 ms to about 16 s: a targeted command takes milliseconds, a full
/// state of a large cluster (thousands of routes and map entries) seconds.
fn apply_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The peers, handshakes and packet counters read back from the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Peers the WireGuard device holds (including any it holds under a
    /// key the desired state does not name).
    pub configured_peers: usize,
    /// The peers the desired state names, by node.
    pub peers: BTreeMap<NodeName, ObservedPeer>,
    /// The lane device (the second device that carries traffic while a key
    /// rotates), when the daemon has one.
    pub lane: Option<LaneObservation>,
    /// BPF packet counters since the pinned maps were created.
    pub packets: BTreeMap<Verdict, u64>,
}

/// The lane device read back: no peers outside a rotation; during one, the
/// rotation's lane peers, named by node like the main device's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneObservation {
    /// Peers the lane device holds.
    pub configured_peers: usize,
    /// The peers a node in the desired state owns, by node.
    pub peers: BTreeMap<NodeName, ObservedPeer>,
}

/// One peer as the device reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedPeer {
    /// When the last handshake completed; `None` if none did.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
}

/// Where a packet counter's verdict puts a drop: (program, reason).
/// `None` for verdicts that pass the packet.
pub fn drop_reason(verdict: Verdict) -> Option<(&'static str, &'static str)> {
    match verdict {
        Verdict::DropBlocked => Some(("classify", "blocked")),
        Verdict::DropUnreachableNoKey => Some(("classify", "unreachable_no_key")),
        Verdict::DropUnreachableNotPeered => Some(("classify", "unreachable_not_peered")),
        Verdict::DropUnreachableIsolated => Some(("classify", "unreachable_isolated")),
        Verdict::DropUnreachableNotReady => Some(("classify", "unreachable_not_ready")),
        Verdict::DropUnreachableDrained => Some(("classify", "unreachable_drained")),
        Verdict::DropUnreachableOther => Some(("classify", "unreachable_other")),
        Verdict::DeliverDropBlocked => Some(("deliver", "blocked")),
        Verdict::PassNotIp
        | Verdict::PassLocal
        | Verdict::ToMesh
        | Verdict::PassUnreachable
        | Verdict::DeliverPass
        | Verdict::DeliverPassNotIp => None,
    }
}

/// Encodes the last [`Observation`] on every scrape.
pub struct ObservationCollector {
    last: Arc<Mutex<Option<Observation>>>,
}

impl fmt::Debug for ObservationCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservationCollector").finish_non_exhaustive()
    }
}

impl Collector for ObservationCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            // Nothing read yet: say nothing rather than zeros.
            None => Ok(()),
            Some(observation) => encode_observation(observation, encoder),
        }
    }
}

/// The Prometheus families of one observation.
fn encode_observation(observation: &Observation, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
    encode_device(
        &mut encoder,
        "",
        "the WireGuard device",
        observation.configured_peers,
        &observation.peers,
    )?;
    if let Some(lane) = &observation.lane {
        encode_device(
            &mut encoder,
            "lane_",
            "the lane WireGuard device",
            lane.configured_peers,
            &lane.peers,
        )?;
    }

    let mut family = encoder.encode_descriptor(
        "packets",
        "Packets seen by the BPF programs, by verdict (classify on pod interfaces, deliver_* on the mesh \
         device).",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (verdict, count) in &observation.packets {
        ConstCounter::new(*count).encode(family.encode_family(&[("verdict", verdict.as_str())])?)?;
    }
    let mut family = encoder.encode_descriptor(
        "packets_dropped",
        "Packets dropped by the BPF programs, by program and reason.",
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (verdict, count) in &observation.packets {
        if let Some((program, reason)) = drop_reason(*verdict) {
            ConstCounter::new(*count)
                .encode(family.encode_family(&[("program", program), ("reason", reason)])?)?;
        }
    }
    Ok(())
}

/// The peer families of one WireGuard device, their names after `prefix`.
fn encode_device(
    encoder: &mut DescriptorEncoder,
    prefix: &str,
    device: &str,
    configured: usize,
    peers: &BTreeMap<NodeName, ObservedPeer>,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(configured).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(
        &format!("{prefix}peers"),
        &format!("Peers {device} holds (including any under a key no node publishes)."),
        None,
        gauge.metric_type(),
    )?)?;

    let name = format!("{prefix}peer_last_handshake_timestamp_seconds");
    let mut family = encoder.encode_descriptor(
        &name,
        &format!(
            "When the last handshake of {device} with each peer completed, in seconds since the epoch; 0 when \
             none has yet."
        ),
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (node, peer) in peers {
        let at = peer.last_handshake.map_or(0.0, |at| {
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
        });
        ConstGauge::new(at).encode(family.encode_family(&[("peer", node.as_str())])?)?;
    }

    for (name, help, bytes) in [
        (
            "peer_received_bytes",
            "Bytes received from each peer",
            (|p: &ObservedPeer| p.rx_bytes) as fn(&ObservedPeer) -> u64,
        ),
        ("peer_sent_bytes", "Bytes sent to each peer", |p| p.tx_bytes),
    ] {
        let name = format!("{prefix}{name}");
        let mut family = encoder.encode_descriptor(
            &name,
            &format!("{help}, as {device} counts them."),
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (node, peer) in peers {
            ConstCounter::new(bytes(peer)).encode(family.encode_family(&[("peer", node.as_str())])?)?;
        }
    }
    Ok(())
}

/// Every daemon metric. Registered once per process (a restarted child
/// reuses the handles; registering twice would print every series twice).
#[derive(Clone, Debug)]
pub struct DaemonMetrics {
    apply_duration: ApplyHistogram,
    apply_errors: Family<CommandLabels, Counter>,
    stream_connected: Gauge,
    stream_reconnects: Counter,
    applied_generation: Gauge,
    observation: Arc<Mutex<Option<Observation>>>,
}

impl DaemonMetrics {
    /// Creates the metrics and registers them in `health`; `backend` and
    /// `reason` say which WireGuard backend the data plane drives and why
    /// (known before anything can be scraped: the data plane starts first).
    pub fn register(health: &Health, backend: Backend, reason: BackendReason) -> Self {
        let metrics = DaemonMetrics {
            apply_duration: Family::new_with_constructor(apply_histogram as fn() -> Histogram),
            apply_errors: Family::default(),
            stream_connected: Gauge::default(),
            stream_reconnects: Counter::default(),
            applied_generation: Gauge::default(),
            observation: Arc::default(),
        };
        // Every kind's error count from the start, at 0: the first failure
        // counted into a new series would not show in increase() (nor alert).
        for command in CommandKind::ALL {
            metrics.apply_errors.get_or_create(&CommandLabels { command }).inc_by(0);
        }
        let wireguard_backend = Family::<BackendLabels, Gauge>::default();
        wireguard_backend
            .get_or_create(&BackendLabels { backend: backend.as_str(), reason: reason.as_str() })
            .set(1);
        health.register_component("daemon", |registry| {
            registry.register(
                "wireguard_backend",
                "The WireGuard backend this daemon drives (kernel or userspace; the one series is 1) and why: \
                 requested (--backend), module_loaded or link_created (auto found the kernel's WireGuard), \
                 module_missing or link_create_failed (auto fell back to userspace; the log has the kernel's \
                 answer)",
                wireguard_backend,
            );
            registry.register(
                "apply_duration_seconds",
                "Time to apply one command from the controller to the data plane, by command kind",
                metrics.apply_duration.clone(),
            );
            registry.register(
                "apply_errors",
                "Commands the data plane refused or failed to apply, by command kind",
                metrics.apply_errors.clone(),
            );
            registry.register(
                "stream_connected",
                "1 while the stream to the controller is open",
                metrics.stream_connected.clone(),
            );
            registry.register(
                "stream_reconnects",
                "Streams to the controller opened after the first one of this process",
                metrics.stream_reconnects.clone(),
            );
            registry.register(
                "applied_generation",
                "The newest generation applied to the data plane (restored from the state directory at start)",
                metrics.applied_generation.clone(),
            );
            registry.register_collector(Box::new(ObservationCollector { last: Arc::clone(&metrics.observation) }));
        });
        metrics
    }

    /// One command applied (or not) in `took`.
    pub fn applied(&self, kind: CommandKind, took: Duration, ok: bool) {
        let labels = CommandLabels { command: kind };
        self.apply_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if !ok {
            self.apply_errors.get_or_create(&labels).inc();
        }
    }

    /// The data plane's applied generation.
    pub fn set_applied_generation(&self, generation: Generation) {
        self.applied_generation.set(i64::try_from(generation.0).unwrap_or(i64::MAX));
    }

    /// Whether the stream is open.
    pub fn set_stream_connected(&self, connected: bool) {
        self.stream_connected.set(i64::from(connected));
    }

    /// `n` more reconnects.
    pub fn reconnected(&self, n: u64) {
        if n > 0 {
            self.stream_reconnects.inc_by(n);
        }
    }

    /// Replaces what the data plane was last seen holding.
    pub fn observed(&self, observation: Observation) {
        *self.observation.lock().unwrap_or_else(PoisonError::into_inner) = Some(observation);
    }
}

/// `/metrics` pages of a daemon in the states a scrape can catch it in,
/// named: just started (nothing read back yet), running with no peers, and
/// with one series of every labelled family (one command applied, one peer,
/// every verdict), the last being what the metrics reference
/// (docs/reference/metrics.md) is generated from.
pub fn examples() -> Vec<(&'static str, String)> {
    let page = |observation: Option<Observation>, applied: bool| {
        let health = Health::new();
        let metrics = DaemonMetrics::register(&health, Backend::Kernel, BackendReason::ModuleLoaded);
        if applied {
            metrics.applied(CommandKind::SyncState, Duration::from_millis(3), false);
        }
        if let Some(observation) = observation {
            metrics.observed(observation);
        }
        health.render()
    };
    let packets: BTreeMap<Verdict, u64> = Verdict::ALL.iter().map(|v| (*v, 0)).collect();
    let no_peers = Observation {
        configured_peers: 0,
        peers: BTreeMap::new(),
        lane: Some(LaneObservation::default()),
        packets: packets.clone(),
    };
    let peer = ObservedPeer { last_handshake: Some(SystemTime::UNIX_EPOCH), rx_bytes: 0, tx_bytes: 0 };
    let peers: BTreeMap<NodeName, ObservedPeer> =
        NodeName::new("node-2").map(|node| (node, peer)).into_iter().collect();
    let lane = LaneObservation { configured_peers: 1, peers: peers.clone() };
    let one_peer = Observation { configured_peers: 1, peers, lane: Some(lane), packets };
    vec![
        ("just started", page(None, false)),
        ("no peers", page(Some(no_peers), false)),
        ("every family", page(Some(one_peer), true)),
    ]
}

#[cfg(test)]
mod tests;
