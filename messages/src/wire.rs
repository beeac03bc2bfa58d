//! Conversions between domain types and the generated wire types.
//!
//! Domain → wire cannot fail. Wire → domain validates everything (key
//! lengths, CIDRs, node names, endpoints, enum values) and returns a
//! [`WireError`] naming the field and the bad value; it never panics on
//! anything a peer might send.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use vpblu_proto as pb;

use crate::{
    Backend, BlockRule, Cidr, CidrError, Command, DigestKey, Downstream, Envelope, Generation, Hello,
    KeyError, NodeDesiredState, NodeName, NodeNameError, NodeRotation, Peer, PeerMap, PeerObservation,
    PublicKey, RotationPhase, RotationReport, SelfSettings, StateDigest, Unreachable, UnreachableReason,
    Upstream,
};

/// A wire message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required field or oneof was absent.
    #[error("{field} is missing")]
    Missing {
        /// Which field.
        field: &'static str,
    },
    /// A CIDR field did not parse.
    #[error("{field}: {source}")]
    Cidr {
        /// Which field.
        field: &'static str,
        /// Why.
        #[source]
        source: CidrError,
    },
    /// A key field was not 32 bytes.
    #[error("{field}: {source}")]
    Key {
        /// Which field.
        field: &'static str,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// A node name field was not a DNS subdomain.
    #[error("{field}: {source}")]
    NodeName {
        /// Which field.
        field: &'static str,
        /// Why.
        #[source]
        source: NodeNameError,
    },
    /// An endpoint was not `ip:port`.
    #[error("{field}: {value:?} is not an endpoint; expected IP:PORT such as 192.0.2.10:51820")]
    Endpoint {
        /// Which field.
        field: &'static str,
        /// The bad value.
        value: String,
    },
    /// A number out of range for its field.
    #[error("{field}: {value} is out of range ({range})")]
    Range {
        /// Which field.
        field: &'static str,
        /// The bad value.
        value: u64,
        /// The allowed range.
        range: &'static str,
    },
    /// A digest or digest key that was not 16 bytes.
    #[error("{field}: {len} bytes; a state digest and its key are 16 bytes each")]
    DigestLength {
        /// Which field.
        field: &'static str,
        /// How many bytes it had.
        len: usize,
    },
    /// An enum value this build does not know.
    #[error("{field}: unknown value {value}")]
    UnknownEnum {
        /// Which field.
        field: &'static str,
        /// The raw value.
        value: i32,
    },
}

fn cidr(field: &'static str, text: &str) -> Result<Cidr, WireError> {
    text.parse().map_err(|source| WireError::Cidr { field, source })
}

fn cidrs(field: &'static str, texts: &[String]) -> Result<Vec<Cidr>, WireError> {
    texts.iter().map(|t| cidr(field, t)).collect()
}

fn key(field: &'static str, bytes: &[u8]) -> Result<PublicKey, WireError> {
    PublicKey::from_slice(bytes).map_err(|source| WireError::Key { field, source })
}

fn optional_key(field: &'static str, bytes: &[u8]) -> Result<Option<PublicKey>, WireError> {
    if bytes.is_empty() { Ok(None) } else { key(field, bytes).map(Some) }
}

fn bytes16(field: &'static str, bytes: &[u8]) -> Result<[u8; 16], WireError> {
    bytes.try_into().map_err(|_| WireError::DigestLength { field, len: bytes.len() })
}

fn optional_bytes16(field: &'static str, bytes: &[u8]) -> Result<Option<[u8; 16]>, WireError> {
    if bytes.is_empty() { Ok(None) } else { bytes16(field, bytes).map(Some) }
}

fn node(field: &'static str, text: &str) -> Result<NodeName, WireError> {
    NodeName::new(text).map_err(|source| WireError::NodeName { field, source })
}

fn port(field: &'static str, value: u32) -> Result<u16, WireError> {
    u16::try_from(value).ok().filter(|p| *p != 0).ok_or(WireError::Range {
        field,
        value: value.into(),
        range: "1..=65535",
    })
}

