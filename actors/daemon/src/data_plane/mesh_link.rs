//! The mesh device as a network interface: up (the kernel refuses IPv4
//! routes through a down device), its MTU for the Hello, and what IPv4
//! reverse-path filtering needs to let decrypted traffic in.
//!
//! # Reverse-path filtering
//!
//! Decrypted pod traffic arrives on the mesh device while the main table
//! routes its source over the underlay (host-gw, or any CNI route). With
//! `rp_filter` strict (1) the kernel drops it; with loose (2) it passes,
//! but only if the device has an IPv4 address: a device without one fails
//! the check in every mode but 0 (`__fib_validate_source`, `no_addr`). So
//! the mesh device gets the network address of the node's first IPv4 pod
//! CIDR as a /32 (what Flannel gives `flannel.1`), and when the effective
//! mode (the larger of `all` and the device's) is strict, the device's is
//! set to loose. Hosts with `rp_filter` 0 or 2 are left as they are.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::TryStreamExt as _;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use tokio::task::JoinHandle;

use super::DataPlaneError;

/// An rtnetlink socket for the mesh device, opened in the calling thread's
/// network namespace.
#[derive(Debug)]
pub struct MeshLink {
    name: String,
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for MeshLink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl MeshLink {
    /// Opens the socket (inside a tokio runtime: its I/O task is spawned).
    pub fn connect(name: &str) -> Result<Self, DataPlaneError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| {
            DataPlaneError::Config(format!(
                "cannot open a netlink route socket: {e}; the daemon needs CAP_NET_ADMIN"
            ))
        })?;
        let connection = vpblu_runtime::spawn(connection);
        Ok(MeshLink { name: name.to_owned(), handle, connection })
    }

    /// Brings the device up if it is down; returns its MTU.
    pub async fn ensure_up(&self) -> Result<u32, DataPlaneError> {
        let link = self.get().await?;
        let mtu = mtu_of(&link);
        if !link.header.flags.contains(LinkFlags::Up) {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(link.header.index).up().build())
                .execute()
                .await
                .map_err(|e| self.error("bring it up", e))?;
            tracing::info!(device = %self.name, "mesh device brought up");
        }
        Ok(mtu)
    }

    /// Makes the device's IPv4 addresses exactly `address`/32 (none when
    /// `None`), and its `rp_filter` loose when the effective mode is strict.
    /// The device is ours: any other IPv4 address on it is removed.
    pub async fn ensure_source_check(&self, address: Option<Ipv4Addr>) -> Result<(), DataPlaneError> {
        let index = self.get().await?.header.index;
        let present: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_filter(|m| futures::future::ready(m.header.family == AddressFamily::Inet))
            .try_collect()
            .await
            .map_err(|e| self.error("list its addresses", e))?;
        let mut have = false;
        for message in present {
            let ip = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if address.is_some_and(|a| ip == Some(IpAddr::V4(a))) && message.header.prefix_len == 32 {
                have = true;
                continue;
            }
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| self.error("remove an old address", e))?;
        }
        if let (Some(address), false) = (address, have) {
            self.handle
                .address()
                .add(index, IpAddr::V4(address), 32)
                .execute()
                .await
                .map_err(|e| self.error("add its address", e))?;
            tracing::info!(device = %self.name, %address, "mesh device address set (for rp_filter)");
        }
        if address.is_some() {
            self.loosen_rp_filter()?;
        }
        Ok(())
    }

    /// Sets the device's `rp_filter` to 2 when max(all, device) is 1. The
    /// sysctl files under /proc/sys/net belong to the calling thread's
    /// network namespace.
    fn loosen_rp_filter(&self) -> Result<(), DataPlaneError> {
        let conf = PathBuf::from("/proc/sys/net/ipv4/conf");
        let read = |path: PathBuf| -> Result<u8, DataPlaneError> {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| DataPlaneError::Sysctl { path: path.clone(), source })?;
            Ok(text.trim().parse().unwrap_or(0))
        };
        let all = read(conf.join("all/rp_filter"))?;
        let device = conf.join(&self.name).join("rp_filter");
        if all.max(read(device.clone())?) == 1 {
            std::fs::write(&device, "2\n")
                .map_err(|source| DataPlaneError::Sysctl { path: device, source })?;
            tracing::info!(device = %self.name, "rp_filter is strict here; set loose on the mesh device");
        }
        Ok(())
    }

    async fn get(&self) -> Result<LinkMessage, DataPlaneError> {
        match self.handle.link().get().match_name(self.name.clone()).execute().try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(DataPlaneError::MeshLinkMissing { name: self.name.clone() }),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code().abs() == rustix::io::Errno::NODEV.raw_os_error() =>
            {
                Err(DataPlaneError::MeshLinkMissing { name: self.name.clone() })
            }
            Err(e) => Err(self.error("look it up", e)),
        }
    }

    fn error(&self, action: &'static str, source: rtnetlink::Error) -> DataPlaneError {
        DataPlaneError::MeshLink { name: self.name.clone(), action, source: Box::new(source) }
    }
}

fn mtu_of(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(0)
}
