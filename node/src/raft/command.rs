//! The entries of the control-plane Raft log and what applying them answers.
//!
//! Every entry is wrapped in [`Entry`] with a format version, so a rolling upgrade can refuse
//! entry types an older node does not know. Device actors write control records (alarm
//! transitions) tagged with (shard, epoch); the state machine refuses a stale epoch.

use serde::{Deserialize, Serialize};

use super::outbox::DeliveryKey;
use super::registry::{DeviceCommand, DeviceRecord};
use crate::model::{AlarmEvent, AlarmRaise, DeviceKey, RuleDoc, TimestampMs};
use crate::rules::pending::PendingTimers;
use crate::shard::ShardId;

/// Format version written into every entry by this build.
///
/// Not bumped for `NotificationsDelivered`: an older build fails to decode the unknown
/// variant before it could look at the format, so a bump would not let it refuse cleanly.
/// Mixed-version clusters are not supported for that entry (see `outbox.rs`).
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
    /// Assigns shards to a node. The epoch of each assignment is the log index of this entry;
    /// the ownership history records (shard, epoch) → (node, `at_ms`).
    AssignShards {
        node: u64,
        shards: Vec<ShardId>,
        /// Leader's wall clock when it decided the move (ownership history; 0 in old entries).
        #[serde(default)]
        at_ms: TimestampMs,
        /// How long the new owner waits after applying this entry before serving the shards:
        /// 0 when the previous owner is known to have stopped (its lease expired, or there was
        /// none), lease + drift margin when it is alive and may still be serving until it
        /// applies this entry (DESIGN.md §3).
        #[serde(default)]
        activate_after_ms: u64,
    },
    /// Registers (or updates the addresses of) a node and marks it active.
    RegisterNode {
        node: u64,
        peer_addr: String,
        client_addr: String,
        /// The node's stable MQTT client id, so another node can rescue its session.
        mqtt_client_id: String,
        at_ms: TimestampMs,
    },
    /// Marks a node down (its lease expired and its shards are moving; `rescuer` takes over
    /// its broker session), active again, or removed.
    SetNodeState {
        node: u64,
        state: NodeState,
        rescuer: Option<u64>,
        at_ms: TimestampMs,
    },
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
        /// Replaces the alarm's message when set (a rule update that no longer supports it).
        #[serde(default)]
        reason: Option<String>,
    },
    /// Acknowledges an alarm (active or cleared).
    AckAlarm { id: String },
    /// Sets (`Some`) or removes (`None`) the pending-timer record of (device, rule), so a
    /// new owner resumes its deadlines (`rules/pending.rs`). Control record, epoch-checked;
    /// written only when a `for` run or a no-data watch starts or ends.
    SetPendingTimers {
        shard: ShardId,
        epoch: u64,
        device: DeviceKey,
        rule_id: String,
        timers: Option<PendingTimers>,
    },
    /// A device registry entry (register, relabel, delete): see `registry.rs`.
    Device(DeviceCommand),
    /// The notifier of the device's owner finished these deliveries (sent, or given up and
    /// counted): their outbox rows are removed (`outbox.rs`). Not understood by builds
    /// before the outbox: mixed-version clusters are not supported for it.
    NotificationsDelivered { keys: Vec<DeliveryKey> },
    /// Several commands agreed on in one entry, applied in order; the answer is
    /// [`ControlResponse::Batch`], one answer per command. The proposer (`proposer.rs`) only
    /// groups commands that [`batch_slot`] allows together: every command of the batch sees
    /// the entry's log index as its own, so no two may take an id or a version from it for the
    /// same thing. The state machine refuses a command that breaks this
    /// ([`Rejection::NotBatchable`]). Not understood by builds before batching: mixed-version
    /// clusters are not supported for it (as for `NotificationsDelivered`).
    Batch(Vec<ControlCommand>),
}

/// Whether and how a command may share a Raft entry with others.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BatchSlot {
    /// Alone in its entry: placement and liveness decisions (their epoch is the entry's index,
    /// and two assignments sharing one epoch would break fencing), and batches themselves.
    Alone,
    /// Takes an id from the entry's index: at most one per entry (`RaiseAlarm`: alarm id).
    IndexId,
    /// Takes a version from the entry's index for one rule: at most one per rule and entry.
    Rule { tenant: String, id: String },
    /// Takes nothing from the index: any number per entry.
    Free,
}

