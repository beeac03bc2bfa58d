//! Block rules (`from` CIDR → `to` CIDR) flattened into the two lookups the
//! data plane does per packet: the source address finds its class in
//! `mesh_block_src_*` (longest match), then `{class, destination}` finds a
//! drop in `mesh_block_pair_*` (longest match). Two LPM lookups whatever the
//! number of rules.
//!
//! For one longest match on the source to be enough, the class of a `from`
//! CIDR carries every rule whose `from` contains it: nested `from` CIDRs
//! inherit their parents' `to` sets. Pure: no maps, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use vpblu_messages::{BlockRule, Cidr};

/// What the block maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockTables {
    /// Each distinct `from` CIDR and its class (source maps, both families).
    pub sources: BTreeMap<Cidr, u32>,
    /// Every `(class, to)` that drops (pair maps, both families).
    pub pairs: BTreeSet<(u32, Cidr)>,
    /// Rules whose `from` and `to` are of different families: no packet can
    /// match them, so they are left out.
    pub mixed_family: Vec<BlockRule>,
}

/// Flattens `rules`. `previous` is the source → class assignment the maps
/// hold now: a `from` CIDR that is still there keeps its class, so an
/// unchanged rule set rewrites nothing and a change touches only what
/// changed. New `from` CIDRs get the smallest class not in `previous` at
/// all, so a class freed by this change is never handed to different
/// sources while the maps are being rewritten. Classes start at 1.
///
/// The result does not depend on the order of `rules`.
pub fn flatten(rules: &[BlockRule], previous: &BTreeMap<Cidr, u32>) -> BlockTables {
    let mut direct: BTreeMap<Cidr, BTreeSet<Cidr>> = BTreeMap::new();
    let mut mixed_family = Vec::new();
    for rule in rules {
        if rule.from.is_ipv4() == rule.to.is_ipv4() {
            direct.entry(rule.from).or_default().insert(rule.to);
        } else {
            mixed_family.push(*rule);
        }
    }
    mixed_family.sort();
    mixed_family.dedup();

    let sources = assign_classes(direct.keys().copied(), previous);

    let mut pairs = BTreeSet::new();
    for (from, class) in &sources {
        // The longest `from` containing a source address is `from` itself;
        // every rule whose `from` contains that address contains `from`.
        let mut to_set = BTreeSet::new();
        for ancestor in supernets(*from) {
            if let Some(tos) = direct.get(&ancestor) {
                to_set.extend(tos.iter().copied());
            }
        }
        for to in without_nested(&to_set) {
            pairs.insert((*class, to));
        }
    }

    BlockTables { sources, pairs, mixed_family }
}

/// True when the flattened tables drop `src → dst`, evaluated the way the
/// data plane does: longest match on the source, then longest match on
/// `{class, dst}`. For tests and diagnostics.
pub fn tables_block(tables: &BlockTables, src: std::net::IpAddr, dst: std::net::IpAddr) -> bool {
    let Some(class) = longest_match(tables.sources.keys().copied(), src).map(|c| tables.sources[&c]) else {
        return false;
    };
    tables.pairs.iter().any(|(c, to)| *c == class && to.contains_ip(dst))
}

fn longest_match(cidrs: impl Iterator<Item = Cidr>, ip: std::net::IpAddr) -> Option<Cidr> {
    cidrs.filter(|c| c.contains_ip(ip)).max_by_key(Cidr::prefix_len)
}

fn assign_classes(froms: impl Iterator<Item = Cidr>, previous: &BTreeMap<Cidr, u32>) -> BTreeMap<Cidr, u32> {
    let mut sources = BTreeMap::new();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut fresh = Vec::new();
    for from in froms {
        match previous.get(&from) {
            // 0 is not a class; a duplicate means the map was not written by us.
            Some(&class) if class != 0 && used.insert(class) => {
                sources.insert(from, class);
            }
            _ => fresh.push(from),
        }
    }
    let taken: BTreeSet<u32> = previous.values().copied().chain(used.iter().copied()).collect();
    let mut next = 1u32;
    for from in fresh {
        while taken.contains(&next) {
            next += 1;
        }
        sources.insert(from, next);
        next += 1;
    }
    sources
}

