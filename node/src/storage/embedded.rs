//! The embedded telemetry store: durable, single-machine, on redb.
//!
//! One file, `DIR/telemetry.redb`, with five tables (keys are redb tuples, so they sort
//! field by field: strings by bytes, timestamps numerically):
//! - `points_v1`: (tenant, device, metric, ts_ms) → value (encoded by `codec`). One entry per
//!   point identity, so rewriting a point overwrites it: writes are idempotent.
//! - `latest_v1`: (tenant, device, metric) → (ts_ms, value) of the point with the greatest ts
//!   (on equal ts, the last written). Also the list of a device's metrics.
//! - `devices_v1`: (tenant, device) → (first_seen_ms, last_seen_ms), the min and max *point*
//!   timestamps ever stored for the device (event time, not receive time).
//! - `rollups_v1`: 1-minute and 1-hour buckets, maintained in the write transaction (see
//!   `rollups`: a point counts only when its raw insert was new, so rollups are idempotent).
//! - `fences_v1`: shard → the greatest epoch a fenced write carried; an older epoch is refused.
//!
//! Writes go through the group-commit thread of `writer`; a write returns `Ok` only after
//! its transaction committed with fsync. Reads run on tokio's blocking pool, each in its own
//! read transaction, and never wait for the writer.
//!
//! Retention: `sweep` deletes old raw points and buckets in its own write transaction.
//! Not here: cross-node merging of history (`cluster/reads.rs`).

mod rollups;
mod sweep;
mod writer;

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use self::writer::WriteRequest;
use super::codec::{self, Cursor};

/// Prefix of the embedded backends' page tokens (format version 1; redb and fjall share it).
pub(super) const TOKEN_PREFIX: &str = "p1";

/// The page token of this store that resumes strictly after (metric, ts): lets a caller that
/// merges pages of several embedded stores (the cluster's routed reads) hand out one token
/// that every holder understands.
pub fn page_token_after(metric: &str, ts_ms: crate::model::TimestampMs) -> String {
    codec::encode_token(
        TOKEN_PREFIX,
        &Cursor {
            metric: metric.to_owned(),
            ts_ms,
        },
    )
}
use super::rollup::{RollupPage, RollupQuery};
use super::{Fence, Page, RangeQuery, RetentionPolicy, StorageError, TelemetryStore};
use crate::model::{DeviceInfo, DeviceKey, Point, TimestampMs};

/// File name of the database inside the store directory.
pub const FILE_NAME: &str = "telemetry.redb";

const POINTS: TableDefinition<(&str, &str, &str, TimestampMs), &[u8]> =
    TableDefinition::new("points_v1");
const LATEST: TableDefinition<(&str, &str, &str), (TimestampMs, &[u8])> =
    TableDefinition::new("latest_v1");
const DEVICES: TableDefinition<(&str, &str), (TimestampMs, TimestampMs)> =
    TableDefinition::new("devices_v1");
const FENCES: TableDefinition<u32, u64> = TableDefinition::new("fences_v1");

/// Queued write requests (not points) before `write` callers wait to queue: backpressure for
/// when the disk is slower than ingest.
const QUEUE_REQUESTS: usize = 1024;

/// Tuning of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// A group commit stops adding queued requests once it holds this many points. Bounds the
    /// size of one transaction (and so the latency of its waiters); one request larger than
    /// this is still committed whole, alone.
    pub max_batch_points: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_batch_points: 20_000,
        }
    }
}

