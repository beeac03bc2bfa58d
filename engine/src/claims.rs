//! Who claims which CIDR: nodes their pod CIDRs (overlaps resolved: longest
//! prefix, then oldest node, then name), route policies their routes
//! (identical CIDRs resolved: oldest policy, then name, then target), and
//! which pod CIDRs a route overrides.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::net::IpAddr;

use vpblu_messages::{Cidr, UnreachableReason};

use super::findings::{FindingReason, Findings, SubjectKind};
use super::guards::Protected;
use super::inputs::RoutePolicyInput;
use super::nodes::{Node, NodeTable, Standing};

/// A route in effect: `cidr` goes through the tunnel to node `via`.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) cidr: Cidr,
    /// Node-table index of the target.
    pub(super) via: usize,
    /// Why the target cannot carry it, if it cannot: the CIDR is then
    /// unreachable instead of routed.
    pub(super) blocked: Option<UnreachableReason>,
}

/// A route that contains one of a node's pod CIDRs, so wherever the route
/// applies that pod CIDR leaves its owner's peer entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Override {
    /// Position of the pod CIDR in the owner's `owned` list.
    pub(super) position: usize,
    /// Index into `Claims::routes`.
    pub(super) route: usize,
}

/// The resolved claims.
#[derive(Debug)]
pub(super) struct Claims<'a> {
    /// Per node: the pod CIDRs it keeps after overlaps are resolved, sorted.
    /// Empty for a node being deleted.
    pub(super) owned: Vec<Cow<'a, [Cidr]>>,
    /// Every kept pod CIDR with its node and its position in that node's
    /// `owned`, sorted by CIDR (kept CIDRs are unique).
    pub(super) by_cidr: Vec<(Cidr, usize, usize)>,
    /// Routes in effect, sorted by CIDR, one per CIDR.
    pub(super) routes: Vec<Route>,
    /// Per node: indices of the routes that go via it.
    pub(super) via: Vec<Vec<usize>>,
    /// Per node: routes overriding its pod CIDRs.
    pub(super) overrides: Vec<Vec<Override>>,
}

impl<'a> Claims<'a> {
    pub(super) fn resolve(
        nodes: &NodeTable<'a>,
        policies: &[RoutePolicyInput],
        protected: &Protected<'_>,
        findings: &mut Findings,
    ) -> Self {
        let (owned, by_cidr) = pod_ownership(&nodes.nodes, findings);

        let (routes, route_policy) = resolve_routes(nodes, policies, protected, findings);
        let mut via = vec![Vec::new(); nodes.nodes.len()];
        let mut overrides = vec![Vec::new(); nodes.nodes.len()];
        for (index, route) in routes.iter().enumerate() {
            via[route.via].push(index);
            let target = nodes.nodes[route.via].name();
            // Pod CIDRs inside `route.cidr` sit in one run starting where it would sort.
            let start = by_cidr.partition_point(|(c, _, _)| *c < route.cidr);
            for &(cidr, node, position) in
                by_cidr[start..].iter().take_while(|(c, _, _)| route.cidr.contains(c))
            {
                if node == route.via {
                    continue;
                }
                overrides[node].push(Override { position, route: index });
                let owner_name = nodes.nodes[node].name();
                let effect = match route.blocked {
                    None => format!("traffic to {cidr} goes via {target} wherever the route applies"),
                    Some(_) => format!("{target} cannot carry it, so {cidr} is unreachable too"),
                };
                findings.push(
                    SubjectKind::RoutePolicy,
                    route_policy[index],
                    FindingReason::Overridden,
                    format!(
                        "route {} via {target} overrides pod CIDR {cidr} of node {owner_name}: \
                         {effect} (informational)",
                        route.cidr
                    ),
                );
            }
        }
        Claims { owned, by_cidr, routes, via, overrides }
    }

    /// The node keeping pod CIDR `cidr`, and its position there.
    pub(super) fn owner(&self, cidr: &Cidr) -> Option<(usize, usize)> {
        let found = self.by_cidr.binary_search_by(|(c, _, _)| c.cmp(cidr)).ok()?;
        let (_, node, position) = self.by_cidr[found];
        Some((node, position))
    }

    /// Whether pod CIDR `position` of `node` is overridden by a route that
    /// `in_effect` says applies.
    pub(super) fn overridden(
        &self,
        node: usize,
        position: usize,
        in_effect: impl Fn(&Route) -> bool,
    ) -> bool {
        self.overrides[node].iter().any(|o| o.position == position && in_effect(&self.routes[o.route]))
    }
}

