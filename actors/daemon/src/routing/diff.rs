//! What to change in the mesh table and the rule list, decided from plain
//! data: no netlink here, so every case is a cheap unit test.

use std::collections::{BTreeMap, BTreeSet};

use vpblu_messages::Cidr;

/// A route found in the mesh table (the caller has already dropped routes
/// of every other table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    /// Destination prefix.
    pub destination: Cidr,
    /// Output interface index, if the route has one.
    pub oif: Option<u32>,
    /// Route protocol (`proto` in `ip route`); ours marks ownership.
    pub protocol: u8,
    /// Metric, if the kernel reported one (IPv6 always does).
    pub priority: Option<u32>,
}

/// Whose routes are ours and where they must point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteOwner {
    /// The route protocol we install with; nothing else is ever removed.
    pub protocol: u8,
    /// Index of the mesh interface every desired route goes through.
    pub ifindex: u32,
}

/// The minimum change that makes the table match the desired CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Desired CIDRs with no route of ours yet: add through their device.
    pub add: Vec<Cidr>,
    /// Our routes through the wrong device, with the device index they
    /// must go through: repointed in place (`route replace`), so the CIDR
    /// is never without a route, not deleted and added again.
    pub replace: Vec<(TableRoute, u32)>,
    /// Our routes that are not wanted or duplicated.
    pub remove: Vec<TableRoute>,
    /// Desired CIDRs that a route we do not own already holds in the
    /// table; left alone (adding ours would fail or fight it).
    pub shadowed: Vec<Cidr>,
}

impl RouteDiff {
    /// True when nothing has to be written.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.remove.is_empty()
    }
}

/// Diffs the routes in the mesh table against the desired remote CIDRs,
/// all through the owner's interface; see [`diff_routes_via`].
pub fn diff_routes(actual: &[TableRoute], desired: &[Cidr], owner: RouteOwner) -> RouteDiff {
    let desired: Vec<(Cidr, u32)> = desired.iter().map(|cidr| (*cidr, owner.ifindex)).collect();
    diff_routes_via(actual, &desired, owner.protocol)
}

/// Diffs the routes in the mesh table against the desired remote CIDRs,
/// each through its own device index (the mesh device, or the lane while a
/// key rotates). With a CIDR listed twice, the last device wins.
///
/// Routes of another protocol are never removed. One of our routes per
/// desired CIDR through its device is kept; a CIDR whose routes of ours
/// all go through another device gets the first of them repointed in
/// place; every other route of ours (unwanted, or a duplicate) is removed.
pub fn diff_routes_via(actual: &[TableRoute], desired: &[(Cidr, u32)], protocol: u8) -> RouteDiff {
    let desired: BTreeMap<Cidr, u32> = desired.iter().copied().collect();
    let mut kept = BTreeSet::new();
    let mut foreign = BTreeSet::new();
    let mut mine: Vec<&TableRoute> = Vec::new();
    for route in actual {
        if route.protocol != protocol {
            foreign.insert(route.destination);
        } else if desired.get(&route.destination).is_some_and(|&via| route.oif == Some(via))
            && kept.insert(route.destination)
        {
            // The first correct route of ours for this CIDR stays.
        } else {
            mine.push(route);
        }
    }
    let mut replace = Vec::new();
    let mut remove = Vec::new();
    let mut repointed = BTreeSet::new();
    for route in mine {
        match desired.get(&route.destination) {
            Some(&via) if !kept.contains(&route.destination) && repointed.insert(route.destination) => {
                replace.push((route.clone(), via));
            }
            _ => remove.push(route.clone()),
        }
    }
    replace.sort_by_key(|(r, _)| r.destination);
    remove.sort_by_key(|r| (r.destination, r.oif, r.priority));
    let mut add = Vec::new();
    let mut shadowed = Vec::new();
    for cidr in desired.keys().filter(|c| !kept.contains(*c) && !repointed.contains(*c)) {
        if foreign.contains(cidr) { shadowed.push(*cidr) } else { add.push(*cidr) }
    }
    RouteDiff { add, replace, remove, shadowed }
}

