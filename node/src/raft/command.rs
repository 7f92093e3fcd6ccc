//! The entries of the control-plane Raft log and what applying them answers.
//!
//! Every entry is wrapped in [`Entry`] with a format version, so a rolling upgrade can refuse
//! entry types an older node does not know. Device actors write control records (alarm
//! transitions) tagged with (shard, epoch); the state machine refuses a stale epoch.

use serde::{Deserialize, Serialize};

use crate::model::{AlarmEvent, AlarmRaise, DeviceKey, RuleDoc, TimestampMs};
use crate::shard::ShardId;

/// Format version written into every entry by this build.
pub const ENTRY_FORMAT: u16 = 1;

/// One application entry of the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The format this entry was written in; the state machine refuses formats it does not know.
    pub format: u16,
    pub command: ControlCommand,
}

impl Entry {
    pub fn new(command: ControlCommand) -> Self {
        Self {
            format: ENTRY_FORMAT,
            command,
        }
    }
}

/// What a caller asks the control plane to agree on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Assigns shards to a node. The epoch of each assignment is the log index of this entry.
    AssignShards { node: u64, shards: Vec<ShardId> },
    /// Creates or replaces a rule. Its version becomes the log index of this entry.
    PutRule { doc: RuleDoc, at_ms: TimestampMs },
    /// Deletes a rule and clears its active alarms with reason "rule deleted".
    DeleteRule {
        tenant: String,
        id: String,
        at_ms: TimestampMs,
    },
    /// Raises an alarm for (device, rule) unless one is already active. Control record of the
    /// owning device actor: refused if `epoch` is not the shard's current epoch.
    RaiseAlarm {
        shard: ShardId,
        epoch: u64,
        device: DeviceKey,
        raise: AlarmRaise,
    },
    /// Clears the active alarm of (device, rule), if any. Control record, epoch-checked.
    ClearAlarm {
        shard: ShardId,
        epoch: u64,
        device: DeviceKey,
        rule_id: String,
        at_ms: TimestampMs,
    },
    /// Acknowledges an alarm (active or cleared).
    AckAlarm { id: String },
}

/// The answer of applying one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The entry changed nothing (for example, clearing an alarm that is not active).
    Unchanged,
    /// Shards assigned with this epoch.
    ShardsAssigned { epoch: u64 },
    /// The rule's new version (PutRule) or the deletion's log index (DeleteRule), plus the
    /// alarm transitions the change caused.
    RuleVersion {
        version: u64,
        events: Vec<AlarmEvent>,
    },
    /// Alarm transitions committed by this entry.
    Alarm(Vec<AlarmEvent>),
    /// Refused by the state machine; nothing changed.
    Rejected(Rejection),
}

/// Why the state machine refused an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("stale epoch for shard {shard}: entry has {entry}, current is {current}")]
    StaleEpoch {
        shard: ShardId,
        entry: u64,
        current: u64,
    },
    #[error("no such rule: {0}")]
    NoSuchRule(String),
    #[error("no such alarm: {0}")]
    NoSuchAlarm(String),
    #[error("unknown entry format {0}")]
    UnknownFormat(u16),
}