/// The sort key of a CIDR, ordered as `Cidr` orders (IPv4 first, then
/// address, then prefix) but compared as plain integers: sorting the
/// cluster's pod CIDRs is most of what `compute_node` costs.
fn sort_key(cidr: &Cidr) -> (u8, u128, u8) {
    match cidr.addr() {
        IpAddr::V4(v4) => (0, u128::from(u32::from(v4)), cidr.prefix_len()),
        IpAddr::V6(v6) => (1, u128::from(v6), cidr.prefix_len()),
    }
}

/// Resolves overlapping pod CIDRs of different live nodes. Overlap between
/// two CIDRs means one contains the other, so a sweep over them in address
/// order with a stack of the blocks still "open" finds every overlapping
/// pair. Each pair is decided on its own: longest prefix, then the older
/// node, then the name; the loser's CIDR is dropped. Returns each node's
/// kept CIDRs and all kept CIDRs sorted (see `Claims::by_cidr`).
#[allow(clippy::type_complexity)]
fn pod_ownership<'a>(
    nodes: &[Node<'a>],
    findings: &mut Findings,
) -> (Vec<Cow<'a, [Cidr]>>, Vec<(Cidr, usize, usize)>) {
    let mut all: Vec<((u8, u128, u8), usize, Cidr)> = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if node.is_live() {
            all.extend(node.pod_cidrs.iter().map(|c| (sort_key(c), index, *c)));
        }
    }
    all.sort_unstable_by_key(|&(key, node, _)| (key, node));
    let mut dropped: Vec<(usize, Cidr)> = Vec::new();
    let mut open: Vec<(Cidr, usize)> = Vec::new();
    for &(_, node, cidr) in &all {
        while open.last().is_some_and(|(outer, _)| !outer.contains(&cidr)) {
            open.pop();
        }
        for &(outer, outer_node) in &open {
            if outer_node == node {
                continue;
            }
            let rank =
                |c: &Cidr, n: usize| (Reverse(c.prefix_len()), nodes[n].input.created, nodes[n].name());
            let ((win_cidr, win), (lose_cidr, lose)) = if rank(&cidr, node) < rank(&outer, outer_node) {
                ((cidr, node), (outer, outer_node))
            } else {
                ((outer, outer_node), (cidr, node))
            };
            let why = if win_cidr.prefix_len() != lose_cidr.prefix_len() {
                "longer prefix"
            } else if nodes[win].input.created != nodes[lose].input.created {
                "older node"
            } else {
                "name sorts first"
            };
            dropped.push((lose, lose_cidr));
            let (w, l) = (nodes[win].name(), nodes[lose].name());
            findings.push(
                SubjectKind::Node,
                l.as_str(),
                FindingReason::Conflict,
                format!(
                    "pod CIDR {lose_cidr} of node {l} overlaps pod CIDR {win_cidr} of node {w}, \
                     which keeps it ({why}); {lose_cidr} is not routed to {l}: \
                     give the nodes disjoint pod CIDRs"
                ),
            );
        }
        open.push((cidr, node));
    }
    dropped.sort_unstable();
    let is_dropped =
        |node: usize, cidr: &Cidr| !dropped.is_empty() && dropped.binary_search(&(node, *cidr)).is_ok();
    let owned: Vec<Cow<'a, [Cidr]>> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            if !node.is_live() {
                return Cow::Borrowed(&[][..]);
            }
            match &node.pod_cidrs {
                Cow::Borrowed(all) if !all.iter().any(|c| is_dropped(index, c)) => Cow::Borrowed(*all),
                cidrs => Cow::Owned(cidrs.iter().filter(|c| !is_dropped(index, c)).copied().collect()),
            }
        })
        .collect();
    let by_cidr = all
        .iter()
        .filter(|(_, node, cidr)| !is_dropped(*node, cidr))
        .map(|&(_, node, cidr)| {
            // Owned lists are short (one CIDR per family).
            let position = owned[node].iter().position(|c| *c == cidr).unwrap_or(0);
            (cidr, node, position)
        })
        .collect();
    (owned, by_cidr)
}

/// One route a policy asks for: (cidr, policy rank, target index, policy).
type Candidate<'p> = (Cidr, usize, usize, &'p RoutePolicyInput);

