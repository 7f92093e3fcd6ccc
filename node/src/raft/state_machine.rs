//! The control state machine on redb (`DIR/sm.redb`): openraft's [`RaftStateMachine`].
//!
//! The tables are described in [`tables`](super::tables).
//!
//! A batch of entries is applied in ONE write transaction together with `last_applied`, so
//! after a crash an entry is either applied with its index recorded or not at all: it is
//! never applied twice. Most batches commit with `Durability::None` (no fsync): the Raft log
//! is the durable record, and after a crash openraft re-applies the committed entries after
//! the last durable `last_applied` (apply is deterministic: entries carry their own times).
//! A batch commits durably at least every [`DURABLE_EVERY`], and a snapshot is always saved
//! durably (which makes every earlier commit durable too) before openraft may purge the log
//! behind it. Only after the commit are the in-memory caches (rules and shard map, both tiny
//! and read on every telemetry point) updated and the [`Applied`] events broadcast; a crash
//! can therefore repeat an event on restart, never lose one.
//!
//! The entry logic itself is [`apply::apply`](super::apply::apply); this file only adapts it
//! to redb and openraft. Alarms and the active index are never cached: they are read from disk.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};

use super::apply::{Applied, alarm_index, apply};
use super::command::NodeInfo;
use super::command::{ControlCommand, ControlResponse, Rejection};
use super::registry::DeviceRecord;
use super::tables::{
    ACTIVE, ALARMS, DEVICES, HISTORY, LAST_APPLIED, LAST_MEMBERSHIP, META, NODES, RULE_HISTORY,
    RULES, SHARDS, SNAP_DATA, SNAP_META, SNAPSHOT, TRANSITIONS, TxnView, decode, read_meta,
};
pub use super::tables::{
    Ownership, read_active_alarm, read_alarm, read_alarms, read_device, read_devices, read_history,
    read_last_transition, read_rule_history,
};
use super::types::{
    LogId, Op, RaftEntry, Snapshot, SnapshotMeta, StorageResult, StoreError, StoredMembership,
    TypeConfig, blocking, storage_err,
};
use crate::metrics_names::{ALARM_REJECTED, ALARM_TRANSITIONS};
use crate::model::{Alarm, Rule};
use crate::shard::ShardId;

/// The in-memory copies of the small, hot parts of the state. Only the state machine writes
/// them, after each commit. The locks are std locks held for map operations only (never across
/// an await), so a poisoned lock can only come from a panic inside a map operation; the maps
/// are still consistent then, and readers take them as they are.
#[derive(Default, Debug)]
pub struct Caches {
    rules: RwLock<BTreeMap<(String, String), Rule>>,
    /// The same rules as a shared list: every telemetry message reads it, so a read is an
    /// `Arc` clone, not a copy of every rule. A change empties it and the next read rebuilds
    /// it, so a burst of rule writes (many per Raft entry) costs one rebuild, not one each.
    rules_list: RwLock<Option<Arc<[Rule]>>>,
    shards: RwLock<BTreeMap<ShardId, (u64, u64)>>,
    nodes: RwLock<BTreeMap<u64, NodeInfo>>,
    /// The last log index applied here, set once the caches and events of its batch are
    /// published. Read-your-writes waits on it: it changes once per applied batch, where
    /// openraft's metrics change on every append, flush and replication ack.
    applied: watch::Sender<u64>,
}

