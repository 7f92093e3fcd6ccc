//! The control state in memory: [`MemState`] implements [`ControlState`] (and the timer and
//! outbox traits [`apply`](super::apply::apply) needs) over `BTreeMap`s.
//!
//! It holds no logic: every decision is made by the pure `apply`. Two users: the table tests
//! of `apply` (the reference the redb view in `state_machine.rs` must agree with), and the
//! deterministic simulation of the control plane in `chaos-tests` (`sim/raft/`), which runs
//! the real openraft over it.

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::NodeInfo;
use super::apply::ControlState;
use super::outbox::{DeliveryKey, OutboxState, PendingDelivery};
use super::registry::DeviceRecord;
use super::timers::TimerState;
use crate::model::{Alarm, AlarmStatus, DeviceKey, Rule};
use crate::rules::pending::PendingTimers;
use crate::shard::ShardId;

/// The replicated control state in maps.
#[derive(Default, Debug, Clone)]
pub struct MemState {
    /// The device registry (`registry_tests.rs` uses this state too).
    pub(crate) devices: BTreeMap<DeviceKey, DeviceRecord>,
    pub(crate) shards: BTreeMap<ShardId, (u64, u64)>,
    pub(crate) rules: BTreeMap<(String, String), Rule>,
    pub(crate) alarms: BTreeMap<String, Alarm>,
    pub(crate) active: BTreeMap<(String, String, String), String>,
    pub(crate) nodes: BTreeMap<u64, NodeInfo>,
    pub(crate) history: BTreeMap<(ShardId, u64), (u64, i64)>,
    pub(crate) rule_history: Vec<Rule>,
    pub(crate) timers: BTreeMap<(ShardId, DeviceKey, String), PendingTimers>,
    pub(crate) transitions: BTreeMap<(DeviceKey, String), i64>,
    /// The outbox (`outbox_tests.rs` reads it).
    pub(crate) outbox: BTreeMap<DeliveryKey, PendingDelivery>,
}

impl MemState {
    /// The epoch of every assigned shard.
    pub fn epochs(&self) -> BTreeMap<ShardId, u64> {
        self.shards.iter().map(|(s, (_, e))| (*s, *e)).collect()
    }

    /// The largest number of alarms with status Active for one (device, rule): read from the
    /// alarms themselves, not from the active index, so a broken index does not hide it.
    pub fn max_active_per_pair(&self) -> usize {
        let mut counts: BTreeMap<(&DeviceKey, &str), usize> = BTreeMap::new();
        for a in self.alarms.values() {
            if a.status == AlarmStatus::Active {
                *counts.entry((&a.device, a.rule_id.as_str())).or_default() += 1;
            }
        }
        counts.values().copied().max().unwrap_or(0)
    }
}

impl OutboxState for MemState {
    fn last_rule_version(&self, tenant: &str, id: &str) -> Result<Option<Rule>, Infallible> {
        Ok(self
            .rule_history
            .iter()
            .filter(|r| r.tenant() == tenant && r.doc.id == id)
            .max_by_key(|r| r.version)
            .cloned())
    }
    fn put_pending(&mut self, pending: &PendingDelivery) -> Result<(), Infallible> {
        self.outbox.insert(pending.key(), pending.clone());
        Ok(())
    }
    fn remove_pending(&mut self, key: &DeliveryKey) -> Result<bool, Infallible> {
        Ok(self.outbox.remove(key).is_some())
    }
}

impl TimerState for MemState {
    fn put_timers(
        &mut self,
        shard: ShardId,
        device: &DeviceKey,
        rule_id: &str,
        timers: Option<&PendingTimers>,
    ) -> Result<(), Infallible> {
        let key = (shard, device.clone(), rule_id.to_owned());
        match timers {
            Some(t) => self.timers.insert(key, t.clone()),
            None => self.timers.remove(&key),
        };
        Ok(())
    }
}

impl ControlState for MemState {
    type Error = Infallible;
    fn note_transition(&mut self, d: &DeviceKey, rule: &str, at_ms: i64) -> Result<(), Infallible> {
        let last = self
            .transitions
            .entry((d.clone(), rule.to_owned()))
            .or_insert(at_ms);
        *last = (*last).max(at_ms);
        Ok(())
    }
    fn shard_owner(&self, shard: ShardId) -> Result<Option<(u64, u64)>, Infallible> {
        Ok(self.shards.get(&shard).copied())
    }
    fn set_shard_owner(
        &mut self,
        shard: ShardId,
        node: u64,
        epoch: u64,
        from_ms: i64,
    ) -> Result<(), Infallible> {
        self.shards.insert(shard, (node, epoch));
        self.history.insert((shard, epoch), (node, from_ms));
        Ok(())
    }
    fn node(&self, id: u64) -> Result<Option<NodeInfo>, Infallible> {
        Ok(self.nodes.get(&id).cloned())
    }
    fn put_node(&mut self, node: &NodeInfo) -> Result<(), Infallible> {
        self.nodes.insert(node.id, node.clone());
        Ok(())
    }
    fn device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>, Infallible> {
        Ok(self.devices.get(key).cloned())
    }
    fn put_device(&mut self, record: &DeviceRecord) -> Result<(), Infallible> {
        self.devices.insert(record.key.clone(), record.clone());
        Ok(())
    }
    fn remove_device(&mut self, key: &DeviceKey) -> Result<(), Infallible> {
        self.devices.remove(key);
        Ok(())
    }
    fn rule(&self, tenant: &str, id: &str) -> Result<Option<Rule>, Infallible> {
        Ok(self.rules.get(&(tenant.into(), id.into())).cloned())
    }
    fn put_rule(&mut self, rule: &Rule) -> Result<(), Infallible> {
        let key = (rule.tenant().to_owned(), rule.doc.id.clone());
        self.rules.insert(key, rule.clone());
        self.rule_history.push(rule.clone());
        Ok(())
    }
    fn remove_rule(&mut self, tenant: &str, id: &str) -> Result<(), Infallible> {
        self.rules.remove(&(tenant.into(), id.into()));
        Ok(())
    }
    fn alarm(&self, id: &str) -> Result<Option<Alarm>, Infallible> {
        Ok(self.alarms.get(id).cloned())
    }
    fn put_alarm(&mut self, alarm: &Alarm) -> Result<(), Infallible> {
        self.alarms.insert(alarm.id.clone(), alarm.clone());
        Ok(())
    }
    fn active_alarm_id(&self, d: &DeviceKey, rule: &str) -> Result<Option<String>, Infallible> {
        let key = (d.tenant.clone(), rule.to_owned(), d.device.clone());
        Ok(self.active.get(&key).cloned())
    }
    fn set_active(
        &mut self,
        d: &DeviceKey,
        rule: &str,
        id: Option<&str>,
    ) -> Result<(), Infallible> {
        let key = (d.tenant.clone(), rule.to_owned(), d.device.clone());
        match id {
            Some(id) => self.active.insert(key, id.to_owned()),
            None => self.active.remove(&key),
        };
        Ok(())
    }
    fn active_alarm_ids_of_rule(
        &self,
        tenant: &str,
        rule: &str,
    ) -> Result<Vec<String>, Infallible> {
        Ok(self
            .active
            .iter()
            .filter(|((t, r, _), _)| t == tenant && r == rule)
            .map(|(_, id)| id.clone())
            .collect())
    }
}
