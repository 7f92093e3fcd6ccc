//! Pending-timer control records: the `timers` table, applying
//! [`ControlCommand::SetPendingTimers`](super::command::ControlCommand::SetPendingTimers) and
//! the reads a new device owner needs.
//!
//! Table `timers`: (shard, tenant, device, rule id) → [`PendingTimers`] (JSON). Keyed
//! shard-first, so a node that gains shards finds the devices to wake with one range scan per
//! shard. A record is written with the writer's (shard, epoch) and refused when the epoch is
//! stale, exactly like alarm transitions; it stays when the shard moves (the next owner
//! resumes it) and is removed by whichever owner sees the timer end.
//!
//! What this does not do: decide when to write (the device state machine does, only on
//! changes of shape) or interpret the record (`rules/pending.rs`).

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

use super::ControlPlane;
use super::apply::{ControlState, Outcome, check_epoch};
use super::command::ControlResponse;
use super::error::ControlError;
use super::tables::{ACTIVE, TxnView, decode};
use super::types::StoreError;
use crate::model::DeviceKey;
use crate::rules::pending::PendingTimers;
use crate::shard::{self, ShardId};

pub(super) type TimersTable<'t> =
    Table<'t, (u32, &'static str, &'static str, &'static str), &'static [u8]>;

pub(super) const TIMERS: TableDefinition<(u32, &str, &str, &str), &[u8]> =
    TableDefinition::new("timers");

/// A (shard, tenant, device, rule id) row of the timers table, as snapshots carry it.
pub(super) type TimerRow = (u32, String, String, String, PendingTimers);

/// The control state can also hold pending-timer records.
pub trait TimerState: ControlState {
    /// Sets (`Some`) or removes (`None`) the record of (device, rule) in `shard`.
    fn put_timers(
        &mut self,
        shard: ShardId,
        device: &DeviceKey,
        rule_id: &str,
        timers: Option<&PendingTimers>,
    ) -> Result<(), Self::Error>;
}

/// Applies `SetPendingTimers`: refused with a stale epoch, otherwise written.
pub(super) fn apply_set<S: TimerState>(
    state: &mut S,
    shard: ShardId,
    epoch: u64,
    device: &DeviceKey,
    rule_id: &str,
    timers: Option<&PendingTimers>,
) -> Result<Outcome, S::Error> {
    if let Some(rejection) = check_epoch(state, shard, epoch)? {
        return Ok(Outcome {
            response: ControlResponse::Rejected(rejection),
            events: Vec::new(),
        });
    }
    state.put_timers(shard, device, rule_id, timers)?;
    Ok(Outcome {
        response: ControlResponse::TimersSet,
        events: Vec::new(),
    })
}

impl TimerState for TxnView<'_> {
    fn put_timers(
        &mut self,
        shard: ShardId,
        d: &DeviceKey,
        rule_id: &str,
        timers: Option<&PendingTimers>,
    ) -> Result<(), StoreError> {
        let key = (shard, d.tenant.as_str(), d.device.as_str(), rule_id);
        match timers {
            Some(t) => {
                let bytes = serde_json::to_vec(t)?;
                self.timers.insert(key, bytes.as_slice())?;
            }
            None => {
                self.timers.remove(key)?;
            }
        }
        Ok(())
    }
}

/// Every record, for snapshots.
pub(super) fn read_all(txn: &redb::ReadTransaction) -> Result<Vec<TimerRow>, StoreError> {
    let mut rows = Vec::new();
    for row in txn.open_table(TIMERS)?.iter()? {
        let (k, v) = row?;
        let (s, t, d, r) = k.value();
        rows.push((s, t.into(), d.into(), r.into(), decode(v.value())?));
    }
    Ok(rows)
}

/// Replaces every record (snapshot install), inside the installer's transaction.
pub(super) fn install(txn: &redb::WriteTransaction, rows: &[TimerRow]) -> Result<(), StoreError> {
    let mut table = txn.open_table(TIMERS)?;
    table.retain(|_, _| false)?;
    for (s, t, d, r, timers) in rows {
        let bytes = serde_json::to_vec(timers)?;
        table.insert((*s, t.as_str(), d.as_str(), r.as_str()), bytes.as_slice())?;
    }
    Ok(())
}

impl ControlPlane {
    /// The pending-timer records of `device` by rule id (read from disk).
    pub fn pending_timers(
        &self,
        device: &DeviceKey,
        shards: u32,
    ) -> Result<Vec<(String, PendingTimers)>, ControlError> {
        let db = self.sm_db()?;
        Ok(read_device(&db, shard::shard_of(device, shards), device)?)
    }

    /// Devices of `shards` with a pending-timer record (read from disk).
    pub fn timer_devices(&self, shards: &[ShardId]) -> Result<Vec<DeviceKey>, ControlError> {
        let db = self.sm_db()?;
        Ok(read_devices(&db, shards)?)
    }

    /// Devices with an active alarm of any of these rules, (tenant, id), in one read of the
    /// disk.
    pub fn active_devices_of_rules(
        &self,
        rules: &[(String, String)],
    ) -> Result<Vec<DeviceKey>, ControlError> {
        let db = self.sm_db()?;
        Ok(read_active_devices(&db, rules)?)
    }
}

fn read_device(
    db: &Database,
    shard: ShardId,
    d: &DeviceKey,
) -> Result<Vec<(String, PendingTimers)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TIMERS)?;
    let (t, dev) = (d.tenant.as_str(), d.device.as_str());
    let mut out = Vec::new();
    for row in table.range((shard, t, dev, "")..)? {
        let (k, v) = row?;
        let (s, t2, d2, rule) = k.value();
        if s != shard || t2 != t || d2 != dev {
            break;
        }
        out.push((rule.to_owned(), decode(v.value())?));
    }
    Ok(out)
}

fn read_devices(db: &Database, shards: &[ShardId]) -> Result<Vec<DeviceKey>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TIMERS)?;
    let mut out: Vec<DeviceKey> = Vec::new();
    for &shard in shards {
        for row in table.range((shard, "", "", "")..)? {
            let (k, _) = row?;
            let (s, t, d, _) = k.value();
            if s != shard {
                break;
            }
            if out.last().is_none_or(|l| l.tenant != t || l.device != d) {
                out.push(DeviceKey::new(t, d));
            }
        }
    }
    Ok(out)
}

fn read_active_devices(
    db: &Database,
    rules: &[(String, String)],
) -> Result<Vec<DeviceKey>, StoreError> {
    let txn = db.begin_read()?;
    let active = txn.open_table(ACTIVE)?;
    let mut out = Vec::new();
    for (tenant, rule_id) in rules {
        let (tenant, rule_id) = (tenant.as_str(), rule_id.as_str());
        for row in active.range((tenant, rule_id, "")..)? {
            let (k, _) = row?;
            let (t, r, d) = k.value();
            if t != tenant || r != rule_id {
                break;
            }
            out.push(DeviceKey::new(t, d));
        }
    }
    Ok(out)
}
