//! Block rules (`from` CIDR → `to` CIDR) flattened into what the data
//! plane looks up per packet: the destination's longest match in the
//! destination trie (which it walks anyway, for mesh marking) yields a block
//! class; `{class, source prefix}` in a hash then finds a drop, probed once
//! per distinct source prefix length of that class. A destination that no
//! rule's `to` contains has no class: no block lookup at all.
//!
//! For one longest match on the destination to be enough, the class of a
//! `to` CIDR carries every rule whose `to` contains it: nested `to` CIDRs
//! inherit their parents' `from` sets. Pure: no maps, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use vpblu_messages::{BlockRule, Cidr};

/// What the block maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockTables {
    /// Each distinct `to` CIDR and its class (destination trie, both families).
    pub destinations: BTreeMap<Cidr, u32>,
    /// Every `(class, from)` that drops (block source hashes, both families).
    pub sources: BTreeSet<(u32, Cidr)>,
    /// Rules whose `from` and `to` are of different families: no packet can
    /// match them, so they are left out.
    pub mixed_family: Vec<BlockRule>,
}

impl BlockTables {
    /// The distinct prefix lengths of each class's sources, longest first:
    /// the lengths the data plane probes for a destination of that class.
    pub fn source_lengths(&self) -> BTreeMap<u32, Vec<u8>> {
        let mut lens: BTreeMap<u32, BTreeSet<u8>> = BTreeMap::new();
        for (class, from) in &self.sources {
            lens.entry(*class).or_default().insert(from.prefix_len());
        }
        lens.into_iter().map(|(class, set)| (class, set.into_iter().rev().collect())).collect()
    }
}

/// Flattens `rules`. `previous` is the destination → class assignment the
/// maps hold now: a `to` CIDR that is still there keeps its class, so an
/// unchanged rule set rewrites nothing and a change touches only what
/// changed. New `to` CIDRs get the smallest class not in `previous` at
/// all, so a class freed by this change is never handed to different
/// destinations while the maps are being rewritten. Classes start at 1.
///
/// The result does not depend on the order of `rules`.
pub fn flatten(rules: &[BlockRule], previous: &BTreeMap<Cidr, u32>) -> BlockTables {
    let mut direct: BTreeMap<Cidr, BTreeSet<Cidr>> = BTreeMap::new();
    let mut mixed_family = Vec::new();
    for rule in rules {
        if rule.from.is_ipv4() == rule.to.is_ipv4() {
            direct.entry(rule.to).or_default().insert(rule.from);
        } else {
            mixed_family.push(*rule);
        }
    }
    mixed_family.sort();
    mixed_family.dedup();

    let destinations = assign_classes(direct.keys().copied(), previous);

    let mut sources = BTreeSet::new();
    for (to, class) in &destinations {
        // The longest `to` containing a destination address is `to` itself;
        // every rule whose `to` contains that address contains `to`.
        let mut from_set = BTreeSet::new();
        for ancestor in supernets(*to) {
            if let Some(froms) = direct.get(&ancestor) {
                from_set.extend(froms.iter().copied());
            }
        }
        for from in without_nested(&from_set) {
            sources.insert((*class, from));
        }
    }

    BlockTables { destinations, sources, mixed_family }
}

/// True when the flattened tables drop `src → dst`, evaluated the way the
/// data plane does: longest match on the destination, then `{class,
/// source}` at each of the class's source prefix lengths. For tests and
/// diagnostics.
pub fn tables_block(tables: &BlockTables, src: std::net::IpAddr, dst: std::net::IpAddr) -> bool {
    let Some(class) =
        longest_match(tables.destinations.keys().copied(), dst).map(|c| tables.destinations[&c])
    else {
        return false;
    };
    let lens = tables.source_lengths().remove(&class).unwrap_or_default();
    lens.iter()
        .any(|len| Cidr::containing(src, *len).is_ok_and(|probe| tables.sources.contains(&(class, probe))))
}

