//! What a chaos run records, Jepsen-style: every client operation with its outcome, every
//! fault with its times, and what the cluster shows after healing. Checkers are pure functions
//! of these records (see [`crate::checkers`]); nothing here talks to a process.
//!
//! Times are wall-clock Unix milliseconds, the clock the nodes' lease logs use.

use std::collections::{BTreeMap, BTreeSet};

/// One MQTT QoS 1 publish of a device's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOp {
    pub seq: u64,
    /// When the PUBLISH was handed to the client.
    pub sent_ms: i64,
    /// When the PUBACK arrived; `None` when it never did (the point may or may not be stored).
    pub acked_ms: Option<i64>,
}

/// One rule write through the SDK (`Rules.Apply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWriteOp {
    pub rule_id: String,
    /// The value written into the document, so a later version can be matched to this write.
    pub marker: i64,
    /// The version the cluster answered with; `None` when the write was not acknowledged.
    pub acked_version: Option<u64>,
}

/// A rule as one node sees it after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    pub version: u64,
    /// The `marker` of the document stored at this version.
    pub marker: Option<i64>,
}

/// One alarm record as the cluster lists it after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRecord {
    pub id: String,
    pub device: String,
    pub rule_id: String,
    pub raised_at_ms: i64,
    /// `None` while active.
    pub cleared_at_ms: Option<i64>,
}

/// A fault as it was applied: kind, target description, start and end (heal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    pub description: String,
    pub started_ms: i64,
    pub healed_ms: i64,
    /// Whether the fault was a broker crash (its losses are the broker's, reported apart).
    pub broker_crash: bool,
}

/// A probe write after a heal: how long until a gRPC publish was durably acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub fault: String,
    /// Milliseconds from heal to the first acknowledged probe write; `None` if none succeeded
    /// before the probe gave up.
    pub after_heal_ms: Option<i64>,
}

/// Everything one run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// device → its publishes in sequence order.
    pub publishes: BTreeMap<String, Vec<PublishOp>>,
    /// device → sequence numbers found stored after healing.
    pub stored: BTreeMap<String, BTreeSet<u64>>,
    /// Devices whose read after healing was marked partial by the cluster.
    pub partial_reads: BTreeSet<String>,
    pub rule_writes: Vec<RuleWriteOp>,
    /// node id → rule id → state, read from each node after healing.
    pub rules_by_node: BTreeMap<u64, BTreeMap<String, RuleState>>,
    pub alarms: Vec<AlarmRecord>,
    pub faults: Vec<FaultWindow>,
    pub recoveries: Vec<Recovery>,
}

impl History {
    /// PUBACKed publishes over all devices.
    pub fn acked(&self) -> u64 {
        self.publishes
            .values()
            .flatten()
            .filter(|op| op.acked_ms.is_some())
            .count() as u64
    }
}