impl Caches {
    /// Every rule, ordered by (tenant, id).
    pub fn rules(&self) -> Arc<[Rule]> {
        if let Some(list) = &*self
            .rules_list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return list.clone();
        }
        // Rebuild under the map's read lock: a change needs the write lock, so it cannot
        // land between the copy and the store (lock order everywhere: map, then list).
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        let mut list = self
            .rules_list
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        list.get_or_insert_with(|| rules.values().cloned().collect())
            .clone()
    }

    /// Drops the shared list after a change; called with the map's write lock held, so no
    /// reader can store a list built before the change.
    fn invalidate_rules(&self) {
        *self
            .rules_list
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Waits until the log up to `index` is applied here (forever if it never is: callers
    /// bound the wait).
    pub async fn applied_at_least(&self, index: u64) {
        let mut applied = self.applied.subscribe();
        // The sender lives in `self`, which outlives this call: `wait_for` cannot fail.
        let _ = applied.wait_for(|&i| i >= index).await;
    }

    /// The last log index applied here (what [`applied_at_least`](Self::applied_at_least)
    /// waits on).
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    fn set_applied(&self, index: u64) {
        self.applied.send_if_modified(|i| {
            let newer = index > *i;
            *i = (*i).max(index);
            newer
        });
    }

    pub fn rule(&self, tenant: &str, id: &str) -> Option<Rule> {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        rules.get(&(tenant.to_owned(), id.to_owned())).cloned()
    }

    pub fn shard_owner(&self, shard: ShardId) -> Option<(u64, u64)> {
        let shards = self.shards.read().unwrap_or_else(PoisonError::into_inner);
        shards.get(&shard).copied()
    }

    /// The whole shard map: shard → (node, epoch).
    pub fn shard_map(&self) -> BTreeMap<ShardId, (u64, u64)> {
        self.shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every registered node.
    pub fn nodes(&self) -> BTreeMap<u64, NodeInfo> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn node(&self, id: u64) -> Option<NodeInfo> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes.get(&id).cloned()
    }

    pub fn shard_count(&self) -> usize {
        self.shards
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn follow(&self, event: &Applied) {
        match event {
            Applied::RuleChanged { tenant, id, rule } => {
                let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
                let key = (tenant.clone(), id.clone());
                match rule {
                    Some(rule) => rules.insert(key, rule.clone()),
                    None => rules.remove(&key),
                };
                self.invalidate_rules();
            }
            Applied::NodeChanged(info) => {
                let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
                nodes.insert(info.id, info.clone());
            }
            Applied::ShardsAssigned {
                node,
                shards,
                epoch,
                ..
            } => {
                let mut map = self.shards.write().unwrap_or_else(PoisonError::into_inner);
                for shard in shards {
                    map.insert(*shard, (*node, *epoch));
                }
            }
            Applied::Alarm(_)
            | Applied::DeviceChanged { .. }
            | Applied::SnapshotInstalled { .. } => {}
        }
    }

    /// Replaces both caches from disk; returns the rule changes this made.
    fn reload(&self, db: &Database) -> Result<Vec<Applied>, StoreError> {
        let txn = db.begin_read()?;
        let mut rules = BTreeMap::new();
        for row in txn.open_table(RULES)?.iter()? {
            let (k, v) = row?;
            let (tenant, id) = k.value();
            rules.insert(
                (tenant.to_owned(), id.to_owned()),
                decode::<Rule>(v.value())?,
            );
        }
        let mut shards = BTreeMap::new();
        for row in txn.open_table(SHARDS)?.iter()? {
            let (k, v) = row?;
            shards.insert(k.value(), v.value());
        }
        *self.shards.write().unwrap_or_else(PoisonError::into_inner) = shards;
        let mut nodes = BTreeMap::new();
        for row in txn.open_table(NODES)?.iter()? {
            let (k, v) = row?;
            nodes.insert(k.value(), decode::<NodeInfo>(v.value())?);
        }
        *self.nodes.write().unwrap_or_else(PoisonError::into_inner) = nodes;
        let mut cached = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        let mut changes = Vec::new();
        for (key, old) in cached.iter() {
            if !rules.contains_key(key) || rules.get(key) != Some(old) {
                let rule = rules.get(key).cloned();
                changes.push(rule_changed(key, rule));
            }
        }
        for (key, rule) in &rules {
            if !cached.contains_key(key) {
                changes.push(rule_changed(key, Some(rule.clone())));
            }
        }
        *cached = rules;
        self.invalidate_rules();
        Ok(changes)
    }
}

fn rule_changed(key: &(String, String), rule: Option<Rule>) -> Applied {
    Applied::RuleChanged {
        tenant: key.0.clone(),
        id: key.1.clone(),
        rule,
    }
}

/// Everything the state machine holds, as a snapshot carries it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotData {
    rules: Vec<Rule>,
    alarms: Vec<Alarm>,
    /// (tenant, rule id, device, alarm id)
    active: Vec<(String, String, String, String)>,
    /// (shard, node, epoch)
    shards: Vec<(ShardId, u64, u64)>,
    /// (shard, epoch, node, from_ms); absent in snapshots of older builds.
    #[serde(default)]
    history: Vec<(ShardId, u64, u64, i64)>,
    #[serde(default)]
    nodes: Vec<NodeInfo>,
    /// Every rule version (current and past).
    #[serde(default)]
    rule_history: Vec<Rule>,
    /// Pending-timer records; absent in snapshots of older builds.
    #[serde(default)]
    timers: Vec<super::timers::TimerRow>,
    /// The device registry.
    #[serde(default)]
    devices: Vec<DeviceRecord>,
    /// (tenant, rule id, device, event time of the latest alarm transition)
    #[serde(default)]
    transitions: Vec<(String, String, String, i64)>,
    /// Pending notification deliveries; absent in snapshots of older builds.
    #[serde(default)]
    outbox: Vec<super::outbox::PendingDelivery>,
}

/// The longest time between two durable state-machine commits (bounds the replay after a
/// crash).
pub const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The state machine store. Openraft owns one; its snapshot builders are clones.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    /// When the last durable apply commit started.
    last_durable: Arc<std::sync::Mutex<std::time::Instant>>,
    caches: Arc<Caches>,
    events: broadcast::Sender<Applied>,
    /// Dropped with the last clone; see `LogStore::_alive`.
    _alive: mpsc::Sender<()>,
}

