//! The Rust mirror of `ebpf-programs/mesh_maps.h`: map names and shapes,
//! `#[repr(C)]` keys and values, the dst kinds and reasons, the verdict
//! indices of `mesh_counters`. This is the one module allowed `unsafe`: aya
//! reads and writes map entries as raw bytes, which it only permits for
//! types marked [`aya::Pod`].

#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::mem::size_of;

use vpblu_messages::UnreachableReason;

/// `MESH_DST_MAX_ENTRIES`: mesh destinations and block destinations together.
pub const DST_MAX_ENTRIES: u32 = 65_536;
/// `MESH_BLOCK_FROM_MAX_ENTRIES`.
pub const BLOCK_FROM_MAX_ENTRIES: u32 = 262_144;
/// `MESH_DST_LENS`: destination prefix lengths [`DstLens`] lists; a
/// family whose table uses more is looked up by trie walk.
pub const DST_LENS: usize = 4;
/// `MESH_BLOCK_LENS`: source prefix lengths a [`DstValue`] lists.
pub const BLOCK_LENS: usize = 8;
/// `MESH_BLOCK_LENS_ALL`: the class uses more lengths than fit; the
/// programs probe every length.
pub const BLOCK_LENS_ALL: u8 = 0xff;
/// `MESH_COUNTERS_MAX_ENTRIES`: more than [`Verdict::ALL`] so verdicts can
/// be added without reshaping the pinned map.
pub const COUNTERS_MAX_ENTRIES: u32 = 32;

/// `enum dst_kind`: no mesh destination contains the prefix (it is in the
/// trie as a block destination only).
pub const DST_NONE: u32 = 0;
/// `enum dst_kind`: routed into the mesh.
pub const DST_PEER: u32 = 1;
/// `enum dst_kind`: cluster CIDR with no usable tunnel.
pub const DST_UNREACHABLE: u32 = 2;

/// `struct dst_entry`: what a mesh destination is; the first part of a
/// [`DstValue`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DstEntry {
    /// [`DST_PEER`] or [`DST_UNREACHABLE`] ([`DST_NONE`] only inside a
    /// [`DstValue`]).
    pub kind: u32,
    /// The reason code when unreachable (1 NoKey … 5 Drained), else 0.
    pub reason: u32,
}

impl DstEntry {
    /// Routed into the mesh: classify sets the mesh mark.
    pub const fn peer() -> Self {
        DstEntry { kind: DST_PEER, reason: 0 }
    }

    /// No usable tunnel: classify drops it in strict mode, counted by reason.
    pub const fn unreachable(reason: UnreachableReason) -> Self {
        DstEntry { kind: DST_UNREACHABLE, reason: reason_code(reason) }
    }
}

/// `enum unreachable_reason` for a reason.
pub const fn reason_code(reason: UnreachableReason) -> u32 {
    match reason {
        UnreachableReason::NoKey => 1,
        UnreachableReason::NotPeered => 2,
        UnreachableReason::Isolated => 3,
        UnreachableReason::NotReady => 4,
        UnreachableReason::Drained => 5,
    }
}

const _: () = assert!(size_of::<DstEntry>() == 8);

/// `DST_F_MESH`: the prefix is itself a mesh destination.
pub const DST_F_MESH: u8 = 1;
/// `DST_F_BLOCK`: the prefix is itself a block rule's `to` CIDR.
pub const DST_F_BLOCK: u8 = 2;

/// `struct dst_value`: the value of `mesh_dst_v4` / `mesh_dst_v6`, one
/// trie holding mesh destinations and block destinations, each entry
/// carrying what the longest match needs (see `mesh_maps.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DstValue {
    /// The longest mesh destination containing this prefix; kind
    /// [`DST_NONE`] when there is none.
    pub dst: DstEntry,
    /// The class of the longest block `to` containing this prefix; 0: no
    /// block rule can match.
    pub block_class: u32,
    /// [`DST_F_MESH`] | [`DST_F_BLOCK`]: what this prefix is itself.
    pub flags: u8,
    /// Entries of `block_lens` in use, or [`BLOCK_LENS_ALL`].
    pub block_nlens: u8,
    /// The distinct prefix lengths of the class's sources, longest first.
    pub block_lens: [u8; BLOCK_LENS],
    /// Zero.
    pub pad: [u8; 2],
}

// SAFETY: repr(C): DstEntry (8), u32, then 12 single bytes: no padding;
// every bit pattern is valid.
unsafe impl aya::Pod for DstValue {}
const _: () = assert!(size_of::<DstValue>() == 24);

impl Default for DstEntry {
    /// Kind [`DST_NONE`]: no mesh destination.
    fn default() -> Self {
        DstEntry { kind: DST_NONE, reason: 0 }
    }
}

