//! The map writers: each makes the maps hold a desired state by diffing
//! against what they hold and writing only the difference, in an order
//! that keeps every packet's verdict right throughout (inserts and
//! changes first, deletions last). One writer ([`Change::upsert`],
//! [`Change::remove_missing`]) serves the LPM tries and the hash maps alike
//! through [`SyncedMap`].
//!
//! The destination table is written twice, with the same entries: into
//! the tries and into their hash copies, which the programs probe once per
//! prefix length instead of walking a trie while a family's table has at
//! most [`layout::DST_LENS`] lengths (`mesh_dst_lens` says which, and is
//! written between the inserts and the deletions, so a length is listed
//! only while its entries are in place). The tries are what is read back.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use aya::Pod;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError};
use aya::sys::SyscallError;
use vpblu_messages::{BlockRule, Cidr};

use super::Dataplane;
use crate::bpf::BpfError;
use crate::bpf::blocks::{self, BlockTables};
use crate::bpf::dst_table;
use crate::bpf::layout::{
    self, BlockFromV4, BlockFromV6, DST_F_BLOCK, DstEntry, DstLens, DstValue, MapShape, PrefixKey,
};

/// How many entries a sync wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries inserted.
    pub added: usize,
    /// Entries whose value was rewritten.
    pub changed: usize,
    /// Entries deleted.
    pub removed: usize,
    /// Entries already right.
    pub unchanged: usize,
}

impl SyncStats {
    /// True when the maps already held the desired state.
    pub fn wrote_nothing(&self) -> bool {
        self.added == 0 && self.changed == 0 && self.removed == 0
    }

    fn merge(self, other: SyncStats) -> SyncStats {
        SyncStats {
            added: self.added + other.added,
            changed: self.changed + other.changed,
            removed: self.removed + other.removed,
            unchanged: self.unchanged + other.unchanged,
        }
    }
}

impl Dataplane {
    /// Makes the mesh destinations in `mesh_dst_v4`/`mesh_dst_v6` exactly
    /// `entries`, keeping the block destinations that share the trie.
    /// Inserts new and changed entries first, then deletes the ones gone,
    /// so a CIDR split into longer ones is covered throughout.
    pub fn sync_destinations(&mut self, entries: &[(Cidr, DstEntry)]) -> Result<SyncStats, BpfError> {
        let mut destinations: BTreeMap<Cidr, DstEntry> = BTreeMap::new();
        for (cidr, entry) in entries {
            let previous = destinations.insert(*cidr, *entry);
            if previous.is_some_and(|p| p != *entry) {
                return Err(BpfError::ConflictingDestination { cidr: *cidr });
            }
        }
        let current = self.read_destination_trie()?;
        let (_, marks) = dst_table::split(&current.merged);
        self.write_destination_trie(&current, &dst_table::merge(&destinations, &marks))
    }

