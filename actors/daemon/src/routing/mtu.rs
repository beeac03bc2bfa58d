//! The underlay (the device carrying the peers' WireGuard UDP) and the mesh
//! device's MTU: underlay MTU minus WireGuard's overhead, so encrypted
//! packets are never fragmented.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteMetric, RouteType};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use rustix::io::Errno;

use super::error::is_errno;
use super::routes::table_of;
use super::{Change, RoutingConfig, RoutingError};

/// IPv6 refuses links below this; the mesh carries IPv6 pod traffic too.
const IPV6_MIN_MTU: u32 = 1280;
const MAIN_TABLE: u32 = 254;

/// The interface that carries the peer endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Its name, e.g. `eth0`.
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// The MTU to size the mesh from: the link's, or the route's when that
    /// is smaller.
    pub mtu: u32,
}

/// The mesh device's MTU for an underlay MTU and WireGuard overhead.
pub fn mesh_mtu(underlay_mtu: u32, overhead: u32) -> Result<u32, RoutingError> {
    let mesh = i64::from(underlay_mtu) - i64::from(overhead);
    u32::try_from(mesh).ok().filter(|m| *m >= IPV6_MIN_MTU).ok_or(RoutingError::MtuTooSmall {
        underlay_mtu,
        overhead,
        mesh_mtu: mesh,
    })
}

/// A link as routing needs it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) mtu: u32,
    pub(crate) loopback: bool,
}

fn link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        loopback: message.header.flags.contains(LinkFlags::Loopback),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            _ => {}
        }
    }
    link
}

/// The link called `name`, or `None` when there is none.
pub(crate) async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>, RoutingError> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(found) => Ok(found.as_ref().map(link)),
        Err(e) if is_errno(&e, Errno::NODEV) => Ok(None),
        Err(e) => Err(RoutingError::netlink(format!("look up interface {name:?}"), e)),
    }
}

async fn link_by_index(handle: &Handle, index: u32) -> Result<Option<Link>, RoutingError> {
    match handle.link().get().match_index(index).execute().try_next().await {
        Ok(found) => Ok(found.as_ref().map(link)),
        Err(e) if is_errno(&e, Errno::NODEV) => Ok(None),
        Err(e) => Err(RoutingError::netlink(format!("look up interface index {index}"), e)),
    }
}

pub(crate) async fn ensure_mesh_mtu(
    handle: &Handle,
    config: &RoutingConfig,
    underlay_mtu: u32,
) -> Result<(u32, Change), RoutingError> {
    let target = mesh_mtu(underlay_mtu, config.mtu_overhead)?;
    let name = &config.mesh_interface;
    let mesh = link_by_name(handle, name)
        .await?
        .ok_or_else(|| RoutingError::MeshInterfaceMissing { name: name.clone() })?;
    if mesh.mtu == target {
        return Ok((target, Change::Unchanged));
    }
    handle.link().set(LinkUnspec::new_with_index(mesh.index).mtu(target).build()).execute().await.map_err(
        |e| RoutingError::netlink(format!("set MTU of {name:?} to {target} (was {})", mesh.mtu), e),
    )?;
    Ok((target, Change::Changed))
}

/// Sets link `name`'s MTU to `mtu`; writes only when it differs.
pub(crate) async fn ensure_link_mtu(handle: &Handle, name: &str, mtu: u32) -> Result<Change, RoutingError> {
    let link = link_by_name(handle, name)
        .await?
        .ok_or_else(|| RoutingError::MeshInterfaceMissing { name: name.to_owned() })?;
    if link.mtu == mtu {
        return Ok(Change::Unchanged);
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| RoutingError::netlink(format!("set MTU of {name:?} to {mtu} (was {})", link.mtu), e))?;
    Ok(Change::Changed)
}

