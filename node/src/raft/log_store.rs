//! The Raft log and vote on redb (`DIR/log.redb`): openraft's [`RaftLogStorage`].
//!
//! Tables:
//! - `entries`: log index (`u64`) → JSON of the openraft entry;
//! - `meta`: `"vote"`, `"committed"`, `"last_purged"` → JSON.
//!
//! Durability: appends, truncations, purges and votes commit with `Durability::Immediate`
//! (fsync) before they return, and `append` calls openraft's callback only after that commit.
//! The committed log id is written with `Durability::None`: it is an optimisation (it lets a
//! restart re-apply committed entries at once), a lost value only means a smaller one, and the
//! next durable append makes it durable anyway.
//!
//! Every write runs on the blocking pool, so an fsync never stalls an async worker. Openraft
//! serialises all log writes through `&mut self`, so writes never race each other.
//!
//! This module knows nothing of what entries mean; that is the state machine's job.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{
    LogId, Op, RaftEntry, StorageResult, StoreError, TypeConfig, Vote, blocking, storage_err,
};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store. Cheap to clone: clones share the database (openraft's log readers are clones).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The last committed index + 1 (0: nothing committed yet), for [`LogStore::committed_index`]
    /// without a database read. Written by `save_committed`.
    committed: Arc<AtomicU64>,
    /// Dropped with the last clone; lets `ControlPlane::shutdown` wait until openraft's tasks
    /// have released the database file.
    _alive: tokio::sync::mpsc::Sender<()>,
}

impl LogStore {
    /// Opens (creating if needed) the tables of an opened `log.redb`.
    pub fn open(db: Database, alive: tokio::sync::mpsc::Sender<()>) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        let committed: Option<LogId> = read_meta(&db, COMMITTED)?;
        Ok(Self {
            db: Arc::new(db),
            committed: Arc::new(AtomicU64::new(committed.map_or(0, |l| l.index + 1))),
            _alive: alive,
        })
    }

    /// A handle on the committed index, shared with the store (see `ControlStatus`).
    pub fn committed_handle(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// The committed index last reported by openraft, if any.
    pub fn committed_index(committed: &AtomicU64) -> Option<u64> {
        committed.load(Ordering::Acquire).checked_sub(1)
    }

    /// The index of the first entry still in the log (tests check that purging happened).
    pub fn first_index(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        Ok(table.first()?.map(|(k, _)| k.value()))
    }
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    durability: Durability,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    txn.open_table(META)?.insert(key, bytes.as_slice())?;
    txn.commit()?;
    Ok(())
}

fn read_range(
    db: &Database,
    range: (Bound<u64>, Bound<u64>),
) -> Result<Vec<RaftEntry>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(ENTRIES)?;
    let mut out = Vec::new();
    for row in table.range(range)? {
        let (_, v) = row?;
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

fn append_all(db: &Database, entries: &[RaftEntry]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut table = txn.open_table(ENTRIES)?;
        for entry in entries {
            let bytes = serde_json::to_vec(entry)?;
            table.insert(entry.get_log_id().index, bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Removes `range` of entries and, for a purge, records the last purged log id in the same
/// transaction (so the log state never shows a hole).
fn remove_range(
    db: &Database,
    range: (Bound<u64>, Bound<u64>),
    purged: Option<&LogId>,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut table = txn.open_table(ENTRIES)?;
        table.retain_in(range, |_, _| false)?;
        if let Some(purged) = purged {
            let bytes = serde_json::to_vec(purged)?;
            txn.open_table(META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<RaftEntry>> {
        read_range(&self.db, bounds(&range)).map_err(|e| storage_err(Op::ReadLogs, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = || -> Result<LogState<TypeConfig>, StoreError> {
            let last_purged_log_id: Option<LogId> = read_meta(&self.db, LAST_PURGED)?;
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let last = match table.last()? {
                Some((_, v)) => Some(*serde_json::from_slice::<RaftEntry>(v.value())?.get_log_id()),
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id: last,
            })
        };
        read().map_err(|e| storage_err(Op::ReadLogs, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(Op::WriteVote, move || {
            write_meta(&db, VOTE, &vote, Durability::Immediate)
        })
        .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        read_meta(&self.db, VOTE).map_err(|e| storage_err(Op::ReadVote, e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(Op::WriteLogs, move || {
            write_meta(&db, COMMITTED, &committed, Durability::None)
        })
        .await?;
        self.committed
            .store(committed.map_or(0, |l| l.index + 1), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        let committed: Option<Option<LogId>> =
            read_meta(&self.db, COMMITTED).map_err(|e| storage_err(Op::ReadLogs, e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        let db = self.db.clone();
        // The commit is durable before `blocking` returns; only then is openraft told.
        let res = blocking(Op::WriteLogs, move || append_all(&db, &entries)).await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(Op::WriteLogs, move || {
            remove_range(&db, (Bound::Included(log_id.index), Bound::Unbounded), None)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(Op::WriteLogs, move || {
            remove_range(
                &db,
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(&log_id),
            )
        })
        .await
    }
}
