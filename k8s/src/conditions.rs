//! Condition types and reasons the controller writes into vpblu statuses.
//!
//! Conditions are standard `meta/v1` `Condition`s (type, status `True` /
//! `False` / `Unknown`, reason, message, `observedGeneration`,
//! `lastTransitionTime`). Types say what is being judged, reasons say why in
//! one CamelCase word; the message carries the details (which node, which
//! CIDR, which other policy).
//!
//! Which kind uses which type:
//!
//! | type | VpbluNode | TunnelPolicy | RoutePolicy | BlockPolicy | RotationPolicy |
//! |---|---|---|---|---|---|
//! | [`READY`] | yes | | yes | yes | yes |
//! | [`ACTIVE`] | | yes | | | |
//! | [`CONFLICT`] | | yes | yes | yes | yes |
//! | [`INVALID`] | | yes | yes | yes | yes |
//! | [`ROTATING`] | yes | | | | yes |
//! | [`CONNECTED`] | yes | | | | |

// ---- types -----------------------------------------------------------------

/// VpbluNode: the daemon applied the latest desired generation and its peers
/// have recent handshakes. Policies: accepted and in effect on every node it
/// touches.
pub const READY: &str = "Ready";

/// TunnelPolicy: this policy is the one in effect. Only one TunnelPolicy is
/// active at a time (the oldest, ties broken by name); the others are
/// `Active=False` with reason [`reasons::SUPERSEDED`].
pub const ACTIVE: &str = "Active";

/// The policy (or part of it) lost to a policy of higher precedence or to an
/// older policy of the same kind; `True` while that is so. The message names
/// the winner.
pub const CONFLICT: &str = "Conflict";

/// The spec passed the API server's schema but the controller cannot use it
/// (for example a cron schedule that does not parse, or a node that does not
/// exist); `True` while that is so.
pub const INVALID: &str = "Invalid";

/// A key rotation is in progress for this node (VpbluNode) or this policy
/// (RotationPolicy); `True` while it runs.
pub const ROTATING: &str = "Rotating";

/// VpbluNode: the node's daemon has its stream to the leading controller
/// open (`True`, reason [`reasons::STREAM_OPEN`]), or had one that closed
/// (`False`, reason [`reasons::STREAM_CLOSED`]; `lastTransitionTime` says
/// when). The data plane keeps its last applied state either way.
pub const CONNECTED: &str = "Connected";

/// Condition reasons (CamelCase, as the API server requires).
pub mod reasons {
    // ---- Ready ----

    /// The desired state was pushed and acknowledged.
    pub const APPLIED: &str = "Applied";

    /// The desired state is computed but not yet acknowledged by the daemon(s).
    pub const PENDING: &str = "Pending";

    /// The node's daemon has no open stream to the controller.
    pub const DAEMON_DISCONNECTED: &str = "DaemonDisconnected";

    /// The daemon reported an error applying the desired state.
    pub const APPLY_FAILED: &str = "ApplyFailed";

    /// Applied, but some configured peers have no recent handshake.
    pub const PEERS_DOWN: &str = "PeersDown";

    /// VpbluNode `Ready`: the daemon has no stream to the leading
    /// controller; the message says since when.
    pub const DISCONNECTED: &str = "Disconnected";

    /// VpbluNode `Ready`: the daemon has not applied the latest desired
    /// generation for longer than a few seconds; the message gives both.
    pub const LAGGING: &str = "Lagging";

    /// The node has not published a public key yet.
    pub const NO_PUBLIC_KEY: &str = "NoPublicKey";

    /// The Node has no pod CIDR, so there is nothing to route to it.
    pub const NO_POD_CIDR: &str = "NoPodCIDR";

    /// The node is isolated by a BlockPolicy.
    pub const ISOLATED: &str = "Isolated";

    // ---- Active / Conflict ----

    /// The policy is in effect with nothing overriding it.
    pub const ACCEPTED: &str = "Accepted";

    /// An older TunnelPolicy is the active one.
    pub const SUPERSEDED: &str = "Superseded";

    /// A route's CIDR overlaps a route of another RoutePolicy or a node's pod
    /// CIDR; the deterministic winner is named in the message.
    pub const OVERLAPPING_ROUTE: &str = "OverlappingRoute";

    /// A route or peering is overridden by a BlockPolicy (block or isolate).
    pub const OVERRIDDEN_BY_BLOCK: &str = "OverriddenByBlock";

    /// The route's `via` node is drained or isolated, so it is not a route
    /// target.
    pub const VIA_NODE_UNAVAILABLE: &str = "ViaNodeUnavailable";

