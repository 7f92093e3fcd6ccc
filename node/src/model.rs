//! Domain types shared by every layer: devices, values, points, rules and alarms.
//!
//! Free of protobuf (conversions live in `api/convert.rs`) and of any storage or network
//! type. Everything here is plain data with serde derives, so it can travel in Raft entries
//! and be stored as-is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The tenant used when a topic or request names none.
pub const DEFAULT_TENANT: &str = "default";

/// Unix time in milliseconds (UTC).
pub type TimestampMs = i64;

/// A tenant-qualified device id: the unit of ownership, actors and sharding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey {
    pub tenant: String,
    pub device: String,
}

impl DeviceKey {
    pub fn new(tenant: impl Into<String>, device: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            device: device.into(),
        }
    }

    /// A device of the default tenant.
    pub fn default_tenant(device: impl Into<String>) -> Self {
        Self::new(DEFAULT_TENANT, device)
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.device)
    }
}

/// One telemetry value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
    Position { lat: f64, lon: f64 },
}

impl Value {
    /// The numeric view used by threshold rules: numbers as-is, booleans as 0/1.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Text(_) | Value::Position { .. } => None,
        }
    }
}

/// One sample as a device sends it: several metrics at one time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Event time; `None` means "use the server's receive time".
    pub ts_ms: Option<TimestampMs>,
    /// Device sequence number, when the device sends one.
    pub seq: Option<u64>,
    /// (metric, value) pairs, in payload order.
    pub values: Vec<(String, Value)>,
}

/// A stored telemetry point. Identity (for idempotent writes) is (device, metric, ts_ms):
/// writing the same identity twice leaves one point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub device: DeviceKey,
    pub metric: String,
    pub ts_ms: TimestampMs,
    pub value: Value,
}

/// A device as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub key: DeviceKey,
    pub first_seen_ms: TimestampMs,
    pub last_seen_ms: TimestampMs,
}

// The rule language (conditions, selectors, notification targets) lives in `rules/doc.rs`;
// re-exported so every layer names it `model::…` like the other domain types.
pub use crate::rules::doc::{
    Circle, CmpOp, Condition, DeviceMeta, GeoTrigger, Geofence, NoData, PolygonShape, RateOfChange,
    RuleDuration, Selector, Shape, Target, Threshold,
};

/// An alert rule document, as applied by users. Stored in Raft; the version is the Raft
/// log index of the entry that wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub selector: Selector,
    pub condition: Condition,
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Where alarm transitions are sent (validated; delivery is the notifications issue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Target>,
}

fn default_severity() -> String {
    "warning".to_owned()
}

/// A rule as committed: the document plus the version Raft gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub doc: RuleDoc,
    pub version: u64,
    pub updated_at_ms: TimestampMs,
}

impl Rule {
    pub fn tenant(&self) -> &str {
        self.doc.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// Whether the rule applies to this device, whose type and labels are unknown (there is
    /// no device registry yet): selectors naming a type or labels do not match.
    pub fn selects(&self, device: &DeviceKey) -> bool {
        self.selects_with(device, None)
    }

    /// Whether the rule applies to this device, given its metadata when known.
    pub fn selects_with(&self, device: &DeviceKey, meta: Option<&DeviceMeta>) -> bool {
        self.tenant() == device.tenant && self.doc.selector.matches(&device.device, meta)
    }
}

/// What a device actor asks the control plane to raise for (device, rule): the alarm's
/// content before the state machine gives it an id and a status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmRaise {
    pub rule_id: String,
    /// The rule version whose evaluation raised it.
    pub rule_version: u64,
    pub severity: String,
    pub metric: String,
    /// The value that made the condition hold.
    pub value: Value,
    /// Event time of that value.
    pub at_ms: TimestampMs,
    pub message: String,
}

/// Alarm status: active or cleared, independent of acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmStatus {
    Active,
    Cleared,
}

/// An alarm of one (device, rule). At most one is active per (device, rule) at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Unique, assigned by the state machine when the alarm is raised.
    pub id: String,
    pub device: DeviceKey,
    pub rule_id: String,
    /// The rule version that raised the alarm.
    pub rule_version: u64,
    pub severity: String,
    pub status: AlarmStatus,
    pub acknowledged: bool,
    pub metric: String,
    /// The value that raised the alarm.
    pub value: Value,
    pub raised_at_ms: TimestampMs,
    pub cleared_at_ms: Option<TimestampMs>,
    pub message: String,
}

/// What happened to an alarm; with the alarm id it is the idempotency key of notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Raised,
    Cleared,
    Acknowledged,
}

impl Transition {
    /// The name used in idempotency keys, metrics and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::Cleared => "cleared",
            Transition::Acknowledged => "acknowledged",
        }
    }
}

/// A committed alarm transition, as published to watchers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    pub alarm: Alarm,
    pub transition: Transition,
}
