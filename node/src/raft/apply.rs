//! Applying one committed entry to the control state: the pure core of the state machine.
//!
//! [`apply`] reads and writes through the [`ControlState`] trait and returns the response and
//! the events to publish. It never awaits, never reads a clock or randomness (times travel in
//! the commands; ids and versions come from the log index), so every replica computes the
//! same result from the same log.
//!
//! What it does not do: storage, transactions, caches or publishing. `state_machine.rs`
//! implements [`ControlState`] over one redb write transaction and publishes the events after
//! that transaction commits; the tests below implement it over `BTreeMap`s.

use crate::model::{Alarm, AlarmEvent, AlarmStatus, DeviceKey, Rule, Transition};
use crate::shard::ShardId;

use super::command::{
    BatchSlots, ControlCommand, ControlResponse, ENTRY_FORMAT, Entry, NodeInfo, NodeState,
    Rejection,
};
use super::outbox::{self, OutboxState};
use super::registry::{DeviceRecord, apply_device};
use super::timers;

/// Message of alarms cleared because their rule was deleted.
pub const RULE_DELETED: &str = "rule deleted";

/// What happened, published to subscribers once the entries that caused it are durable.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A rule was created or replaced (`Some`) or deleted (`None`).
    RuleChanged {
        tenant: String,
        id: String,
        rule: Option<Rule>,
    },
    /// An alarm transition was committed.
    Alarm(AlarmEvent),
    /// Shards were assigned to `node` with this epoch; the new owner serves them
    /// `activate_after_ms` after applying the entry.
    ShardsAssigned {
        node: u64,
        shards: Vec<ShardId>,
        epoch: u64,
        activate_after_ms: u64,
    },
    /// A node was registered or changed state.
    NodeChanged(NodeInfo),
    /// A device was registered or changed (`Some`) or deleted (`None`).
    DeviceChanged {
        key: DeviceKey,
        record: Option<DeviceRecord>,
    },
    /// The whole state was replaced by a snapshot from the leader; subscribers that keep
    /// derived state (alarms, shard ownership) must reload it. Rule changes are also sent
    /// one by one as `RuleChanged`.
    SnapshotInstalled { last_applied: Option<u64> },
}

/// The id of the alarm raised by the entry at `index`: unique and the same on every replica.
pub fn alarm_id(index: u64) -> String {
    format!("a-{index}")
}

/// The log index encoded in an alarm id, if `id` is one of ours.
pub fn alarm_index(id: &str) -> Option<u64> {
    id.strip_prefix("a-")?.parse().ok()
}

/// The state an entry is applied to. Reads and writes may fail with the backend's error;
/// the logic above it cannot.
pub trait ControlState {
    type Error;
    /// The (node, epoch) owning `shard`.
    fn shard_owner(&self, shard: ShardId) -> Result<Option<(u64, u64)>, Self::Error>;
    /// Sets the owner of `shard` and records (shard, epoch) → (node, from_ms) in the
    /// ownership history.
    fn set_shard_owner(
        &mut self,
        shard: ShardId,
        node: u64,
        epoch: u64,
        from_ms: i64,
    ) -> Result<(), Self::Error>;
    fn node(&self, id: u64) -> Result<Option<NodeInfo>, Self::Error>;
    fn put_node(&mut self, node: &NodeInfo) -> Result<(), Self::Error>;
    /// The registry record of a device (see `registry.rs`).
    fn device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>, Self::Error>;
    fn put_device(&mut self, record: &DeviceRecord) -> Result<(), Self::Error>;
    fn remove_device(&mut self, key: &DeviceKey) -> Result<(), Self::Error>;
    fn rule(&self, tenant: &str, id: &str) -> Result<Option<Rule>, Self::Error>;
    /// Makes `rule` the current version and keeps it in the rule's history.
    fn put_rule(&mut self, rule: &Rule) -> Result<(), Self::Error>;
    fn remove_rule(&mut self, tenant: &str, id: &str) -> Result<(), Self::Error>;
    fn alarm(&self, id: &str) -> Result<Option<Alarm>, Self::Error>;
    fn put_alarm(&mut self, alarm: &Alarm) -> Result<(), Self::Error>;
    /// The id of the active alarm of (device, rule), if any.
    fn active_alarm_id(
        &self,
        device: &DeviceKey,
        rule_id: &str,
    ) -> Result<Option<String>, Self::Error>;
    /// Sets (`Some`) or removes (`None`) the active alarm of (device, rule).
    fn set_active(
        &mut self,
        device: &DeviceKey,
        rule_id: &str,
        alarm_id: Option<&str>,
    ) -> Result<(), Self::Error>;
    /// Records that (device, rule) had an alarm transition at event time `at_ms` (kept: the
    /// latest). A new owner's actor does not evaluate points older than this (see
    /// `device/actor.rs`), so a late or redelivered point cannot raise a finished episode again.
    fn note_transition(
        &mut self,
        device: &DeviceKey,
        rule_id: &str,
        at_ms: i64,
    ) -> Result<(), Self::Error>;
    /// Ids of the active alarms of a rule, over all devices of its tenant.
    fn active_alarm_ids_of_rule(
        &self,
        tenant: &str,
        rule_id: &str,
    ) -> Result<Vec<String>, Self::Error>;
}