/// `struct lpm_v4_key` / `struct lpm_v6_key` as the key of the hash copies
/// `mesh_dst_hash_*`: the prefix length and the network address (host bits
/// zero), so one key per table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrefixKey<A> {
    /// Prefix length in bits.
    pub prefixlen: u32,
    /// Network address, network byte order.
    pub addr: A,
}

// SAFETY: repr(C), a u32 then a byte array whose length is a multiple of 4:
// no padding; every bit pattern is valid.
unsafe impl aya::Pod for PrefixKey<[u8; 4]> {}
// SAFETY: as above.
unsafe impl aya::Pod for PrefixKey<[u8; 16]> {}
const _: () = assert!(size_of::<PrefixKey<[u8; 4]>>() == 8);
const _: () = assert!(size_of::<PrefixKey<[u8; 16]>>() == 20);

/// `struct dst_lens`: slot 0 of `mesh_dst_lens`. Per family, the distinct
/// prefix lengths of the destination table, longest first, when there are
/// at most [`DST_LENS`]; the programs then probe `mesh_dst_hash_*` once
/// per length instead of walking the trie. `nlens` 0: walk the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DstLens {
    /// Entries of `lens_v4` in use; 0: IPv4 lookups walk the trie.
    pub nlens_v4: u8,
    /// Entries of `lens_v6` in use; 0: IPv6 lookups walk the trie.
    pub nlens_v6: u8,
    /// Zero.
    pub pad: [u8; 2],
    /// IPv4 prefix lengths, longest first; zero past `nlens_v4`.
    pub lens_v4: [u8; DST_LENS],
    /// IPv6 prefix lengths, longest first; zero past `nlens_v6`.
    pub lens_v6: [u8; DST_LENS],
}

impl DstLens {
    /// The record for tables whose IPv4 and IPv6 entries have the distinct
    /// prefix lengths `v4` and `v6` (any order): a family with more than
    /// [`DST_LENS`] lengths, or none, gets 0 (walk the trie).
    pub fn new(v4: &BTreeSet<u8>, v6: &BTreeSet<u8>) -> DstLens {
        fn list(lens: &BTreeSet<u8>) -> (u8, [u8; DST_LENS]) {
            let mut out = [0; DST_LENS];
            if lens.len() > DST_LENS {
                return (0, out);
            }
            for (slot, len) in out.iter_mut().zip(lens.iter().rev()) {
                *slot = *len;
            }
            (lens.len() as u8, out)
        }
        let (nlens_v4, lens_v4) = list(v4);
        let (nlens_v6, lens_v6) = list(v6);
        DstLens { nlens_v4, nlens_v6, pad: [0; 2], lens_v4, lens_v6 }
    }
}

// SAFETY: repr(C), single bytes only: no padding; every bit pattern is valid.
unsafe impl aya::Pod for DstLens {}
const _: () = assert!(size_of::<DstLens>() == 4 + 2 * DST_LENS);

/// `struct block_from_v4_key`: a block source of one class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockFromV4 {
    /// The destination's block class, host byte order.
    pub block_class: u32,
    /// The source CIDR's prefix length.
    pub prefixlen: u32,
    /// The source network address, network byte order, host bits zero.
    pub src: [u8; 4],
}

// SAFETY: repr(C), two u32 then [u8; 4]: no padding; every bit pattern is valid.
unsafe impl aya::Pod for BlockFromV4 {}
const _: () = assert!(size_of::<BlockFromV4>() == 12);

/// `struct block_from_v6_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockFromV6 {
    /// The destination's block class, host byte order.
    pub block_class: u32,
    /// The source CIDR's prefix length.
    pub prefixlen: u32,
    /// The source network address, network byte order, host bits zero.
    pub src: [u8; 16],
}

// SAFETY: repr(C), two u32 then [u8; 16]: no padding; every bit pattern is valid.
unsafe impl aya::Pod for BlockFromV6 {}
const _: () = assert!(size_of::<BlockFromV6>() == 24);

/// `struct mesh_config`: slot 0 of the `mesh_config` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshConfig {
    /// skb->mark for packets routed into the mesh.
    pub mesh_mark: u32,
    /// 1: drop traffic to unreachable cluster CIDRs; 0: let it pass.
    pub strict: u32,
}

// SAFETY: repr(C), two u32 fields, no padding; every bit pattern is valid.
unsafe impl aya::Pod for MeshConfig {}
const _: () = assert!(size_of::<MeshConfig>() == 8);

