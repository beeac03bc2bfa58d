//! What `compute` has to say about its inputs: a conflict it resolved, a
//! name it could not find, a rule it skipped. Each finding becomes a status
//! condition on the object it names, so reasons are constant CamelCase
//! strings and messages say what is wrong and what to do.

use std::fmt;

/// The kind of object a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// A Node.
    Node,
    /// A TunnelPolicy.
    TunnelPolicy,
    /// A RoutePolicy.
    RoutePolicy,
    /// A BlockPolicy.
    BlockPolicy,
}

impl SubjectKind {
    /// The Kubernetes kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Node => "Node",
            SubjectKind::TunnelPolicy => "TunnelPolicy",
            SubjectKind::RoutePolicy => "RoutePolicy",
            SubjectKind::BlockPolicy => "BlockPolicy",
        }
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    /// Its kind.
    pub kind: SubjectKind,
    /// Its name.
    pub name: String,
}

impl PolicyRef {
    /// A reference to the object `name` of `kind`.
    pub fn new(kind: SubjectKind, name: impl Into<String>) -> Self {
        PolicyRef { kind, name: name.into() }
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind.as_str(), self.name)
    }
}

/// Why a finding was raised; `as_str` is the status condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingReason {
    /// Lost to an older or more specific claim on the same thing; ignored.
    Conflict,
    /// Names a node that does not exist.
    UnknownNode,
    /// An explicit peering pair names one node twice.
    SelfPair,
    /// A route's target node is drained; its CIDR is unreachable.
    TargetDrained,
    /// A route's target node is isolated; its CIDR is unreachable.
    TargetIsolated,
    /// A route's target node is not Ready or is being deleted; its CIDR is unreachable.
    TargetNotReady,
    /// A route's target node has no public key yet; its CIDR is unreachable.
    TargetNoKey,
    /// A block mixes IPv4 and IPv6; it is skipped.
    FamilyMismatch,
    /// In effect, and replaces a lower-precedence claim (informational).
    Overridden,
    /// A Ready node with a key but no internal IP cannot be a peer.
    NoInternalIp,
    /// A Ready node with a key but no pod CIDR cannot be a peer.
    NoPodCidrs,
    /// A field the API server let through does not parse; the item is
    /// skipped, the rest of the object applies.
    Invalid,
    /// A route for `0.0.0.0/0` or `::/0` without the egress opt-in; refused.
    DefaultRoute,
    /// A route covering a node's own address without the egress opt-in;
    /// refused.
    CoversNodeAddress,
    /// A route overlapping a Service CIDR without the egress opt-in; refused.
    CoversServiceCidr,
    /// A block covering a node's address (the underlay, and the daemons'
    /// streams to the controller); refused.
    CoversUnderlay,
}

impl FindingReason {
    /// The CamelCase status condition reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            FindingReason::Conflict => "Conflict",
            FindingReason::UnknownNode => "UnknownNode",
            FindingReason::SelfPair => "SelfPair",
            FindingReason::TargetDrained => "TargetDrained",
            FindingReason::TargetIsolated => "TargetIsolated",
            FindingReason::TargetNotReady => "TargetNotReady",
            FindingReason::TargetNoKey => "TargetNoKey",
            FindingReason::FamilyMismatch => "FamilyMismatch",
            FindingReason::Overridden => "Overridden",
            FindingReason::NoInternalIp => "NoInternalIp",
            FindingReason::NoPodCidrs => "NoPodCidrs",
            FindingReason::Invalid => "Invalid",
            FindingReason::DefaultRoute => "DefaultRoute",
            FindingReason::CoversNodeAddress => "CoversNodeAddress",
            FindingReason::CoversServiceCidr => "CoversServiceCIDR",
            FindingReason::CoversUnderlay => "CoversUnderlay",
        }
    }
}

impl fmt::Display for FindingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing `compute` reports about an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Finding {
    /// The object concerned.
    pub subject: PolicyRef,
    /// Why.
    pub reason: FindingReason,
    /// For people: the offending value and what to do about it.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.subject, self.reason, self.message)
    }
}

/// Collects findings while the index is built; hands them out sorted and
/// deduplicated so the result never depends on the order they were found in.
#[derive(Debug, Default)]
pub(super) struct Findings(Vec<Finding>);

impl Findings {
    pub(super) fn push(&mut self, kind: SubjectKind, name: &str, reason: FindingReason, message: String) {
        self.0.push(Finding { subject: PolicyRef::new(kind, name), reason, message });
    }

    pub(super) fn into_sorted(mut self) -> Vec<Finding> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}
