//! In-memory openraft storage for the simulation: a log store whose contents model the disk,
//! and a state machine running Starling's pure [`apply`] over [`MemState`].
//!
//! Durability contract: [`Durable`] lives outside the turmoil host, so it survives a crash.
//! Appended entries are readable at once but unflushed; a flusher task of the incarnation
//! marks each batch flushed after a per-node delay (2–25 ms, from the seed; a group-committed
//! fsync) and only then acknowledges it to openraft. A restart loses every entry from the
//! first unflushed one on, so exactly what was acknowledged as flushed survives — unless
//! the run is configured with [`Bug::ForgetTail`], which also drops the last acknowledged
//! entries, as a store that acknowledges before its fsync would. Votes, the committed index
//! and truncations are durable when their call returns. The state machine is volatile: after a restart it is
//! empty and openraft re-applies the committed log into it.
//!
//! Snapshots are never triggered ([`openraft::SnapshotPolicy::Never`]) and the log is never
//! purged; the snapshot methods still work (a snapshot is the applied entries, installing one
//! re-applies them) so openraft has a sound implementation if it ever asks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use starling_node::raft::ControlResponse;
use starling_node::raft::apply::apply;
use starling_node::raft::types::{
    LogId, NodeId, RaftEntry, Snapshot, StorageResult, TypeConfig, Vote,
};

use tokio::sync::mpsc;

use super::obs::{AppliedEntry, Shared, hash_of};
use starling_node::raft::mem_state::MemState;

/// A deliberate storage bug, to prove the checkers catch what it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The correct store.
    None,
    /// At every restart the log loses its last `n` entries although they were acknowledged
    /// as flushed (and the saved committed index is clamped to what is left).
    ForgetTail(u64),
    /// At every restart the saved vote is lost (a vote written without fsync).
    ForgetVote,
}

/// What a node keeps on "disk": survives a crash of its host.
#[derive(Default, Debug)]
pub struct Durable {
    /// The last vote saved.
    pub vote: Option<Vote>,
    /// The last committed log id saved.
    pub committed: Option<LogId>,
    /// The log, by index.
    pub log: BTreeMap<u64, RaftEntry>,
    /// Indexes of entries appended but not flushed yet.
    pub unflushed: BTreeSet<u64>,
    /// The last purged log id (never set: the simulation does not purge).
    pub last_purged: Option<LogId>,
    /// How many times the node started on this disk.
    pub boots: u64,
}

/// A node's disk, shared between its incarnations.
pub type Disk = Arc<Mutex<Durable>>;

/// Locks a disk (a std Mutex: never held across an await).
pub fn lock(disk: &Disk) -> MutexGuard<'_, Durable> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prepares the disk for a new incarnation: counts the boot, loses what was not flushed
/// (from the first unflushed entry on: the log stays a prefix) and applies `bug`.
pub fn boot(disk: &Disk, bug: Bug) {
    let mut d = lock(disk);
    d.boots += 1;
    if let Some(first) = d.unflushed.first().copied() {
        let lost = d.log.split_off(&first);
        drop(lost);
        d.unflushed.clear();
    }
    if bug == Bug::ForgetVote {
        d.vote = None;
    }
    if let (Bug::ForgetTail(n), true) = (bug, d.boots > 1) {
        for _ in 0..n {
            d.log.pop_last();
        }
        let last = d
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(d.last_purged);
        if d.committed > last {
            d.committed = last;
        }
    }
}

/// A batch handed to the flusher: its log ids and openraft's callback.
pub type FlushJob = (Vec<LogId>, LogFlushed<TypeConfig>);

/// The flusher of one incarnation: marks each batch flushed after `delay` (in order), then
/// acknowledges it. An entry replaced by a truncation meanwhile is not marked.
pub async fn flusher(disk: Disk, mut jobs: mpsc::UnboundedReceiver<FlushJob>, delay: Duration) {
    while let Some((ids, callback)) = jobs.recv().await {
        tokio::time::sleep(delay).await;
        {
            let mut d = lock(&disk);
            for id in ids {
                if d.log.get(&id.index).map(|e| e.log_id) == Some(id) {
                    d.unflushed.remove(&id.index);
                }
            }
        }
        callback.log_io_completed(Ok(()));
    }
}