/// `cidr` and every shorter prefix containing it.
fn supernets(cidr: Cidr) -> impl Iterator<Item = Cidr> {
    (0..=cidr.prefix_len()).map(move |len| {
        Cidr::containing(cidr.addr(), len).expect("prefix lengths up to the CIDR's own are in range")
    })
}

/// The CIDRs of `set` not contained in another CIDR of `set`: a nested
/// destination adds no drop its parent does not already make.
fn without_nested(set: &BTreeSet<Cidr>) -> impl Iterator<Item = Cidr> + '_ {
    set.iter().copied().filter(move |to| supernets(*to).all(|parent| parent == *to || !set.contains(&parent)))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn rule(from: &str, to: &str) -> BlockRule {
        BlockRule { from: cidr(from), to: cidr(to) }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fresh(rules: &[BlockRule]) -> BlockTables {
        flatten(rules, &BTreeMap::new())
    }

    #[test]
    fn one_rule_is_one_source_and_one_pair() {
        let t = fresh(&[rule("10.0.1.0/24", "10.0.2.0/24")]);
        assert_eq!(t.sources, BTreeMap::from([(cidr("10.0.1.0/24"), 1)]));
        assert_eq!(t.pairs, BTreeSet::from([(1, cidr("10.0.2.0/24"))]));
        assert!(tables_block(&t, ip("10.0.1.7"), ip("10.0.2.9")));
        assert!(!tables_block(&t, ip("10.0.2.9"), ip("10.0.1.7")), "blocks are directional");
        assert!(!tables_block(&t, ip("10.0.1.7"), ip("10.0.3.1")));
    }

    #[test]
    fn nested_from_inherits_the_parents_destinations() {
        let t = fresh(&[rule("10.0.0.0/8", "192.168.0.0/16"), rule("10.1.0.0/16", "172.16.0.0/12")]);
        let wide = t.sources[&cidr("10.0.0.0/8")];
        let narrow = t.sources[&cidr("10.1.0.0/16")];
        assert_ne!(wide, narrow);
        assert_eq!(
            t.pairs,
            BTreeSet::from([
                (wide, cidr("192.168.0.0/16")),
                (narrow, cidr("172.16.0.0/12")),
                (narrow, cidr("192.168.0.0/16")),
            ])
        );
        // A source in the narrow block matches it longest, yet is still
        // dropped towards the wide block's destination.
        assert!(tables_block(&t, ip("10.1.2.3"), ip("192.168.1.1")));
        assert!(tables_block(&t, ip("10.1.2.3"), ip("172.16.0.1")));
        assert!(tables_block(&t, ip("10.2.0.1"), ip("192.168.1.1")));
        assert!(!tables_block(&t, ip("10.2.0.1"), ip("172.16.0.1")));
    }

    #[test]
    fn nested_destinations_collapse_into_the_wider_one() {
        let t = fresh(&[rule("10.0.1.0/24", "10.0.0.0/16"), rule("10.0.1.0/24", "10.0.2.0/24")]);
        assert_eq!(t.pairs, BTreeSet::from([(1, cidr("10.0.0.0/16"))]));
    }

    #[test]
    fn duplicate_rules_are_one() {
        let r = rule("10.0.1.0/24", "10.0.2.0/24");
        assert_eq!(fresh(&[r, r]), fresh(&[r]));
    }

    #[test]
    fn ipv6_and_ipv4_are_flattened_side_by_side() {
        let t = fresh(&[rule("fd50:1::/64", "fd50:2::/64"), rule("10.50.1.0/24", "10.50.2.0/24")]);
        assert_eq!(t.sources.len(), 2);
        assert!(tables_block(&t, ip("fd50:1::2"), ip("fd50:2::2")));
        assert!(!tables_block(&t, ip("fd50:2::2"), ip("fd50:1::2")));
        assert!(tables_block(&t, ip("10.50.1.2"), ip("10.50.2.2")));
    }

    #[test]
    fn mixed_family_rules_are_set_aside() {
        let r = rule("10.0.1.0/24", "fd00::/8");
        let t = fresh(&[r]);
        assert!(t.sources.is_empty());
        assert!(t.pairs.is_empty());
        assert_eq!(t.mixed_family, vec![r]);
    }

    #[test]
    fn a_from_of_zero_length_covers_every_source() {
        let t = fresh(&[rule("0.0.0.0/0", "10.9.0.0/16"), rule("10.1.0.0/16", "10.8.0.0/16")]);
        assert!(tables_block(&t, ip("1.2.3.4"), ip("10.9.1.1")));
        assert!(tables_block(&t, ip("10.1.1.1"), ip("10.9.1.1")));
        assert!(tables_block(&t, ip("10.1.1.1"), ip("10.8.1.1")));
        assert!(!tables_block(&t, ip("1.2.3.4"), ip("10.8.1.1")));
    }

    #[test]
    fn classes_are_kept_across_changes() {
        let before = fresh(&[rule("10.0.1.0/24", "10.0.2.0/24"), rule("10.0.3.0/24", "10.0.2.0/24")]);
        let after = flatten(
            &[rule("10.0.3.0/24", "10.0.2.0/24"), rule("10.0.5.0/24", "10.0.2.0/24")],
            &before.sources,
        );
        assert_eq!(after.sources[&cidr("10.0.3.0/24")], before.sources[&cidr("10.0.3.0/24")]);
        // 10.0.1.0/24's class was freed by this very change: not reused.
        let freed = before.sources[&cidr("10.0.1.0/24")];
        assert_ne!(after.sources[&cidr("10.0.5.0/24")], freed);
        assert!(!after.sources.values().any(|c| *c == freed));
    }

    #[test]
    fn the_same_rules_against_their_own_classes_change_nothing() {
        let rules = [rule("10.0.0.0/8", "10.2.0.0/16"), rule("10.1.0.0/16", "fd00::/8")];
        let first = fresh(&rules);
        assert_eq!(flatten(&rules, &first.sources), first);
    }

    #[test]
    fn bogus_previous_classes_are_replaced() {
        let previous =
            BTreeMap::from([(cidr("10.0.1.0/24"), 0), (cidr("10.0.2.0/24"), 7), (cidr("10.0.3.0/24"), 7)]);
        let t = flatten(
            &[
                rule("10.0.1.0/24", "10.9.0.0/16"),
                rule("10.0.2.0/24", "10.9.0.0/16"),
                rule("10.0.3.0/24", "10.9.0.0/16"),
            ],
            &previous,
        );
        let classes: BTreeSet<u32> = t.sources.values().copied().collect();
        assert_eq!(classes.len(), 3, "classes are distinct: {:?}", t.sources);
        assert!(!classes.contains(&0));
    }

    fn arb_v4_cidr() -> impl Strategy<Value = Cidr> {
        // A small address space so that nesting and overlap are common.
        (0u8..4, 0u8..4, 8u8..=26)
            .prop_map(|(a, b, len)| Cidr::containing(IpAddr::from([10, a * 64, b * 64, 0]), len).unwrap())
    }

    fn arb_v4_addr() -> impl Strategy<Value = IpAddr> {
        (0u8..=255, 0u8..=255, 0u8..=255).prop_map(|(b, c, d)| IpAddr::from([10, b, c, d]))
    }

    proptest! {
        /// The two-lookup form drops exactly what the rules say.
        #[test]
        fn flattened_tables_agree_with_the_rules(
            rules in prop::collection::vec((arb_v4_cidr(), arb_v4_cidr()), 0..12),
            probes in prop::collection::vec((arb_v4_addr(), arb_v4_addr()), 32),
        ) {
            let rules: Vec<BlockRule> = rules.into_iter().map(|(from, to)| BlockRule { from, to }).collect();
            let tables = fresh(&rules);
            for (src, dst) in probes {
                let expected = rules.iter().any(|r| r.from.contains_ip(src) && r.to.contains_ip(dst));
                prop_assert_eq!(tables_block(&tables, src, dst), expected, "{} -> {}", src, dst);
            }
            // Also at the edges of every rule.
            for r in &rules {
                prop_assert!(tables_block(&tables, r.from.addr(), r.to.addr()));
            }
        }

        /// Input order does not matter.
        #[test]
        fn order_does_not_matter(
            rules in prop::collection::vec((arb_v4_cidr(), arb_v4_cidr()), 0..12),
        ) {
            let rules: Vec<BlockRule> = rules.into_iter().map(|(from, to)| BlockRule { from, to }).collect();
            let mut reversed = rules.clone();
            reversed.reverse();
            prop_assert_eq!(fresh(&rules), fresh(&reversed));
        }
    }
}
