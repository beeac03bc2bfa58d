//! Bringing the devices, routes and maps from one plan to the next, in
//! the order that keeps traffic encrypted or dropped throughout.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use vpblu_messages::{Cidr, NodeDesiredState};

use super::NodeDataPlane;
use crate::data_plane::DataPlaneError;
use crate::data_plane::plan::{self, Plan};
use crate::data_plane::rotation::{self};
use crate::data_plane::{blocking, lock};
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
        if everything {
            // Someone may have set it down; v4 routes need it up.
            self.mtu = self.link.ensure_up().await?;
        }
        let mut old = self.plan.clone();
        if everything {
            // After a restart or a failed converge the plan does not know
            // every route in the table; removing one before classify stops
            // marking its CIDR would send that traffic out in clear.
            let installed = self.routing.installed_routes().await.map_err(DataPlaneError::Routing)?;
            old.routes =
                old.routes.into_iter().chain(installed).collect::<BTreeSet<_>>().into_iter().collect();
        }
        self.converge_main_device(state, &old, target, everything).await?;
        if !target.endpoints.is_empty() && (everything || self.sized_for.as_ref() != Some(&target.endpoints))
        {
            self.size_mtu(&target.endpoints).await?;
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
            self.routing.sync_routes_via(&first).await.map_err(DataPlaneError::Routing)?;
        }
        if !lane_carries {
            self.converge_lane(state, target, everything).await?;
        }
        if everything || old.blocks != target.blocks {
            let (bpf, blocks) = (Arc::clone(&self.bpf), target.blocks.clone());
            blocking("bpf", move || lock(&bpf).sync_blocks(&blocks).map_err(DataPlaneError::Bpf)).await?;
        }
        if everything || old.destinations != target.destinations {
            let (bpf, destinations) = (Arc::clone(&self.bpf), target.destinations.clone());
            blocking("bpf", move || lock(&bpf).sync_destinations(&destinations).map_err(DataPlaneError::Bpf))
                .await?;
        }
        if shrinking {
            self.routing.sync_routes_via(&target.routes_via()).await.map_err(DataPlaneError::Routing)?;
        }
        Ok(())
    }

    /// Brings the main WireGuard device to `target`: listen port, the
    /// active key, and `state`'s peers. Remembers when each peer was
    /// configured (a rotation's Retire waits for a newer handshake).
    async fn converge_main_device(
        &mut self,
        state: &NodeDesiredState,
        old: &Plan,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        let peers_changed = everything || self.state.as_ref().is_none_or(|s| s.peers != state.peers);

        if target.listen_port != 0 && (everything || old.listen_port != target.listen_port) {
            let (device, port) = (Arc::clone(&self.device), target.listen_port);
            blocking("wireguard", move || {
                lock(&device).set_listen_port(port).map_err(DataPlaneError::WireGuard)
            })
            .await?;
        }
        if everything || old.mesh_address != target.mesh_address {
            self.link.ensure_source_check(target.mesh_address).await?;
        }
        // The main device holds the active key (a rotation's Retire
        // promoted a new one); every session under the old one is gone.
        let main_key = self.public_key();
        if everything || main_key != self.main_key {
            let before = SystemTime::now();
            let (device, keys) = (Arc::clone(&self.device), Arc::clone(&self.keys));
            let switched = blocking("wireguard", move || {
                lock(&device).set_private_key(lock(&keys).active()).map_err(DataPlaneError::WireGuard)
            })
            .await?;
            if switched {
                tracing::info!(key = %rotation::short(&main_key), "main device switched to the active key");
                for peer in state.peers.values() {
                    self.main_configured.insert(peer.public_key, before);
                }
            }
            self.main_key = main_key;
        }
        if peers_changed {
            let before = SystemTime::now();
            let (device, peers) = (Arc::clone(&self.device), state.peers.clone());
            let diff = blocking("wireguard", move || {
                lock(&device).apply_peers(&peers).map_err(DataPlaneError::WireGuard)
            })
            .await?;
            if !diff.is_empty() {
                tracing::debug!(
                    added = diff.add.len(),
                    updated = diff.update.len(),
                    removed = diff.remove.len(),
                    "peers"
                );
            }
            for peer in &diff.add {
                self.main_configured.insert(peer.public_key, before);
            }
            self.main_configured.retain(|key, _| state.peers.values().any(|p| p.public_key == *key));
        }
        Ok(())
    }

    /// Brings the lane device to the rotation in `state` (none: the active
    /// key and no peers).
    async fn converge_lane(
        &mut self,
        state: &NodeDesiredState,
        target: &Plan,
        everything: bool,
    ) -> Result<(), DataPlaneError> {
        let Some(lane) = &mut self.lane else { return Ok(()) };
        let rotation = state.rotation.as_ref();
        let which = rotation::lane_key(rotation, &self.node);
        let peers = rotation::lane_peers(rotation);
        lane.converge(&self.keys, which, target.lane_port, &peers, target.mesh_address, everything).await
    }

    /// Mesh MTU = underlay MTU − overhead, and the MSS clamp to match.
    async fn size_mtu(&mut self, endpoints: &[IpAddr]) -> Result<(), DataPlaneError> {
        let underlay = self.routing.detect_underlay_mtu(endpoints).await.map_err(DataPlaneError::Routing)?;
        let (mtu, _) = self.routing.ensure_mesh_mtu(underlay.mtu).await.map_err(DataPlaneError::Routing)?;
        if self.lane.is_some() {
            self.routing.ensure_lane_mtu(mtu).await.map_err(DataPlaneError::Routing)?;
        }
        self.routing.ensure_mss_clamp(mtu).await.map_err(DataPlaneError::Routing)?;
        if mtu != self.mtu {
            tracing::info!(underlay = %underlay.interface, underlay_mtu = underlay.mtu, mtu, "mesh MTU set");
        }
        self.mtu = mtu;
        self.sized_for = Some(endpoints.to_vec());
        Ok(())
    }
}