    /// Makes the block maps enforce exactly `rules`: block destinations in
    /// the destination trie (keeping the mesh destinations there) and
    /// their sources in `mesh_block_from_*`. Classes of unchanged `to`
    /// CIDRs are kept (read back from the trie), so the same rules write
    /// nothing. Order: new sources first, then trie entries (each one
    /// switches atomically to its new class and lengths), then old table
    /// entries and old sources go; a rule present before and after drops
    /// throughout (during the change a destination may briefly be dropped
    /// from the union of its old and new sources).
    pub fn sync_blocks(&mut self, rules: &[BlockRule]) -> Result<SyncStats, BpfError> {
        let current = self.read_destination_trie()?;
        let (destinations, marks) = dst_table::split(&current.merged);
        let previous: BTreeMap<Cidr, u32> = marks.iter().map(|(to, mark)| (*to, mark.class)).collect();
        let tables = blocks::flatten(rules, &previous);
        if !tables.mixed_family.is_empty() {
            let first = &tables.mixed_family[0];
            tracing::warn!(
                count = tables.mixed_family.len(),
                first = %format!("{} -> {}", first.from, first.to),
                "block rules mixing IPv4 and IPv6 can match no packet; ignored"
            );
        }
        let desired_trie = dst_table::merge(&destinations, &dst_table::block_marks(&tables));
        let BlockTables { sources, .. } = tables;

        let mut want_v4 = BTreeMap::new();
        let mut want_v6 = BTreeMap::new();
        for (class, from) in &sources {
            let prefixlen = u32::from(from.prefix_len());
            match from.addr() {
                IpAddr::V4(a) => {
                    want_v4.insert(BlockFromV4 { block_class: *class, prefixlen, src: a.octets() }, 1u8)
                }
                IpAddr::V6(a) => {
                    want_v6.insert(BlockFromV6 { block_class: *class, prefixlen, src: a.octets() }, 1u8)
                }
            };
        }
        check_capacity(&layout::BLOCK_FROM_V4, want_v4.len())?;
        check_capacity(&layout::BLOCK_FROM_V6, want_v6.len())?;
        let have_v4 = read(&self.maps.block_from_v4, &layout::BLOCK_FROM_V4)?;
        let have_v6 = read(&self.maps.block_from_v6, &layout::BLOCK_FROM_V6)?;

        let from_v4 = Change { shape: &layout::BLOCK_FROM_V4, current: &have_v4, desired: &want_v4 };
        let from_v6 = Change { shape: &layout::BLOCK_FROM_V6, current: &have_v6, desired: &want_v6 };
        let mut stats = SyncStats::default();
        stats = stats.merge(from_v4.upsert(&mut self.maps.block_from_v4)?);
        stats = stats.merge(from_v6.upsert(&mut self.maps.block_from_v6)?);
        stats = stats.merge(self.write_destination_trie(&current, &desired_trie)?);
        stats = stats.merge(from_v4.remove_missing(&mut self.maps.block_from_v4)?);
        stats = stats.merge(from_v6.remove_missing(&mut self.maps.block_from_v6)?);
        Ok(stats)
    }

    /// Block entries in the maps: (block destinations in the trie, block
    /// sources), both families.
    pub fn block_entry_counts(&self) -> Result<(usize, usize), BpfError> {
        let destinations =
            self.read_destination_trie()?.merged.values().filter(|v| v.flags & DST_F_BLOCK != 0).count();
        let sources = read(&self.maps.block_from_v4, &layout::BLOCK_FROM_V4)?.len()
            + read(&self.maps.block_from_v6, &layout::BLOCK_FROM_V6)?.len();
        Ok((destinations, sources))
    }

    /// The lengths record the programs read now (`mesh_dst_lens`).
    pub fn dst_lens(&self) -> Result<DstLens, BpfError> {
        self.maps.dst_lens.get(&0, 0).map_err(|source| BpfError::Map {
            action: "read",
            map: layout::DST_LENS_MAP.name,
            source,
        })
    }

    fn read_destination_trie(&self) -> Result<DestinationTrie, BpfError> {
        let v4 = read(&self.maps.dst_v4, &layout::DST_V4)?;
        let v6 = read(&self.maps.dst_v6, &layout::DST_V6)?;
        let mut merged = BTreeMap::new();
        for ((len, addr), value) in &v4 {
            if let Some(cidr) = cidr_of(IpAddr::from(*addr), *len) {
                merged.insert(cidr, *value);
            }
        }
        for ((len, addr), value) in &v6 {
            if let Some(cidr) = cidr_of(IpAddr::from(*addr), *len) {
                merged.insert(cidr, *value);
            }
        }
        let hash_v4 = read(&self.maps.dst_hash_v4, &layout::DST_HASH_V4)?;
        let hash_v6 = read(&self.maps.dst_hash_v6, &layout::DST_HASH_V6)?;
        Ok(DestinationTrie { v4, v6, hash_v4, hash_v6, lens: self.dst_lens()?, merged })
    }

