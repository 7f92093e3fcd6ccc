//! The tables of the state machine in `DIR/sm.redb`, and reads and writes of them.
//!
//! Tables (JSON values unless noted):
//! - `rules`: (tenant, rule id) → [`Rule`];
//! - `alarms`: log index that raised it (`u64`) → [`Alarm`] (its id is `a-{index}`);
//! - `active`: (tenant, rule id, device) → alarm id (`&str`): the one active alarm per
//!   (device, rule); keyed rule-first so deleting a rule finds its alarms with one range scan;
//! - `shards`: shard → (node, epoch) as `(u64, u64)`;
//! - `history`: (shard, epoch) → (node, from_ms) as `(u64, i64)`: the ownership history, one
//!   row per assignment; an owner holds the shard from `from_ms` until the next row's;
//! - `nodes`: node id → [`NodeInfo`];
//! - `rule_history`: (tenant, rule id, version) → [`Rule`]: every version ever put, for
//!   `rules history` and rollback (deletions keep the history);
//! - `timers`: (shard, tenant, device, rule id) → pending timers (see `timers.rs`);
//! - `devices`: (tenant, device id) → [`DeviceRecord`]: the device registry;
//! - `transitions`: (tenant, rule id, device) → event time (`i64`) of the latest alarm
//!   transition: a new owner's actor evaluates only points after it;
//! - `outbox`: (alarm index, transition) → pending notification delivery (see `outbox.rs`);
//! - `meta`: `"last_applied"` (log id), `"last_membership"` (stored membership);
//! - `snapshot`: `"meta"` (snapshot meta, JSON) and `"data"` (raw bytes) of the last snapshot.
//!
//! `TxnView` is the [`ControlState`] that the pure apply runs on, inside one write
//! transaction; the `read_*` functions are the facade's reads (their own read transactions).
//! Nothing here publishes, caches or knows about openraft.

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::Deserialize;

use super::apply::{ControlState, alarm_index};
use super::command::NodeInfo;
use super::registry::{DeviceFilter, DeviceRecord};
use super::types::StoreError;
use crate::model::{Alarm, DeviceKey, Rule};
use crate::shard::ShardId;

pub(super) type RulesTable<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;
pub(super) type AlarmsTable<'t> = Table<'t, u64, &'static [u8]>;
pub(super) type ActiveTable<'t> =
    Table<'t, (&'static str, &'static str, &'static str), &'static str>;
pub(super) type ShardsTable<'t> = Table<'t, u32, (u64, u64)>;
pub(super) type HistoryTable<'t> = Table<'t, (u32, u64), (u64, i64)>;
pub(super) type NodesTable<'t> = Table<'t, u64, &'static [u8]>;
pub(super) type DevicesTable<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;
pub(super) type RuleHistoryTable<'t> = Table<'t, (&'static str, &'static str, u64), &'static [u8]>;

pub(super) const RULES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rules");
pub(super) const ALARMS: TableDefinition<u64, &[u8]> = TableDefinition::new("alarms");
pub(super) const ACTIVE: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("active");
pub(super) const SHARDS: TableDefinition<u32, (u64, u64)> = TableDefinition::new("shards");
pub(super) const HISTORY: TableDefinition<(u32, u64), (u64, i64)> = TableDefinition::new("history");
pub(super) const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
pub(super) const RULE_HISTORY: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("rule_history");
pub(super) const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
pub(super) const TRANSITIONS: TableDefinition<(&str, &str, &str), i64> =
    TableDefinition::new("transitions");
pub(super) type TransitionsTable<'t> = Table<'t, (&'static str, &'static str, &'static str), i64>;
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

pub(super) const LAST_APPLIED: &str = "last_applied";
pub(super) const LAST_MEMBERSHIP: &str = "last_membership";
pub(super) const SNAP_META: &str = "meta";
pub(super) const SNAP_DATA: &str = "data";

pub(super) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// [`ControlState`] over the tables of one open write transaction.
pub(super) struct TxnView<'t> {
    pub(super) rules: RulesTable<'t>,
    pub(super) alarms: AlarmsTable<'t>,
    pub(super) active: ActiveTable<'t>,
    pub(super) shards: ShardsTable<'t>,
    pub(super) history: HistoryTable<'t>,
    pub(super) nodes: NodesTable<'t>,
    pub(super) rule_history: RuleHistoryTable<'t>,
    /// Pending-timer records (`timers.rs`).
    pub(super) timers: super::timers::TimersTable<'t>,
    pub(super) devices: DevicesTable<'t>,
    pub(super) transitions: TransitionsTable<'t>,
    /// Pending notification deliveries (`outbox.rs`).
    pub(super) outbox: super::outbox::OutboxTable<'t>,
}