    /// Another RotationPolicy selects the same node; the older policy wins.
    pub const OVERLAPPING_SELECTOR: &str = "OverlappingSelector";

    /// No conflict (the `False` side of [`super::CONFLICT`]).
    pub const NO_CONFLICT: &str = "NoConflict";

    // ---- Invalid ----

    /// The spec is usable (the `False` side of [`super::INVALID`]).
    pub const VALID: &str = "Valid";

    /// The policy names a node that has no Node object.
    pub const UNKNOWN_NODE: &str = "UnknownNode";

    /// The RotationPolicy schedule does not parse as a cron expression.
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";

    /// The RotationPolicy node selector does not parse.
    pub const INVALID_SELECTOR: &str = "InvalidSelector";

    // ---- Rotating ----

    /// A rotation is running; the message names the node and phase.
    pub const ROTATION_IN_PROGRESS: &str = "RotationInProgress";

    /// The last rotation completed (Retire done everywhere).
    pub const ROTATION_SUCCEEDED: &str = "RotationSucceeded";

    /// The last rotation failed before Retire and was rolled back; the old key
    /// is still in use.
    pub const ROTATION_ROLLED_BACK: &str = "RotationRolledBack";

    /// The RotationPolicy is paused; no scheduled rotation will start.
    pub const PAUSED: &str = "Paused";

    /// Waiting for the next scheduled time.
    pub const SCHEDULED: &str = "Scheduled";

    /// RotationPolicy `Ready`: the schedule and selector are fine, but the
    /// selector matches no node (or only nodes another policy owns), so a
    /// run rotates nothing. `Ready` stays `True`: nothing is wrong with the
    /// spec, the cluster just has no such node yet.
    pub const NO_NODES: &str = "NoNodes";

    /// RotationPolicy `Rotating`: no run is under way.
    pub const IDLE: &str = "Idle";

    // ---- Connected ----

    /// The daemon's stream to the leader is open.
    pub const STREAM_OPEN: &str = "StreamOpen";

    /// The daemon's stream closed (the daemon stopped, its node went away,
    /// or the network between them broke) and it has not reconnected.
    pub const STREAM_CLOSED: &str = "StreamClosed";

    /// The leading controller has no stream from the daemon (it never
    /// connected to this leader, for example after a failover).
    pub const NO_STREAM: &str = "NoStream";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API server rejects a condition whose type or reason does not match
    /// these shapes (see `metav1.Condition`).
    #[test]
    fn types_and_reasons_have_the_shape_the_api_server_accepts() {
        let types = [READY, ACTIVE, CONFLICT, INVALID, ROTATING, CONNECTED];
        let reasons = [
            reasons::APPLIED,
            reasons::PENDING,
            reasons::DAEMON_DISCONNECTED,
            reasons::APPLY_FAILED,
            reasons::PEERS_DOWN,
            reasons::NO_PUBLIC_KEY,
            reasons::NO_POD_CIDR,
            reasons::ISOLATED,
            reasons::ACCEPTED,
            reasons::SUPERSEDED,
            reasons::OVERLAPPING_ROUTE,
            reasons::OVERRIDDEN_BY_BLOCK,
            reasons::VIA_NODE_UNAVAILABLE,
            reasons::OVERLAPPING_SELECTOR,
            reasons::NO_CONFLICT,
            reasons::VALID,
            reasons::UNKNOWN_NODE,
            reasons::INVALID_SCHEDULE,
            reasons::INVALID_SELECTOR,
            reasons::ROTATION_IN_PROGRESS,
            reasons::ROTATION_SUCCEEDED,
            reasons::ROTATION_ROLLED_BACK,
            reasons::PAUSED,
            reasons::SCHEDULED,
            reasons::NO_NODES,
            reasons::IDLE,
            reasons::STREAM_OPEN,
            reasons::STREAM_CLOSED,
            reasons::DISCONNECTED,
            reasons::LAGGING,
            reasons::NO_STREAM,
        ];
        for t in types {
            assert!(
                !t.is_empty() && t.len() <= 316 && t.chars().all(|c| c.is_ascii_alphanumeric()),
                "condition type {t:?}"
            );
        }
        for r in reasons {
            // ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$, at most 1024 characters
            let first_ok = r.starts_with(|c: char| c.is_ascii_alphabetic());
            let rest_ok = r.chars().all(|c| c.is_ascii_alphanumeric() || "_,:".contains(c));
            let last_ok = r.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            assert!(first_ok && rest_ok && last_ok && r.len() <= 1024, "condition reason {r:?}");
        }
        let mut all: Vec<&str> = reasons.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), reasons.len(), "two reasons share a value");
    }
}
