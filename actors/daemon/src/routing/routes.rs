//! Routes in the mesh table: `CIDR dev MESH table TABLE proto 86`, one per
//! remote pod CIDR, kept in step with the desired set by diffing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use rustix::io::Errno;
use vpblu_messages::Cidr;

use super::diff::{TableRoute, diff_routes_via};
use super::error::is_errno;
use super::{ROUTE_PROTOCOL, RouteDevice, RoutingConfig, RoutingError, mtu};

/// What one [`Routing::sync_routes`](super::Routing::sync_routes) call wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes added to the mesh table.
    pub added: Vec<Cidr>,
    /// Routes of ours repointed in place to another device (mesh ⇄ lane).
    pub moved: Vec<Cidr>,
    /// Routes of ours removed from the mesh table.
    pub removed: Vec<Cidr>,
    /// Desired CIDRs left alone because a route of another protocol holds
    /// them in the mesh table.
    pub shadowed: Vec<Cidr>,
}

impl SyncReport {
    /// True when any route was written.
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.moved.is_empty() || !self.removed.is_empty()
    }
}

pub(crate) async fn sync(
    handle: &Handle,
    config: &RoutingConfig,
    desired: &[(Cidr, RouteDevice)],
) -> Result<SyncReport, RoutingError> {
    let mesh = mtu::link_by_name(handle, &config.mesh_interface)
        .await?
        .ok_or_else(|| RoutingError::MeshInterfaceMissing { name: config.mesh_interface.clone() })?;
    let lane = if desired.iter().any(|(_, device)| *device == RouteDevice::Lane) {
        let name = config.lane_interface.as_deref().ok_or(RoutingError::NoLane)?;
        let lane = mtu::link_by_name(handle, name)
            .await?
            .ok_or_else(|| RoutingError::MeshInterfaceMissing { name: name.to_owned() })?;
        Some(lane)
    } else {
        None
    };
    let index = |device: RouteDevice| match (device, &lane) {
        (RouteDevice::Lane, Some(lane)) => lane.index,
        _ => mesh.index,
    };
    let name_of = |ifindex: u32| match &lane {
        Some(lane) if lane.index == ifindex => lane.name.clone(),
        _ => config.mesh_interface.clone(),
    };
    let wanted: Vec<(Cidr, u32)> = desired.iter().map(|(cidr, device)| (*cidr, index(*device))).collect();
    let via: BTreeMap<Cidr, u32> = wanted.iter().copied().collect();
    let actual = table_routes(handle, config.table).await?;
    let diff = diff_routes_via(&actual, &wanted, ROUTE_PROTOCOL);
    let mut report = SyncReport { shadowed: diff.shadowed.clone(), ..SyncReport::default() };
    // Repoint first (no moment without a route), then add, then remove.
    for (route, ifindex) in &diff.replace {
        write(handle, config, &name_of(*ifindex), *ifindex, route.destination, route.priority, true).await?;
        report.moved.push(route.destination);
    }
    for cidr in &diff.add {
        let ifindex = via[cidr];
        write(handle, config, &name_of(ifindex), ifindex, *cidr, None, false).await?;
        report.added.push(*cidr);
    }
    for route in &diff.remove {
        delete(handle, config, route).await?;
        report.removed.push(route.destination);
    }
    if !diff.shadowed.is_empty() {
        tracing::warn!(
            table = config.table,
            cidrs = ?diff.shadowed,
            "routes of another protocol hold these CIDRs in the mesh table; not routing them into {}",
            config.mesh_interface,
        );
    }
    Ok(report)
}

/// Removes every route of ours from the mesh table, whatever its device
/// (the mesh device may already be gone). Returns how many.
pub(crate) async fn remove_ours(handle: &Handle, config: &RoutingConfig) -> Result<usize, RoutingError> {
    let actual = table_routes(handle, config.table).await?;
    let diff = diff_routes_via(&actual, &[], ROUTE_PROTOCOL);
    for route in &diff.remove {
        delete(handle, config, route).await?;
    }
    Ok(diff.remove.len())
}

/// Every IPv4 and IPv6 route in `table`. The kernel does not filter dumps by
/// table unless strict checking is on, so this filters itself.
pub(crate) async fn table_routes(handle: &Handle, table: u32) -> Result<Vec<TableRoute>, RoutingError> {
    let mut routes = Vec::new();
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().table_id(table).build(),
        RouteMessageBuilder::<Ipv6Addr>::new().table_id(table).build(),
    ] {
        let family = request.header.address_family;
        let messages: Vec<RouteMessage> =
            handle.route().get(request).execute().try_collect().await.map_err(|e| {
                RoutingError::netlink(format!("list {} routes of table {table}", family_name(family)), e)
            })?;
        // A kernel without IPv6 answers an IPv6 dump with every family's
        // routes; counting IPv4 twice would make ours look duplicated.
        routes.extend(
            messages
                .iter()
                .filter(|m| m.header.address_family == family && table_of(m) == table)
                .filter_map(table_route),
        );
    }
    Ok(routes)
}