fn keepalive(value: u32) -> Result<Option<u16>, WireError> {
    match value {
        0 => Ok(None),
        v => u16::try_from(v).map(Some).map_err(|_| WireError::Range {
            field: "peer.persistent_keepalive",
            value: v.into(),
            range: "0..=65535",
        }),
    }
}

// ---- desired state ----

impl From<&Peer> for pb::Peer {
    fn from(p: &Peer) -> Self {
        pb::Peer {
            node: p.node.to_string(),
            public_key: p.public_key.as_bytes().to_vec(),
            endpoint: p.endpoint.to_string(),
            allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
            persistent_keepalive: p.persistent_keepalive.map_or(0, u32::from),
        }
    }
}

impl TryFrom<&pb::Peer> for Peer {
    type Error = WireError;

    fn try_from(p: &pb::Peer) -> Result<Self, WireError> {
        let endpoint: SocketAddr = p
            .endpoint
            .parse()
            .map_err(|_| WireError::Endpoint { field: "peer.endpoint", value: p.endpoint.clone() })?;
        let mut allowed_ips = cidrs("peer.allowed_ips", &p.allowed_ips)?;
        allowed_ips.sort();
        allowed_ips.dedup();
        Ok(Peer {
            node: node("peer.node", &p.node)?,
            public_key: key("peer.public_key", &p.public_key)?,
            endpoint,
            allowed_ips,
            persistent_keepalive: keepalive(p.persistent_keepalive)?,
        })
    }
}

impl From<&BlockRule> for pb::BlockRule {
    fn from(b: &BlockRule) -> Self {
        pb::BlockRule { from: b.from.to_string(), to: b.to.to_string() }
    }
}

impl TryFrom<&pb::BlockRule> for BlockRule {
    type Error = WireError;

    fn try_from(b: &pb::BlockRule) -> Result<Self, WireError> {
        Ok(BlockRule { from: cidr("block.from", &b.from)?, to: cidr("block.to", &b.to)? })
    }
}

impl From<UnreachableReason> for pb::UnreachableReason {
    fn from(r: UnreachableReason) -> Self {
        match r {
            UnreachableReason::NoKey => pb::UnreachableReason::NoKey,
            UnreachableReason::NotPeered => pb::UnreachableReason::NotPeered,
            UnreachableReason::Isolated => pb::UnreachableReason::Isolated,
            UnreachableReason::NotReady => pb::UnreachableReason::NotReady,
            UnreachableReason::Drained => pb::UnreachableReason::Drained,
        }
    }
}

impl From<&Unreachable> for pb::Unreachable {
    fn from(u: &Unreachable) -> Self {
        pb::Unreachable { cidr: u.cidr.to_string(), reason: pb::UnreachableReason::from(u.reason).into() }
    }
}

impl TryFrom<&pb::Unreachable> for Unreachable {
    type Error = WireError;

    fn try_from(u: &pb::Unreachable) -> Result<Self, WireError> {
        let unknown = WireError::UnknownEnum { field: "unreachable.reason", value: u.reason };
        let reason = match pb::UnreachableReason::try_from(u.reason).map_err(|_| unknown.clone())? {
            pb::UnreachableReason::NoKey => UnreachableReason::NoKey,
            pb::UnreachableReason::NotPeered => UnreachableReason::NotPeered,
            pb::UnreachableReason::Isolated => UnreachableReason::Isolated,
            pb::UnreachableReason::NotReady => UnreachableReason::NotReady,
            pb::UnreachableReason::Drained => UnreachableReason::Drained,
            pb::UnreachableReason::Unspecified => return Err(unknown),
        };
        Ok(Unreachable { cidr: cidr("unreachable.cidr", &u.cidr)?, reason })
    }
}

impl From<&SelfSettings> for pb::Settings {
    fn from(s: &SelfSettings) -> Self {
        pb::Settings {
            listen_port: s.listen_port.into(),
            lane_port: s.lane_port.into(),
            isolated: s.isolated,
            drained: s.drained,
            pod_cidrs: s.pod_cidrs.iter().map(ToString::to_string).collect(),
        }
    }
}