impl StateMachineStore {
    /// Opens (creating if needed) the tables of an opened `sm.redb` and fills the caches.
    pub fn open(
        db: Database,
        events: broadcast::Sender<Applied>,
        alive: mpsc::Sender<()>,
    ) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(RULES)?;
        txn.open_table(ALARMS)?;
        txn.open_table(ACTIVE)?;
        txn.open_table(SHARDS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(NODES)?;
        txn.open_table(RULE_HISTORY)?;
        txn.open_table(super::timers::TIMERS)?;
        txn.open_table(DEVICES)?;
        txn.open_table(TRANSITIONS)?;
        txn.open_table(super::outbox::OUTBOX)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        let caches = Arc::new(Caches::default());
        caches.reload(&db)?;
        let applied: Option<Option<LogId>> = read_meta(&db, LAST_APPLIED)?;
        caches.set_applied(applied.flatten().map_or(0, |l| l.index));
        Ok(Self {
            db: Arc::new(db),
            last_durable: Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
            caches,
            events,
            _alive: alive,
        })
    }

    pub fn caches(&self) -> Arc<Caches> {
        self.caches.clone()
    }

    /// A handle for reads that does not keep the database open after shutdown.
    pub fn reader(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    /// Publishes what a committed batch did: caches first, then metrics, then subscribers.
    fn publish(&self, events: Vec<Applied>) {
        for event in events {
            self.caches.follow(&event);
            if let Applied::Alarm(e) = &event {
                let transition = e.transition.as_str();
                metrics::counter!(ALARM_TRANSITIONS, "transition" => transition).increment(1);
            }
            // No receiver is fine; lagging receivers see `RecvError::Lagged`.
            let _ = self.events.send(event);
        }
    }
}

/// Logs refused commands (each command of a batch on its own) and counts refused alarm writes.
fn note_rejections(index: u64, cmd: &ControlCommand, response: &ControlResponse) {
    match (cmd, response) {
        (ControlCommand::Batch(cmds), ControlResponse::Batch(responses)) => {
            for (cmd, response) in cmds.iter().zip(responses) {
                note_rejections(index, cmd, response);
            }
        }
        (cmd, ControlResponse::Rejected(r)) => {
            tracing::debug!(index, rejection = %r, "entry rejected");
            if is_alarm_command(cmd) {
                let reason = rejection_reason(r);
                metrics::counter!(ALARM_REJECTED, "reason" => reason).increment(1);
            }
        }
        _ => {}
    }
}

fn is_alarm_command(cmd: &ControlCommand) -> bool {
    matches!(
        cmd,
        ControlCommand::RaiseAlarm { .. }
            | ControlCommand::ClearAlarm { .. }
            | ControlCommand::AckAlarm { .. }
    )
}

fn rejection_reason(r: &Rejection) -> &'static str {
    match r {
        Rejection::StaleEpoch { .. } => "stale_epoch",
        Rejection::NoSuchRule(_) => "no_such_rule",
        Rejection::NoSuchAlarm(_) => "no_such_alarm",
        Rejection::UnknownFormat(_) => "unknown_format",
        Rejection::NoSuchNode(_) => "no_such_node",
        Rejection::NoSuchDevice(_) => "no_such_device",
        Rejection::NodeRemoved(_) => "node_removed",
        Rejection::NotBatchable => "not_batchable",
    }
}