/// `ip route add` (or, with `replace`, `ip route replace`) of `cidr`
/// through `ifindex` in the mesh table. A replace carries the metric of
/// the route it repoints, so the kernel swaps that very route in place.
async fn write(
    handle: &Handle,
    config: &RoutingConfig,
    interface: &str,
    ifindex: u32,
    cidr: Cidr,
    priority: Option<u32>,
    replace: bool,
) -> Result<(), RoutingError> {
    let mut message = match cidr.addr() {
        IpAddr::V4(addr) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, cidr.prefix_len())
            // What `ip route add CIDR dev X` does for a route with no gateway.
            .scope(RouteScope::Link)
            .output_interface(ifindex)
            .table_id(config.table)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build(),
        IpAddr::V6(addr) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(addr, cidr.prefix_len())
            .output_interface(ifindex)
            .table_id(config.table)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build(),
    };
    if let Some(priority) = priority {
        message.attributes.push(RouteAttribute::Priority(priority));
    }
    let request = handle.route().add(message);
    let request = if replace { request.replace() } else { request };
    request.execute().await.map_err(|source| {
        if is_errno(&source, Errno::NETDOWN) {
            RoutingError::MeshInterfaceDown { name: interface.to_owned() }
        } else {
            RoutingError::Route {
                verb: if replace { "replace" } else { "add" },
                cidr,
                interface: interface.to_owned(),
                table: config.table,
                source: Box::new(source),
            }
        }
    })
}

/// Deletes exactly this route of ours, as `ip route del` would: scope
/// "nowhere" matches any scope; protocol, device and metric pin it down.
async fn delete(handle: &Handle, config: &RoutingConfig, route: &TableRoute) -> Result<(), RoutingError> {
    let cidr = route.destination;
    let mut message = match cidr.addr() {
        IpAddr::V4(addr) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, cidr.prefix_len())
            .table_id(config.table)
            .build(),
        IpAddr::V6(addr) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(addr, cidr.prefix_len())
            .table_id(config.table)
            .build(),
    };
    message.header.protocol = RouteProtocol::from(route.protocol);
    message.header.scope = RouteScope::NoWhere;
    message.header.kind = RouteType::Unspec;
    if let Some(oif) = route.oif {
        message.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(priority) = route.priority {
        message.attributes.push(RouteAttribute::Priority(priority));
    }
    match handle.route().del(message).execute().await {
        Ok(()) => Ok(()),
        // Gone already (its device was deleted, or a concurrent cleanup).
        Err(e) if is_errno(&e, Errno::SRCH) || is_errno(&e, Errno::NOENT) => Ok(()),
        Err(source) => Err(RoutingError::Route {
            verb: "delete",
            cidr,
            interface: route.oif.map_or_else(|| "(none)".to_owned(), |i| format!("ifindex {i}")),
            table: config.table,
            source: Box::new(source),
        }),
    }
}

/// The route's table: RTA_TABLE when present (tables above 255 only fit
/// there), else the header byte.
pub(crate) fn table_of(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

/// A dumped route as the diff sees it; `None` for what is not an IP route.
pub(crate) fn table_route(message: &RouteMessage) -> Option<TableRoute> {
    let unspecified = match message.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut destination = unspecified;
    let mut oif = None;
    let mut priority = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => destination = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => destination = IpAddr::V6(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => priority = Some(*p),
            _ => {}
        }
    }
    let destination = Cidr::new(destination, message.header.destination_prefix_length).ok()?;
    Some(TableRoute { destination, oif, protocol: u8::from(message.header.protocol), priority })
}

fn family_name(family: AddressFamily) -> &'static str {
    if family == AddressFamily::Inet6 { "IPv6" } else { "IPv4" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_above_255_is_read_from_the_attribute() {
        let message = RouteMessageBuilder::<Ipv4Addr>::new().table_id(22096).build();
        assert_eq!(table_of(&message), 22096);
        let message = RouteMessageBuilder::<Ipv4Addr>::new().table_id(100).build();
        assert_eq!(table_of(&message), 100);
        assert_eq!(table_of(&RouteMessageBuilder::<Ipv6Addr>::new().build()), 254);
    }

    #[test]
    fn dumped_route_is_parsed_for_the_diff() {
        let message = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("fd00:2::".parse().unwrap(), 64)
            .output_interface(9)
            .priority(1024)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build();
        assert_eq!(
            table_route(&message),
            Some(TableRoute {
                destination: "fd00:2::/64".parse().unwrap(),
                oif: Some(9),
                protocol: ROUTE_PROTOCOL,
                priority: Some(1024),
            })
        );
        let default = RouteMessageBuilder::<Ipv4Addr>::new().output_interface(2).build();
        assert_eq!(table_route(&default).unwrap().destination, "0.0.0.0/0".parse().unwrap());
    }
}
