//! What a route or a block must never touch by accident: the nodes' own
//! addresses (the underlay, which also carries every daemon's stream to
//! the controller) and the Service CIDRs.
//!
//! A route for such a CIDR would steer pod traffic meant for a node or a
//! Service VIP (classify runs before kube-proxy translates it) into one
//! node's tunnel; a default route sends all of a pod's traffic leaving the
//! cluster there. That is what "egress via a node" means, so a RoutePolicy
//! may opt in with `spec.allowEgressViaNode`; without it such a route is
//! refused. A block that covers a node address is always refused: it
//! would cut the underlay and the stream that repairs the mesh.

use std::net::IpAddr;

use vpblu_messages::{Cidr, NodeName};

use super::findings::FindingReason;
use super::nodes::NodeTable;

/// The addresses routes and blocks are checked against.
#[derive(Debug)]
pub(super) struct Protected<'a> {
    /// Every node's internal IP with its node, sorted by address.
    node_ips: Vec<(IpAddr, &'a NodeName)>,
    service_cidrs: &'a [Cidr],
}

/// Why a route or block is refused: the finding's reason and message.
pub(super) type Hazard = (FindingReason, String);

impl<'a> Protected<'a> {
    pub(super) fn new(nodes: &NodeTable<'a>, service_cidrs: &'a [Cidr]) -> Self {
        let mut node_ips: Vec<(IpAddr, &'a NodeName)> =
            nodes.nodes.iter().filter_map(|n| Some((n.input.internal_ip?, &n.input.name))).collect();
        node_ips.sort_unstable();
        Protected { node_ips, service_cidrs }
    }

    /// The first node address inside `cidr` (by address), if any.
    fn node_inside(&self, cidr: &Cidr) -> Option<(IpAddr, &'a NodeName)> {
        // Addresses inside a CIDR are one run in address order, starting
        // at its network address.
        let start = self.node_ips.partition_point(|(ip, _)| *ip < cidr.addr());
        self.node_ips.get(start).filter(|(ip, _)| cidr.contains_ip(*ip)).copied()
    }

    /// Why a route to `cidr` via `via` is refused, unless its policy opted
    /// in to egress via a node.
    pub(super) fn route_hazard(&self, cidr: &Cidr, via: &NodeName, opted_in: bool) -> Option<Hazard> {
        if opted_in {
            return None;
        }
        const OPT_IN: &str = "refused; if every pod's traffic to it should leave through that node, set \
                             spec.allowEgressViaNode: true on the RoutePolicy";
        if cidr.prefix_len() == 0 {
            return Some((
                FindingReason::DefaultRoute,
                format!(
                    "route {cidr} via {via} is a default route: it would send all pod traffic that leaves \
                     the cluster, Service VIPs before kube-proxy translates them included, into {via}'s \
                     tunnel; {OPT_IN}"
                ),
            ));
        }
        if let Some((ip, node)) = self.node_inside(cidr) {
            return Some((
                FindingReason::CoversNodeAddress,
                format!(
                    "route {cidr} via {via} covers node {node}'s address {ip}: pod traffic to the nodes \
                     would go through {via}'s tunnel; {OPT_IN}"
                ),
            ));
        }
        if let Some(service) = self.service_cidrs.iter().find(|s| s.overlaps(cidr)) {
            return Some((
                FindingReason::CoversServiceCidr,
                format!(
                    "route {cidr} via {via} overlaps the Service CIDR {service}: pods' traffic to Service \
                     VIPs would be steered into {via}'s tunnel before kube-proxy translates it; {OPT_IN}"
                ),
            ));
        }
        None
    }

    /// Why a block from `from` to `to` is refused.
    pub(super) fn block_hazard(&self, from: &Cidr, to: &Cidr) -> Option<Hazard> {
        let (ip, node) = self.node_inside(from).or_else(|| self.node_inside(to))?;
        Some((
            FindingReason::CoversUnderlay,
            format!(
                "block from {from} to {to} covers node {node}'s address {ip}: it would cut the underlay \
                 between nodes and the daemons' streams to the controller (the channel that repairs the \
                 mesh); refused. Narrow it to pod CIDRs"
            ),
        ))
    }
}