    /// Makes the destination table hold `desired`, in the tries and in
    /// their hash copies: inserts and changes first (an update replaces an
    /// entry atomically), then the lengths record, deletions last. Entries
    /// the maps hold that are not a CIDR (not written by us) are deleted
    /// too. The stats count table entries (what the tries wrote).
    fn write_destination_trie(
        &mut self,
        current: &DestinationTrie,
        desired: &BTreeMap<Cidr, DstValue>,
    ) -> Result<SyncStats, BpfError> {
        let mut v4: BTreeMap<(u32, [u8; 4]), DstValue> = BTreeMap::new();
        let mut v6: BTreeMap<(u32, [u8; 16]), DstValue> = BTreeMap::new();
        let (mut lens_v4, mut lens_v6) = (BTreeSet::new(), BTreeSet::new());
        for (cidr, value) in desired {
            let len = u32::from(cidr.prefix_len());
            match cidr.addr() {
                IpAddr::V4(a) => {
                    v4.insert((len, a.octets()), *value);
                    lens_v4.insert(cidr.prefix_len());
                }
                IpAddr::V6(a) => {
                    v6.insert((len, a.octets()), *value);
                    lens_v6.insert(cidr.prefix_len());
                }
            };
        }
        check_capacity(&layout::DST_V4, v4.len())?;
        check_capacity(&layout::DST_V6, v6.len())?;
        let (hash_v4, hash_v6) = (hash_keyed(&v4), hash_keyed(&v6));
        let dst_v4 = Change { shape: &layout::DST_V4, current: &current.v4, desired: &v4 };
        let dst_v6 = Change { shape: &layout::DST_V6, current: &current.v6, desired: &v6 };
        let copy_v4 = Change { shape: &layout::DST_HASH_V4, current: &current.hash_v4, desired: &hash_v4 };
        let copy_v6 = Change { shape: &layout::DST_HASH_V6, current: &current.hash_v6, desired: &hash_v6 };
        let mut stats = SyncStats::default();
        stats = stats.merge(dst_v4.upsert(&mut self.maps.dst_v4)?);
        stats = stats.merge(dst_v6.upsert(&mut self.maps.dst_v6)?);
        copy_v4.upsert(&mut self.maps.dst_hash_v4)?;
        copy_v6.upsert(&mut self.maps.dst_hash_v6)?;
        let lens = DstLens::new(&lens_v4, &lens_v6);
        if lens != current.lens {
            self.maps.dst_lens.set(0, lens, 0).map_err(|source| BpfError::Map {
                action: "write",
                map: layout::DST_LENS_MAP.name,
                source,
            })?;
        }
        stats = stats.merge(dst_v4.remove_missing(&mut self.maps.dst_v4)?);
        stats = stats.merge(dst_v6.remove_missing(&mut self.maps.dst_v6)?);
        copy_v4.remove_missing(&mut self.maps.dst_hash_v4)?;
        copy_v6.remove_missing(&mut self.maps.dst_hash_v6)?;
        Ok(stats)
    }
}

/// The entries of a trie table keyed as its hash copy keys them.
fn hash_keyed<A: Copy + Ord>(trie: &BTreeMap<(u32, A), DstValue>) -> BTreeMap<PrefixKey<A>, DstValue> {
    trie.iter()
        .map(|((prefixlen, addr), value)| (PrefixKey { prefixlen: *prefixlen, addr: *addr }, *value))
        .collect()
}

/// What the destination table holds: the tries per family as the maps key
/// them and merged by CIDR, the hash copies, the lengths record.
struct DestinationTrie {
    v4: BTreeMap<(u32, [u8; 4]), DstValue>,
    v6: BTreeMap<(u32, [u8; 16]), DstValue>,
    hash_v4: BTreeMap<PrefixKey<[u8; 4]>, DstValue>,
    hash_v6: BTreeMap<PrefixKey<[u8; 16]>, DstValue>,
    lens: DstLens,
    merged: BTreeMap<Cidr, DstValue>,
}

fn check_capacity(shape: &MapShape, needed: usize) -> Result<(), BpfError> {
    if needed > shape.max_entries as usize {
        return Err(BpfError::TooManyEntries { map: shape.name, needed, capacity: shape.max_entries });
    }
    Ok(())
}

