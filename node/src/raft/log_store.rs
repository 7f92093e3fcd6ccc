//! The Raft log and vote: openraft's [`RaftLogStorage`] over an append-only journal,
//! `DIR/raft.journal`, with the unpurged entries also in memory.
//!
//! The journal is a sequence of frames `[len: u32 LE][xxh3: u64 LE][serde_json of a Record]`;
//! replaying its records in order rebuilds the state: entries inserted, a truncation removing
//! entries from an index on, a purge removing entries up to a log id, the vote, the committed
//! log id. Reads are served from memory; the file is written by one writer thread that takes
//! every queued operation, writes them with one `write` and one `fdatasync` (group commit), and
//! only then tells openraft an append is flushed or returns from `save_vote`/`truncate`/`purge`.
//! `save_committed` is written without waiting for a sync (a lost value only means a smaller
//! one, as openraft allows).
//!
//! An append costs one sequential write and one fdatasync, where a B-tree commit rewrites
//! copy-on-write pages: the log is on the path of every control-plane write.
//!
//! Recovery: a frame that is short, undecodable or fails its checksum ends the journal: it
//! can only be the unsynced tail of a write cut by a crash (nothing in it was acknowledged),
//! and the file is cut there. When the journal outgrows [`COMPACT_BYTES`], a purge rewrites it
//! from memory (`raft.journal.tmp`, fsync, rename, fsync of the directory).
//!
//! In the power-loss fault mode (`STARLING_FAULT_POWER_LOSS=1`) the journal is a
//! [`SyncedFile`] whose unsynced writes live in memory, so a kill loses them; its create,
//! rename and unlink still take effect at once.
//!
//! This module knows nothing of what entries mean; that is the state machine's job.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogId, RaftLogReader};
use serde::{Deserialize, Serialize};

use super::types::{LogId, Op, RaftEntry, StorageResult, TypeConfig, Vote, storage_err};
use crate::storage::volatile::SyncedFile;

/// The journal's file name in the Raft directory.
pub const JOURNAL: &str = "raft.journal";
/// A purge rewrites the journal once it is larger than this.
pub const COMPACT_BYTES: u64 = 16 * 1024 * 1024;
/// Frame header: length (u32) and checksum (u64).
const HEADER: usize = 12;

/// One change of state, as written to the journal. Short-lived (encoded and applied at
/// once), so the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Entry(RaftEntry),
    /// Entries from this index on are removed.
    Truncate(u64),
    /// Entries up to this log id are removed; it is the last purged log id.
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
}

/// The state the journal describes.
#[derive(Debug, Default)]
struct Mem {
    entries: BTreeMap<u64, RaftEntry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl Mem {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Entry(e) => {
                self.entries.insert(e.get_log_id().index, e);
            }
            Record::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Record::Purge(upto) => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
        }
    }

    /// Every record needed to rebuild this state, for a compacted journal.
    fn records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.entries.len() + 3);
        out.extend(self.vote.map(Record::Vote));
        out.push(Record::Committed(self.committed));
        out.extend(self.last_purged.map(Record::Purge));
        out.extend(self.entries.values().cloned().map(Record::Entry));
        out
    }
}

fn frame(out: &mut Vec<u8>, record: &Record) -> std::io::Result<()> {
    let body = serde_json::to_vec(record)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Decodes the frames of `bytes`: the records, and the length of the valid prefix.
fn replay(bytes: &[u8]) -> (Vec<Record>, usize) {
    let (mut records, mut at) = (Vec::new(), 0);
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(bytes[at + 4..at + HEADER].try_into().expect("8 bytes"));
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            break;
        }
        let Ok(record) = serde_json::from_slice(body) else {
            break;
        };
        records.push(record);
        at += HEADER + len;
    }
    (records, at)
}

/// Work for the writer thread.
enum Work {
    /// Frames to write; then tell openraft (append) or the caller (`done`).
    Write {
        bytes: Vec<u8>,
        sync: bool,
        flushed: Option<LogFlushed<TypeConfig>>,
        done: Option<mpsc::SyncSender<std::io::Result<()>>>,
    },
    /// Rewrite the journal from memory if it is larger than [`COMPACT_BYTES`].
    Compact,
}