impl ControlState for TxnView<'_> {
    type Error = StoreError;

    fn note_transition(&mut self, d: &DeviceKey, rule: &str, at_ms: i64) -> Result<(), StoreError> {
        let key = (d.tenant.as_str(), rule, d.device.as_str());
        let last = self.transitions.get(key)?.map(|v| v.value());
        if last.is_none_or(|l| l < at_ms) {
            self.transitions.insert(key, at_ms)?;
        }
        Ok(())
    }

    fn shard_owner(&self, shard: ShardId) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(self.shards.get(shard)?.map(|v| v.value()))
    }
    fn set_shard_owner(
        &mut self,
        shard: ShardId,
        node: u64,
        epoch: u64,
        from_ms: i64,
    ) -> Result<(), StoreError> {
        self.shards.insert(shard, (node, epoch))?;
        self.history.insert((shard, epoch), (node, from_ms))?;
        Ok(())
    }
    fn node(&self, id: u64) -> Result<Option<NodeInfo>, StoreError> {
        self.nodes.get(id)?.map(|v| decode(v.value())).transpose()
    }
    fn put_node(&mut self, node: &NodeInfo) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(node)?;
        self.nodes.insert(node.id, bytes.as_slice())?;
        Ok(())
    }
    fn device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>, StoreError> {
        self.devices
            .get((key.tenant.as_str(), key.device.as_str()))?
            .map(|v| decode(v.value()))
            .transpose()
    }
    fn put_device(&mut self, record: &DeviceRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record)?;
        let key = (record.key.tenant.as_str(), record.key.device.as_str());
        self.devices.insert(key, bytes.as_slice())?;
        Ok(())
    }
    fn remove_device(&mut self, key: &DeviceKey) -> Result<(), StoreError> {
        self.devices
            .remove((key.tenant.as_str(), key.device.as_str()))?;
        Ok(())
    }
    fn rule(&self, tenant: &str, id: &str) -> Result<Option<Rule>, StoreError> {
        self.rules
            .get((tenant, id))?
            .map(|v| decode(v.value()))
            .transpose()
    }
    fn put_rule(&mut self, rule: &Rule) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rule)?;
        self.rules
            .insert((rule.tenant(), rule.doc.id.as_str()), bytes.as_slice())?;
        self.rule_history.insert(
            (rule.tenant(), rule.doc.id.as_str(), rule.version),
            bytes.as_slice(),
        )?;
        Ok(())
    }
    fn remove_rule(&mut self, tenant: &str, id: &str) -> Result<(), StoreError> {
        self.rules.remove((tenant, id))?;
        Ok(())
    }
    fn alarm(&self, id: &str) -> Result<Option<Alarm>, StoreError> {
        let Some(index) = alarm_index(id) else {
            return Ok(None);
        };
        self.alarms
            .get(index)?
            .map(|v| decode(v.value()))
            .transpose()
    }
    fn put_alarm(&mut self, alarm: &Alarm) -> Result<(), StoreError> {
        // Ids are minted by `apply` as `alarm_id(index)`, so they always parse.
        let Some(index) = alarm_index(&alarm.id) else {
            return Err(StoreError::Codec(serde::de::Error::custom(format!(
                "alarm id {:?} is not minted by the state machine",
                alarm.id
            ))));
        };
        let bytes = serde_json::to_vec(alarm)?;
        self.alarms.insert(index, bytes.as_slice())?;
        Ok(())
    }
    fn active_alarm_id(&self, d: &DeviceKey, rule: &str) -> Result<Option<String>, StoreError> {
        let key = (d.tenant.as_str(), rule, d.device.as_str());
        Ok(self.active.get(key)?.map(|v| v.value().to_owned()))
    }
    fn set_active(
        &mut self,
        d: &DeviceKey,
        rule: &str,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = (d.tenant.as_str(), rule, d.device.as_str());
        match id {
            Some(id) => self.active.insert(key, id)?,
            None => self.active.remove(key)?,
        };
        Ok(())
    }
    fn active_alarm_ids_of_rule(
        &self,
        tenant: &str,
        rule: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for row in self.active.range((tenant, rule, "")..)? {
            let (k, v) = row?;
            let (t, r, _) = k.value();
            if t != tenant || r != rule {
                break;
            }
            ids.push(v.value().to_owned());
        }
        Ok(ids)
    }
}