/// The result of applying one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub response: ControlResponse,
    pub events: Vec<Applied>,
}

impl Outcome {
    fn quiet(response: ControlResponse) -> Self {
        Self {
            response,
            events: Vec::new(),
        }
    }
}

/// Applies the entry committed at log `index` to `state`; every alarm transition it commits
/// also becomes a pending delivery in the outbox (`outbox.rs`).
pub fn apply<S: OutboxState>(
    state: &mut S,
    index: u64,
    entry: &Entry,
) -> Result<Outcome, S::Error> {
    let outcome = apply_command(state, index, entry)?;
    outbox::record(state, &outcome.events)?;
    Ok(outcome)
}

fn apply_command<S: OutboxState>(
    state: &mut S,
    index: u64,
    entry: &Entry,
) -> Result<Outcome, S::Error> {
    if entry.format == 0 || entry.format > ENTRY_FORMAT {
        return Ok(reject(Rejection::UnknownFormat(entry.format)));
    }
    match &entry.command {
        ControlCommand::Batch(commands) => apply_batch(state, index, commands),
        command => apply_one(state, index, command),
    }
}

/// Applies the commands of one batch entry in order, each seeing `index` as its own; a command
/// that may not share the entry with those before it is refused, the others still apply.
fn apply_batch<S: OutboxState>(
    state: &mut S,
    index: u64,
    commands: &[ControlCommand],
) -> Result<Outcome, S::Error> {
    let mut slots = BatchSlots::default();
    let mut responses = Vec::with_capacity(commands.len());
    let mut events = Vec::new();
    for command in commands {
        if !slots.take(command) {
            responses.push(ControlResponse::Rejected(Rejection::NotBatchable));
            continue;
        }
        let outcome = apply_one(state, index, command)?;
        responses.push(outcome.response);
        events.extend(outcome.events);
    }
    Ok(Outcome {
        response: ControlResponse::Batch(responses),
        events,
    })
}

