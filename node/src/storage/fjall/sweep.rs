//! Retention sweep of the fjall store, one bounded chunk at a time.
//!
//! Runs on the writer thread (the store's only writer), so a chunk never races a group
//! commit's read-modify-write. A chunk walks the series (the latest-value keyspace, in key
//! order) from a resume key, deletes raw points and rollup buckets older than the policy's
//! cutoff for the series' tenant and the tier, and stops once it has deleted `max_removed`
//! entries; the store then queues the next chunk from where this one stopped, so ingest
//! waits for at most one chunk. Each chunk is one fsync'd fjall batch. Latest values and the
//! device index are kept.

use std::ops::Bound;

use fjall::{OwnedWriteBatch, PersistMode};

use super::{Parts, engine, keys};
use crate::model::TimestampMs;
use crate::storage::rollup::Resolution;
use crate::storage::{RetentionPolicy, StorageError};

/// The outcome of one chunk.
#[derive(Debug)]
pub(super) struct Step {
    /// Entries deleted by this chunk.
    pub(super) removed: u64,
    /// The series to resume at, or `None` when the sweep is complete.
    pub(super) next: Option<Vec<u8>>,
}

/// Deletes at most `max_removed` entries that `policy` no longer keeps at `now_ms`, walking
/// the series from `from` (a latest key; empty for the start).
pub(super) fn step(
    parts: &Parts,
    policy: &RetentionPolicy,
    now_ms: TimestampMs,
    from: &[u8],
    max_removed: usize,
) -> Result<Step, StorageError> {
    let max_removed = max_removed.max(1);
    let mut out = parts.db.batch().durability(Some(PersistMode::SyncData));
    let mut next = None;
    'series: for guard in parts.latest.range(from..) {
        let series = guard.key().map_err(engine)?;
        let ([tenant, device, metric], _) = keys::strings::<3>(&series)?;
        // (keyspace, first key, end key) of each tier this policy trims for the series.
        let mut ranges = Vec::new();
        if let Some(cutoff) = policy.cutoff(&tenant, None, now_ms) {
            ranges.push((
                &parts.points,
                keys::point(&tenant, &device, &metric, TimestampMs::MIN),
                keys::point(&tenant, &device, &metric, cutoff),
            ));
        }
        for res in Resolution::ALL {
            if let Some(cutoff) = policy.cutoff(&tenant, Some(res), now_ms) {
                let code = res.code();
                ranges.push((
                    &parts.rollups,
                    keys::rollup(&tenant, &device, &metric, code, TimestampMs::MIN),
                    keys::rollup(&tenant, &device, &metric, code, cutoff),
                ));
            }
        }
        for (keyspace, first, end) in ranges {
            let range = (Bound::Included(first), Bound::Excluded(end));
            for guard in keyspace.range::<Vec<u8>, _>(range) {
                if out.len() >= max_removed {
                    // Resume at this series: what is deleted so far is gone by then.
                    next = Some(series.to_vec());
                    break 'series;
                }
                out.remove(keyspace, guard.key().map_err(engine)?);
            }
        }
    }
    let removed = out.len() as u64;
    commit(out)?;
    Ok(Step { removed, next })
}

fn commit(out: OwnedWriteBatch) -> Result<(), StorageError> {
    out.commit().map_err(engine)
}