impl TryFrom<&pb::Settings> for SelfSettings {
    type Error = WireError;

    fn try_from(s: &pb::Settings) -> Result<Self, WireError> {
        Ok(SelfSettings {
            listen_port: port("settings.listen_port", s.listen_port)?,
            lane_port: port("settings.lane_port", s.lane_port)?,
            isolated: s.isolated,
            drained: s.drained,
            pod_cidrs: cidrs("settings.pod_cidrs", &s.pod_cidrs)?,
        })
    }
}

impl From<&NodeDesiredState> for pb::SyncState {
    fn from(s: &NodeDesiredState) -> Self {
        pb::SyncState {
            node: s.node.to_string(),
            settings: Some((&s.settings).into()),
            peers: s.peers.values().map(|p| p.as_ref().into()).collect(),
            blocks: s.blocks.iter().map(Into::into).collect(),
            unreachable: s.unreachable.iter().map(Into::into).collect(),
            rotation: s.rotation.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<&pb::SyncState> for NodeDesiredState {
    type Error = WireError;

    fn try_from(s: &pb::SyncState) -> Result<Self, WireError> {
        let settings = s.settings.as_ref().ok_or(WireError::Missing { field: "sync_state.settings" })?;
        let peers = s
            .peers
            .iter()
            .map(|p| Peer::try_from(p).map(|p| (p.node.clone(), std::sync::Arc::new(p))))
            .collect::<Result<PeerMap, _>>()?;
        Ok(NodeDesiredState {
            node: node("sync_state.node", &s.node)?,
            settings: settings.try_into()?,
            peers,
            blocks: s.blocks.iter().map(TryInto::try_into).collect::<Result<BTreeSet<_>, _>>()?,
            unreachable: s.unreachable.iter().map(TryInto::try_into).collect::<Result<BTreeSet<_>, _>>()?,
            rotation: s.rotation.as_ref().map(TryInto::try_into).transpose()?,
        })
    }
}

// ---- rotation ----

impl From<RotationPhase> for pb::RotationPhase {
    fn from(p: RotationPhase) -> Self {
        match p {
            RotationPhase::Prepare => pb::RotationPhase::Prepare,
            RotationPhase::Distribute => pb::RotationPhase::Distribute,
            RotationPhase::Activate => pb::RotationPhase::Activate,
            RotationPhase::Retire => pb::RotationPhase::Retire,
            RotationPhase::Settle => pb::RotationPhase::Settle,
            RotationPhase::Rollback => pb::RotationPhase::Rollback,
        }
    }
}

fn phase(field: &'static str, raw: i32) -> Result<RotationPhase, WireError> {
    let unknown = WireError::UnknownEnum { field, value: raw };
    Ok(match pb::RotationPhase::try_from(raw).map_err(|_| unknown.clone())? {
        pb::RotationPhase::Prepare => RotationPhase::Prepare,
        pb::RotationPhase::Distribute => RotationPhase::Distribute,
        pb::RotationPhase::Activate => RotationPhase::Activate,
        pb::RotationPhase::Retire => RotationPhase::Retire,
        pb::RotationPhase::Settle => RotationPhase::Settle,
        pb::RotationPhase::Rollback => RotationPhase::Rollback,
        pb::RotationPhase::Unspecified => return Err(unknown),
    })
}

fn key_bytes(k: Option<PublicKey>) -> Vec<u8> {
    k.map(|k| k.as_bytes().to_vec()).unwrap_or_default()
}

impl From<&NodeRotation> for pb::NodeRotation {
    fn from(r: &NodeRotation) -> Self {
        pb::NodeRotation {
            rotation_id: r.id,
            phase: pb::RotationPhase::from(r.phase).into(),
            node: r.node.to_string(),
            new_public_key: key_bytes(r.new_public_key),
            lane: r.lane.values().map(|p| p.as_ref().into()).collect(),
        }
    }
}

impl TryFrom<&pb::NodeRotation> for NodeRotation {
    type Error = WireError;

    fn try_from(r: &pb::NodeRotation) -> Result<Self, WireError> {
        Ok(NodeRotation {
            id: r.rotation_id,
            phase: phase("rotation.phase", r.phase)?,
            node: node("rotation.node", &r.node)?,
            new_public_key: optional_key("rotation.new_public_key", &r.new_public_key)?,
            lane: r
                .lane
                .iter()
                .map(|p| Peer::try_from(p).map(|p| (p.node.clone(), std::sync::Arc::new(p))))
                .collect::<Result<PeerMap, _>>()?,
        })
    }
}

// ---- envelopes ----

impl From<&Envelope> for pb::ControllerMessage {
    fn from(e: &Envelope) -> Self {
        use pb::controller_message::Command as C;
        let command = match &e.body {
            Downstream::State(Command::SyncState(s)) => C::SyncState(s.into()),
            Downstream::State(Command::SetSettings(s)) => C::SetSettings(s.into()),
            Downstream::State(Command::PeerUpsert(p)) => C::PeerUpsert(p.as_ref().into()),
            Downstream::State(Command::PeerRemove(n)) => {
                C::PeerRemove(pb::PeerRemove { node: n.to_string() })
            }
            Downstream::State(Command::SetBlocks(b)) => {
                C::SetBlocks(pb::SetBlocks { blocks: b.iter().map(Into::into).collect() })
            }
            Downstream::State(Command::SetUnreachable(u)) => {
                C::SetUnreachable(pb::SetUnreachable { unreachable: u.iter().map(Into::into).collect() })
            }
            Downstream::State(Command::SetRotation(r)) => {
                C::SetRotation(pb::SetRotation { rotation: r.as_ref().map(Into::into) })
            }
            Downstream::State(Command::KeepState(d)) => {
                C::KeepState(pb::KeepState { digest: d.as_bytes().to_vec() })
            }
        };
        pb::ControllerMessage { generation: e.generation.0, command: Some(command) }
    }
}

impl TryFrom<&pb::ControllerMessage> for Envelope {
    type Error = WireError;

    fn try_from(m: &pb::ControllerMessage) -> Result<Self, WireError> {
        use pb::controller_message::Command as C;
        let command = m.command.as_ref().ok_or(WireError::Missing { field: "controller_message.command" })?;
        let body = match command {
            C::SyncState(s) => Downstream::State(Command::SyncState(s.try_into()?)),
            C::SetSettings(s) => Downstream::State(Command::SetSettings(s.try_into()?)),
            C::PeerUpsert(p) => Downstream::State(Command::PeerUpsert(std::sync::Arc::new(p.try_into()?))),
            C::PeerRemove(r) => Downstream::State(Command::PeerRemove(node("peer_remove.node", &r.node)?)),
            C::SetBlocks(b) => Downstream::State(Command::SetBlocks(
                b.blocks.iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            )),
            C::SetUnreachable(u) => Downstream::State(Command::SetUnreachable(
                u.unreachable.iter().map(TryInto::try_into).collect::<Result<_, _>>()?,
            )),
            C::SetRotation(r) => Downstream::State(Command::SetRotation(
                r.rotation.as_ref().map(TryInto::try_into).transpose()?,
            )),
            C::KeepState(k) => Downstream::State(Command::KeepState(StateDigest::from_bytes(bytes16(
                "keep_state.digest",
                &k.digest,
            )?))),
        };
        Ok(Envelope { generation: Generation(m.generation), body })
    }
}

impl From<Backend> for pb::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Kernel => pb::Backend::Kernel,
            Backend::Userspace => pb::Backend::Userspace,
        }
    }
}

