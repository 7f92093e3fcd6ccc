//! The group-commit writer of the fjall store: the one OS thread that writes to the database.
//!
//! Callers queue a [`Request`] and await its reply. For writes, the thread blocks for the
//! first request, drains whatever other writes are already queued (up to `max_points`),
//! builds ONE fjall write batch for all of them and commits it with `PersistMode::SyncData`
//! (journal fdatasync'd before the batch becomes visible), then answers every waiter with the
//! same result. A sweep request is served alone, between two group commits.
//!
//! Why no transactions are needed: fjall batches are atomic but cannot read, so "is this
//! point new?", the stored latest value, first/last seen, the stored buckets and the fences
//! are read with plain `get`s before the batch is built. That read-modify-write is safe only
//! because this thread is the sole writer: nothing can change a key between its read and the
//! commit. What the batch itself writes is not visible to those `get`s, so the batch keeps
//! its own view of the raw points it writes (`written`) and reads through it.
//!
//! Not here: reads for callers (they use snapshots and never wait for this thread) and
//! shutdown policy (the store drops the senders; the thread then finishes the queue and ends).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use fjall::{OwnedWriteBatch, PersistMode};
use tokio::sync::{mpsc, oneshot};

use super::{Parts, engine, keys, sweep};
use crate::metrics_names;
use crate::model::{Point, TimestampMs};
use crate::storage::batch::Summary;
use crate::storage::codec;
use crate::storage::rollup::{Bucket, Changes, Resolution, rolled};
use crate::storage::{Fence, RetentionPolicy, StorageError};

/// A request to the writer thread.
pub(super) enum Request {
    /// Store points (group-committed with other queued writes).
    Write(WriteRequest),
    /// Delete one bounded chunk of what the retention policy no longer keeps.
    Sweep(SweepRequest),
}

/// One caller's write, waiting for its batch to commit.
pub(super) struct WriteRequest {
    /// The points to store; never empty (empty writes are answered without queueing).
    pub(super) points: Vec<Point>,
    /// The shard epoch the write is made under, if fenced.
    pub(super) fence: Option<Fence>,
    /// Where the commit result goes. The caller may have gone away; that is not an error.
    pub(super) reply: oneshot::Sender<Result<(), StorageError>>,
}

/// One chunk of a retention sweep.
pub(super) struct SweepRequest {
    /// What to keep.
    pub(super) policy: Arc<RetentionPolicy>,
    /// The sweep's "now".
    pub(super) now_ms: TimestampMs,
    /// The series (latest key) to resume at; empty for the first chunk.
    pub(super) from: Vec<u8>,
    /// At most this many entries are deleted by this chunk.
    pub(super) max_removed: usize,
    /// Where the chunk's outcome goes.
    pub(super) reply: oneshot::Sender<Result<sweep::Step, StorageError>>,
}

