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

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::{DEVICES, LATEST, POINTS, engine};
use crate::metrics_names;
use crate::model::{Point, TimestampMs, Value};
use crate::storage::StorageError;
use crate::storage::codec;

/// One caller's write, waiting for its batch to commit.
pub(super) struct WriteRequest {
    /// The points to store; never empty (empty writes are answered without queueing).
    pub(super) points: Vec<Point>,
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
        for request in batch {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(StorageError::Engine(error.to_string())),
            };
            // The caller may have been cancelled; its points are stored all the same.
            let _ = request.reply.send(answer);
        }
    }
    tracing::debug!("embedded store writer stopped");
}

/// Applies a batch in one durable transaction: every point, then the latest value and device
/// index updates folded per key, so a batch touches each latest/device entry once.
fn commit(db: &Database, batch: &[WriteRequest]) -> Result<(), StorageError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::Immediate).map_err(engine)?;
    {
        let mut points = txn.open_table(POINTS).map_err(engine)?;
        // Newest point per (tenant, device, metric) in this batch; on equal timestamps the
        // later one wins, as it does in the points table.
        let mut newest: BTreeMap<(&str, &str, &str), (TimestampMs, &Value)> = BTreeMap::new();
        // Min and max ts per (tenant, device) in this batch.
        let mut seen: BTreeMap<(&str, &str), (TimestampMs, TimestampMs)> = BTreeMap::new();
        let mut buf = Vec::with_capacity(32);
        for point in batch.iter().flat_map(|request| &request.points) {
            let tenant = point.device.tenant.as_str();
            let device = point.device.device.as_str();
            let metric = point.metric.as_str();
            buf.clear();
            codec::encode_value(&point.value, &mut buf);
            points
                .insert((tenant, device, metric, point.ts_ms), buf.as_slice())
                .map_err(engine)?;
            match newest.entry((tenant, device, metric)) {
                Entry::Vacant(slot) => {
                    slot.insert((point.ts_ms, &point.value));
                }
                Entry::Occupied(mut slot) => {
                    if point.ts_ms >= slot.get().0 {
                        slot.insert((point.ts_ms, &point.value));
                    }
                }
            }
            seen.entry((tenant, device))
                .and_modify(|(first, last)| {
                    *first = (*first).min(point.ts_ms);
                    *last = (*last).max(point.ts_ms);
                })
                .or_insert((point.ts_ms, point.ts_ms));
        }

        let mut latest = txn.open_table(LATEST).map_err(engine)?;
        for (key, (ts_ms, value)) in newest {
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
        for (key, (first, last)) in seen {
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
    txn.commit().map_err(engine)
}
