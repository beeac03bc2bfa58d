//! The destination table's contents: mesh destinations and block
//! destinations in one table (an LPM trie per family, and a hash copy the
//! programs probe once per prefix length while there are few), so a packet
//! costs one longest-match lookup. Each entry is flattened so that the
//! longest match for an address answers both questions the programs ask:
//! - the longest mesh destination containing it (mesh marking, strict mode);
//! - the block class of the longest block `to` containing it (0: no block
//!   rule can match, so no block lookup), with the class's source lengths.
//!
//! Both answers carry over from a prefix to everything it contains: if a
//! mesh destination (or block `to`) longer than the matched entry contained
//! the address, it would be in the trie and would have matched instead.
//! Each entry also says what it is itself (flags), so either half can be
//! read back from the maps and the other half rewritten around it. Pure:
//! no maps, no I/O.

use std::collections::BTreeMap;

use vpblu_messages::Cidr;

use super::blocks::{BlockTables, supernets};
use super::layout::{BLOCK_LENS, BLOCK_LENS_ALL, DST_F_BLOCK, DST_F_MESH, DstEntry, DstValue};

/// What a block destination puts into its entry: its class and the
/// distinct prefix lengths of the class's sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMark {
    /// The class (never 0).
    pub class: u32,
    /// Entries of `lens` in use, or [`BLOCK_LENS_ALL`] when more lengths
    /// than fit (the programs then probe every length).
    pub nlens: u8,
    /// Source prefix lengths, longest first; zero past `nlens`.
    pub lens: [u8; BLOCK_LENS],
}

impl BlockMark {
    /// The mark of `class` whose sources have the distinct prefix lengths
    /// `lens` (longest first).
    pub fn new(class: u32, lens: &[u8]) -> BlockMark {
        let mut mark = BlockMark { class, nlens: BLOCK_LENS_ALL, lens: [0; BLOCK_LENS] };
        if lens.len() <= BLOCK_LENS {
            mark.lens[..lens.len()].copy_from_slice(lens);
            mark.nlens = lens.len() as u8;
        }
        mark
    }
}

/// The block destinations of `tables`, each with its class's mark.
pub fn block_marks(tables: &BlockTables) -> BTreeMap<Cidr, BlockMark> {
    let lens = tables.source_lengths();
    tables
        .destinations
        .iter()
        .map(|(to, class)| {
            let class_lens = lens.get(class).map(Vec::as_slice).unwrap_or_default();
            (*to, BlockMark::new(*class, class_lens))
        })
        .collect()
}

/// The table entries for mesh `destinations` and block `marks`.
pub fn merge(
    destinations: &BTreeMap<Cidr, DstEntry>,
    marks: &BTreeMap<Cidr, BlockMark>,
) -> BTreeMap<Cidr, DstValue> {
    let mut out = BTreeMap::new();
    for prefix in destinations.keys().chain(marks.keys()) {
        if out.contains_key(prefix) {
            continue;
        }
        let mut value = DstValue::default();
        if let Some(entry) = longest_containing(destinations, *prefix) {
            value.dst = *entry;
        }
        if let Some(mark) = longest_containing(marks, *prefix) {
            value.block_class = mark.class;
            value.block_nlens = mark.nlens;
            value.block_lens = mark.lens;
        }
        if destinations.contains_key(prefix) {
            value.flags |= DST_F_MESH;
        }
        if marks.contains_key(prefix) {
            value.flags |= DST_F_BLOCK;
        }
        out.insert(*prefix, value);
    }
    out
}

/// Reads table entries back into the two halves [`merge`] made them from.
pub fn split(entries: &BTreeMap<Cidr, DstValue>) -> (BTreeMap<Cidr, DstEntry>, BTreeMap<Cidr, BlockMark>) {
    let mut destinations = BTreeMap::new();
    let mut marks = BTreeMap::new();
    for (prefix, value) in entries {
        if value.flags & DST_F_MESH != 0 {
            destinations.insert(*prefix, value.dst);
        }
        if value.flags & DST_F_BLOCK != 0 {
            marks.insert(
                *prefix,
                BlockMark { class: value.block_class, nlens: value.block_nlens, lens: value.block_lens },
            );
        }
    }
    (destinations, marks)
}

