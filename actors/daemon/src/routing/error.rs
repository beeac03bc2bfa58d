//! What can go wrong while steering marked traffic into the mesh device.

use std::net::IpAddr;

use vpblu_messages::Cidr;

/// A routing step that failed; each message names the interface, table,
/// rule or CIDR involved and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A [`RoutingConfig`](super::RoutingConfig) value is unusable.
    #[error("routing configuration: {field} = {value}: {reason}")]
    Config {
        /// The field that was refused.
        field: &'static str,
        /// Its value, as given.
        value: String,
        /// Why, and what would be accepted.
        reason: &'static str,
    },
    /// The netlink socket could not be opened (in this network namespace).
    #[error("cannot open a netlink route socket: {source}; the daemon needs CAP_NET_ADMIN")]
    Socket {
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The mesh device does not exist (yet).
    #[error(
        "mesh interface {name:?} does not exist: the WireGuard actor creates it; \
         routing can only start after it is up"
    )]
    MeshInterfaceMissing {
        /// The configured mesh interface name.
        name: String,
    },
    /// A route through the lane was asked for with no lane configured.
    #[error(
        "a route through the lane device was asked for, but this routing has no lane interface \
         configured; start the daemon with --lane-interface"
    )]
    NoLane,
    /// The mesh device is administratively down, so IPv4 routes via it are refused.
    #[error("mesh interface {name:?} is down: bring it up (ip link set {name} up) before routing through it")]
    MeshInterfaceDown {
        /// The configured mesh interface name.
        name: String,
    },
    /// No interface carries the peer endpoints and there is no default route either.
    #[error(
        "cannot find the underlay interface: no route to any peer endpoint {peers:?} and no \
         default route in the main table; give the node a route to its peers"
    )]
    NoUnderlay {
        /// The peer endpoints that were looked up.
        peers: Vec<IpAddr>,
    },
    /// Underlay MTU minus the overhead leaves too little for IPv6 (1280).
    #[error(
        "mesh MTU would be {underlay_mtu} - {overhead} = {mesh_mtu}, below IPv6's minimum of 1280; \
         lower --mtu-overhead or raise the MTU of the underlay interface"
    )]
    MtuTooSmall {
        /// The underlay interface's MTU.
        underlay_mtu: u32,
        /// The configured per-packet overhead.
        overhead: u32,
        /// What the mesh MTU would have been.
        mesh_mtu: i64,
    },
    /// A netlink request was refused by the kernel or failed on the socket.
    #[error("{action}: {source}")]
    Netlink {
        /// What was being done, with the interface/table/CIDR involved.
        action: String,
        /// The rtnetlink error (carries the kernel's errno); boxed, it is large.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// A route for a remote CIDR could not be added to or removed from the mesh table.
    #[error("{verb} route {cidr} dev {interface} table {table}: {source}")]
    Route {
        /// "add" or "delete".
        verb: &'static str,
        /// The route's destination.
        cidr: Cidr,
        /// The interface the route points at.
        interface: String,
        /// The mesh routing table.
        table: u32,
        /// The rtnetlink error; boxed, it is large.
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// `nft` is not installed, so the TCP MSS clamp cannot be written.
    #[error(
        "`nft` was not found on PATH: the TCP MSS clamp on {interface:?} needs it; \
         install the nftables package (apt-get install nftables)"
    )]
    NftMissing {
        /// The mesh interface the clamp is for.
        interface: String,
    },
    /// `nft` could not be started or talked to.
    #[error("running `nft {args}`: {source}")]
    NftSpawn {
        /// The arguments it was run with.
        args: String,
        /// The process error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused what it was given.
    #[error("`nft {args}` failed for table inet {table}: {stderr}")]
    NftFailed {
        /// The arguments it was run with.
        args: String,
        /// The nftables table (always ours).
        table: &'static str,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// `nft -j` printed something that is not the JSON it documents.
    #[error("cannot read `nft -j list table inet {table}` output: {source}")]
    NftJson {
        /// The nftables table (always ours).
        table: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl RoutingError {
    pub(crate) fn netlink(action: impl Into<String>, source: rtnetlink::Error) -> Self {
        RoutingError::Netlink { action: action.into(), source: Box::new(source) }
    }
}

/// True when `error` is the kernel refusing with `errno`.
pub(crate) fn is_errno(error: &rtnetlink::Error, errno: rustix::io::Errno) -> bool {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.raw_code().abs() == errno.raw_os_error(),
        _ => false,
    }
}