/// The log store over a [`Disk`]. It also reports every committed vote it saves (a node
/// that won an election, or a follower that accepted that leader) to the observations.
#[derive(Clone, Debug)]
pub struct LogStore {
    /// Whose log this is.
    pub node: NodeId,
    /// The durable part.
    pub disk: Disk,
    /// Where saved votes are reported.
    pub obs: Shared,
    /// The incarnation's [`flusher`].
    pub flush: mpsc::UnboundedSender<FlushJob>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<RaftEntry>> {
        Ok(lock(&self.disk)
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let d = lock(&self.disk);
        let last = d.log.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: d.last_purged,
            last_log_id: last.or(d.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        lock(&self.disk).vote = Some(*vote);
        let mut obs = self.obs.lock();
        // A node's vote only ever grows (it never grants a smaller vote after a larger one,
        // across restarts too): that is what makes a granted vote mean anything. Compared
        // with the last vote this node saved as the observations recorded it, not with its
        // disk, so a disk that loses the vote is caught too.
        if let Some(before) = obs.last_votes.insert(self.node, *vote)
            && matches!(vote.partial_cmp(&before), Some(Ordering::Less) | None)
        {
            obs.vote_regressions
                .push(format!("node {}: vote {before} then {vote}", self.node));
        }
        if vote.is_committed() {
            let leader = vote.leader_id();
            obs.voted_leaders
                .entry(leader.term)
                .or_default()
                .insert(leader.node_id);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        Ok(lock(&self.disk).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        lock(&self.disk).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(lock(&self.disk).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut ids = Vec::new();
        {
            let mut d = lock(&self.disk);
            for e in entries {
                ids.push(e.log_id);
                d.unflushed.insert(e.log_id.index);
                d.log.insert(e.log_id.index, e);
            }
        }
        // The flusher lives as long as this incarnation; if it is gone, so is openraft.
        let _ = self.flush.send((ids, callback));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let mut d = lock(&self.disk);
        let removed = d.log.split_off(&log_id.index);
        drop(removed);
        let unflushed = d.unflushed.split_off(&log_id.index);
        drop(unflushed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let mut d = lock(&self.disk);
        d.log = d.log.split_off(&(log_id.index + 1));
        d.last_purged = Some(log_id);
        Ok(())
    }
}

/// The volatile state of a node's state machine.
#[derive(Default, Debug)]
struct Machine {
    state: MemState,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// Every entry applied, in order: what a snapshot carries.
    entries: Vec<RaftEntry>,
    /// The last snapshot built: (meta, data).
    snapshot: Option<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>,
}

/// The state machine of one node: Starling's [`apply`] over [`MemState`], recording every
/// applied entry into the run's observations.
#[derive(Clone, Debug)]
pub struct StateMachine {
    node: NodeId,
    machine: Arc<Mutex<Machine>>,
    obs: Shared,
}

impl StateMachine {
    /// An empty state machine for `node`.
    pub fn new(node: NodeId, obs: Shared) -> Self {
        Self {
            node,
            machine: Arc::default(),
            obs,
        }
    }

    fn machine(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one entry and records it.
    fn apply_one(&self, m: &mut Machine, entry: RaftEntry) -> ControlResponse {
        let index = entry.log_id.index;
        let (command, response) = match &entry.payload {
            EntryPayload::Blank => (None, ControlResponse::Unchanged),
            EntryPayload::Normal(e) => {
                let Ok(outcome) = apply(&mut m.state, index, e);
                (Some(e.command.clone()), outcome.response)
            }
            EntryPayload::Membership(mem) => {
                m.membership = StoredMembership::new(Some(entry.log_id), mem.clone());
                (None, ControlResponse::Unchanged)
            }
        };
        let recorded = AppliedEntry {
            term: entry.log_id.leader_id.term,
            hash: hash_of(&entry.payload),
            command,
            response: response.clone(),
            epochs: m.state.epochs(),
            max_active: m.state.max_active_per_pair(),
        };
        let mut obs = self.obs.lock();
        obs.applied(self.node, index, recorded);
        let ms = turmoil::elapsed().as_millis();
        obs.trace(ms, self.node, &format!("apply {index}"));
        drop(obs);
        m.last_applied = Some(entry.log_id);
        m.entries.push(entry);
        response
    }
}

fn snapshot_err(e: serde_json::Error) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot> {
        let mut m = self.machine();
        let data = serde_json::to_vec(&m.entries).map_err(snapshot_err)?;
        let meta = SnapshotMeta {
            last_log_id: m.last_applied,
            last_membership: m.membership.clone(),
            snapshot_id: format!("{}-{}", self.node, m.entries.len()),
        };
        m.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId>, StoredMembership<NodeId, openraft::BasicNode>)> {
        let m = self.machine();
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ControlResponse>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let this = self.clone();
        let mut m = this.machine();
        Ok(entries
            .into_iter()
            .map(|e| this.apply_one(&mut m, e))
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let entries: Vec<RaftEntry> =
            serde_json::from_slice(snapshot.get_ref()).map_err(snapshot_err)?;
        let this = self.clone();
        let mut m = this.machine();
        *m = Machine::default();
        for e in entries {
            this.apply_one(&mut m, e);
        }
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), snapshot.into_inner()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot>> {
        Ok(self
            .machine()
            .snapshot
            .clone()
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
    }
}