/// Runs the writer loop until the channel closes. Meant to be the body of the writer thread.
pub(super) fn run(parts: &Parts, mut requests: mpsc::Receiver<Request>, max_points: usize) {
    // A sweep found while draining writes waits here for the next turn.
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(request) => request,
            None => match requests.blocking_recv() {
                Some(request) => request,
                None => break,
            },
        };
        let first = match first {
            Request::Sweep(request) => {
                let step = sweep::step(
                    parts,
                    &request.policy,
                    request.now_ms,
                    &request.from,
                    request.max_removed,
                );
                let _ = request.reply.send(step);
                continue;
            }
            Request::Write(request) => request,
        };
        let mut queued = first.points.len();
        let mut batch = vec![first];
        // Take only what is already queued: never wait for more, so a lone writer pays one
        // fsync and no extra latency.
        while queued < max_points {
            match requests.try_recv() {
                Ok(Request::Write(request)) => {
                    queued += request.points.len();
                    batch.push(request);
                }
                Ok(sweep) => {
                    held = Some(sweep);
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit(parts, &batch);
        metrics::histogram!(metrics_names::STORE_WRITE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::error!(%error, requests = batch.len(), points = queued, "group commit failed");
        }
        for (i, request) in batch.into_iter().enumerate() {
            let answer = match &result {
                Ok(refused) => match refused.iter().find(|(at, _)| *at == i) {
                    Some((_, (fence, current))) => Err(StorageError::StaleEpoch {
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
    tracing::debug!("fjall store writer stopped");
}

/// A refused request: its index in the batch, its fence and the store's epoch for the shard.
type Refused = (usize, (Fence, u64));

/// Puts the accepted fences in `out` (the greatest epoch per shard) and returns the requests
/// refused by theirs; earlier requests of the batch count as stored for later ones.
fn fence_check(
    parts: &Parts,
    out: &mut OwnedWriteBatch,
    batch: &[WriteRequest],
) -> Result<Vec<Refused>, StorageError> {
    let mut refused = Vec::new();
    let mut epochs: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, request) in batch.iter().enumerate() {
        let Some(fence) = request.fence else {
            continue;
        };
        let current = match epochs.get(&fence.shard) {
            Some(epoch) => Some(*epoch),
            None => parts
                .fences
                .get(keys::fence(fence.shard))
                .map_err(engine)?
                .map(|bytes| keys::epoch(&bytes))
                .transpose()?,
        };
        match current {
            Some(current) if fence.epoch < current => refused.push((i, (fence, current))),
            Some(current) if fence.epoch == current => {}
            _ => {
                epochs.insert(fence.shard, fence.epoch);
            }
        }
    }
    for (shard, epoch) in epochs {
        out.insert(&parts.fences, keys::fence(shard), epoch.to_be_bytes());
    }
    Ok(refused)
}

/// Applies a batch in one durable fjall batch: fences, every point (new ones folded into
/// rollups), then the latest value and device index updates folded per key, so a batch
/// touches each latest/device entry once. Returns the requests refused by their fence.
fn commit(parts: &Parts, batch: &[WriteRequest]) -> Result<Vec<Refused>, StorageError> {
    let mut out = parts.db.batch().durability(Some(PersistMode::SyncData));
    let refused = fence_check(parts, &mut out, batch)?;
    let mut changes = Changes::default();
    // The raw points this batch writes, by key: its own view of what it changes.
    let mut written: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // Newest point per (tenant, device, metric) and time span per (tenant, device).
    let mut summary = Summary::default();
    let accepted = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(at, _)| at == i))
        .flat_map(|(_, request)| &request.points);
    for point in accepted {
        let (tenant, device, metric) = (
            point.device.tenant.as_str(),
            point.device.device.as_str(),
            point.metric.as_str(),
        );
        let key = keys::point(tenant, device, metric, point.ts_ms);
        let mut value = Vec::with_capacity(17);
        codec::encode_value(&point.value, &mut value);
        // Whether a stored (or earlier in this batch) point has the same value.
        let same = match written.get(&key) {
            Some(old) => Some(*old == value),
            None => parts
                .points
                .get(&key)
                .map_err(engine)?
                .map(|old| *old == *value),
        };
        match same {
            // New: fold it into its buckets.
            None => changes.add(point),
            // The same point again: nothing to count, nothing to write.
            Some(true) => {}
            // A rewrite with another value: its buckets are recomputed from raw.
            Some(false) => changes.dirty(point),
        }
        if same != Some(true) {
            written.insert(key, value);
        }
        summary.note(point);
    }
    apply_rollups(parts, &mut out, changes, &written)?;
    for (key, value) in &written {
        out.insert(&parts.points, key.as_slice(), value.as_slice());
    }
    let mut buf = Vec::with_capacity(17);
    for ((tenant, device, metric), (ts_ms, value)) in summary.newest {
        let key = keys::series(tenant, device, metric);
        let stored_ts = match parts.latest.get(&key).map_err(engine)? {
            Some(bytes) => Some(keys::split_latest(&bytes)?.0),
            None => None,
        };
        if stored_ts.is_none_or(|stored| ts_ms >= stored) {
            buf.clear();
            codec::encode_value(value, &mut buf);
            out.insert(&parts.latest, key, keys::latest_value(ts_ms, &buf));
        }
    }
    for ((tenant, device), (first, last)) in summary.seen {
        let key = keys::device(tenant, device);
        let stored = match parts.devices.get(&key).map_err(engine)? {
            Some(bytes) => Some(keys::split_seen(&bytes)?),
            None => None,
        };
        let merged = match stored {
            Some((stored_first, stored_last)) => (first.min(stored_first), last.max(stored_last)),
            None => (first, last),
        };
        if stored != Some(merged) {
            out.insert(&parts.devices, key, keys::seen_value(merged.0, merged.1));
        }
    }
    // An empty batch (only redelivered points) commits nothing and syncs nothing: every entry
    // it found was made visible by a batch that had already been synced.
    out.commit().map_err(engine)?;
    Ok(refused)
}

/// Puts a batch's bucket changes in `out`: deltas merged into the stored buckets, dirty
/// buckets recomputed from the raw points as they are after this batch (`written` on top of
/// the stored ones).
fn apply_rollups(
    parts: &Parts,
    out: &mut OwnedWriteBatch,
    changes: Changes<'_>,
    written: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), StorageError> {
    for ((t, d, m, code, start), delta) in changes.deltas {
        if changes.dirty.contains(&(t, d, m, code, start)) {
            continue;
        }
        let key = keys::rollup(t, d, m, code, start);
        let merged = match parts.rollups.get(&key).map_err(engine)? {
            Some(bytes) => {
                let mut stored = Bucket::decode(start, &bytes)?;
                stored.merge(&delta);
                stored
            }
            None => delta,
        };
        out.insert(&parts.rollups, key, merged.encode());
    }
    for (t, d, m, code, start) in changes.dirty {
        let end = start.saturating_add(Resolution::from_code(code).width_ms());
        let from = keys::point(t, d, m, start);
        let to = keys::point(t, d, m, end);
        let mut raw: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for guard in parts.points.range(from.as_slice()..to.as_slice()) {
            let (key, value) = guard.into_inner().map_err(engine)?;
            raw.insert(key.to_vec(), value.to_vec());
        }
        let range = (Bound::Included(from), Bound::Excluded(to));
        for (key, value) in written.range::<Vec<u8>, _>(range) {
            raw.insert(key.clone(), value.clone());
        }
        let mut values = Vec::with_capacity(raw.len());
        for (key, value) in &raw {
            if let Some(v) = rolled(&codec::decode_value(value)?) {
                values.push((keys::ts_suffix(key)?, v));
            }
        }
        let key = keys::rollup(t, d, m, code, start);
        match Bucket::of_all(start, values) {
            Some(bucket) => out.insert(&parts.rollups, key, bucket.encode()),
            None => out.remove(&parts.rollups, key),
        }
    }
    Ok(())
}