/// Applies a batch in one transaction (fsynced when `durability` says so); returns one
/// response per entry and the events.
fn apply_batch(
    db: &Database,
    entries: &[RaftEntry],
    durability: Durability,
) -> Result<(Vec<ControlResponse>, Vec<Applied>), StoreError> {
    let mut responses = Vec::with_capacity(entries.len());
    let mut events = Vec::new();
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    {
        let mut view = TxnView {
            rules: txn.open_table(RULES)?,
            alarms: txn.open_table(ALARMS)?,
            active: txn.open_table(ACTIVE)?,
            shards: txn.open_table(SHARDS)?,
            history: txn.open_table(HISTORY)?,
            nodes: txn.open_table(NODES)?,
            rule_history: txn.open_table(RULE_HISTORY)?,
            timers: txn.open_table(super::timers::TIMERS)?,
            devices: txn.open_table(DEVICES)?,
            transitions: txn.open_table(TRANSITIONS)?,
            outbox: txn.open_table(super::outbox::OUTBOX)?,
        };
        let mut meta = txn.open_table(META)?;
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => ControlResponse::Unchanged,
                EntryPayload::Normal(e) => {
                    let outcome = apply(&mut view, entry.log_id.index, e)?;
                    note_rejections(entry.log_id.index, &e.command, &outcome.response);
                    events.extend(outcome.events);
                    outcome.response
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    let bytes = serde_json::to_vec(&stored)?;
                    meta.insert(LAST_MEMBERSHIP, bytes.as_slice())?;
                    ControlResponse::Unchanged
                }
            };
            responses.push(response);
        }
        if let Some(last) = entries.last() {
            let bytes = serde_json::to_vec(&Some(last.log_id))?;
            meta.insert(LAST_APPLIED, bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok((responses, events))
}

/// What [`build`] writes: the fields of [`SnapshotData`], with the tables of one JSON row
/// per record (rules, alarms, nodes, rule versions, devices) as arrays of their stored bytes,
/// copied rather than decoded and encoded again. The rule history grows with every rule
/// write, so it is most of a snapshot's size. `install` reads it as [`SnapshotData`].
#[derive(Serialize)]
struct SnapshotOut {
    rules: Box<RawValue>,
    alarms: Box<RawValue>,
    active: Vec<(String, String, String, String)>,
    shards: Vec<(ShardId, u64, u64)>,
    history: Vec<(ShardId, u64, u64, i64)>,
    nodes: Box<RawValue>,
    rule_history: Box<RawValue>,
    timers: Vec<super::timers::TimerRow>,
    devices: Box<RawValue>,
    transitions: Vec<(String, String, String, i64)>,
    outbox: Vec<super::outbox::PendingDelivery>,
}

/// The stored JSON values of `table`, as one JSON array (checked to be JSON, not decoded).
fn raw_rows<K: redb::Key + 'static>(
    table: redb::ReadOnlyTable<K, &'static [u8]>,
) -> Result<Box<RawValue>, StoreError> {
    let mut out = vec![b'['];
    for row in table.iter()? {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(row?.1.value());
    }
    out.push(b']');
    Ok(serde_json::from_slice(&out)?)
}

