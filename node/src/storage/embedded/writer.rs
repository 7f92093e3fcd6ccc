//! The group-commit writer of the embedded store: one OS thread that owns every write
//! transaction.
//!
//! Callers queue a [`WriteRequest`] and await its reply. The thread blocks for the first
//! request, drains whatever else is already queued (up to `max_batch_points`), applies all of it
//! in one fsync'd transaction and answers every waiter with the same result. One fsync thus
//! covers many concurrent writers, which is what makes acknowledging only durable points
//! affordable. The thread stops when every sender is gone, after finishing what was queued.
//!
//! It does not read for callers (reads use their own read transactions and never wait for
//! it) and knows nothing of shutdown policy: the store decides when to drop the senders.

use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::{DEVICES, FENCES, LATEST, POINTS, engine, rollups};
use crate::metrics_names;
use crate::model::Point;
use crate::storage::batch::Summary;
use crate::storage::codec;
use crate::storage::rollup::Changes;
use crate::storage::{Fence, StorageError};

/// One caller's write, waiting for its batch to commit.
pub(super) struct WriteRequest {
    /// The points to store; never empty (empty writes are answered without queueing).
    pub(super) points: Vec<Point>,
    /// The shard epoch the write is made under, if fenced.
    pub(super) fence: Option<Fence>,
    /// Where the commit result goes. The caller may have gone away; that is not an error.
    pub(super) reply: oneshot::Sender<Result<(), StorageError>>,
}

/// Runs the writer loop until the channel closes. Meant to be the body of the writer thread.
pub(super) fn run(
    db: Arc<Database>,
    mut requests: mpsc::Receiver<WriteRequest>,
    max_points: usize,
) {
    while let Some(first) = requests.blocking_recv() {
        let mut queued = first.points.len();
        let mut batch = vec![first];
        // Take only what is already queued: never wait for more, so a lone writer pays one
        // fsync and no extra latency.
        while queued < max_points {
            match requests.try_recv() {
                Ok(request) => {
                    queued += request.points.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit(&db, &batch);
        metrics::histogram!(metrics_names::STORE_WRITE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::error!(%error, requests = batch.len(), points = queued, "group commit failed");
        }
        for (i, request) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(refused) => match refused.iter().find(|(at, _)| *at == i) {
                    Some((_, Refusal::Stale(fence, current))) => Err(StorageError::StaleEpoch {
                        shard: fence.shard,
                        epoch: fence.epoch,
                        current: *current,
                    }),
                    None => Ok(()),
                },
                Err(error) => Err(StorageError::Engine(error.to_string())),
            };
            // The caller may have been cancelled; its points are stored all the same.
            let _ = request.reply.send(answer);
        }
    }
    tracing::debug!("embedded store writer stopped");
}

/// Why one request of a batch was refused (the others commit).
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Its fence's epoch is older than the store's for that shard (which is given).
    Stale(Fence, u64),
}

/// The requests of a batch that are refused by their fence (index, why), the others
/// accepted; the greatest accepted epoch per shard is written.
fn fence_check(
    txn: &redb::WriteTransaction,
    batch: &[WriteRequest],
) -> Result<Vec<(usize, Refusal)>, StorageError> {
    let mut refused = Vec::new();
    if batch.iter().all(|r| r.fence.is_none()) {
        return Ok(refused);
    }
    let mut fences = txn.open_table(FENCES).map_err(engine)?;
    for (i, request) in batch.iter().enumerate() {
        let Some(fence) = request.fence else {
            continue;
        };
        let current = fences.get(fence.shard).map_err(engine)?.map(|g| g.value());
        match current {
            Some(current) if fence.epoch < current => {
                refused.push((i, Refusal::Stale(fence, current)));
            }
            Some(current) if fence.epoch == current => {}
            _ => {
                fences.insert(fence.shard, fence.epoch).map_err(engine)?;
            }
        }
    }
    Ok(refused)
}

/// Applies a batch in one durable transaction: fences, every point (new ones folded into
/// rollups), then the latest value and device index updates folded per key, so a batch
/// touches each latest/device entry once. Returns the requests refused by their fence.
fn commit(db: &Database, batch: &[WriteRequest]) -> Result<Vec<(usize, Refusal)>, StorageError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::Immediate).map_err(engine)?;
    let refused = fence_check(&txn, batch)?;
    let mut changes = Changes::default();
    {
        let mut points = txn.open_table(POINTS).map_err(engine)?;
        // Newest point per (tenant, device, metric) and time span per (tenant, device).
        let mut summary = Summary::default();
        let mut buf = Vec::with_capacity(32);
        let accepted = batch
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused.iter().any(|(at, _)| at == i))
            .flat_map(|(_, request)| &request.points);
        for point in accepted {
            let tenant = point.device.tenant.as_str();
            let device = point.device.device.as_str();
            let metric = point.metric.as_str();
            buf.clear();
            codec::encode_value(&point.value, &mut buf);
            let old = points
                .insert((tenant, device, metric, point.ts_ms), buf.as_slice())
                .map_err(engine)?;
            match old {
                // New: fold it into its buckets.
                None => changes.add(point),
                // The same point again: nothing to count.
                Some(old) if old.value() == buf.as_slice() => {}
                // A rewrite with another value: its buckets are recomputed from raw.
                Some(_) => changes.dirty(point),
            }
            summary.note(point);
        }

        let mut latest = txn.open_table(LATEST).map_err(engine)?;
        for (key, (ts_ms, value)) in summary.newest {
            let stored_ts = latest
                .get(key)
                .map_err(engine)?
                .map(|guard| guard.value().0);
            if stored_ts.is_none_or(|stored| ts_ms >= stored) {
                buf.clear();
                codec::encode_value(value, &mut buf);
                latest
                    .insert(key, (ts_ms, buf.as_slice()))
                    .map_err(engine)?;
            }
        }

        let mut devices = txn.open_table(DEVICES).map_err(engine)?;
        for (key, (first, last)) in summary.seen {
            let stored = devices.get(key).map_err(engine)?.map(|guard| guard.value());
            let merged = match stored {
                Some((stored_first, stored_last)) => {
                    (first.min(stored_first), last.max(stored_last))
                }
                None => (first, last),
            };
            if stored != Some(merged) {
                devices.insert(key, merged).map_err(engine)?;
            }
        }
    }
    rollups::apply(&txn, changes)?;
    txn.commit().map_err(engine)?;
    Ok(refused)
}