/// The fwmark rule we want for one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSpec {
    /// Rule priority (`pref`).
    pub priority: u32,
    /// Mark value the classify program writes.
    pub fwmark: u32,
    /// Bits of the mark the rule compares.
    pub fwmask: u32,
    /// Table the rule sends matching packets to.
    pub table: u32,
    /// Rule protocol marking ownership.
    pub protocol: u8,
}

/// A policy-routing rule found in the kernel (one address family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRule {
    /// Rule priority.
    pub priority: u32,
    /// fwmark selector, if any.
    pub fwmark: Option<u32>,
    /// fwmark mask, if reported.
    pub fwmask: Option<u32>,
    /// Table looked up (meaningful when `to_table`).
    pub table: u32,
    /// True for a plain `lookup TABLE` action.
    pub to_table: bool,
    /// Rule protocol, if reported.
    pub protocol: Option<u8>,
    /// True when the rule has selectors besides the fwmark (from, to,
    /// iif, oif, tos, ports, uid, suppress_*, not): it is not ours then.
    pub other_selectors: bool,
}

impl InstalledRule {
    fn is_exactly(&self, spec: &RuleSpec) -> bool {
        self.to_table
            && !self.other_selectors
            && self.priority == spec.priority
            && self.fwmark == Some(spec.fwmark)
            && self.fwmask.unwrap_or(u32::MAX) == spec.fwmask
            && self.table == spec.table
    }

    fn is_ours(&self, spec: &RuleSpec) -> bool {
        self.protocol == Some(spec.protocol)
    }
}

/// What to do to the rule list of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulePlan {
    /// Add the rule (no rule matching it exists).
    pub add: bool,
    /// Indices into the installed rules to delete: ours that are stale or
    /// duplicates. Rules of any other protocol are never listed.
    pub remove: Vec<usize>,
}

