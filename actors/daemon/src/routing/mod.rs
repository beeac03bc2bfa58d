//! Steering into the mesh: the fwmark rule, the mesh routing table with a
//! route per remote pod CIDR through the mesh device, the mesh device's
//! MTU, and the TCP MSS clamp on the mesh path.
//!
//! The path a cross-node pod packet takes: classify (tc ingress of the pod
//! veth, before routing) sets `skb->mark = fwmark`; the rule
//! `fwmark FWMARK/MASK lookup TABLE` sends it to the mesh table; the
//! table's `CIDR dev MESH proto vpblu` route hands it to WireGuard. Packets
//! without the mark (including WireGuard's own UDP, which must carry a
//! different mark or none) never see the mesh table.
//!
//! Everything is async over one rtnetlink socket, opened in the network
//! namespace of the thread that calls [`Routing::connect`]. `nft` runs as a
//! child process (tokio::process), so it inherits that namespace too.
//!
//! Ownership: routes and rules we add carry [`ROUTE_PROTOCOL`]; only those
//! are ever removed. The nftables table `inet vpblu` is entirely ours.

mod diff;
mod error;
mod mss;
mod mtu;
mod routes;
mod rules;

use std::fmt;

pub use diff::{
    InstalledRule, RouteDiff, RouteOwner, RulePlan, RuleSpec, TableRoute, diff_routes, diff_routes_via,
    plan_rules,
};
pub use error::RoutingError;
pub(crate) use error::is_errno;
pub use mss::{NFT_TABLE, mss_for, nft_script, nft_script_for};
pub(crate) use mtu::link_by_name;
pub use mtu::{Underlay, mesh_mtu};
pub use routes::SyncReport;

/// Mark the classify program writes on packets bound for the mesh: "VP" in
/// the upper 16 bits. The daemon must hand this same value to
/// `Dataplane::set_config`, or the rule never matches.
pub const DEFAULT_FWMARK: u32 = 0x5650_0000;
/// Bits of the mark the rule compares: the upper half, so the low bits that
/// kube-proxy sets (0x4000 masquerade, 0x8000 drop) do not break the match.
pub const DEFAULT_FWMARK_MASK: u32 = 0xffff_0000;
/// The mesh routing table, 0x5650 ("VP"); away from wg-quick's 51820 and
/// the reserved 253-255.
pub const DEFAULT_TABLE: u32 = 0x5650;
/// Rule priority: after the local table (0) and the low numbers CNIs use,
/// before `main` (32766).
pub const DEFAULT_RULE_PRIORITY: u32 = 0x5650;
/// Bytes WireGuard adds per packet on an IPv6 underlay: 40 IPv6 + 8 UDP +
/// 32 WireGuard (header + auth tag). 60 is enough on an IPv4-only underlay.
pub const DEFAULT_MTU_OVERHEAD: u32 = 80;
/// Route and rule protocol (`proto 86` in `ip route`/`ip rule`) that marks
/// what vpblu installed; 86 = 'V', unused by the well-known protocols.
pub const ROUTE_PROTOCOL: u8 = 0x56;

/// Where and how to steer marked traffic into the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// The mesh (WireGuard) device, e.g. `wg-mesh`.
    pub mesh_interface: String,
    /// The lane device (the spare WireGuard device that carries traffic
    /// while a key rotates), e.g. `wg-lane`; `None`: no lane. Routes may
    /// go through it, and the MSS clamp covers it too.
    pub lane_interface: Option<String>,
    /// Mark written by classify; see [`DEFAULT_FWMARK`].
    pub fwmark: u32,
    /// Bits of the mark the rule compares; see [`DEFAULT_FWMARK_MASK`].
    pub fwmark_mask: u32,
    /// The mesh routing table; see [`DEFAULT_TABLE`].
    pub table: u32,
    /// Priority of the fwmark rules (one per address family).
    pub rule_priority: u32,
    /// Mesh MTU = underlay MTU − this; see [`DEFAULT_MTU_OVERHEAD`].
    pub mtu_overhead: u32,
}

impl RoutingConfig {
    /// Defaults for everything but the interface name.
    pub fn new(mesh_interface: impl Into<String>) -> Self {
        RoutingConfig {
            mesh_interface: mesh_interface.into(),
            lane_interface: None,
            fwmark: DEFAULT_FWMARK,
            fwmark_mask: DEFAULT_FWMARK_MASK,
            table: DEFAULT_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            mtu_overhead: DEFAULT_MTU_OVERHEAD,
        }
    }

