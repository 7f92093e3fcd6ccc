//! The notification outbox: deliveries that are committed but not yet recorded as delivered,
//! so a crash of the device's owner between the commit of an alarm transition and the end of
//! its delivery does not lose it (issue 5; DESIGN.md §7, "at least once").
//!
//! Applying an entry that commits alarm transitions also records, for each transition whose
//! rule has notification targets, one [`PendingDelivery`]: the event as committed and the
//! targets of the rule's latest version (current, or last before a deletion). The owner's
//! notifier (`notify/outbox.rs`) delivers it and then proposes
//! [`NotificationsDelivered`](super::command::ControlCommand::NotificationsDelivered), whose
//! apply removes the rows. A new owner (failover, restart) finds the rows still there and
//! delivers them again, with the same idempotency key.
//!
//! Table `outbox`: (alarm index, transition name) → [`PendingDelivery`] (JSON). The rows are
//! few (only deliveries in progress), so readers scan the whole table and filter by shard.
//!
//! What this does not do: deliver, decide who delivers, or read a clock. Mixed-version
//! clusters are not supported for this entry: a node of an older build cannot decode
//! `NotificationsDelivered` (and does not keep the table), so every node must run a build
//! that has it before any of them delivers notifications.

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};

use super::ControlPlane;
use super::apply::{Applied, Outcome, alarm_index};
use super::command::ControlResponse;
use super::error::ControlError;
use super::tables::{TxnView, decode};
use super::timers::TimerState;
use super::types::StoreError;
use crate::model::{AlarmEvent, Rule, Target, Transition};

pub(super) type OutboxTable<'t> = Table<'t, (u64, &'static str), &'static [u8]>;

pub(super) const OUTBOX: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("outbox");

/// Which delivery: the idempotency key `(alarm id, transition)` of its notifications.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryKey {
    pub alarm_id: String,
    pub transition: Transition,
}

impl DeliveryKey {
    pub fn of(ev: &AlarmEvent) -> Self {
        Self {
            alarm_id: ev.alarm.id.clone(),
            transition: ev.transition,
        }
    }
}

impl std::fmt::Display for DeliveryKey {
    /// `a-12:raised`, the notifications' idempotency key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.alarm_id, self.transition.as_str())
    }
}

/// A committed transition still to be delivered to `targets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// The transition as committed (later changes of the alarm do not alter what is sent).
    pub event: AlarmEvent,
    /// The targets of the rule's latest version when the transition was applied.
    pub targets: Vec<Target>,
}

impl PendingDelivery {
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey::of(&self.event)
    }
}

/// The control state can also hold the outbox.
pub trait OutboxState: TimerState {
    /// The latest version of a rule: the current one, or the last before its deletion.
    fn last_rule_version(&self, tenant: &str, id: &str) -> Result<Option<Rule>, Self::Error>;
    fn put_pending(&mut self, pending: &PendingDelivery) -> Result<(), Self::Error>;
    /// Removes the row of `key`; whether there was one.
    fn remove_pending(&mut self, key: &DeliveryKey) -> Result<bool, Self::Error>;
}

/// Records a pending delivery for every alarm transition among `events` whose rule has
/// targets (a transition without targets has nothing to deliver).
pub(super) fn record<S: OutboxState>(state: &mut S, events: &[Applied]) -> Result<(), S::Error> {
    for event in events {
        let Applied::Alarm(ev) = event else {
            continue;
        };
        let tenant = &ev.alarm.device.tenant;
        let targets = state
            .last_rule_version(tenant, &ev.alarm.rule_id)?
            .map(|r| r.doc.notify)
            .unwrap_or_default();
        if !targets.is_empty() {
            state.put_pending(&PendingDelivery {
                event: ev.clone(),
                targets,
            })?;
        }
    }
    Ok(())
}

/// Applies `NotificationsDelivered`: removes the rows of `keys` (absent ones are skipped, so a
/// key recorded twice, by two owners around a shard move, is harmless).
pub(super) fn apply_delivered<S: OutboxState>(
    state: &mut S,
    keys: &[DeliveryKey],
) -> Result<Outcome, S::Error> {
    let mut removed = 0;
    for key in keys {
        if state.remove_pending(key)? {
            removed += 1;
        }
    }
    let response = if removed == 0 {
        ControlResponse::Unchanged
    } else {
        ControlResponse::Delivered { removed }
    };
    Ok(Outcome {
        response,
        events: Vec::new(),
    })
}

impl OutboxState for TxnView<'_> {
    fn last_rule_version(&self, tenant: &str, id: &str) -> Result<Option<Rule>, StoreError> {
        let last = self
            .rule_history
            .range((tenant, id, 0)..=(tenant, id, u64::MAX))?
            .next_back()
            .transpose()?;
        last.map(|(_, v)| decode(v.value())).transpose()
    }

    fn put_pending(&mut self, pending: &PendingDelivery) -> Result<(), StoreError> {
        let key = pending.key();
        let Some(index) = alarm_index(&key.alarm_id) else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(pending)?;
        self.outbox
            .insert((index, key.transition.as_str()), bytes.as_slice())?;
        Ok(())
    }

    fn remove_pending(&mut self, key: &DeliveryKey) -> Result<bool, StoreError> {
        let Some(index) = alarm_index(&key.alarm_id) else {
            return Ok(false);
        };
        Ok(self
            .outbox
            .remove((index, key.transition.as_str()))?
            .is_some())
    }
}

/// Every pending delivery, oldest transition first (for snapshots and the notifier).
pub(super) fn read_all(txn: &redb::ReadTransaction) -> Result<Vec<PendingDelivery>, StoreError> {
    let mut rows = Vec::new();
    for row in txn.open_table(OUTBOX)?.iter()? {
        rows.push(decode(row?.1.value())?);
    }
    Ok(rows)
}

/// Replaces every row (snapshot install), inside the installer's transaction.
pub(super) fn install(
    txn: &redb::WriteTransaction,
    rows: &[PendingDelivery],
) -> Result<(), StoreError> {
    let mut table = txn.open_table(OUTBOX)?;
    table.retain(|_, _| false)?;
    for pending in rows {
        let key = pending.key();
        let Some(index) = alarm_index(&key.alarm_id) else {
            continue;
        };
        let bytes = serde_json::to_vec(pending)?;
        table.insert((index, key.transition.as_str()), bytes.as_slice())?;
    }
    Ok(())
}

fn read_pending(db: &Database) -> Result<Vec<PendingDelivery>, StoreError> {
    read_all(&db.begin_read()?)
}

impl ControlPlane {
    /// Every delivery committed but not yet recorded as delivered (read from disk).
    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, ControlError> {
        let db = self.sm_db()?;
        Ok(read_pending(&db)?)
    }

    /// The pending delivery of `key`, if it is still pending (read from disk).
    pub fn pending_delivery(
        &self,
        key: &DeliveryKey,
    ) -> Result<Option<PendingDelivery>, ControlError> {
        let Some(index) = alarm_index(&key.alarm_id) else {
            return Ok(None);
        };
        let db = self.sm_db()?;
        let read = || -> Result<Option<PendingDelivery>, StoreError> {
            let txn = db.begin_read()?;
            let table = txn.open_table(OUTBOX)?;
            let row = table.get((index, key.transition.as_str()))?;
            row.map(|v| decode(v.value())).transpose()
        };
        Ok(read()?)
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
