//! Bringing the devices, routes and maps from one plan to the next, in
//! the order that keeps traffic encrypted or dropped throughout. Each step
//! is a message to the actor that owns the component, sent only after the
//! step before it was answered.

use std::collections::BTreeSet;

use vpblu_messages::{Cidr, NodeDesiredState};

use super::NodeDataPlane;
use crate::data_plane::DataPlaneError;
use crate::data_plane::actors::{BpfMsg, LaneDevice, MainDevice, RoutingMsg, WireGuardMsg, ask};
use crate::data_plane::plan::{self, Plan};
use crate::data_plane::rotation;
use crate::routing::RouteDevice;

impl NodeDataPlane {
    /// Brings every component from `self.plan` to `target`. The order keeps
    /// traffic encrypted or dropped throughout, never in clear: new peers and
    /// routes exist before classify marks traffic for them; a removed CIDR
    /// stops being marked (or is marked unreachable) before its route goes,
    /// since a marked packet without a route in the mesh table would fall
    /// through to the main table, i.e. the underlay.
    pub(super) async fn converge(
        &mut self,
        state: &NodeDesiredState,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        let (routing, bpf) = (self.parts.routing.clone(), self.parts.bpf.clone());
        if everything {
            // Someone may have set it down; v4 routes need it up.
            self.mtu = ask(&routing, RoutingMsg::EnsureUp).await?;
        }
        let mut old = self.plan.clone();
        if everything {
            // After a restart or a failed converge the plan does not know
            // every route in the table; removing one before classify stops
            // marking its CIDR would send that traffic out in clear.
            let installed = ask(&routing, RoutingMsg::InstalledRoutes).await?;
            old.routes =
                old.routes.into_iter().chain(installed).collect::<BTreeSet<_>>().into_iter().collect();
        }
        self.converge_main_device(state, &old, target, everything).await?;
        if !target.endpoints.is_empty() && (everything || old.endpoints != target.endpoints) {
            let endpoints = target.endpoints.clone();
            self.mtu = ask(&routing, |reply| RoutingMsg::SizeMtu(endpoints, everything, reply)).await?;
        }

        // The lane is ready before routes go into it, and emptied only after
        // they left it.
        let lane_carries = !target.lane_routes.is_empty();
        if lane_carries {
            self.converge_lane(state, target, everything).await?;
        }
        let routes_changed =
            everything || old.routes != target.routes || old.lane_routes != target.lane_routes;
        let shrinking = routes_changed && !old.routes.iter().all(|r| target.routes.contains(r));
        if routes_changed {
            // Add first; what goes is removed after classify stopped marking
            // it. A CIDR that moves between the mesh and the lane is
            // repointed in place.
            let first: Vec<(Cidr, RouteDevice)> = if shrinking {
                let gone: Vec<Cidr> =
                    old.routes.iter().filter(|r| !target.routes.contains(r)).copied().collect();
                let mut all = target.routes_via();
                all.extend(plan::via(&gone, &old.lane_routes));
                all.sort();
                all
            } else {
                target.routes_via()
            };
            ask(&routing, |reply| RoutingMsg::SyncRoutes(first, reply)).await?;
        }
        if !lane_carries {
            self.converge_lane(state, target, everything).await?;
        }
        if everything || old.blocks != target.blocks {
            let blocks = target.blocks.clone();
            ask(&bpf, |reply| BpfMsg::SyncBlocks(blocks, reply)).await?;
        }
        if everything || old.destinations != target.destinations {
            let destinations = target.destinations.clone();
            ask(&bpf, |reply| BpfMsg::SyncDestinations(destinations, reply)).await?;
        }
        if shrinking {
            ask(&routing, |reply| RoutingMsg::SyncRoutes(target.routes_via(), reply)).await?;
        }
        Ok(())
    }

    /// Brings the main WireGuard device to `target`: its address and
    /// `rp_filter` (Routing), then listen port, the active key, and
    /// `state`'s peers (WireGuard).
    async fn converge_main_device(
        &mut self,
        state: &NodeDesiredState,
        old: &Plan,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        if everything || old.mesh_address != target.mesh_address {
            let address = target.mesh_address;
            ask(&self.parts.routing, |reply| RoutingMsg::SourceCheck(address, reply)).await?;
        }
        let listen_port = (target.listen_port != 0 && (everything || old.listen_port != target.listen_port))
            .then_some(target.listen_port);
        let main = MainDevice {
            listen_port,
            peers: state.peers.clone(),
            apply_peers: everything || self.state.as_ref().is_none_or(|s| s.peers != state.peers),
            everything,
        };
        ask(&self.parts.wireguard, |reply| WireGuardMsg::ConvergeMain(main, reply)).await
    }

    /// Brings the lane device to the rotation in `state` (none: the active
    /// key and no peers).
    async fn converge_lane(
        &mut self,
        state: &NodeDesiredState,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        if !self.has_lane {
            return Ok(());
        }
        let rotation = state.rotation.as_ref();
        let lane = LaneDevice {
            which: rotation::lane_key(rotation, &self.node),
            port: target.lane_port,
            peers: rotation::lane_peers(rotation),
            address: target.mesh_address,
            everything,
        };
        ask(&self.parts.wireguard, |reply| WireGuardMsg::ConvergeLane(lane, reply)).await
    }
}