    /// Refuses values that would break the host's routing or the nft script.
    pub fn validate(&self) -> Result<(), RoutingError> {
        let refuse = |field, value: String, reason| Err(RoutingError::Config { field, value, reason });
        let bad_name = |name: &str| {
            name.is_empty()
                || name.len() > 15
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let name = &self.mesh_interface;
        if bad_name(name) {
            return refuse(
                "mesh_interface",
                format!("{name:?}"),
                "must be 1 to 15 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if let Some(lane) = &self.lane_interface {
            if bad_name(lane) {
                return refuse(
                    "lane_interface",
                    format!("{lane:?}"),
                    "must be 1 to 15 characters of letters, digits, '-', '_' or '.'",
                );
            }
            if lane == name {
                return refuse(
                    "lane_interface",
                    format!("{lane:?}"),
                    "must differ from the mesh interface: the lane is a second WireGuard device",
                );
            }
        }
        if self.fwmark_mask == 0 || self.fwmark & self.fwmark_mask == 0 {
            return refuse(
                "fwmark",
                format!("{:#x}/{:#x}", self.fwmark, self.fwmark_mask),
                "the mark must have a bit set inside the mask, or every unmarked packet would match",
            );
        }
        if self.fwmark & !self.fwmark_mask != 0 {
            return refuse(
                "fwmark",
                format!("{:#x}/{:#x}", self.fwmark, self.fwmark_mask),
                "the mark has bits outside the mask; the rule would ignore them",
            );
        }
        if matches!(self.table, 0 | 253..=255) {
            return refuse(
                "table",
                self.table.to_string(),
                "0, 253 (default), 254 (main) and 255 (local) belong to the system; pick another",
            );
        }
        if self.rule_priority == 0 || self.rule_priority >= 32766 {
            return refuse(
                "rule_priority",
                self.rule_priority.to_string(),
                "must be between 1 and 32765: before the main table's rule, after local's",
            );
        }
        if !(60..=200).contains(&self.mtu_overhead) {
            return refuse(
                "mtu_overhead",
                self.mtu_overhead.to_string(),
                "WireGuard needs 60 (IPv4 underlay) or 80 (IPv6); 60..=200 is accepted",
            );
        }
        Ok(())
    }

    fn rule_spec(&self) -> RuleSpec {
        RuleSpec {
            priority: self.rule_priority,
            fwmark: self.fwmark,
            fwmask: self.fwmark_mask,
            table: self.table,
            protocol: ROUTE_PROTOCOL,
        }
    }
}

/// Which device a route in the mesh table goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteDevice {
    /// The mesh device (`RoutingConfig::mesh_interface`).
    Mesh,
    /// The lane device (`RoutingConfig::lane_interface`), while a key rotates.
    Lane,
}

/// Whether a call had to write anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Already as desired; nothing written.
    Unchanged,
    /// Written to reach the desired state.
    Changed,
}

impl Change {
    fn from_bool(changed: bool) -> Self {
        if changed { Change::Changed } else { Change::Unchanged }
    }
}

/// What [`Routing::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// fwmark rules removed (both families).
    pub rules: usize,
    /// Our routes removed from the mesh table.
    pub routes: usize,
    /// True when the nftables table was there and was removed.
    pub mss_clamp: bool,
}

/// The daemon's routing over one rtnetlink socket. Create it inside a
/// tokio runtime, in the network namespace it should manage.
pub struct Routing {
    config: RoutingConfig,
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routing").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Drop for Routing {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Routing {
    /// Validates `config` and opens the netlink socket (in the calling
    /// thread's network namespace). Must run inside a tokio runtime: the
    /// socket's I/O task is spawned on it.
    pub fn connect(config: RoutingConfig) -> Result<Self, RoutingError> {
        config.validate()?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| RoutingError::Socket { source })?;
        let connection = vpblu_runtime::spawn(connection);
        Ok(Routing { config, handle, connection })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// The underlay interface and its MTU: the device routing the peer
    /// endpoints (like `ip route get PEER`; the smallest MTU when peers use
    /// several), or the default route's device when no peer is given or
    /// routable.
    pub async fn detect_underlay_mtu(&self, peers: &[std::net::IpAddr]) -> Result<Underlay, RoutingError> {
        mtu::detect_underlay(&self.handle, &self.config, peers).await
    }