/// `enum verdict`: what a program decided for one packet; the index into
/// `mesh_counters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Verdict {
    /// classify: not IPv4/IPv6, or headers unreadable; passed.
    PassNotIp = 0,
    /// classify: destination not in mesh_dst (not cluster traffic); passed.
    PassLocal = 1,
    /// classify: destination is a peer's CIDR; marked and passed.
    ToMesh = 2,
    /// classify: a block rule matched; dropped.
    DropBlocked = 3,
    /// classify, strict: unreachable because the owner has no key; dropped.
    DropUnreachableNoKey = 4,
    /// classify, strict: unreachable because not peered; dropped.
    DropUnreachableNotPeered = 5,
    /// classify, strict: unreachable because a node is isolated; dropped.
    DropUnreachableIsolated = 6,
    /// classify, strict: unreachable because the owner is not ready; dropped.
    DropUnreachableNotReady = 7,
    /// classify, strict: unreachable because the route target is drained; dropped.
    DropUnreachableDrained = 8,
    /// classify, strict: unreachable with a reason code this build does not know; dropped.
    DropUnreachableOther = 9,
    /// classify, not strict: unreachable but passed.
    PassUnreachable = 10,
    /// deliver: not blocked; passed.
    DeliverPass = 11,
    /// deliver: a block rule matched; dropped.
    DeliverDropBlocked = 12,
    /// deliver: not IPv4/IPv6, or headers unreadable; passed.
    DeliverPassNotIp = 13,
}

impl Verdict {
    /// Every verdict, in index order.
    pub const ALL: [Verdict; 14] = [
        Verdict::PassNotIp,
        Verdict::PassLocal,
        Verdict::ToMesh,
        Verdict::DropBlocked,
        Verdict::DropUnreachableNoKey,
        Verdict::DropUnreachableNotPeered,
        Verdict::DropUnreachableIsolated,
        Verdict::DropUnreachableNotReady,
        Verdict::DropUnreachableDrained,
        Verdict::DropUnreachableOther,
        Verdict::PassUnreachable,
        Verdict::DeliverPass,
        Verdict::DeliverDropBlocked,
        Verdict::DeliverPassNotIp,
    ];

    /// The `mesh_counters` index.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The strict-mode drop verdict for an unreachable reason.
    pub const fn for_unreachable(reason: UnreachableReason) -> Verdict {
        match reason {
            UnreachableReason::NoKey => Verdict::DropUnreachableNoKey,
            UnreachableReason::NotPeered => Verdict::DropUnreachableNotPeered,
            UnreachableReason::Isolated => Verdict::DropUnreachableIsolated,
            UnreachableReason::NotReady => Verdict::DropUnreachableNotReady,
            UnreachableReason::Drained => Verdict::DropUnreachableDrained,
        }
    }

    /// A stable snake_case name, for metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::PassNotIp => "pass_not_ip",
            Verdict::PassLocal => "pass_local",
            Verdict::ToMesh => "to_mesh",
            Verdict::DropBlocked => "drop_blocked",
            Verdict::DropUnreachableNoKey => "drop_unreachable_no_key",
            Verdict::DropUnreachableNotPeered => "drop_unreachable_not_peered",
            Verdict::DropUnreachableIsolated => "drop_unreachable_isolated",
            Verdict::DropUnreachableNotReady => "drop_unreachable_not_ready",
            Verdict::DropUnreachableDrained => "drop_unreachable_drained",
            Verdict::DropUnreachableOther => "drop_unreachable_other",
            Verdict::PassUnreachable => "pass_unreachable",
            Verdict::DeliverPass => "deliver_pass",
            Verdict::DeliverDropBlocked => "deliver_drop_blocked",
            Verdict::DeliverPassNotIp => "deliver_pass_not_ip",
        }
    }
}

const _: () = assert!((Verdict::ALL.len() as u32) <= COUNTERS_MAX_ENTRIES);

/// `BPF_MAP_TYPE_HASH`.
const MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_LPM_TRIE`.
const MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
const MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_F_NO_PREALLOC`: required by LPM tries; the block hashes use it so
/// an empty rule set costs no kernel memory.
const F_NO_PREALLOC: u32 = 1;

/// The kernel-visible shape of one map. A pinned map whose shape differs
/// from this build's is refused rather than reused: the programs would read
/// it with the wrong layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// Name in the object, and file name of the pin.
    pub name: &'static str,
    /// `bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// `max_entries`.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
}

const fn lpm(name: &'static str, key_size: usize, value_size: usize, max_entries: u32) -> MapShape {
    MapShape { map_type: MAP_TYPE_LPM_TRIE, ..hash(name, key_size, value_size, max_entries) }
}

const fn hash(name: &'static str, key_size: usize, value_size: usize, max_entries: u32) -> MapShape {
    MapShape {
        name,
        map_type: MAP_TYPE_HASH,
        key_size: key_size as u32,
        value_size: value_size as u32,
        max_entries,
        flags: F_NO_PREALLOC,
    }
}

