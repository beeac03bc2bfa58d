//! Validation the API server enforces on vpblu objects: string patterns and
//! CEL rules (`x-kubernetes-validations`) shared by several kinds.
//!
//! Every rule carries a `message` a person can act on; every string and list
//! a rule looks at has a `maxLength`/`maxItems`, which keeps the API server's
//! static CEL cost estimate far below its limits.

use serde_json::{Value, json};

/// Longest Kubernetes object name (a DNS-1123 subdomain).
pub(crate) const NODE_NAME_MAX_LEN: u32 = 253;

/// A DNS-1123 subdomain, the shape of every Node name.
pub(crate) const NODE_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Longest CIDR text: a full-length IPv6 address plus `/128`.
pub(crate) const CIDR_MAX_LEN: u32 = 43;

/// Nodes a policy may name; Kubernetes supports clusters of 5000 nodes.
pub(crate) const MAX_NODES: u32 = 5000;

/// CEL rules for a CIDR string: it parses, and it is the network address.
///
/// The second rule is guarded by the first, so a malformed value reports one
/// readable error rather than a CEL evaluation failure.
pub(crate) fn cidr_rules() -> Value {
    json!([
        {
            "rule": "isCIDR(self)",
            "message": "must be a CIDR such as 10.244.1.0/24 or fd00::/64",
        },
        {
            "rule": "!isCIDR(self) || cidr(self).masked() == cidr(self)",
            "message": "must not have host bits set (use the network address, e.g. 10.244.1.0/24)",
        },
    ])
}