impl From<&Upstream> for pb::DaemonMessage {
    fn from(u: &Upstream) -> Self {
        use pb::daemon_message::Msg;
        let msg = match u {
            Upstream::Hello(h) => Msg::Hello(pb::Hello {
                node: h.node.to_string(),
                public_key: h.public_key.as_bytes().to_vec(),
                staged_public_key: key_bytes(h.staged_public_key),
                applied_generation: h.applied_generation.0,
                backend: pb::Backend::from(h.backend).into(),
                mtu: h.mtu,
                version: h.version.clone(),
                digest_key: h.digest_key.map(|k| k.as_bytes().to_vec()).unwrap_or_default(),
                held_digest: h.held.map(|d| d.as_bytes().to_vec()).unwrap_or_default(),
            }),
            Upstream::Ack { generation, result } => Msg::Ack(pb::Ack {
                generation: generation.0,
                ok: result.is_ok(),
                error: result.as_ref().err().cloned().unwrap_or_default(),
            }),
            Upstream::Observed(peers) => Msg::Observed(pb::Observed {
                peers: peers
                    .iter()
                    .map(|p| pb::PeerObservation {
                        node: p.node.to_string(),
                        public_key: p.public_key.as_bytes().to_vec(),
                        last_handshake_age_seconds: p.last_handshake_age.map(|d| d.as_secs()),
                        rx_bytes: p.rx_bytes,
                        tx_bytes: p.tx_bytes,
                    })
                    .collect(),
            }),
            Upstream::RotationReport(r) => Msg::RotationReport(pb::RotationReport {
                rotation_id: r.rotation_id,
                phase: pb::RotationPhase::from(r.phase).into(),
                ok: r.result.is_ok(),
                error: r.result.as_ref().err().cloned().unwrap_or_default(),
                staged_public_key: key_bytes(r.staged_public_key),
            }),
        };
        pb::DaemonMessage { msg: Some(msg) }
    }
}