/// The log store. Cheap to clone: clones share the state (openraft's log readers are clones).
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<Mem>>,
    writer: mpsc::Sender<Work>,
    /// The last committed index + 1 (0: nothing committed yet), for
    /// [`LogStore::committed_index`] without a lock.
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// Opens (creating if needed) the journal in `dir` and starts its writer thread, which
    /// holds `alive` until the last clone of the store is dropped and the file is closed.
    pub fn open(dir: &Path, alive: tokio::sync::mpsc::Sender<()>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL);
        let power_loss = crate::faults::power_loss();
        let file = SyncedFile::open(&path, false, power_loss)?;
        let bytes = file.read_all()?;
        let (records, valid) = replay(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - valid,
                "Raft journal ends with an incomplete write (a crash): cutting it"
            );
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        let mut mem = Mem::default();
        for record in records {
            mem.apply(record);
        }
        let committed = Arc::new(AtomicU64::new(mem.committed.map_or(0, |l| l.index + 1)));
        let mem = Arc::new(Mutex::new(mem));
        let (writer, work) = mpsc::channel();
        let journal = Journal {
            file,
            size: valid as u64,
            path,
            dir: dir.to_owned(),
            mem: mem.clone(),
            failed: None,
            power_loss,
        };
        std::thread::Builder::new()
            .name("raft-journal".into())
            .spawn(move || journal.run(work, alive))?;
        Ok(Self {
            mem,
            writer,
            committed,
        })
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(PoisonError::into_inner)
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
    pub fn first_index(&self) -> Option<u64> {
        self.mem().entries.keys().next().copied()
    }

    /// Queues `records` (already applied to memory by the caller, under the same lock, so the
    /// journal's order is memory's order) and, when `wait`, returns once they are synced.
    fn submit(
        &self,
        bytes: Vec<u8>,
        sync: bool,
        flushed: Option<LogFlushed<TypeConfig>>,
        wait: bool,
    ) -> Option<mpsc::Receiver<std::io::Result<()>>> {
        let (done, rx) = match wait {
            true => {
                let (tx, rx) = mpsc::sync_channel(1);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let work = Work::Write {
            bytes,
            sync,
            flushed,
            done,
        };
        if let Err(mpsc::SendError(Work::Write {
            flushed: Some(f), ..
        })) = self.writer.send(work)
        {
            f.log_io_completed(Err(std::io::Error::other("Raft journal writer stopped")));
        }
        rx
    }

    /// Makes `entries` readable at once (replication may send them before they are synced
    /// here, as Raft allows) and queues them; `flushed` is told once they are synced, and only
    /// then does openraft count them as this node's.
    fn queue_entries(
        &self,
        entries: impl IntoIterator<Item = RaftEntry>,
        flushed: Option<LogFlushed<TypeConfig>>,
    ) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        let mut records = Vec::new();
        for entry in entries {
            let record = Record::Entry(entry);
            frame(&mut bytes, &record)?;
            records.push(record);
        }
        let mut mem = self.mem();
        for r in records {
            mem.apply(r);
        }
        self.submit(bytes, true, flushed, false);
        Ok(())
    }

    /// Applies `records` to memory and journals them; waits for the sync when `wait`.
    async fn change(&self, records: Vec<Record>, op: Op, wait: bool) -> StorageResult<()> {
        let rx = {
            let mut bytes = Vec::new();
            for r in &records {
                frame(&mut bytes, r).map_err(|e| storage_err(op, e))?;
            }
            let mut mem = self.mem();
            for r in records {
                mem.apply(r);
            }
            // Under the lock: journal order is memory order.
            self.submit(bytes, wait, None, wait)
        };
        let Some(rx) = rx else {
            return Ok(());
        };
        let answer = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(|e| storage_err(op, e))?;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(storage_err(op, e)),
            Err(e) => Err(storage_err(op, e)),
        }
    }
}