/// Picks one route per CIDR, refusing the ones `protected` forbids.
/// Returns the routes sorted by CIDR and, beside them, the name of the
/// policy each came from.
fn resolve_routes<'p>(
    nodes: &NodeTable<'_>,
    policies: &'p [RoutePolicyInput],
    protected: &Protected<'_>,
    findings: &mut Findings,
) -> (Vec<Route>, Vec<&'p str>) {
    let mut candidates = route_candidates(nodes, policies, protected, findings);
    candidates.sort_unstable_by_key(|&(cidr, rank, via, _)| (cidr, rank, via));
    candidates.dedup_by_key(|&mut (cidr, rank, via, _)| (cidr, rank, via));
    let mut routes = Vec::new();
    let mut names = Vec::new();
    for group in candidates.chunk_by(|a, b| a.0 == b.0) {
        let (cidr, _, via, policy) = group[0];
        let target = &nodes.nodes[via];
        for &(_, _, other_via, other) in &group[1..] {
            // The same target from another entry is a harmless repeat.
            if other_via != via {
                findings.push(
                    SubjectKind::RoutePolicy,
                    &other.name,
                    FindingReason::Conflict,
                    format!(
                        "route {cidr} via {} is ignored: RoutePolicy {:?} routes {cidr} via {} and wins \
                         (older, or as old and its name or target sorts first); remove one of the two routes",
                        nodes.nodes[other_via].name(),
                        policy.name,
                        target.name()
                    ),
                );
            }
        }
        let blocked = target_blocked(target, cidr, policy, findings);
        routes.push(Route { cidr, via, blocked });
        names.push(policy.name.as_str());
    }
    (routes, names)
}

/// Every route of every policy whose target exists and that `protected`
/// allows, ranked by policy age then name.
fn route_candidates<'p>(
    nodes: &NodeTable<'_>,
    policies: &'p [RoutePolicyInput],
    protected: &Protected<'_>,
    findings: &mut Findings,
) -> Vec<Candidate<'p>> {
    // Ranked on normalised copies, so that even two policies alike in age
    // and name rank the same whatever order their routes came in.
    let mut sorted: Vec<(RoutePolicyInput, &RoutePolicyInput)> = policies
        .iter()
        .map(|p| {
            let mut copy = p.clone();
            copy.routes.sort();
            copy.routes.dedup();
            (copy, p)
        })
        .collect();
    sorted.sort_by(|(a, _), (b, _)| (a.created, &a.name).cmp(&(b.created, &b.name)).then_with(|| a.cmp(b)));
    let mut candidates = Vec::new();
    for (rank, (normalised, policy)) in sorted.iter().enumerate() {
        for route in &normalised.routes {
            if let Some((reason, message)) =
                protected.route_hazard(&route.cidr, &route.via, policy.allow_egress_via_node)
            {
                findings.push(SubjectKind::RoutePolicy, &policy.name, reason, message);
                continue;
            }
            match nodes.find(route.via.as_str()) {
                Some(via) => candidates.push((route.cidr, rank, via, *policy)),
                None => findings.push(
                    SubjectKind::RoutePolicy,
                    &policy.name,
                    FindingReason::UnknownNode,
                    format!(
                        "route {} via {} names a node that does not exist; fix the name or remove the route",
                        route.cidr, route.via
                    ),
                ),
            }
        }
    }
    candidates
}

/// Why the winning route to `cidr` via `target` cannot carry traffic, if
/// it cannot; reported on `policy`.
fn target_blocked(
    target: &Node<'_>,
    cidr: Cidr,
    policy: &RoutePolicyInput,
    findings: &mut Findings,
) -> Option<UnreachableReason> {
    let reason = match target.standing {
        Standing::Eligible if target.drained => UnreachableReason::Drained,
        Standing::Eligible => return None,
        Standing::Gone => UnreachableReason::NotReady,
        Standing::Ineligible(reason) => reason,
    };
    let (finding, state) = match (target.standing, reason) {
        (Standing::Gone, _) => (FindingReason::TargetNotReady, "is being deleted"),
        (_, UnreachableReason::Drained) => (FindingReason::TargetDrained, "is drained"),
        (_, UnreachableReason::Isolated) => (FindingReason::TargetIsolated, "is isolated"),
        (_, UnreachableReason::NoKey) => (FindingReason::TargetNoKey, "has no public key yet"),
        (_, UnreachableReason::NotReady | UnreachableReason::NotPeered) => {
            (FindingReason::TargetNotReady, "is not ready (or has no internal IP or pod CIDR)")
        }
    };
    findings.push(
        SubjectKind::RoutePolicy,
        &policy.name,
        finding,
        format!(
            "route {cidr} via {} cannot be used: the node {state}, so {cidr} is unreachable; \
             route it via another node",
            target.name()
        ),
    );
    Some(reason)
}