fn outcome(ok: bool, error: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(error.to_owned()) }
}

impl TryFrom<&pb::DaemonMessage> for Upstream {
    type Error = WireError;

    fn try_from(m: &pb::DaemonMessage) -> Result<Self, WireError> {
        use pb::daemon_message::Msg;
        Ok(match m.msg.as_ref().ok_or(WireError::Missing { field: "daemon_message.msg" })? {
            Msg::Hello(h) => {
                let backend = match pb::Backend::try_from(h.backend) {
                    Ok(pb::Backend::Kernel) => Backend::Kernel,
                    Ok(pb::Backend::Userspace) => Backend::Userspace,
                    Ok(pb::Backend::Unspecified) | Err(_) => {
                        return Err(WireError::UnknownEnum { field: "hello.backend", value: h.backend });
                    }
                };
                Upstream::Hello(Hello {
                    node: node("hello.node", &h.node)?,
                    public_key: key("hello.public_key", &h.public_key)?,
                    staged_public_key: optional_key("hello.staged_public_key", &h.staged_public_key)?,
                    applied_generation: Generation(h.applied_generation),
                    backend,
                    mtu: h.mtu,
                    version: h.version.clone(),
                    digest_key: optional_bytes16("hello.digest_key", &h.digest_key)?
                        .map(DigestKey::from_bytes),
                    held: optional_bytes16("hello.held_digest", &h.held_digest)?.map(StateDigest::from_bytes),
                })
            }
            Msg::Ack(a) => {
                Upstream::Ack { generation: Generation(a.generation), result: outcome(a.ok, &a.error) }
            }
            Msg::Observed(o) => Upstream::Observed(
                o.peers
                    .iter()
                    .map(|p| {
                        Ok(PeerObservation {
                            node: node("observed.node", &p.node)?,
                            public_key: key("observed.public_key", &p.public_key)?,
                            last_handshake_age: p.last_handshake_age_seconds.map(Duration::from_secs),
                            rx_bytes: p.rx_bytes,
                            tx_bytes: p.tx_bytes,
                        })
                    })
                    .collect::<Result<_, WireError>>()?,
            ),
            Msg::RotationReport(r) => Upstream::RotationReport(RotationReport {
                rotation_id: r.rotation_id,
                phase: phase("rotation_report.phase", r.phase)?,
                result: outcome(r.ok, &r.error),
                staged_public_key: optional_key("rotation_report.staged_public_key", &r.staged_public_key)?,
            }),
        })
    }
}