/// The writer thread's side: the file and its size.
struct Journal {
    file: SyncedFile,
    size: u64,
    path: PathBuf,
    dir: PathBuf,
    mem: Arc<Mutex<Mem>>,
    /// After a failed write nothing more is written (openraft stops on the error).
    failed: Option<String>,
    /// The power-loss fault mode: the compacted journal is a volatile file too.
    power_loss: bool,
}

impl Journal {
    fn run(mut self, work: mpsc::Receiver<Work>, _alive: tokio::sync::mpsc::Sender<()>) {
        while let Ok(first) = work.recv() {
            // Group commit: everything queued meanwhile goes out with one write and one sync.
            let mut batch = vec![first];
            batch.extend(work.try_iter());
            let (mut bytes, mut sync, mut compact) = (Vec::new(), false, false);
            for w in &batch {
                match w {
                    Work::Write {
                        bytes: b,
                        sync: s,
                        flushed,
                        ..
                    } => {
                        bytes.extend_from_slice(b);
                        sync |= *s || flushed.is_some();
                    }
                    Work::Compact => compact = true,
                }
            }
            let result = self.write(&bytes, sync);
            // Before answering: a write acknowledged after a purge finds the journal compacted.
            if compact
                && result.is_ok()
                && self.size > COMPACT_BYTES
                && let Err(e) = self.compact()
            {
                tracing::error!(error = %e, "Raft journal compaction failed");
            }
            for w in batch {
                if let Work::Write { flushed, done, .. } = w {
                    let answer = || match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.clone())),
                    };
                    if let Some(f) = flushed {
                        f.log_io_completed(answer());
                    }
                    if let Some(d) = done {
                        let _ = d.send(answer());
                    }
                }
            }
        }
    }

    fn write(&mut self, bytes: &[u8], sync: bool) -> Result<(), String> {
        if let Some(f) = &self.failed {
            return Err(format!(
                "Raft journal unusable after an earlier failure: {f}"
            ));
        }
        let res = (|| {
            self.file.write_at(self.size, bytes)?;
            if sync {
                self.file.sync_data()?;
            }
            Ok::<_, std::io::Error>(())
        })();
        match res {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let msg = format!("{}: {e}", self.path.display());
                self.failed = Some(msg.clone());
                Err(msg)
            }
        }
    }

    /// Rewrites the journal from memory (which is at or ahead of the file: replaying the
    /// records still queued after the rewrite yields the same state). A failure before the
    /// rename leaves the old journal in use.
    fn compact(&mut self) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        {
            let mem = self.mem.lock().unwrap_or_else(PoisonError::into_inner);
            for r in mem.records() {
                frame(&mut bytes, &r)?;
            }
        }
        let tmp = self.path.with_extension("journal.tmp");
        let f = SyncedFile::open(&tmp, true, self.power_loss)?;
        f.write_at(0, &bytes)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        // From here the old file handle no longer names the journal: failing is final.
        let reopened = File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .and_then(|()| SyncedFile::open(&self.path, false, self.power_loss));
        let before = self.size;
        match reopened {
            Ok(f) => self.file = f,
            Err(e) => {
                self.failed = Some(format!("reopening after compaction: {e}"));
                return Err(e);
            }
        }
        self.size = bytes.len() as u64;
        tracing::info!(before, after = self.size, "Raft journal compacted");
        Ok(())
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<RaftEntry>> {
        Ok(self
            .mem()
            .entries
            .range(bounds(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let mem = self.mem();
        let last = mem.entries.values().next_back().map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last.or(mem.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        self.change(vec![Record::Vote(*vote)], Op::WriteVote, true)
            .await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        self.change(vec![Record::Committed(committed)], Op::WriteLogs, false)
            .await?;
        self.committed
            .store(committed.map_or(0, |l| l.index + 1), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.queue_entries(entries, Some(callback))
            .map_err(|e| storage_err(Op::WriteLogs, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        self.change(vec![Record::Truncate(log_id.index)], Op::WriteLogs, true)
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        self.change(vec![Record::Purge(log_id)], Op::WriteLogs, true)
            .await?;
        let _ = self.writer.send(Work::Compact);
        Ok(())
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