/// Reads the whole state in one read transaction (a consistent view) as a snapshot.
fn build(db: &Database) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
    let txn = db.begin_read()?;
    let mut data = SnapshotOut {
        rules: raw_rows(txn.open_table(RULES)?)?,
        alarms: raw_rows(txn.open_table(ALARMS)?)?,
        active: Vec::new(),
        shards: Vec::new(),
        history: Vec::new(),
        nodes: raw_rows(txn.open_table(NODES)?)?,
        rule_history: raw_rows(txn.open_table(RULE_HISTORY)?)?,
        timers: super::timers::read_all(&txn)?,
        devices: raw_rows(txn.open_table(DEVICES)?)?,
        transitions: Vec::new(),
        outbox: super::outbox::read_all(&txn)?,
    };
    for row in txn.open_table(ACTIVE)?.iter()? {
        let (k, v) = row?;
        let (t, r, d) = k.value();
        let a = v.value();
        data.active.push((t.into(), r.into(), d.into(), a.into()));
    }
    for row in txn.open_table(SHARDS)?.iter()? {
        let (k, v) = row?;
        let (node, epoch) = v.value();
        data.shards.push((k.value(), node, epoch));
    }
    for row in txn.open_table(HISTORY)?.iter()? {
        let (k, v) = row?;
        let ((shard, epoch), (node, from_ms)) = (k.value(), v.value());
        data.history.push((shard, epoch, node, from_ms));
    }
    for row in txn.open_table(TRANSITIONS)?.iter()? {
        let (k, v) = row?;
        let (t, r, d) = k.value();
        data.transitions
            .push((t.into(), r.into(), d.into(), v.value()));
    }
    let meta_table = txn.open_table(META)?;
    let get = |key| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta_table.get(key)?.map(|v| v.value().to_vec()))
    };
    let last_log_id: Option<LogId> = get(LAST_APPLIED)?
        .map(|b| decode(&b))
        .transpose()?
        .flatten();
    let last_membership: StoredMembership = get(LAST_MEMBERSHIP)?
        .map(|b| decode(&b))
        .transpose()?
        .unwrap_or_default();
    // Not part of the replicated state, so the wall clock is fine here: it keeps ids of two
    // snapshots at the same log id apart.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let snapshot_id = match last_log_id {
        Some(l) => format!("{}-{}-{now_ms}", l.leader_id.term, l.index),
        None => format!("none-{now_ms}"),
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    Ok((meta, serde_json::to_vec(&data)?))
}

/// Keeps `meta`/`data` as the current snapshot unless a newer one is already kept.
fn save_snapshot(db: &Database, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut table = txn.open_table(SNAPSHOT)?;
        let kept: Option<SnapshotMeta> = table
            .get(SNAP_META)?
            .map(|v| decode(v.value()))
            .transpose()?;
        if kept.is_some_and(|k| k.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        table.insert(SNAP_META, serde_json::to_vec(meta)?.as_slice())?;
        table.insert(SNAP_DATA, data)?;
    }
    txn.commit()?;
    Ok(())
}