/// An ARRAY with one slot (key 0) of `value_size` bytes.
const fn one_slot(name: &'static str, value_size: usize) -> MapShape {
    MapShape {
        name,
        map_type: MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: value_size as u32,
        max_entries: 1,
        flags: 0,
    }
}

/// `mesh_dst_v4`: LPM {prefixlen, addr[4]} → [`DstValue`].
pub const DST_V4: MapShape = lpm("mesh_dst_v4", 4 + 4, size_of::<DstValue>(), DST_MAX_ENTRIES);
/// `mesh_dst_v6`: LPM {prefixlen, addr[16]} → [`DstValue`].
pub const DST_V6: MapShape = lpm("mesh_dst_v6", 4 + 16, size_of::<DstValue>(), DST_MAX_ENTRIES);
/// `mesh_dst_hash_v4`: HASH [`PrefixKey`]`<[u8; 4]>` → [`DstValue`], the
/// entries of [`DST_V4`].
pub const DST_HASH_V4: MapShape =
    hash("mesh_dst_hash_v4", size_of::<PrefixKey<[u8; 4]>>(), size_of::<DstValue>(), DST_MAX_ENTRIES);
/// `mesh_dst_hash_v6`: HASH [`PrefixKey`]`<[u8; 16]>` → [`DstValue`], the
/// entries of [`DST_V6`].
pub const DST_HASH_V6: MapShape =
    hash("mesh_dst_hash_v6", size_of::<PrefixKey<[u8; 16]>>(), size_of::<DstValue>(), DST_MAX_ENTRIES);
/// `mesh_dst_lens`: ARRAY[1] of [`DstLens`].
pub const DST_LENS_MAP: MapShape = one_slot("mesh_dst_lens", size_of::<DstLens>());
/// `mesh_block_from_v4`: HASH [`BlockFromV4`] → u8.
pub const BLOCK_FROM_V4: MapShape =
    hash("mesh_block_from_v4", size_of::<BlockFromV4>(), 1, BLOCK_FROM_MAX_ENTRIES);
/// `mesh_block_from_v6`: HASH [`BlockFromV6`] → u8.
pub const BLOCK_FROM_V6: MapShape =
    hash("mesh_block_from_v6", size_of::<BlockFromV6>(), 1, BLOCK_FROM_MAX_ENTRIES);
/// `mesh_config`: ARRAY[1] of [`MeshConfig`].
pub const CONFIG: MapShape = one_slot("mesh_config", size_of::<MeshConfig>());
/// `mesh_counters`: PERCPU_ARRAY of u64 indexed by [`Verdict`].
pub const COUNTERS: MapShape = MapShape {
    name: "mesh_counters",
    map_type: MAP_TYPE_PERCPU_ARRAY,
    key_size: 4,
    value_size: 8,
    max_entries: COUNTERS_MAX_ENTRIES,
    flags: 0,
};

/// Every map both programs share, all pinned by name.
pub const ALL_MAPS: [MapShape; 9] =
    [DST_V4, DST_V6, DST_HASH_V4, DST_HASH_V6, DST_LENS_MAP, BLOCK_FROM_V4, BLOCK_FROM_V6, CONFIG, COUNTERS];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_indices_are_dense_and_in_order() {
        for (i, v) in Verdict::ALL.iter().enumerate() {
            assert_eq!(v.index() as usize, i, "{v:?}");
        }
    }

    #[test]
    fn dst_lens_list_the_longest_first_or_send_to_the_trie() {
        let set = |lens: &[u8]| lens.iter().copied().collect::<BTreeSet<u8>>();
        let lens = DstLens::new(&set(&[16, 24, 32]), &set(&[64, 32, 128, 48]));
        assert_eq!((lens.nlens_v4, lens.lens_v4), (3, [32, 24, 16, 0]));
        assert_eq!((lens.nlens_v6, lens.lens_v6), (4, [128, 64, 48, 32]));
        let lens = DstLens::new(&set(&[8, 16, 20, 24, 32]), &set(&[]));
        assert_eq!((lens.nlens_v4, lens.lens_v4), (0, [0; DST_LENS]), "five lengths: the trie");
        assert_eq!(lens.nlens_v6, 0, "no entries: the (empty) trie");
        assert_eq!(DstLens::default(), DstLens::new(&set(&[]), &set(&[])), "a fresh map walks the tries");
    }

    #[test]
    fn reason_codes_match_the_c_enum() {
        assert_eq!(DstEntry::unreachable(UnreachableReason::NoKey), DstEntry { kind: 2, reason: 1 });
        assert_eq!(DstEntry::unreachable(UnreachableReason::Drained), DstEntry { kind: 2, reason: 5 });
        assert_eq!(DstEntry::peer(), DstEntry { kind: 1, reason: 0 });
    }
}
