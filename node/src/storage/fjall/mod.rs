//! The embedded telemetry store on fjall (an LSM tree): the same semantics as the redb store
//! (`storage::embedded`), another engine. Chosen per node with `[storage.embedded] backend`.
//!
//! One fjall database, `DIR/telemetry.fjall/`, with five keyspaces whose byte keys (see
//! `keys`) sort like the redb store's tuples:
//! - `points_v1`: (tenant, device, metric, ts) → value (encoded by `codec`); one entry per
//!   point identity, so writes are idempotent.
//! - `latest_v1`: (tenant, device, metric) → (ts, value) of the point with the greatest ts.
//! - `devices_v1`: (tenant, device) → (first_seen_ms, last_seen_ms).
//! - `rollups_v1`: (tenant, device, metric, resolution code, bucket start) → bucket.
//! - `fences_v1`: shard → the greatest epoch a fenced write carried.
//!
//! fjall has no read-write transactions. Everything that reads before it writes (is this
//! point new? the stored latest, first/last seen, buckets, fences) therefore runs on ONE
//! thread, `writer`, which is the only code that ever writes to the database: no other write
//! can slip between its read and its write. Each group commit is one atomic fjall write batch
//! across the keyspaces, fsync'd (`PersistMode::SyncData`) before any of its callers hears
//! `Ok`. Retention sweeps are requests to the same thread, in bounded chunks.
//!
//! Reads run on tokio's blocking pool, each on its own fjall snapshot (a consistent view of
//! every keyspace), and never wait for the writer. Page tokens are the redb store's
//! ([`super::embedded::page_token_after`]), so a caller merging holders needs one format.
//!
//! Not here: cross-node merging of history (`cluster/reads.rs`); the power-loss fault mode
//! (`storage::volatile` wraps redb's file backend only; `storage::backend` refuses it here).

mod keys;
mod reads;
mod sweep;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tokio::sync::{mpsc, oneshot};

use self::writer::{Request, SweepRequest, WriteRequest};
use super::embedded::EmbeddedOptions;
use super::rollup::{RollupPage, RollupQuery};
use super::{Fence, Page, RangeQuery, RetentionPolicy, StorageError, TelemetryStore};
use crate::model::{DeviceInfo, DeviceKey, Point, TimestampMs};

/// Name of the database directory inside the store directory.
pub const DIR_NAME: &str = "telemetry.fjall";

/// Queued requests (not points) before `write` callers wait to queue: backpressure for when
/// the disk is slower than ingest.
const QUEUE_REQUESTS: usize = 1024;

/// Entries one sweep step deletes at most, so ingest waits for at most one such step.
const SWEEP_CHUNK: usize = 10_000;

/// The database and its keyspaces: cheap handles, shared by the writer and the reads.
#[derive(Clone)]
struct Parts {
    db: Database,
    points: Keyspace,
    latest: Keyspace,
    devices: Keyspace,
    rollups: Keyspace,
    fences: Keyspace,
}

