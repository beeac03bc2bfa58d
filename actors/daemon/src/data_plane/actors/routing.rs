//! The Routing actor: owns the mesh device's link (up, address,
//! `rp_filter`), the fwmark rule, the mesh table's routes, the MTU and the
//! MSS clamp.

use std::net::{IpAddr, Ipv4Addr};

use ractor::RpcReplyPort;
use vpblu_messages::Cidr;

use super::Part;
use crate::data_plane::DataPlaneError;
use crate::data_plane::mesh_link::MeshLink;
use crate::routing::{RouteDevice, Routing, RoutingConfig};

type Reply<T> = RpcReplyPort<Result<T, DataPlaneError>>;

/// What the Routing actor does.
#[derive(Debug)]
pub enum RoutingMsg {
    /// Brings the mesh device up if someone set it down; its MTU.
    EnsureUp(Reply<u32>),
    /// Makes the mesh device's IPv4 address exactly this one.
    SourceCheck(Option<Ipv4Addr>, Reply<()>),
    /// The routes in the mesh table now.
    InstalledRoutes(Reply<Vec<Cidr>>),
    /// Makes the mesh table's routes exactly these.
    SyncRoutes(Vec<(Cidr, RouteDevice)>, Reply<()>),
    /// Sizes the mesh MTU (and the lane's, and the MSS clamp) for these
    /// peer endpoints, unless it already was (`true`: size again anyway);
    /// the mesh MTU.
    SizeMtu(Vec<IpAddr>, bool, Reply<u32>),
}

/// The mesh link and the routing around it.
#[derive(Debug)]
pub struct RoutingPart {
    link: MeshLink,
    routing: Routing,
    mtu: u32,
    /// The endpoints the mesh MTU was last sized for.
    sized_for: Option<Vec<IpAddr>>,
}

impl Part for RoutingPart {
    type Msg = RoutingMsg;
    type Opener = RoutingConfig;
    const NAME: &'static str = "routing";

    /// Brings the mesh device up, gives the lane the same MTU, and
    /// installs the fwmark rules. Routes already in the table stay.
    async fn open(config: &RoutingConfig) -> Result<Self, DataPlaneError> {
        let link = MeshLink::connect(&config.mesh_interface)?;
        let mtu = link.ensure_up().await?;
        let routing = Routing::connect(config.clone()).map_err(DataPlaneError::Routing)?;
        if config.lane_interface.is_some() {
            routing.ensure_lane_mtu(mtu).await.map_err(DataPlaneError::Routing)?;
        }
        routing.ensure_rule().await.map_err(DataPlaneError::Routing)?;
        Ok(RoutingPart { link, routing, mtu, sized_for: None })
    }

    async fn handle(&mut self, msg: RoutingMsg) {
        match msg {
            RoutingMsg::EnsureUp(reply) => {
                let result = self.link.ensure_up().await;
                if let Ok(mtu) = result {
                    self.mtu = mtu;
                }
                let _ = reply.send(result);
            }
            RoutingMsg::SourceCheck(address, reply) => {
                let _ = reply.send(self.link.ensure_source_check(address).await);
            }
            RoutingMsg::InstalledRoutes(reply) => {
                let _ = reply.send(self.routing.installed_routes().await.map_err(DataPlaneError::Routing));
            }
            RoutingMsg::SyncRoutes(routes, reply) => {
                let result = self.routing.sync_routes_via(&routes).await;
                let _ = reply.send(result.map(|_| ()).map_err(DataPlaneError::Routing));
            }
            RoutingMsg::SizeMtu(endpoints, again, reply) => {
                let result = if again || self.sized_for.as_ref() != Some(&endpoints) {
                    self.size_mtu(endpoints).await
                } else {
                    Ok(())
                };
                let _ = reply.send(result.map(|()| self.mtu));
            }
        }
    }
}

impl RoutingPart {
    /// The mesh MTU as last seen.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Mesh MTU = underlay MTU − overhead, and the MSS clamp to match.
    async fn size_mtu(&mut self, endpoints: Vec<IpAddr>) -> Result<(), DataPlaneError> {
        let routing = &self.routing;
        let underlay = routing.detect_underlay_mtu(&endpoints).await.map_err(DataPlaneError::Routing)?;
        let (mtu, _) = routing.ensure_mesh_mtu(underlay.mtu).await.map_err(DataPlaneError::Routing)?;
        if routing.config().lane_interface.is_some() {
            routing.ensure_lane_mtu(mtu).await.map_err(DataPlaneError::Routing)?;
        }
        routing.ensure_mss_clamp(mtu).await.map_err(DataPlaneError::Routing)?;
        if mtu != self.mtu {
            tracing::info!(underlay = %underlay.interface, underlay_mtu = underlay.mtu, mtu, "mesh MTU set");
        }
        self.mtu = mtu;
        self.sized_for = Some(endpoints);
        Ok(())
    }
}