/// The embedded backend of [`TelemetryStore`].
pub struct EmbeddedStore {
    /// Shared with the writer thread and with in-flight reads.
    db: Arc<Database>,
    /// The way into the writer's queue; `None` once the store is closed, which is how later
    /// writes learn to answer `Closed`. A std Mutex: it is held only to clone or take the
    /// sender, never across an await.
    requests: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    /// The writer thread, joined by `close` or on drop so the file is released when the store
    /// is gone (a reopen in the same process would otherwise fail).
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// Opens or creates `dir/telemetry.redb` (creating `dir` if needed) and starts the
    /// group-commit writer thread.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Arc<EmbeddedStore>, StorageError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StorageError::Engine(format!("creating {}: {error}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let db = super::volatile::create_database(&path, crate::faults::power_loss()).map_err(
            |error| StorageError::Engine(format!("opening {}: {error}", path.display())),
        )?;
        // Create the tables up front so read transactions can always open them.
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(POINTS).map_err(engine)?;
        txn.open_table(LATEST).map_err(engine)?;
        txn.open_table(DEVICES).map_err(engine)?;
        txn.open_table(FENCES).map_err(engine)?;
        txn.open_table(rollups::ROLLUPS).map_err(engine)?;
        txn.commit().map_err(engine)?;

        let db = Arc::new(db);
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
        let max_points = options.max_batch_points.max(1);
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer::run(writer_db, receiver, max_points))
            .map_err(|error| StorageError::Engine(format!("starting the writer: {error}")))?;
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(Arc::new(EmbeddedStore {
            db,
            requests: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Runs `read` on the blocking pool with a fresh read transaction.
    async fn read<T, F>(&self, read: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StorageError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || read(&db.begin_read().map_err(engine)?))
            .await
            .map_err(|error| StorageError::Engine(format!("read task failed: {error}")))?
    }

    /// Stops accepting writes and hands back the writer thread, if not already done.
    fn shut(&self) -> Option<JoinHandle<()>> {
        // Dropping our sender lets the writer finish what is queued and then stop: in-flight
        // `write` calls hold their own clone only until their request is queued.
        drop(lock(&self.requests).take());
        lock(&self.writer).take()
    }
}

#[async_trait]
impl TelemetryStore for EmbeddedStore {
    async fn write_fenced(
        &self,
        fence: Option<Fence>,
        points: Vec<Point>,
    ) -> Result<(), StorageError> {
        let Some(sender) = lock(&self.requests).clone() else {
            return Err(StorageError::Closed);
        };
        if points.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        sender
            .send(WriteRequest {
                points,
                fence,
                reply,
            })
            .await
            .map_err(|_| StorageError::Closed)?;
        drop(sender);
        // The writer answers every request it takes; a dropped reply means it died.
        answer.await.map_err(|_| StorageError::Closed)?
    }

    async fn query(&self, query: RangeQuery) -> Result<Page, StorageError> {
        query.check()?;
        let after = query
            .page_token
            .as_deref()
            .map(|t| codec::decode_token(TOKEN_PREFIX, t))
            .transpose()?;
        if query.is_empty_range() {
            return Ok(Page::default());
        }
        self.read(move |txn| read_range(txn, &query, after)).await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError> {
        if query.limit == 0 {
            return Err(StorageError::Invalid {
                field: "limit",
                problem: "must be at least 1".to_owned(),
            });
        }
        self.read(move |txn| rollups::read(txn, &query)).await
    }

    async fn sweep(
        &self,
        policy: &RetentionPolicy,
        now_ms: TimestampMs,
    ) -> Result<u64, StorageError> {
        let db = Arc::clone(&self.db);
        let policy = policy.clone();
        tokio::task::spawn_blocking(move || sweep::run(&db, &policy, now_ms))
            .await
            .map_err(|error| StorageError::Engine(format!("sweep task failed: {error}")))?
    }

    async fn latest(&self, device: &DeviceKey) -> Result<Vec<Point>, StorageError> {
        let device = device.clone();
        self.read(move |txn| {
            let latest = txn.open_table(LATEST).map_err(engine)?;
            let mut points = Vec::new();
            let start = (device.tenant.as_str(), device.device.as_str(), "");
            for entry in latest.range(start..).map_err(engine)? {
                let (key, value) = entry.map_err(engine)?;
                let (tenant, id, metric) = key.value();
                if tenant != device.tenant || id != device.device {
                    break;
                }
                let (ts_ms, bytes) = value.value();
                points.push(Point {
                    device: device.clone(),
                    metric: metric.to_owned(),
                    ts_ms,
                    value: codec::decode_value(bytes)?,
                });
            }
            Ok(points)
        })
        .await
    }

    async fn device(&self, device: &DeviceKey) -> Result<Option<DeviceInfo>, StorageError> {
        let device = device.clone();
        self.read(move |txn| {
            let devices = txn.open_table(DEVICES).map_err(engine)?;
            let seen = devices
                .get((device.tenant.as_str(), device.device.as_str()))
                .map_err(engine)?
                .map(|guard| guard.value());
            Ok(seen.map(|(first_seen_ms, last_seen_ms)| DeviceInfo {
                key: device,
                first_seen_ms,
                last_seen_ms,
            }))
        })
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
        self.read(move |txn| {
            let devices = txn.open_table(DEVICES).map_err(engine)?;
            let start = match &after {
                Some(after) => Bound::Excluded((tenant.as_str(), after.as_str())),
                None => Bound::Included((tenant.as_str(), "")),
            };
            let mut found = Vec::new();
            for entry in devices.range((start, Bound::Unbounded)).map_err(engine)? {
                if found.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(engine)?;
                let (key_tenant, device) = key.value();
                if key_tenant != tenant {
                    break;
                }
                let (first_seen_ms, last_seen_ms) = value.value();
                found.push(DeviceInfo {
                    key: DeviceKey::new(key_tenant, device),
                    first_seen_ms,
                    last_seen_ms,
                });
            }
            Ok(found)
        })
        .await
    }

    async fn close(&self) {
        if let Some(writer) = self.shut() {
            match tokio::task::spawn_blocking(move || writer.join()).await {
                Ok(Ok(())) => tracing::info!("embedded store closed"),
                Ok(Err(_)) => tracing::error!("embedded store writer panicked"),
                Err(error) => tracing::error!(%error, "joining the embedded store writer failed"),
            }
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // No `write` can be in flight (they borrow the store), so the queue is empty or about
        // to be: the join waits for at most the commit in progress.
        if let Some(writer) = self.shut()
            && writer.join().is_err()
        {
            tracing::error!("embedded store writer panicked");
        }
    }
}

/// One page of a range read, in (metric, ts) order, resuming after `after` if given.
/// The caller has ruled out empty ranges and a zero limit.
fn read_range(
    txn: &redb::ReadTransaction,
    query: &RangeQuery,
    after: Option<Cursor>,
) -> Result<Page, StorageError> {
    let tenant = query.device.tenant.as_str();
    let device = query.device.device.as_str();
    let metrics = match &query.metric {
        Some(metric) => vec![metric.clone()],
        None => metrics_of(txn, tenant, device, after.as_ref())?,
    };
    let points_table = txn.open_table(POINTS).map_err(engine)?;
    // One more than the limit tells whether a next page exists.
    let wanted = query.limit.saturating_add(1);
    let mut points: Vec<Point> = Vec::with_capacity(wanted.min(1024));
    'metrics: for metric in metrics {
        let Some(from_ms) = codec::resume_from(after.as_ref(), &metric, query.from_ms) else {
            continue;
        };
        if from_ms >= query.to_ms {
            continue;
        }
        let range = (tenant, device, metric.as_str(), from_ms)
            ..(tenant, device, metric.as_str(), query.to_ms);
        for entry in points_table.range(range).map_err(engine)? {
            let (key, value) = entry.map_err(engine)?;
            points.push(Point {
                device: query.device.clone(),
                metric: metric.clone(),
                ts_ms: key.value().3,
                value: codec::decode_value(value.value())?,
            });
            if points.len() >= wanted {
                break 'metrics;
            }
        }
    }
    let next = if points.len() > query.limit {
        points.truncate(query.limit);
        points.last().map(|last| {
            codec::encode_token(
                TOKEN_PREFIX,
                &Cursor {
                    metric: last.metric.clone(),
                    ts_ms: last.ts_ms,
                },
            )
        })
    } else {
        None
    };
    Ok(Page { points, next })
}

/// The device's metrics in order, from the cursor's metric on (earlier ones are done).
fn metrics_of(
    txn: &redb::ReadTransaction,
    tenant: &str,
    device: &str,
    after: Option<&Cursor>,
) -> Result<Vec<String>, StorageError> {
    let latest = txn.open_table(LATEST).map_err(engine)?;
    let first = after.map_or("", |cursor| cursor.metric.as_str());
    let mut metrics = Vec::new();
    for entry in latest.range((tenant, device, first)..).map_err(engine)? {
        let (key, _) = entry.map_err(engine)?;
        let (key_tenant, key_device, metric) = key.value();
        if key_tenant != tenant || key_device != device {
            break;
        }
        metrics.push(metric.to_owned());
    }
    Ok(metrics)
}

/// Any redb failure, as the storage layer reports it.
fn engine(error: impl Into<redb::Error>) -> StorageError {
    StorageError::Engine(error.into().to_string())
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