/// All alarms, in the order they were raised.
pub fn read_alarms(db: &Database) -> Result<Vec<Alarm>, StoreError> {
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    for row in txn.open_table(ALARMS)?.iter()? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

pub fn read_alarm(db: &Database, id: &str) -> Result<Option<Alarm>, StoreError> {
    let Some(index) = alarm_index(id) else {
        return Ok(None);
    };
    let txn = db.begin_read()?;
    let table = txn.open_table(ALARMS)?;
    table.get(index)?.map(|v| decode(v.value())).transpose()
}

/// Event time of the latest alarm transition of (device, rule), if any.
pub fn read_last_transition(
    db: &Database,
    device: &DeviceKey,
    rule_id: &str,
) -> Result<Option<i64>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TRANSITIONS)?;
    let key = (device.tenant.as_str(), rule_id, device.device.as_str());
    Ok(table.get(key)?.map(|v| v.value()))
}

pub fn read_active_alarm(
    db: &Database,
    device: &DeviceKey,
    rule_id: &str,
) -> Result<Option<Alarm>, StoreError> {
    let txn = db.begin_read()?;
    let active = txn.open_table(ACTIVE)?;
    let key = (device.tenant.as_str(), rule_id, device.device.as_str());
    let Some(id) = active.get(key)?.map(|v| v.value().to_owned()) else {
        return Ok(None);
    };
    let Some(index) = alarm_index(&id) else {
        return Ok(None);
    };
    let alarms = txn.open_table(ALARMS)?;
    alarms.get(index)?.map(|v| decode(v.value())).transpose()
}

/// Every version of a rule, oldest first.
pub fn read_rule_history(db: &Database, tenant: &str, id: &str) -> Result<Vec<Rule>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RULE_HISTORY)?;
    let mut out = Vec::new();
    for row in table.range((tenant, id, 0)..=(tenant, id, u64::MAX))? {
        out.push(decode(row?.1.value())?);
    }
    Ok(out)
}

/// The registry record of one device.
pub fn read_device(db: &Database, key: &DeviceKey) -> Result<Option<DeviceRecord>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(DEVICES)?;
    table
        .get((key.tenant.as_str(), key.device.as_str()))?
        .map(|v| decode(v.value()))
        .transpose()
}

/// Up to `limit` registered devices of `tenant` matching `filter`, ordered by id, starting
/// after the id `after`. Scans in id order, so a selective filter reads more rows than it
/// returns.
pub fn read_devices(
    db: &Database,
    tenant: &str,
    after: Option<&str>,
    limit: usize,
    filter: &DeviceFilter,
) -> Result<Vec<DeviceRecord>, StoreError> {
    use std::ops::Bound;
    let txn = db.begin_read()?;
    let table = txn.open_table(DEVICES)?;
    let start = match after {
        Some(id) => Bound::Excluded((tenant, id)),
        None => Bound::Included((tenant, "")),
    };
    let mut out = Vec::new();
    for row in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
        let (k, v) = row?;
        if k.value().0 != tenant || out.len() >= limit {
            break;
        }
        let record: DeviceRecord = decode(v.value())?;
        if filter.matches(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

/// One owner of a shard over a time range, from the ownership history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    pub node: u64,
    pub epoch: u64,
    /// Leader's wall clock when the assignment was decided.
    pub from_ms: i64,
    /// When the next owner took over (`None`: still the owner).
    pub to_ms: Option<i64>,
}

/// The owners of `shard` over time, oldest first.
pub fn read_history(db: &Database, shard: u32) -> Result<Vec<Ownership>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(HISTORY)?;
    let mut out: Vec<Ownership> = Vec::new();
    for row in table.range((shard, 0)..=(shard, u64::MAX))? {
        let (k, v) = row?;
        let (_, epoch) = k.value();
        let (node, from_ms) = v.value();
        if let Some(prev) = out.last_mut() {
            prev.to_ms = Some(from_ms);
        }
        out.push(Ownership {
            node,
            epoch,
            from_ms,
            to_ms: None,
        });
    }
    Ok(out)
}

pub(super) fn read_meta<T: for<'de> Deserialize<'de>>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    table.get(key)?.map(|v| decode(v.value())).transpose()
}