/// The [`BatchSlot`] of a command.
pub fn batch_slot(cmd: &ControlCommand) -> BatchSlot {
    match cmd {
        ControlCommand::AssignShards { .. }
        | ControlCommand::RegisterNode { .. }
        | ControlCommand::SetNodeState { .. }
        | ControlCommand::Batch(_) => BatchSlot::Alone,
        ControlCommand::RaiseAlarm { .. } => BatchSlot::IndexId,
        ControlCommand::PutRule { doc, .. } => BatchSlot::Rule {
            tenant: doc
                .tenant
                .clone()
                .unwrap_or_else(|| crate::model::DEFAULT_TENANT.to_owned()),
            id: doc.id.clone(),
        },
        ControlCommand::DeleteRule { tenant, id, .. } => BatchSlot::Rule {
            tenant: tenant.clone(),
            id: id.clone(),
        },
        ControlCommand::ClearAlarm { .. }
        | ControlCommand::AckAlarm { .. }
        | ControlCommand::SetPendingTimers { .. }
        | ControlCommand::Device(_)
        | ControlCommand::NotificationsDelivered { .. } => BatchSlot::Free,
    }
}

/// The slots taken so far by the commands of one batch: decides whether the next command may
/// join it. Pure; used by the proposer to build batches and by the state machine to check them.
#[derive(Clone, Debug, Default)]
pub struct BatchSlots {
    len: usize,
    index_id: bool,
    rules: std::collections::BTreeSet<(String, String)>,
}

impl BatchSlots {
    /// Takes the slot of `cmd` and returns true when it may join the batch; false (nothing
    /// taken) when it must go in another entry.
    pub fn take(&mut self, cmd: &ControlCommand) -> bool {
        let ok = match batch_slot(cmd) {
            BatchSlot::Alone => false,
            BatchSlot::IndexId => !std::mem::replace(&mut self.index_id, true),
            BatchSlot::Rule { tenant, id } => self.rules.insert((tenant, id)),
            BatchSlot::Free => true,
        };
        self.len += usize::from(ok);
        ok
    }

    /// Takes the slots of all of `cmds` and returns true when they may join the batch
    /// together; false (nothing taken) when any of them may not. A batch forwarded by a
    /// follower joins the leader's next entry this way, as one piece.
    pub fn take_all(&mut self, cmds: &[ControlCommand]) -> bool {
        // Tried on a copy, so the slot rules stay in `take` alone.
        let mut trial = self.clone();
        let fits = cmds.iter().all(|cmd| trial.take(cmd));
        if fits {
            *self = trial;
        }
        fits
    }

    /// Commands taken so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The answer of applying one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The entry changed nothing (for example, clearing an alarm that is not active).
    Unchanged,
    /// Shards assigned with this epoch.
    ShardsAssigned { epoch: u64 },
    /// A node was registered or changed state (at this log index).
    NodeChanged { index: u64 },
    /// The rule's new version (PutRule) or the deletion's log index (DeleteRule), plus the
    /// alarm transitions the change caused.
    RuleVersion {
        version: u64,
        events: Vec<AlarmEvent>,
    },
    /// Alarm transitions committed by this entry.
    Alarm(Vec<AlarmEvent>),
    /// A pending-timer record was written or removed.
    TimersSet,
    /// Refused by the state machine; nothing changed.
    Rejected(Rejection),
    /// A device's registry record after the entry (`None`: deleted).
    Device(Option<DeviceRecord>),
    /// `removed` outbox rows were removed by `NotificationsDelivered`.
    Delivered { removed: usize },
    /// The answers of a [`ControlCommand::Batch`], in the order of its commands.
    Batch(Vec<ControlResponse>),
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
    #[error("no such node: {0}")]
    NoSuchNode(u64),
    #[error("no such device: {0}")]
    NoSuchDevice(String),
    /// Liveness and placement decisions never concern a node an operator removed: such an
    /// entry was decided on a stale view (a deposed leader's, say).
    #[error("node {0} was removed from the cluster")]
    NodeRemoved(u64),
    /// A command in a batch it may not share (see [`BatchSlots`]); nothing of it was applied.
    #[error("command may not share a Raft entry with the commands before it")]
    NotBatchable,
}

/// Liveness of a node as the control plane records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Serving (or allowed to serve) shards.
    Active,
    /// Its lease expired; its shards were moved away and its broker session is rescued.
    Down,
    /// Removed from the cluster by an operator; owns nothing.
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Down => "down",
            NodeState::Removed => "removed",
        }
    }
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub mqtt_client_id: String,
    pub state: NodeState,
    /// When `state` last changed (leader's wall clock).
    pub since_ms: TimestampMs,
    /// With `Down`: the node rescuing its broker session.
    pub rescuer: Option<u64>,
}