pub(crate) async fn detect_underlay(
    handle: &Handle,
    config: &RoutingConfig,
    peers: &[IpAddr],
) -> Result<Underlay, RoutingError> {
    // A peer endpoint routed into the mesh itself would be a loop, not the
    // underlay; skip that answer.
    let mesh = link_by_name(handle, &config.mesh_interface).await?.map(|l| l.index);
    let mut best: Option<Underlay> = None;
    for &peer in peers {
        let Some(route) = route_get(handle, peer).await? else { continue };
        if let Some(found) = underlay_of(handle, &route, mesh).await?
            && best.as_ref().is_none_or(|b| found.mtu < b.mtu)
        {
            best = Some(found);
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    for route in default_routes(handle).await? {
        if let Some(found) = underlay_of(handle, &route, mesh).await? {
            return Ok(found);
        }
    }
    Err(RoutingError::NoUnderlay { peers: peers.to_vec() })
}

/// `ip route get PEER`: the route the kernel would use (no mark, so never
/// the mesh table). `None` when the peer is unreachable.
async fn route_get(handle: &Handle, peer: IpAddr) -> Result<Option<RouteMessage>, RoutingError> {
    let request = match peer {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32).build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128).build(),
    };
    match handle.route().get(request).execute().try_next().await {
        Ok(route) => Ok(route),
        Err(e)
            if [Errno::NETUNREACH, Errno::HOSTUNREACH, Errno::NETDOWN, Errno::INVAL]
                .iter()
                .any(|errno| is_errno(&e, *errno)) =>
        {
            Ok(None)
        }
        Err(e) => Err(RoutingError::netlink(format!("look up the route to peer {peer}"), e)),
    }
}

/// Unicast default routes of the main table, IPv4 first, lowest metric first.
async fn default_routes(handle: &Handle) -> Result<Vec<RouteMessage>, RoutingError> {
    let mut found = Vec::new();
    for request in
        [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
    {
        let family = request.header.address_family;
        let routes: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|e| RoutingError::netlink("list the main table's default routes", e))?;
        let mut defaults: Vec<RouteMessage> = routes
            .into_iter()
            .filter(|r| {
                r.header.address_family == family
                    && table_of(r) == MAIN_TABLE
                    && r.header.destination_prefix_length == 0
                    && r.header.kind == RouteType::Unicast
            })
            .collect();
        defaults.sort_by_key(|r| metric(r).unwrap_or(0));
        found.extend(defaults);
    }
    Ok(found)
}

/// The underlay a route leaves through, unless it is loopback or the mesh.
async fn underlay_of(
    handle: &Handle,
    route: &RouteMessage,
    mesh: Option<u32>,
) -> Result<Option<Underlay>, RoutingError> {
    if route.header.kind != RouteType::Unicast {
        return Ok(None);
    }
    let Some(oif) = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    }) else {
        return Ok(None);
    };
    if Some(oif) == mesh {
        return Ok(None);
    }
    let Some(link) = link_by_index(handle, oif).await? else { return Ok(None) };
    if link.loopback {
        return Ok(None);
    }
    let mtu = route_mtu(route).map_or(link.mtu, |m| m.min(link.mtu));
    Ok(Some(Underlay { interface: link.name, ifindex: link.index, mtu }))
}

fn metric(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Priority(p) => Some(*p),
        _ => None,
    })
}

/// An `mtu` set on the route (or learned path MTU), if any.
fn route_mtu(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Metrics(metrics) => metrics.iter().find_map(|m| match m {
            RouteMetric::Mtu(mtu) if *mtu > 0 => Some(*mtu),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_mtu_subtracts_the_overhead() {
        assert_eq!(mesh_mtu(1500, 80).unwrap(), 1420);
        assert_eq!(mesh_mtu(9001, 80).unwrap(), 8921);
        assert_eq!(mesh_mtu(1360, 80).unwrap(), 1280);
    }

    #[test]
    fn mesh_mtu_below_ipv6_minimum_is_refused_with_the_numbers() {
        let err = mesh_mtu(1300, 80).unwrap_err();
        assert!(matches!(err, RoutingError::MtuTooSmall { mesh_mtu: 1220, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("1300 - 80 = 1220") && text.contains("--mtu-overhead"), "{text}");
        assert!(matches!(mesh_mtu(40, 80), Err(RoutingError::MtuTooSmall { mesh_mtu: -40, .. })));
    }
}
