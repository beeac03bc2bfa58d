//! Node names and the per-node counters that order what a node is told.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a node name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeNameError {
    /// Empty or longer than 253 characters.
    #[error("node name {text:?} must be 1 to 253 characters long")]
    Length {
        /// The text that was parsed.
        text: String,
    },
    /// Not an RFC 1123 DNS subdomain.
    #[error(
        "node name {text:?} is not a DNS-1123 subdomain: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
    )]
    Syntax {
        /// The text that was parsed.
        text: String,
    },
}

/// A Kubernetes Node name (an RFC 1123 DNS subdomain). Shared, so a clone
/// is a reference-count bump: a 5000-node mesh holds 25 million of them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeName(Arc<str>);

impl Ord for NodeName {
    /// By text; two clones of one name compare without reading it.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) { std::cmp::Ordering::Equal } else { self.0.cmp(&other.0) }
    }
}

impl PartialOrd for NodeName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Sets and maps of names can be searched by `&str`: a name's order,
/// equality and hash are its text's.
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl NodeName {
    /// Validates and wraps a node name.
    pub fn new(text: impl Into<String>) -> Result<Self, NodeNameError> {
        let text = text.into();
        if text.is_empty() || text.len() > 253 {
            return Err(NodeNameError::Length { text });
        }
        let label_ok = |label: &str| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if !text.split('.').all(label_ok) {
            return Err(NodeNameError::Syntax { text });
        }
        Ok(NodeName(text.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for NodeName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NodeName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A per-node sequence number stamped on every command the controller
/// sends to that node. It only grows; a daemon ignores anything older than
/// what it has applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_subdomains() {
        for ok in ["node-1", "kind-worker2", "ip-10-0-0-1.ec2.internal", "a"] {
            assert_eq!(NodeName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_names_naming_them() {
        for bad in ["", "Node1", "-a", "a-", "a..b", "a_b", &"x".repeat(254)] {
            let err = NodeName::new(bad).unwrap_err();
            if !bad.is_empty() && bad.len() <= 253 {
                assert!(err.to_string().contains(bad), "{err}");
            }
        }
    }
}
