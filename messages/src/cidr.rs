//! IPv4/IPv6 CIDR blocks as the mesh uses them: always a network address
//! (no host bits), so two spellings of one block never compare unequal.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` separating address and prefix length.
    #[error("{text:?} is not a CIDR: expected ADDRESS/PREFIX such as 10.244.1.0/24 or fd00:10::/64")]
    MissingPrefix {
        /// The text that was parsed.
        text: String,
    },
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{text:?} is not a CIDR: {addr:?} is not an IPv4 or IPv6 address")]
    BadAddress {
        /// The text that was parsed.
        text: String,
        /// The address part.
        addr: String,
    },
    /// The prefix part is not a number in range for the address family.
    #[error("{text:?} is not a CIDR: prefix length {prefix:?} must be 0..={max} for this address family")]
    BadPrefix {
        /// The text that was parsed.
        text: String,
        /// The prefix part.
        prefix: String,
        /// The largest prefix the family allows (32 or 128).
        max: u8,
    },
    /// Bits below the prefix length are set.
    #[error("{text:?} has host bits set: use the network address {network}")]
    HostBits {
        /// The text that was parsed.
        text: String,
        /// The network the text probably meant.
        network: Cidr,
    },
}

/// A network block: address with all host bits zero, and a prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a CIDR, refusing host bits and out-of-range prefixes.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let text = format!("{addr}/{prefix}");
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::BadPrefix { text, prefix: prefix.to_string(), max });
        }
        let network = Cidr { addr: mask(addr, prefix), prefix };
        if network.addr != addr {
            return Err(CidrError::HostBits { text, network });
        }
        Ok(network)
    }

    /// The network containing `addr` at `prefix` (host bits cleared).
    pub fn containing(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::BadPrefix {
                text: format!("{addr}/{prefix}"),
                prefix: prefix.to_string(),
                max,
            });
        }
        Ok(Cidr { addr: mask(addr, prefix), prefix })
    }

    /// A single host: /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        Cidr { addr, prefix: max_prefix(addr) }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// True for IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True when `ip` is inside this block.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        same_family(self.addr, ip) && mask(ip, self.prefix) == self.addr
    }

    /// True when every address of `other` is inside this block.
    pub fn contains(&self, other: &Cidr) -> bool {
        same_family(self.addr, other.addr)
            && self.prefix <= other.prefix
            && mask(other.addr, self.prefix) == self.addr
    }

    /// True when the two blocks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        let (addr_text, prefix_text) =
            text.split_once('/').ok_or_else(|| CidrError::MissingPrefix { text: owned() })?;
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::BadAddress { text: owned(), addr: addr_text.to_owned() })?;
        let max = max_prefix(addr);
        let bad_prefix = || CidrError::BadPrefix { text: owned(), prefix: prefix_text.to_owned(), max };
        // Only plain decimal digits: "+24", " 24" and "024"-style oddities are refused.
        if prefix_text.is_empty() || prefix_text.len() > 3 || !prefix_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad_prefix());
        }
        let prefix: u8 = prefix_text.parse().map_err(|_| bad_prefix())?;
        if prefix > max {
            return Err(bad_prefix());
        }
        let network = Cidr { addr: mask(addr, prefix), prefix };
        if network.addr != addr {
            return Err(CidrError::HostBits { text: owned(), network });
        }
        Ok(network)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Ord for Cidr {
    /// IPv4 before IPv6, then by network address, then shorter prefix first.
    fn cmp(&self, other: &Self) -> Ordering {
        let key = |c: &Cidr| match c.addr {
            IpAddr::V4(v4) => (0u8, u128::from(u32::from(v4)), c.prefix),
            IpAddr::V6(v6) => (1u8, u128::from(v6), c.prefix),
        };
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Cidr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v4_and_v6() {
        assert_eq!(c("10.244.1.0/24").to_string(), "10.244.1.0/24");
        assert_eq!(c("fd00:10:244:1::/64").to_string(), "fd00:10:244:1::/64");
        assert_eq!(c("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(c("::/0").prefix_len(), 0);
        assert_eq!(c("10.0.0.1/32").prefix_len(), 32);
        assert_eq!(c("fd00::1/128").prefix_len(), 128);
    }

    #[test]
    fn rejects_host_bits_with_the_network_it_meant() {
        let err = "10.244.1.5/24".parse::<Cidr>().unwrap_err();
        assert_eq!(err, CidrError::HostBits { text: "10.244.1.5/24".into(), network: c("10.244.1.0/24") });
        assert!(err.to_string().contains("10.244.1.0/24"), "{err}");
        assert!(matches!("fd00::1/64".parse::<Cidr>(), Err(CidrError::HostBits { .. })));
    }

    #[test]
    fn rejects_prefix_out_of_range() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0.0/1000",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(matches!(err, CidrError::BadPrefix { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains(bad), "error names the input: {err}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "garbage", "10.0.0/8", "10.0.0.256/32", "fd00:::/8", "/24", "10.0.0.0"] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn containment_and_overlap() {
        assert!(c("10.244.0.0/16").contains(&c("10.244.1.0/24")));
        assert!(!c("10.244.1.0/24").contains(&c("10.244.0.0/16")));
        assert!(c("10.244.1.0/24").overlaps(&c("10.244.0.0/16")));
        assert!(!c("10.244.1.0/24").overlaps(&c("10.244.2.0/24")));
        assert!(!c("0.0.0.0/0").overlaps(&c("::/0")), "families never overlap");
        assert!(c("fd00::/8").contains_ip("fd12::1".parse().unwrap()));
        assert!(!c("fd00::/8").contains_ip("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn orders_v4_first_then_address_then_prefix() {
        let mut v = vec![c("fd00::/64"), c("10.1.0.0/16"), c("10.0.0.0/24"), c("10.0.0.0/16")];
        v.sort();
        assert_eq!(v, vec![c("10.0.0.0/16"), c("10.0.0.0/24"), c("10.1.0.0/16"), c("fd00::/64")]);
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let json = serde_json::to_string(&c("10.1.0.0/16")).unwrap();
        assert_eq!(json, "\"10.1.0.0/16\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), c("10.1.0.0/16"));
        assert!(serde_json::from_str::<Cidr>("\"10.1.0.1/16\"").is_err());
    }
}