fn longest_containing<V>(map: &BTreeMap<Cidr, V>, prefix: Cidr) -> Option<&V> {
    let mut found = None;
    for candidate in supernets(prefix) {
        if let Some(v) = map.get(&candidate) {
            found = Some(v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use proptest::prelude::*;
    use vpblu_messages::{BlockRule, UnreachableReason};

    use super::super::blocks;
    use super::super::layout::DST_NONE;
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// What the programs do with the table and the source hash: longest
    /// match on the destination, then one probe per listed length (every
    /// length for BLOCK_LENS_ALL). Returns (mesh entry, blocked).
    fn data_plane(
        trie: &BTreeMap<Cidr, DstValue>,
        sources: &BTreeSet<(u32, Cidr)>,
        src: IpAddr,
        dst: IpAddr,
    ) -> (Option<DstEntry>, bool) {
        let Some((_, value)) =
            trie.iter().filter(|(c, _)| c.contains_ip(dst)).max_by_key(|(c, _)| c.prefix_len())
        else {
            return (None, false);
        };
        let mesh = (value.dst.kind != DST_NONE).then_some(value.dst);
        if value.block_class == 0 {
            return (mesh, false);
        }
        let max = if src.is_ipv4() { 32 } else { 128 };
        let lens: Vec<u8> = if value.block_nlens == BLOCK_LENS_ALL {
            (0..=max).collect()
        } else {
            value.block_lens[..usize::from(value.block_nlens)].to_vec()
        };
        let blocked = lens
            .iter()
            .any(|len| Cidr::containing(src, *len).is_ok_and(|p| sources.contains(&(value.block_class, p))));
        (mesh, blocked)
    }

    #[test]
    fn a_block_destination_inside_a_peer_cidr_keeps_the_peer() {
        let destinations = BTreeMap::from([(cidr("10.70.0.0/16"), DstEntry::peer())]);
        let tables = blocks::flatten(
            &[BlockRule { from: cidr("10.60.1.0/24"), to: cidr("10.70.5.0/24") }],
            &BTreeMap::new(),
        );
        let trie = merge(&destinations, &block_marks(&tables));
        assert_eq!(trie.len(), 2);
        let inner = trie[&cidr("10.70.5.0/24")];
        assert_eq!(inner.dst, DstEntry::peer(), "the block entry says where the packet goes too");
        assert_eq!((inner.block_class, inner.flags, inner.block_nlens), (1, DST_F_BLOCK, 1));
        assert_eq!(inner.block_lens[0], 24);
        let outer = trie[&cidr("10.70.0.0/16")];
        assert_eq!((outer.block_class, outer.flags), (0, DST_F_MESH), "no rule covers the rest of the /16");

        let (mesh, blocked) = data_plane(&trie, &tables.sources, ip("10.60.1.9"), ip("10.70.5.5"));
        assert_eq!((mesh, blocked), (Some(DstEntry::peer()), true));
        let (mesh, blocked) = data_plane(&trie, &tables.sources, ip("10.60.2.9"), ip("10.70.5.5"));
        assert_eq!((mesh, blocked), (Some(DstEntry::peer()), false));
    }

    #[test]
    fn a_mesh_destination_inside_a_block_destination_inherits_its_class() {
        let destinations = BTreeMap::from([
            (cidr("fd70:1::/64"), DstEntry::peer()),
            (cidr("fd70::/32"), DstEntry::unreachable(UnreachableReason::NoKey)),
        ]);
        let marks = BTreeMap::from([(cidr("fd70::/48"), BlockMark::new(3, &[64, 48]))]);
        let trie = merge(&destinations, &marks);
        assert_eq!(trie[&cidr("fd70:1::/64")].block_class, 0, "fd70:1:: is outside fd70::/48");
        let nested = merge(
            &BTreeMap::from([(cidr("fd70::/64"), DstEntry::peer())]),
            &BTreeMap::from([(cidr("fd70::/48"), BlockMark::new(3, &[64, 48]))]),
        );
        let v = nested[&cidr("fd70::/64")];
        assert_eq!((v.block_class, v.block_nlens, v.flags), (3, 2, DST_F_MESH));
        assert_eq!(nested[&cidr("fd70::/48")].dst.kind, DST_NONE, "no mesh destination contains the /48");
    }

    #[test]
    fn a_class_with_more_lengths_than_fit_probes_every_length() {
        let lens: Vec<u8> = (16..=25).rev().collect();
        let mark = BlockMark::new(9, &lens);
        assert_eq!(mark.nlens, BLOCK_LENS_ALL);
        let rules: Vec<BlockRule> = lens
            .iter()
            .map(|len| BlockRule {
                from: Cidr::containing(IpAddr::from([10, 1 + *len, 0, 0]), *len).unwrap(),
                to: cidr("10.99.0.0/16"),
            })
            .collect();
        let tables = blocks::flatten(&rules, &BTreeMap::new());
        let trie = merge(&BTreeMap::new(), &block_marks(&tables));
        assert_eq!(trie[&cidr("10.99.0.0/16")].block_nlens, BLOCK_LENS_ALL);
        for r in &rules {
            assert!(data_plane(&trie, &tables.sources, r.from.addr(), ip("10.99.1.1")).1, "{r:?}");
        }
        assert!(!data_plane(&trie, &tables.sources, ip("10.0.0.1"), ip("10.99.1.1")).1);
    }

    #[test]
    fn block_destinations_inherit_the_mesh_destination_around_them_in_both_families() {
        let destinations =
            BTreeMap::from([(cidr("10.99.0.0/16"), DstEntry::peer()), (cidr("fd99::/16"), DstEntry::peer())]);
        let rules = [
            BlockRule { from: cidr("10.16.0.0/16"), to: cidr("10.99.1.0/24") },
            BlockRule { from: cidr("fd10:10::/48"), to: cidr("fd99:1::/48") },
        ];
        let trie = merge(&destinations, &block_marks(&blocks::flatten(&rules, &BTreeMap::new())));
        assert_eq!(trie[&cidr("10.99.1.0/24")].dst, DstEntry::peer());
        assert_eq!(trie[&cidr("fd99:1::/48")].dst, DstEntry::peer());
        // fd99::/32 is fd99:0::/32: fd99:1:: is outside it.
        let narrow = BTreeMap::from([(cidr("fd99::/32"), DstEntry::peer())]);
        let trie = merge(&narrow, &block_marks(&blocks::flatten(&rules, &BTreeMap::new())));
        assert_eq!(trie[&cidr("fd99:1::/48")].dst.kind, DST_NONE);
    }

    #[test]
    fn split_gives_back_both_halves() {
        let destinations = BTreeMap::from([
            (cidr("10.70.0.0/16"), DstEntry::peer()),
            (cidr("10.70.5.0/24"), DstEntry::unreachable(UnreachableReason::Drained)),
        ]);
        let marks = BTreeMap::from([
            (cidr("10.70.5.0/24"), BlockMark::new(1, &[24])),
            (cidr("10.0.0.0/8"), BlockMark::new(2, &[16, 8])),
        ]);
        assert_eq!(split(&merge(&destinations, &marks)), (destinations, marks));
    }

    fn arb_v4_cidr() -> impl Strategy<Value = Cidr> {
        (0u8..4, 0u8..4, 8u8..=26)
            .prop_map(|(a, b, len)| Cidr::containing(IpAddr::from([10, a * 64, b * 64, 0]), len).unwrap())
    }

    fn arb_v4_addr() -> impl Strategy<Value = IpAddr> {
        (0u8..=255, 0u8..=255, 0u8..=255).prop_map(|(b, c, d)| IpAddr::from([10, b, c, d]))
    }

    fn arb_entry() -> impl Strategy<Value = DstEntry> {
        prop_oneof![Just(DstEntry::peer()), Just(DstEntry::unreachable(UnreachableReason::NotPeered))]
    }

    proptest! {
        /// One longest match on the merged table, plus the hash probes,
        /// answers exactly what the rules and the destinations say.
        #[test]
        fn the_merged_trie_agrees_with_rules_and_destinations(
            rules in prop::collection::vec((arb_v4_cidr(), arb_v4_cidr()), 0..12),
            destinations in prop::collection::btree_map(arb_v4_cidr(), arb_entry(), 0..6),
            probes in prop::collection::vec((arb_v4_addr(), arb_v4_addr()), 48),
        ) {
            let rules: Vec<BlockRule> = rules.into_iter().map(|(from, to)| BlockRule { from, to }).collect();
            let tables = blocks::flatten(&rules, &BTreeMap::new());
            let trie = merge(&destinations, &block_marks(&tables));
            prop_assert_eq!(split(&trie).0, destinations.clone());
            let mut edges: Vec<(IpAddr, IpAddr)> = rules.iter().map(|r| (r.from.addr(), r.to.addr())).collect();
            edges.extend(probes);
            for (src, dst) in edges {
                let want_blocked = rules.iter().any(|r| r.from.contains_ip(src) && r.to.contains_ip(dst));
                let want_mesh = destinations
                    .iter()
                    .filter(|(c, _)| c.contains_ip(dst))
                    .max_by_key(|(c, _)| c.prefix_len())
                    .map(|(_, e)| *e);
                prop_assert_eq!(data_plane(&trie, &tables.sources, src, dst), (want_mesh, want_blocked), "{} -> {}", src, dst);
            }
        }
    }
}