fn cidr_of(addr: IpAddr, len: u32) -> Option<Cidr> {
    Cidr::new(addr, u8::try_from(len).ok()?).ok()
}

/// A BPF map the writers diff against: read whole, write one entry,
/// delete one entry.
pub(super) trait SyncedMap {
    /// The key as the writers compare it.
    type Key: Ord + Copy;
    /// The value.
    type Value: PartialEq + Copy;

    /// Every entry.
    fn entries(&self) -> Result<BTreeMap<Self::Key, Self::Value>, MapError>;
    /// Inserts or replaces one entry (atomically for the readers).
    fn put(&mut self, key: &Self::Key, value: &Self::Value) -> Result<(), MapError>;
    /// Deletes one entry.
    fn delete(&mut self, key: &Self::Key) -> Result<(), MapError>;
}

/// An LPM trie, keyed by (prefix length, data).
impl<K: Pod + Ord, V: Pod + PartialEq> SyncedMap for LpmTrie<MapData, K, V> {
    type Key = (u32, K);
    type Value = V;

    fn entries(&self) -> Result<BTreeMap<(u32, K), V>, MapError> {
        self.iter().map(|entry| entry.map(|(key, value)| ((key.prefix_len(), key.data()), value))).collect()
    }

    fn put(&mut self, (len, data): &(u32, K), value: &V) -> Result<(), MapError> {
        self.insert(&Key::new(*len, *data), value, 0)
    }

    fn delete(&mut self, (len, data): &(u32, K)) -> Result<(), MapError> {
        self.remove(&Key::new(*len, *data))
    }
}

/// A hash map.
impl<K: Pod + Ord, V: Pod + PartialEq> SyncedMap for HashMap<MapData, K, V> {
    type Key = K;
    type Value = V;

    fn entries(&self) -> Result<BTreeMap<K, V>, MapError> {
        self.iter().collect()
    }

    fn put(&mut self, key: &K, value: &V) -> Result<(), MapError> {
        self.insert(key, value, 0)
    }

    fn delete(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }
}

/// What a map holds, or should.
type Entries<M> = BTreeMap<<M as SyncedMap>::Key, <M as SyncedMap>::Value>;

/// Reads all of `map` (`shape` names it in errors).
fn read<M: SyncedMap>(map: &M, shape: &MapShape) -> Result<Entries<M>, BpfError> {
    map.entries().map_err(|source| BpfError::Map { action: "read", map: shape.name, source })
}

/// What one map holds and what it should hold; `shape` names it in errors.
struct Change<'a, M: SyncedMap> {
    shape: &'a MapShape,
    current: &'a Entries<M>,
    desired: &'a Entries<M>,
}

impl<M: SyncedMap> Change<'_, M> {
    /// Inserts what `desired` has and `current` lacks or holds differently.
    fn upsert(&self, map: &mut M) -> Result<SyncStats, BpfError> {
        let mut stats = SyncStats::default();
        for (key, value) in self.desired {
            let slot = match self.current.get(key) {
                Some(v) if v == value => {
                    stats.unchanged += 1;
                    continue;
                }
                Some(_) => &mut stats.changed,
                None => &mut stats.added,
            };
            map.put(key, value).map_err(|source| BpfError::Map {
                action: "write",
                map: self.shape.name,
                source,
            })?;
            *slot += 1;
        }
        Ok(stats)
    }

    /// Deletes what `current` has and `desired` does not.
    fn remove_missing(&self, map: &mut M) -> Result<SyncStats, BpfError> {
        let mut stats = SyncStats::default();
        for key in self.current.keys().filter(|k| !self.desired.contains_key(k)) {
            match map.delete(key) {
                Ok(()) => stats.removed += 1,
                // Already gone: someone else's delete raced ours; the goal holds.
                Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BpfError::Map { action: "delete from", map: self.shape.name, source });
                }
            }
        }
        Ok(stats)
    }
}