/// Applies one command (never a batch: `apply_batch` refuses nested ones).
fn apply_one<S: OutboxState>(
    state: &mut S,
    index: u64,
    command: &ControlCommand,
) -> Result<Outcome, S::Error> {
    match command {
        ControlCommand::Batch(_) => Ok(reject(Rejection::NotBatchable)),
        ControlCommand::AssignShards {
            node,
            shards,
            at_ms,
            activate_after_ms,
        } => {
            if state
                .node(*node)?
                .is_some_and(|n| n.state == NodeState::Removed)
            {
                return Ok(reject(Rejection::NodeRemoved(*node)));
            }
            for shard in shards {
                state.set_shard_owner(*shard, *node, index, *at_ms)?;
            }
            Ok(Outcome {
                response: ControlResponse::ShardsAssigned { epoch: index },
                events: vec![Applied::ShardsAssigned {
                    node: *node,
                    shards: shards.clone(),
                    epoch: index,
                    activate_after_ms: *activate_after_ms,
                }],
            })
        }
        ControlCommand::RegisterNode {
            node,
            peer_addr,
            client_addr,
            mqtt_client_id,
            at_ms,
        } => {
            let old = state.node(*node)?;
            // Node ids are never reused: a removed node that is started again (it may not
            // know it was removed) must not come back as a member of the placement.
            if old.as_ref().is_some_and(|o| o.state == NodeState::Removed) {
                return Ok(reject(Rejection::NodeRemoved(*node)));
            }
            let info = NodeInfo {
                id: *node,
                peer_addr: peer_addr.clone(),
                client_addr: client_addr.clone(),
                mqtt_client_id: mqtt_client_id.clone(),
                state: NodeState::Active,
                since_ms: match &old {
                    Some(o) if o.state == NodeState::Active => o.since_ms,
                    _ => *at_ms,
                },
                rescuer: None,
            };
            if old.as_ref() == Some(&info) {
                return Ok(Outcome::quiet(ControlResponse::Unchanged));
            }
            state.put_node(&info)?;
            Ok(Outcome {
                response: ControlResponse::NodeChanged { index },
                events: vec![Applied::NodeChanged(info)],
            })
        }
        ControlCommand::SetNodeState {
            node,
            state: new_state,
            rescuer,
            at_ms,
        } => {
            let Some(mut info) = state.node(*node)? else {
                return Ok(reject(Rejection::NoSuchNode(*node)));
            };
            // Only an operator's removal (or a new registration) brings a node out of Removed.
            if info.state == NodeState::Removed && *new_state != NodeState::Removed {
                return Ok(reject(Rejection::NodeRemoved(*node)));
            }
            if info.state == *new_state && info.rescuer == *rescuer {
                return Ok(Outcome::quiet(ControlResponse::Unchanged));
            }
            info.state = *new_state;
            info.rescuer = *rescuer;
            info.since_ms = *at_ms;
            state.put_node(&info)?;
            Ok(Outcome {
                response: ControlResponse::NodeChanged { index },
                events: vec![Applied::NodeChanged(info)],
            })
        }
        ControlCommand::PutRule { doc, at_ms } => {
            let rule = Rule {
                doc: doc.clone(),
                version: index,
                updated_at_ms: *at_ms,
            };
            state.put_rule(&rule)?;
            Ok(Outcome {
                response: ControlResponse::RuleVersion {
                    version: index,
                    events: Vec::new(),
                },
                events: vec![Applied::RuleChanged {
                    tenant: rule.tenant().to_owned(),
                    id: rule.doc.id.clone(),
                    rule: Some(rule),
                }],
            })
        }
        ControlCommand::DeleteRule { tenant, id, at_ms } => {
            delete_rule(state, index, tenant, id, *at_ms)
        }
        ControlCommand::RaiseAlarm {
            shard,
            epoch,
            device,
            raise,
        } => {
            let rule_id = &raise.rule_id;
            if let Some(rejection) = check_epoch(state, *shard, *epoch)? {
                return Ok(reject(rejection));
            }
            if state.rule(&device.tenant, rule_id)?.is_none() {
                return Ok(reject(Rejection::NoSuchRule(format!(
                    "{}/{rule_id}",
                    device.tenant
                ))));
            }
            if state.active_alarm_id(device, rule_id)?.is_some() {
                return Ok(Outcome::quiet(ControlResponse::Unchanged));
            }
            let alarm = Alarm {
                id: alarm_id(index),
                device: device.clone(),
                rule_id: rule_id.clone(),
                rule_version: raise.rule_version,
                severity: raise.severity.clone(),
                status: AlarmStatus::Active,
                acknowledged: false,
                metric: raise.metric.clone(),
                value: raise.value.clone(),
                raised_at_ms: raise.at_ms,
                cleared_at_ms: None,
                message: raise.message.clone(),
            };
            state.put_alarm(&alarm)?;
            state.set_active(device, rule_id, Some(&alarm.id))?;
            state.note_transition(device, rule_id, raise.at_ms)?;
            Ok(transitions(vec![AlarmEvent {
                alarm,
                transition: Transition::Raised,
            }]))
        }
        ControlCommand::ClearAlarm {
            shard,
            epoch,
            device,
            rule_id,
            at_ms,
            reason,
        } => {
            if let Some(rejection) = check_epoch(state, *shard, *epoch)? {
                return Ok(reject(rejection));
            }
            match clear_active(state, device, rule_id, *at_ms, reason.as_deref())? {
                Some(event) => Ok(transitions(vec![event])),
                None => Ok(Outcome::quiet(ControlResponse::Unchanged)),
            }
        }
        ControlCommand::SetPendingTimers {
            shard,
            epoch,
            device,
            rule_id,
            timers: t,
        } => timers::apply_set(state, *shard, *epoch, device, rule_id, t.as_ref()),
        ControlCommand::Device(cmd) => apply_device(state, cmd),
        ControlCommand::NotificationsDelivered { keys } => outbox::apply_delivered(state, keys),
        ControlCommand::AckAlarm { id } => {
            let Some(mut alarm) = state.alarm(id)? else {
                return Ok(reject(Rejection::NoSuchAlarm(id.clone())));
            };
            if alarm.acknowledged {
                return Ok(Outcome::quiet(ControlResponse::Unchanged));
            }
            alarm.acknowledged = true;
            state.put_alarm(&alarm)?;
            Ok(transitions(vec![AlarmEvent {
                alarm,
                transition: Transition::Acknowledged,
            }]))
        }
    }
}