/// Replaces the whole state by a snapshot's, in one transaction.
fn install(db: &Database, meta: &SnapshotMeta, bytes: &[u8]) -> Result<(), StoreError> {
    let data: SnapshotData = decode(bytes)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut rules = txn.open_table(RULES)?;
        let mut alarms = txn.open_table(ALARMS)?;
        let mut active = txn.open_table(ACTIVE)?;
        let mut shards = txn.open_table(SHARDS)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut nodes = txn.open_table(NODES)?;
        history.retain(|_, _| false)?;
        nodes.retain(|_, _| false)?;
        let mut rule_history = txn.open_table(RULE_HISTORY)?;
        rule_history.retain(|_, _| false)?;
        for rule in &data.rule_history {
            let key = (rule.tenant(), rule.doc.id.as_str(), rule.version);
            rule_history.insert(key, serde_json::to_vec(rule)?.as_slice())?;
        }
        for (shard, epoch, node, from_ms) in &data.history {
            history.insert((*shard, *epoch), (*node, *from_ms))?;
        }
        for node in &data.nodes {
            nodes.insert(node.id, serde_json::to_vec(node)?.as_slice())?;
        }
        let mut transitions = txn.open_table(TRANSITIONS)?;
        transitions.retain(|_, _| false)?;
        for (t, r, d, at) in &data.transitions {
            transitions.insert((t.as_str(), r.as_str(), d.as_str()), *at)?;
        }
        let mut devices = txn.open_table(DEVICES)?;
        devices.retain(|_, _| false)?;
        for d in &data.devices {
            let key = (d.key.tenant.as_str(), d.key.device.as_str());
            devices.insert(key, serde_json::to_vec(d)?.as_slice())?;
        }
        rules.retain(|_, _| false)?;
        alarms.retain(|_, _| false)?;
        active.retain(|_, _| false)?;
        shards.retain(|_, _| false)?;
        for rule in &data.rules {
            let bytes = serde_json::to_vec(rule)?;
            rules.insert((rule.tenant(), rule.doc.id.as_str()), bytes.as_slice())?;
        }
        for alarm in &data.alarms {
            let index = alarm_index(&alarm.id).ok_or_else(|| {
                StoreError::Codec(serde::de::Error::custom(format!(
                    "bad alarm id {:?}",
                    alarm.id
                )))
            })?;
            alarms.insert(index, serde_json::to_vec(alarm)?.as_slice())?;
        }
        for (t, r, d, a) in &data.active {
            active.insert((t.as_str(), r.as_str(), d.as_str()), a.as_str())?;
        }
        for (shard, node, epoch) in &data.shards {
            shards.insert(*shard, (*node, *epoch))?;
        }
        super::timers::install(&txn, &data.timers)?;
        super::outbox::install(&txn, &data.outbox)?;
        let mut m = txn.open_table(META)?;
        m.insert(
            LAST_APPLIED,
            serde_json::to_vec(&meta.last_log_id)?.as_slice(),
        )?;
        m.insert(
            LAST_MEMBERSHIP,
            serde_json::to_vec(&meta.last_membership)?.as_slice(),
        )?;
        let mut snap = txn.open_table(SNAPSHOT)?;
        snap.insert(SNAP_META, serde_json::to_vec(meta)?.as_slice())?;
        snap.insert(SNAP_DATA, bytes)?;
    }
    txn.commit()?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot> {
        let db = self.db.clone();
        let (meta, data) = blocking(Op::WriteSnapshot, move || {
            let (meta, data) = build(&db)?;
            save_snapshot(&db, &meta, &data)?;
            Ok((meta, data))
        })
        .await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built control-plane snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        let read = || -> Result<_, StoreError> {
            let applied: Option<Option<LogId>> = read_meta(&self.db, LAST_APPLIED)?;
            let membership: Option<StoredMembership> = read_meta(&self.db, LAST_MEMBERSHIP)?;
            Ok((applied.flatten(), membership.unwrap_or_default()))
        };
        read().map_err(|e| storage_err(Op::ReadStateMachine, e))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ControlResponse>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        let Some(last_index) = entries.last().map(|e| e.log_id.index) else {
            return Ok(Vec::new());
        };
        let db = self.db.clone();
        let durability = {
            let mut last = self
                .last_durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() >= DURABLE_EVERY {
                *last = std::time::Instant::now();
                Durability::Immediate
            } else {
                Durability::None
            }
        };
        let (responses, events) = blocking(Op::WriteStateMachine, move || {
            apply_batch(&db, &entries, durability)
        })
        .await?;
        self.publish(events);
        self.caches.set_applied(last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let db = self.db.clone();
        let caches = self.caches.clone();
        let meta = meta.clone();
        let last_applied = meta.last_log_id.map(|l| l.index);
        let changes = blocking(Op::WriteSnapshot, move || {
            let bytes = snapshot.into_inner();
            install(&db, &meta, &bytes)?;
            caches.reload(&db)
        })
        .await?;
        tracing::info!(?last_applied, "installed control-plane snapshot");
        for change in changes {
            let _ = self.events.send(change);
        }
        self.caches.set_applied(last_applied.unwrap_or(0));
        let _ = self
            .events
            .send(Applied::SnapshotInstalled { last_applied });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot>> {
        let read = || -> Result<Option<Snapshot>, StoreError> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SNAPSHOT)?;
            let Some(meta) = table.get(SNAP_META)? else {
                return Ok(None);
            };
            let meta: SnapshotMeta = decode(meta.value())?;
            let data = table
                .get(SNAP_DATA)?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
        };
        read().map_err(|e| storage_err(Op::ReadSnapshot, e))
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