/// The fjall backend of [`TelemetryStore`].
pub struct FjallStore {
    /// Shared with the writer thread and with in-flight reads.
    parts: Parts,
    /// The way into the writer's queue; `None` once the store is closed, which is how later
    /// writes learn to answer `Closed`. A std Mutex: held only to clone or take the sender,
    /// never across an await.
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// The writer thread, joined by `close` or on drop so the database is released when the
    /// store is gone (a reopen in the same process would otherwise find it locked).
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl FjallStore {
    /// Opens or creates `dir/telemetry.fjall` (creating `dir` if needed) and starts the
    /// group-commit writer thread.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Arc<FjallStore>, StorageError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StorageError::Engine(format!("creating {}: {error}", dir.display()))
        })?;
        let path = dir.join(DIR_NAME);
        let db = Database::builder(&path).open().map_err(|error| {
            StorageError::Engine(format!("opening {}: {error}", path.display()))
        })?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(engine)
        };
        let parts = Parts {
            points: keyspace("points_v1")?,
            latest: keyspace("latest_v1")?,
            devices: keyspace("devices_v1")?,
            rollups: keyspace("rollups_v1")?,
            fences: keyspace("fences_v1")?,
            db: db.clone(),
        };
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
        let max_points = options.max_batch_points.max(1);
        let writer_parts = parts.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer::run(&writer_parts, receiver, max_points))
            .map_err(|error| StorageError::Engine(format!("starting the writer: {error}")))?;
        tracing::info!(path = %path.display(), "embedded store open (fjall)");
        Ok(Arc::new(FjallStore {
            parts,
            requests: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Runs `read` on the blocking pool over a fresh snapshot of every keyspace.
    async fn read<T, F>(&self, read: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Parts, &fjall::Snapshot) -> Result<T, StorageError> + Send + 'static,
    {
        let parts = self.parts.clone();
        tokio::task::spawn_blocking(move || read(&parts, &parts.db.snapshot()))
            .await
            .map_err(|error| StorageError::Engine(format!("read task failed: {error}")))?
    }

    /// Queues a request for the writer and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Request,
    ) -> Result<T, StorageError> {
        let Some(sender) = lock(&self.requests).clone() else {
            return Err(StorageError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        sender
            .send(request(reply))
            .await
            .map_err(|_| StorageError::Closed)?;
        drop(sender);
        // The writer answers every request it takes; a dropped reply means it died.
        answer.await.map_err(|_| StorageError::Closed)?
    }

    /// Stops accepting writes and hands back the writer thread, if not already done.
    fn shut(&self) -> Option<JoinHandle<()>> {
        // Dropping our sender lets the writer finish what is queued and then stop: in-flight
        // calls hold their own clone only until their request is queued.
        drop(lock(&self.requests).take());
        lock(&self.writer).take()
    }
}

#[async_trait]
impl TelemetryStore for FjallStore {
    async fn write_fenced(
        &self,
        fence: Option<Fence>,
        points: Vec<Point>,
    ) -> Result<(), StorageError> {
        if points.is_empty() {
            return match lock(&self.requests).as_ref() {
                Some(_) => Ok(()),
                None => Err(StorageError::Closed),
            };
        }
        self.ask(|reply| {
            Request::Write(WriteRequest {
                points,
                fence,
                reply,
            })
        })
        .await
    }

    async fn query(&self, query: RangeQuery) -> Result<Page, StorageError> {
        query.check()?;
        let after = query
            .page_token
            .as_deref()
            .map(reads::decode_token)
            .transpose()?;
        if query.is_empty_range() {
            return Ok(Page::default());
        }
        self.read(move |parts, snap| reads::range(parts, snap, &query, after))
            .await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError> {
        if query.limit == 0 {
            return Err(StorageError::Invalid {
                field: "limit",
                problem: "must be at least 1".to_owned(),
            });
        }
        self.read(move |parts, snap| reads::rollups(parts, snap, &query))
            .await
    }

    async fn sweep(
        &self,
        policy: &RetentionPolicy,
        now_ms: TimestampMs,
    ) -> Result<u64, StorageError> {
        let policy = Arc::new(policy.clone());
        let mut removed = 0;
        let mut from = Vec::new();
        loop {
            let step = self
                .ask(|reply| {
                    Request::Sweep(SweepRequest {
                        policy: Arc::clone(&policy),
                        now_ms,
                        from,
                        max_removed: SWEEP_CHUNK,
                        reply,
                    })
                })
                .await?;
            removed += step.removed;
            match step.next {
                Some(next) => from = next,
                None => return Ok(removed),
            }
        }
    }

    async fn latest(&self, device: &DeviceKey) -> Result<Vec<Point>, StorageError> {
        let device = device.clone();
        self.read(move |parts, snap| reads::latest(parts, snap, &device))
            .await
    }

    async fn device(&self, device: &DeviceKey) -> Result<Option<DeviceInfo>, StorageError> {
        let device = device.clone();
        self.read(move |parts, snap| reads::device(parts, snap, device))
            .await
    }

    async fn devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceInfo>, StorageError> {
        let tenant = tenant.to_owned();
        let after = after.map(str::to_owned);
        self.read(move |parts, snap| reads::devices(parts, snap, &tenant, after.as_deref(), limit))
            .await
    }

    async fn close(&self) {
        if let Some(writer) = self.shut() {
            match tokio::task::spawn_blocking(move || writer.join()).await {
                Ok(Ok(())) => tracing::info!("embedded store (fjall) closed"),
                Ok(Err(_)) => tracing::error!("embedded store (fjall) writer panicked"),
                Err(error) => tracing::error!(%error, "joining the fjall store writer failed"),
            }
        }
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        // No call can be in flight (they borrow the store), so the queue is empty or about to
        // be: the join waits for at most the commit in progress.
        if let Some(writer) = self.shut()
            && writer.join().is_err()
        {
            tracing::error!("embedded store (fjall) writer panicked");
        }
    }
}

/// Any fjall failure, as the storage layer reports it.
fn engine(error: fjall::Error) -> StorageError {
    StorageError::Engine(format!("fjall: {error}"))
}

/// Locks a mutex that guards only an `Option` swap; a panic elsewhere cannot leave it
/// half-updated, so a poisoned lock is still safe to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
