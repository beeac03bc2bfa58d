//! `RotationPolicy`: when WireGuard keys rotate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default time both keys are accepted during a rotation.
pub const DEFAULT_OVERLAP_SECONDS: i32 = 300;

/// Default time one rotation phase may take before the rotation is rolled
/// back (before Retire) or reported as stuck (from Retire on).
pub const DEFAULT_PHASE_TIMEOUT_SECONDS: i32 = 30;

/// Scheduled key rotation. Nodes rotate one at a time: Prepare (stage a new
/// key) → Distribute (peers accept both keys) → Activate (the node switches)
/// → Retire (the old key is dropped everywhere); a failure before Retire
/// rolls back. Trigger a run by hand with the `vpblu.dev/rotate-now`
/// annotation.
// kube's `printcolumn(...)` lists repeat keys such as `type_`, which clippy
// mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vpblu.dev",
    version = "v1alpha1",
    kind = "RotationPolicy",
    plural = "rotationpolicies",
    shortname = "rtp",
    category = "vpblu",
    status = "RotationPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "When vpblu rotates WireGuard keys, and on which nodes. Nodes rotate one at a time with \
           both keys accepted during an overlap window, so no packet is dropped. Annotate with \
           vpblu.dev/rotate-now=<timestamp> to run it now.",
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule (with seconds)"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        priority = 1,
        description = "No scheduled rotation starts while true"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "Next scheduled run (RFC 3339)"
    ),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        priority = 1,
        description = "Last run"
    ),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentNode",
        description = "Node rotating now"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicySpec {
    /// Cron schedule in the 6- or 7-field form `sec min hour day-of-month
    /// month day-of-week [year]`, in UTC, e.g. `0 0 3 * * Sun` (Sundays at
    /// 03:00:00); `@weekly`-style shorthands work too. The API server only
    /// checks the field count; the controller reports a schedule it cannot
    /// parse with condition `Invalid` (reason `InvalidSchedule`).
    #[schemars(
        length(min = 1, max = 256),
        extend("x-kubernetes-validations" = [
            {
                "rule": r"self.matches(r'^\s*(@[a-z]+|\S+(\s+\S+){5,6})\s*$')",
                "message": "schedule must have 6 or 7 space-separated fields (sec min hour day-of-month month day-of-week [year]), e.g. \"0 0 3 * * Sun\"; a 5-field crontab line needs a leading seconds field",
            },
        ])
    )]
    pub schedule: String,

    /// How long, in seconds, traffic rides the rotating node's lanes (where
    /// both keys are live) before the old key is retired (1 to 86400).
    #[serde(default = "default_overlap_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub overlap_seconds: i32,

    /// How long, in seconds, every node involved may take to report one
    /// phase done (1 to 3600). Past it, a rotation before Retire rolls
    /// back; from Retire on it keeps waiting and says so in the VpbluNode's
    /// `status.rotation.message`.
    #[serde(default = "default_phase_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub phase_timeout_seconds: i32,

    /// Which nodes this policy rotates, by the labels of their Node objects.
    /// Absent: all nodes. An empty selector (`{}`) also selects all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Suspend scheduled rotations (a running one finishes). The
    /// `vpblu.dev/rotate-now` annotation still works while paused.
    #[serde(default)]
    pub paused: bool,
}

fn default_overlap_seconds() -> i32 {
    DEFAULT_OVERLAP_SECONDS
}

fn default_phase_timeout_seconds() -> i32 {
    DEFAULT_PHASE_TIMEOUT_SECONDS
}

/// Rotates all nodes weekly (Sundays 03:00 UTC) with the default overlap:
/// the values the API server fills in, plus a schedule.
impl Default for RotationPolicySpec {
    fn default() -> Self {
        Self {
            schedule: "0 0 3 * * Sun".into(),
            overlap_seconds: DEFAULT_OVERLAP_SECONDS,
            phase_timeout_seconds: DEFAULT_PHASE_TIMEOUT_SECONDS,
            node_selector: None,
            paused: false,
        }
    }
}

/// What the controller made of the policy, and where its rotations stand.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicyStatus {
    /// `metadata.generation` of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When a run last started, by schedule or by annotation (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,

    /// When the schedule fires next (RFC 3339); absent while paused or
    /// invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,

    /// The node whose key is rotating right now; absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,

    /// The last `vpblu.dev/rotate-now` annotation value the controller acted
    /// on; a different value triggers another run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rotate_now: Option<String>,

    /// Standard conditions: `Ready` (schedule and selector accepted;
    /// reason `NoNodes` when the selector matches no node), `Rotating`,
    /// `Conflict` (another policy selects the same node), `Invalid`
    /// (schedule or selector does not parse).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