/// Plans the rule list: exactly one rule matching `spec` (an identical rule
/// someone else installed counts), none of ours left stale.
pub fn plan_rules(installed: &[InstalledRule], spec: &RuleSpec) -> RulePlan {
    // Prefer keeping our own copy, so a foreign duplicate does not make us
    // delete ours and depend on it.
    let keep = installed
        .iter()
        .position(|r| r.is_exactly(spec) && r.is_ours(spec))
        .or_else(|| installed.iter().position(|r| r.is_exactly(spec)));
    let remove = installed
        .iter()
        .enumerate()
        .filter(|&(i, r)| r.is_ours(spec) && Some(i) != keep)
        .map(|(i, _)| i)
        .collect();
    RulePlan { add: keep.is_none(), remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u8 = 0x56;
    const OWNER: RouteOwner = RouteOwner { protocol: OURS, ifindex: 7 };

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn route(dst: &str, oif: u32, protocol: u8) -> TableRoute {
        TableRoute { destination: c(dst), oif: Some(oif), protocol, priority: None }
    }

    #[test]
    fn empty_table_adds_everything_sorted_and_deduplicated() {
        let d = diff_routes(&[], &[c("fd00:2::/64"), c("10.2.0.0/24"), c("10.2.0.0/24")], OWNER);
        assert_eq!(d.add, vec![c("10.2.0.0/24"), c("fd00:2::/64")]);
        assert!(d.remove.is_empty() && d.shadowed.is_empty());
    }

    #[test]
    fn in_sync_table_changes_nothing() {
        let actual = [route("10.2.0.0/24", 7, OURS), route("fd00:2::/64", 7, OURS)];
        let d = diff_routes(&actual, &[c("10.2.0.0/24"), c("fd00:2::/64")], OWNER);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d, RouteDiff::default());
    }

    #[test]
    fn removes_only_our_unwanted_routes() {
        let actual =
            [route("10.2.0.0/24", 7, OURS), route("10.3.0.0/24", 7, OURS), route("10.9.0.0/24", 3, 4)];
        let d = diff_routes(&actual, &[c("10.2.0.0/24")], OWNER);
        assert_eq!(d.remove, vec![route("10.3.0.0/24", 7, OURS)]);
        assert!(d.add.is_empty());
    }

    #[test]
    fn never_removes_foreign_routes_even_when_nothing_is_desired() {
        let actual = [route("10.9.0.0/24", 3, 4), route("10.8.0.0/24", 7, 3), route("::/0", 7, 0)];
        assert_eq!(diff_routes(&actual, &[], OWNER), RouteDiff::default());
    }

    #[test]
    fn our_route_on_another_device_is_repointed_in_place() {
        let actual = [route("10.2.0.0/24", 5, OURS)];
        let d = diff_routes(&actual, &[c("10.2.0.0/24")], OWNER);
        assert_eq!(d.replace, vec![(route("10.2.0.0/24", 5, OURS), 7)]);
        assert!(d.add.is_empty() && d.remove.is_empty(), "never deleted and added again: {d:?}");
    }

    #[test]
    fn routes_flip_between_mesh_and_lane_per_cidr() {
        let actual =
            [route("10.2.0.0/24", 7, OURS), route("10.3.0.0/24", 7, OURS), route("10.4.0.0/24", 9, OURS)];
        // 10.2 to the lane (9), 10.3 stays, 10.4 back to the mesh (7), 10.5 new on the lane.
        let desired =
            [(c("10.2.0.0/24"), 9), (c("10.3.0.0/24"), 7), (c("10.4.0.0/24"), 7), (c("10.5.0.0/24"), 9)];
        let d = diff_routes_via(&actual, &desired, OURS);
        assert_eq!(d.replace, vec![(route("10.2.0.0/24", 7, OURS), 9), (route("10.4.0.0/24", 9, OURS), 7)]);
        assert_eq!(d.add, vec![c("10.5.0.0/24")]);
        assert!(d.remove.is_empty());
        // A duplicate on the old device goes once one route is repointed.
        let actual = [route("10.2.0.0/24", 7, OURS), {
            let mut r = route("10.2.0.0/24", 7, OURS);
            r.priority = Some(5);
            r
        }];
        let d = diff_routes_via(&actual, &[(c("10.2.0.0/24"), 9)], OURS);
        assert_eq!(d.replace.len(), 1);
        assert_eq!(d.remove.len(), 1);
    }

    #[test]
    fn duplicates_of_ours_are_removed_keeping_one() {
        let mut second = route("10.2.0.0/24", 7, OURS);
        second.priority = Some(10);
        let actual = [route("10.2.0.0/24", 7, OURS), second.clone()];
        let d = diff_routes(&actual, &[c("10.2.0.0/24")], OWNER);
        assert_eq!(d.remove, vec![second]);
        assert!(d.add.is_empty());
    }

    #[test]
    fn foreign_route_for_a_desired_cidr_shadows_it() {
        let actual = [route("10.2.0.0/24", 3, 4)];
        let d = diff_routes(&actual, &[c("10.2.0.0/24"), c("10.3.0.0/24")], OWNER);
        assert_eq!(d.shadowed, vec![c("10.2.0.0/24")]);
        assert_eq!(d.add, vec![c("10.3.0.0/24")]);
        assert!(d.remove.is_empty());
    }

    #[test]
    fn our_route_beside_a_foreign_one_is_kept() {
        let actual = [route("10.2.0.0/24", 3, 4), route("10.2.0.0/24", 7, OURS)];
        assert!(diff_routes(&actual, &[c("10.2.0.0/24")], OWNER).is_empty());
    }

    #[test]
    fn same_address_different_prefix_is_a_different_route() {
        let actual = [route("10.2.0.0/16", 7, OURS)];
        let d = diff_routes(&actual, &[c("10.2.0.0/24")], OWNER);
        assert_eq!(d.add, vec![c("10.2.0.0/24")]);
        assert_eq!(d.remove, vec![route("10.2.0.0/16", 7, OURS)]);
    }

    #[test]
    fn applying_the_diff_reaches_a_fixed_point() {
        let actual = vec![
            route("10.1.0.0/24", 7, OURS),
            route("10.2.0.0/24", 5, OURS),
            route("10.4.0.0/24", 3, 9),
            route("fd00:1::/64", 7, OURS),
        ];
        let desired = [c("10.2.0.0/24"), c("10.3.0.0/24"), c("10.4.0.0/24"), c("fd00:1::/64")];
        let d = diff_routes(&actual, &desired, OWNER);
        let mut after: Vec<TableRoute> = actual
            .into_iter()
            .filter(|r| !d.remove.contains(r))
            .map(|r| match d.replace.iter().find(|(old, _)| *old == r) {
                Some((_, via)) => TableRoute { oif: Some(*via), ..r },
                None => r,
            })
            .collect();
        after.extend(d.add.iter().map(|c| TableRoute {
            destination: *c,
            oif: Some(7),
            protocol: OURS,
            priority: None,
        }));
        let again = diff_routes(&after, &desired, OWNER);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.shadowed, vec![c("10.4.0.0/24")]);
    }

    const SPEC: RuleSpec =
        RuleSpec { priority: 100, fwmark: 0x5650_0000, fwmask: 0xffff_0000, table: 22096, protocol: OURS };

    fn rule(priority: u32, protocol: u8) -> InstalledRule {
        InstalledRule {
            priority,
            fwmark: Some(SPEC.fwmark),
            fwmask: Some(SPEC.fwmask),
            table: SPEC.table,
            to_table: true,
            protocol: Some(protocol),
            other_selectors: false,
        }
    }

    fn system_rules() -> Vec<InstalledRule> {
        [(0, 255), (32766, 254), (32767, 253)]
            .into_iter()
            .map(|(priority, table)| InstalledRule {
                priority,
                fwmark: None,
                fwmask: None,
                table,
                to_table: true,
                protocol: Some(2),
                other_selectors: false,
            })
            .collect()
    }

    #[test]
    fn missing_rule_is_added_and_system_rules_are_left_alone() {
        assert_eq!(plan_rules(&system_rules(), &SPEC), RulePlan { add: true, remove: vec![] });
    }

    #[test]
    fn present_rule_is_kept() {
        let mut rules = system_rules();
        rules.push(rule(100, OURS));
        assert_eq!(plan_rules(&rules, &SPEC), RulePlan::default());
    }

    #[test]
    fn duplicates_and_stale_rules_of_ours_are_removed() {
        let mut rules = system_rules();
        rules.push(rule(50, OURS)); // 3: stale priority
        rules.push(rule(100, OURS)); // 4: kept
        rules.push(rule(100, OURS)); // 5: duplicate
        assert_eq!(plan_rules(&rules, &SPEC), RulePlan { add: false, remove: vec![3, 5] });
    }

    #[test]
    fn identical_foreign_rule_satisfies_and_is_never_removed() {
        let rules = vec![rule(100, 4)];
        assert_eq!(plan_rules(&rules, &SPEC), RulePlan::default());
        let mut both = vec![rule(100, 4), rule(100, OURS)];
        assert_eq!(plan_rules(&both, &SPEC), RulePlan::default(), "ours is kept, foreign untouched");
        both.push(rule(100, OURS));
        assert_eq!(plan_rules(&both, &SPEC).remove, vec![2]);
    }

    #[test]
    fn a_rule_with_more_selectors_or_another_mask_does_not_count() {
        let mut narrower = rule(100, 4);
        narrower.other_selectors = true;
        let mut masked = rule(100, 4);
        masked.fwmask = Some(u32::MAX);
        let mut elsewhere = rule(100, 4);
        elsewhere.table = 254;
        for other in [narrower, masked, elsewhere] {
            assert_eq!(
                plan_rules(std::slice::from_ref(&other), &SPEC),
                RulePlan { add: true, remove: vec![] },
                "{other:?}"
            );
        }
    }
}