fn longest_match(cidrs: impl Iterator<Item = Cidr>, ip: std::net::IpAddr) -> Option<Cidr> {
    cidrs.filter(|c| c.contains_ip(ip)).max_by_key(Cidr::prefix_len)
}

fn assign_classes(keys: impl Iterator<Item = Cidr>, previous: &BTreeMap<Cidr, u32>) -> BTreeMap<Cidr, u32> {
    let mut classes = BTreeMap::new();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut fresh = Vec::new();
    for key in keys {
        match previous.get(&key) {
            // 0 is not a class; a duplicate means the map was not written by us.
            Some(&class) if class != 0 && used.insert(class) => {
                classes.insert(key, class);
            }
            _ => fresh.push(key),
        }
    }
    let taken: BTreeSet<u32> = previous.values().copied().chain(used.iter().copied()).collect();
    let mut next = 1u32;
    for key in fresh {
        while taken.contains(&next) {
            next += 1;
        }
        classes.insert(key, next);
        next += 1;
    }
    classes
}

/// `cidr` and every shorter prefix containing it.
pub(crate) fn supernets(cidr: Cidr) -> impl Iterator<Item = Cidr> {
    (0..=cidr.prefix_len()).map(move |len| {
        Cidr::containing(cidr.addr(), len).expect("prefix lengths up to the CIDR's own are in range")
    })
}