fn reject(rejection: Rejection) -> Outcome {
    Outcome::quiet(ControlResponse::Rejected(rejection))
}

fn transitions(events: Vec<AlarmEvent>) -> Outcome {
    Outcome {
        events: events.iter().cloned().map(Applied::Alarm).collect(),
        response: ControlResponse::Alarm(events),
    }
}

/// A control record is accepted only with the shard's current epoch. An unassigned shard has
/// no owner, so nothing may write for it (reported as current epoch 0).
pub(super) fn check_epoch<S: ControlState>(
    state: &S,
    shard: ShardId,
    epoch: u64,
) -> Result<Option<Rejection>, S::Error> {
    let current = state.shard_owner(shard)?.map(|(_, e)| e);
    Ok(match current {
        Some(current) if current == epoch => None,
        current => Some(Rejection::StaleEpoch {
            shard,
            entry: epoch,
            current: current.unwrap_or(0),
        }),
    })
}

/// Clears the active alarm of (device, rule), if any, optionally replacing its message.
fn clear_active<S: ControlState>(
    state: &mut S,
    device: &DeviceKey,
    rule_id: &str,
    at_ms: i64,
    message: Option<&str>,
) -> Result<Option<AlarmEvent>, S::Error> {
    let Some(id) = state.active_alarm_id(device, rule_id)? else {
        return Ok(None);
    };
    state.set_active(device, rule_id, None)?;
    // The active index and the alarm are written together, so the alarm exists; if it did
    // not, dropping the dangling index entry is the repair.
    let Some(mut alarm) = state.alarm(&id)? else {
        return Ok(None);
    };
    alarm.status = AlarmStatus::Cleared;
    alarm.cleared_at_ms = Some(at_ms);
    if let Some(message) = message {
        alarm.message = message.to_owned();
    }
    state.put_alarm(&alarm)?;
    state.note_transition(device, rule_id, at_ms)?;
    Ok(Some(AlarmEvent {
        alarm,
        transition: Transition::Cleared,
    }))
}

fn delete_rule<S: ControlState>(
    state: &mut S,
    index: u64,
    tenant: &str,
    id: &str,
    at_ms: i64,
) -> Result<Outcome, S::Error> {
    let active = state.active_alarm_ids_of_rule(tenant, id)?;
    if state.rule(tenant, id)?.is_none() && active.is_empty() {
        return Ok(reject(Rejection::NoSuchRule(format!("{tenant}/{id}"))));
    }
    state.remove_rule(tenant, id)?;
    let mut cleared = Vec::new();
    for alarm_id in active {
        let Some(alarm) = state.alarm(&alarm_id)? else {
            continue;
        };
        if let Some(event) = clear_active(state, &alarm.device, id, at_ms, Some(RULE_DELETED))? {
            cleared.push(event);
        }
    }
    let mut events = vec![Applied::RuleChanged {
        tenant: tenant.to_owned(),
        id: id.to_owned(),
        rule: None,
    }];
    events.extend(cleared.iter().cloned().map(Applied::Alarm));
    Ok(Outcome {
        response: ControlResponse::RuleVersion {
            version: index,
            events: cleared,
        },
        events,
    })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
pub(super) mod tests;