    /// Sets the mesh device's MTU to `underlay_mtu − mtu_overhead`; writes
    /// only when it differs. Returns the mesh MTU.
    pub async fn ensure_mesh_mtu(&self, underlay_mtu: u32) -> Result<(u32, Change), RoutingError> {
        mtu::ensure_mesh_mtu(&self.handle, &self.config, underlay_mtu).await
    }

    /// Gives the lane device the MTU `mesh_mtu` (the mesh device's: the
    /// lane carries the same traffic); writes only when it differs.
    pub async fn ensure_lane_mtu(&self, mesh_mtu: u32) -> Result<Change, RoutingError> {
        let name = self.config.lane_interface.as_deref().ok_or(RoutingError::NoLane)?;
        mtu::ensure_link_mtu(&self.handle, name, mesh_mtu).await
    }

    /// Makes sure exactly one `fwmark MARK/MASK lookup TABLE` rule at the
    /// configured priority exists for IPv4 and for IPv6, removing stale or
    /// duplicate rules of ours.
    pub async fn ensure_rule(&self) -> Result<Change, RoutingError> {
        rules::ensure(&self.handle, &self.config.rule_spec()).await
    }

    /// Removes every rule of ours (both families). Returns how many.
    pub async fn remove_rule(&self) -> Result<usize, RoutingError> {
        rules::remove_ours(&self.handle, &self.config.rule_spec()).await
    }

    /// Destinations of our routes (protocol [`ROUTE_PROTOCOL`]) in the mesh
    /// table, on any device: what an earlier daemon, or a converge that
    /// failed part-way, left there.
    pub async fn installed_routes(&self) -> Result<Vec<vpblu_messages::Cidr>, RoutingError> {
        let routes = routes::table_routes(&self.handle, self.config.table).await?;
        Ok(routes.into_iter().filter(|r| r.protocol == ROUTE_PROTOCOL).map(|r| r.destination).collect())
    }

    /// Makes the mesh table hold exactly one route of ours per desired CIDR
    /// through the mesh device, writing only the difference. Routes of other
    /// protocols are left alone (a desired CIDR they already hold is
    /// reported as shadowed).
    pub async fn sync_routes(&self, desired: &[vpblu_messages::Cidr]) -> Result<SyncReport, RoutingError> {
        let desired: Vec<_> = desired.iter().map(|cidr| (*cidr, RouteDevice::Mesh)).collect();
        routes::sync(&self.handle, &self.config, &desired).await
    }

    /// Like [`Routing::sync_routes`], each CIDR through the device given
    /// with it. A route of ours that goes through the other device is
    /// repointed in place (`route replace`): the CIDR is never without a
    /// route, so moving traffic between the mesh and the lane drops nothing.
    pub async fn sync_routes_via(
        &self,
        desired: &[(vpblu_messages::Cidr, RouteDevice)],
    ) -> Result<SyncReport, RoutingError> {
        routes::sync(&self.handle, &self.config, desired).await
    }

    /// Writes the nftables table `inet vpblu` clamping TCP MSS on SYNs
    /// leaving through the mesh device (and the lane, when there is one)
    /// to `mesh_mtu − 40` (IPv4) and `mesh_mtu − 60` (IPv6); writes only
    /// when the table differs.
    pub async fn ensure_mss_clamp(&self, mesh_mtu: u32) -> Result<Change, RoutingError> {
        mss::ensure(&self.devices(), mesh_mtu).await
    }

    /// The mesh device, then the lane if there is one.
    fn devices(&self) -> Vec<&str> {
        std::iter::once(self.config.mesh_interface.as_str())
            .chain(self.config.lane_interface.as_deref())
            .collect()
    }

    /// Deletes the nftables table `inet vpblu`, and nothing else.
    pub async fn remove_mss_clamp(&self) -> Result<Change, RoutingError> {
        mss::remove(&self.config.mesh_interface).await
    }

    /// Removes everything this module owns: our rules, our routes in the
    /// mesh table (on any device), and the nftables table. The mesh device
    /// and its MTU belong to the WireGuard actor and stay. Every step is
    /// tried; the first error is returned.
    pub async fn cleanup(&self) -> Result<CleanupReport, RoutingError> {
        let rules = self.remove_rule().await;
        let routes = routes::remove_ours(&self.handle, &self.config).await;
        let mss = self.remove_mss_clamp().await;
        Ok(CleanupReport { rules: rules?, routes: routes?, mss_clamp: mss? == Change::Changed })
    }
}