/// The CIDRs of `set` not contained in another CIDR of `set`: a nested
/// source adds no drop its parent does not already make.
fn without_nested(set: &BTreeSet<Cidr>) -> impl Iterator<Item = Cidr> + '_ {
    set.iter().copied().filter(move |c| supernets(*c).all(|parent| parent == *c || !set.contains(&parent)))
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
    fn one_rule_is_one_destination_and_one_source() {
        let t = fresh(&[rule("10.0.1.0/24", "10.0.2.0/24")]);
        assert_eq!(t.destinations, BTreeMap::from([(cidr("10.0.2.0/24"), 1)]));
        assert_eq!(t.sources, BTreeSet::from([(1, cidr("10.0.1.0/24"))]));
        assert_eq!(t.source_lengths(), BTreeMap::from([(1, vec![24])]));
        assert!(tables_block(&t, ip("10.0.1.7"), ip("10.0.2.9")));
        assert!(!tables_block(&t, ip("10.0.2.9"), ip("10.0.1.7")), "blocks are directional");
        assert!(!tables_block(&t, ip("10.0.1.7"), ip("10.0.3.1")));
        assert!(!tables_block(&t, ip("10.0.3.1"), ip("10.0.2.9")));
    }

    #[test]
    fn nested_to_inherits_the_parents_sources() {
        let t = fresh(&[rule("192.168.0.0/16", "10.0.0.0/8"), rule("172.16.0.0/12", "10.1.0.0/16")]);
        let wide = t.destinations[&cidr("10.0.0.0/8")];
        let narrow = t.destinations[&cidr("10.1.0.0/16")];
        assert_ne!(wide, narrow);
        assert_eq!(
            t.sources,
            BTreeSet::from([
                (wide, cidr("192.168.0.0/16")),
                (narrow, cidr("172.16.0.0/12")),
                (narrow, cidr("192.168.0.0/16")),
            ])
        );
        assert_eq!(t.source_lengths()[&narrow], vec![16, 12], "longest first");
        // A destination in the narrow block matches it longest, yet is still
        // dropped from the wide block's source.
        assert!(tables_block(&t, ip("192.168.1.1"), ip("10.1.2.3")));
        assert!(tables_block(&t, ip("172.16.0.1"), ip("10.1.2.3")));
        assert!(tables_block(&t, ip("192.168.1.1"), ip("10.2.0.1")));
        assert!(!tables_block(&t, ip("172.16.0.1"), ip("10.2.0.1")));
    }

    #[test]
    fn nested_sources_collapse_into_the_wider_one() {
        let t = fresh(&[rule("10.0.0.0/16", "10.0.1.0/24"), rule("10.0.2.0/24", "10.0.1.0/24")]);
        assert_eq!(t.sources, BTreeSet::from([(1, cidr("10.0.0.0/16"))]));
    }

    #[test]
    fn duplicate_rules_are_one() {
        let r = rule("10.0.1.0/24", "10.0.2.0/24");
        assert_eq!(fresh(&[r, r]), fresh(&[r]));
    }

    #[test]
    fn ipv6_and_ipv4_are_flattened_side_by_side() {
        let t = fresh(&[rule("fd50:1::/64", "fd50:2::/64"), rule("10.50.1.0/24", "10.50.2.0/24")]);
        assert_eq!(t.destinations.len(), 2);
        assert!(tables_block(&t, ip("fd50:1::2"), ip("fd50:2::2")));
        assert!(!tables_block(&t, ip("fd50:2::2"), ip("fd50:1::2")));
        assert!(tables_block(&t, ip("10.50.1.2"), ip("10.50.2.2")));
    }

    #[test]
    fn mixed_family_rules_are_set_aside() {
        let r = rule("10.0.1.0/24", "fd00::/8");
        let t = fresh(&[r]);
        assert!(t.destinations.is_empty());
        assert!(t.sources.is_empty());
        assert_eq!(t.mixed_family, vec![r]);
    }

    #[test]
    fn prefixes_of_zero_length_cover_everything() {
        let t = fresh(&[rule("10.9.0.0/16", "0.0.0.0/0"), rule("10.8.0.0/16", "10.1.0.0/16")]);
        assert!(tables_block(&t, ip("10.9.1.1"), ip("1.2.3.4")));
        assert!(tables_block(&t, ip("10.9.1.1"), ip("10.1.1.1")));
        assert!(tables_block(&t, ip("10.8.1.1"), ip("10.1.1.1")));
        assert!(!tables_block(&t, ip("10.8.1.1"), ip("1.2.3.4")));
        let any = fresh(&[rule("0.0.0.0/0", "10.1.0.0/16")]);
        assert_eq!(any.source_lengths()[&1], vec![0]);
        assert!(tables_block(&any, ip("203.0.113.9"), ip("10.1.2.3")));
    }

    #[test]
    fn classes_are_kept_across_changes() {
        let before = fresh(&[rule("10.0.2.0/24", "10.0.1.0/24"), rule("10.0.2.0/24", "10.0.3.0/24")]);
        let after = flatten(
            &[rule("10.0.2.0/24", "10.0.3.0/24"), rule("10.0.2.0/24", "10.0.5.0/24")],
            &before.destinations,
        );
        assert_eq!(after.destinations[&cidr("10.0.3.0/24")], before.destinations[&cidr("10.0.3.0/24")]);
        // 10.0.1.0/24's class was freed by this very change: not reused.
        let freed = before.destinations[&cidr("10.0.1.0/24")];
        assert_ne!(after.destinations[&cidr("10.0.5.0/24")], freed);
        assert!(!after.destinations.values().any(|c| *c == freed));
    }

    #[test]
    fn the_same_rules_against_their_own_classes_change_nothing() {
        let rules = [rule("10.2.0.0/16", "10.0.0.0/8"), rule("fd00::/8", "10.1.0.0/16")];
        let first = fresh(&rules);
        assert_eq!(flatten(&rules, &first.destinations), first);
    }

    #[test]
    fn bogus_previous_classes_are_replaced() {
        let previous =
            BTreeMap::from([(cidr("10.0.1.0/24"), 0), (cidr("10.0.2.0/24"), 7), (cidr("10.0.3.0/24"), 7)]);
        let t = flatten(
            &[
                rule("10.9.0.0/16", "10.0.1.0/24"),
                rule("10.9.0.0/16", "10.0.2.0/24"),
                rule("10.9.0.0/16", "10.0.3.0/24"),
            ],
            &previous,
        );
        let classes: BTreeSet<u32> = t.destinations.values().copied().collect();
        assert_eq!(classes.len(), 3, "classes are distinct: {:?}", t.destinations);
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
        /// The destination-class form drops exactly what the rules say.
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
