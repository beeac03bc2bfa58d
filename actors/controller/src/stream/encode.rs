//! The controller's half of a stream as bytes on the wire: each message
//! framed (gRPC's 5-byte prefix, then the protobuf) in a buffer of exactly
//! its size, and each peer encoded once however many messages carry it.
//!
//! A full state carries a peer for every other node, and after a failover
//! or a resync every node gets one: N² peers at N nodes, 25 million at
//! 5000. The engine shares one `Arc<Peer>` per node among all the states
//! it computes (persistent maps), so [`PeerEncodings`] keeps that peer's
//! protobuf bytes by its `Arc` and each message copies them, instead of
//! formatting its addresses and allocating its strings once per message.
//! A `SyncState` is encoded as its other fields followed by its peers
//! (protobuf fields may come in any order; repeated ones accumulate), each
//! peer as the field key, its length and the kept bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use vpblu_messages::{Command, Downstream, Envelope, Generation, NodeDesiredState, Peer, PeerMap};
use vpblu_proto as pb;

/// gRPC's per-message prefix: a compression flag and a big-endian length.
pub(crate) const PREFIX: usize = 5;

/// `ControllerMessage.sync_state` (mesh.proto).
const TAG_SYNC_STATE: u32 = 2;
/// `ControllerMessage.peer_upsert`.
const TAG_PEER_UPSERT: u32 = 4;
/// `SyncState.peers`.
const TAG_PEERS: u32 = 2;

/// Below this many kept peers the cache is never swept.
const MIN_SWEEP: usize = 1024;

/// Peers' protobuf encodings, kept by the `Arc` the desired states share
/// and shared by every node stream. An entry holds its `Arc`, so no other
/// peer can take its address while it is kept; entries only the cache
/// still holds go when it has doubled since the last sweep.
#[derive(Debug, Default)]
pub(crate) struct PeerEncodings {
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    by_address: HashMap<usize, (Arc<Peer>, Bytes)>,
    sweep_at: usize,
}

impl Cache {
    /// `peer` encoded as a `pb::Peer` (no field key, no length).
    fn encoded(&mut self, peer: &Arc<Peer>) -> Bytes {
        let address = Arc::as_ptr(peer) as usize;
        if let Some((_, bytes)) = self.by_address.get(&address) {
            return bytes.clone();
        }
        let bytes = Bytes::from(pb::Peer::from(peer.as_ref()).encode_to_vec());
        self.by_address.insert(address, (Arc::clone(peer), bytes.clone()));
        bytes
    }

    fn sweep(&mut self) {
        if self.by_address.len() < self.sweep_at.max(MIN_SWEEP) {
            return;
        }
        self.by_address.retain(|_, (peer, _)| Arc::strong_count(peer) > 1);
        self.sweep_at = self.by_address.len() * 2;
    }
}

impl PeerEncodings {
    /// `envelope` framed for the wire.
    pub(crate) fn frame(&self, envelope: &Envelope) -> Bytes {
        match &envelope.body {
            Downstream::State(Command::SyncState(state)) => self.sync_state(envelope.generation, state),
            Downstream::State(Command::PeerUpsert(peer)) => {
                let body = self.lock().encoded(peer);
                let mut message = Framer::new(envelope.generation, TAG_PEER_UPSERT, body.len());
                message.buf.put_slice(&body);
                message.finish()
            }
            _ => frame(&pb::ControllerMessage::from(envelope)),
        }
    }

    /// How many peers' encodings are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().by_address.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding it leaves a cache of whole entries.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync_state(&self, generation: Generation, state: &NodeDesiredState) -> Bytes {
        let peers: Vec<Bytes> = {
            let mut cache = self.lock();
            let peers = state.peers.values().map(|peer| cache.encoded(peer)).collect();
            cache.sweep();
            peers
        };
        // Everything but the peers, as the shared conversion writes it.
        let rest = pb::SyncState::from(&NodeDesiredState { peers: PeerMap::new(), ..state.clone() });
        let peers_len: usize = peers.iter().map(|p| key_len(TAG_PEERS) + length_delimited(p.len())).sum();
        let mut message = Framer::new(generation, TAG_SYNC_STATE, rest.encoded_len() + peers_len);
        rest.encode_raw(&mut message.buf);
        for peer in &peers {
            encode_key(TAG_PEERS, WireType::LengthDelimited, &mut message.buf);
            encode_varint(peer.len() as u64, &mut message.buf);
            message.buf.put_slice(peer);
        }
        message.finish()
    }
}

/// The encoded size of a length-delimited value of `len` bytes, its
/// length prefix included.
fn length_delimited(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// A `ControllerMessage` whose command (field `tag`, `body_len` bytes) is
/// written by the caller into `buf` after [`Framer::new`].
struct Framer {
    buf: BytesMut,
    len: usize,
}

impl Framer {
    fn new(generation: Generation, tag: u32, body_len: usize) -> Framer {
        let head = pb::ControllerMessage { generation: generation.0, command: None };
        let len = head.encoded_len() + key_len(tag) + length_delimited(body_len);
        let mut buf = BytesMut::with_capacity(PREFIX + len);
        put_prefix(&mut buf, len);
        head.encode_raw(&mut buf);
        encode_key(tag, WireType::LengthDelimited, &mut buf);
        encode_varint(body_len as u64, &mut buf);
        Framer { buf, len }
    }

    fn finish(self) -> Bytes {
        debug_assert_eq!(self.buf.len(), PREFIX + self.len, "the prefix states the message's length");
        self.buf.freeze()
    }
}

fn put_prefix(buf: &mut BytesMut, len: usize) {
    buf.put_u8(0);
    // Far below 4 GiB: the largest state is a few MB.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// `message` with its gRPC prefix, in a buffer of exactly that size.
pub(crate) fn frame(message: &pb::ControllerMessage) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    put_prefix(&mut buf, len);
    message.encode_raw(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests;
