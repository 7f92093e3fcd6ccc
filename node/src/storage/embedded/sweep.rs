//! Retention sweep of the embedded store: one durable write transaction that deletes, per
//! device and metric, raw points and rollup buckets older than the policy's cutoff for the
//! device's tenant and the tier.
//!
//! It runs beside the group-commit writer: redb serializes write transactions, so ingest
//! waits for at most one sweep transaction. Latest values and the device index are kept.

use redb::{Database, Durability, ReadableTable};

use super::rollups::{ROLLUPS, code};
use super::{LATEST, POINTS, engine};
use crate::model::TimestampMs;
use crate::storage::rollup::Resolution;
use crate::storage::{RetentionPolicy, StorageError};

/// Deletes what `policy` no longer keeps at `now_ms`; returns the number of entries removed.
pub(super) fn run(
    db: &Database,
    policy: &RetentionPolicy,
    now_ms: TimestampMs,
) -> Result<u64, StorageError> {
    let mut txn = db.begin_write().map_err(engine)?;
    txn.set_durability(Durability::Immediate).map_err(engine)?;
    let mut removed = 0u64;
    {
        // Every (tenant, device, metric) the store knows, from the latest-value index.
        let series: Vec<(String, String, String)> = {
            let latest = txn.open_table(LATEST).map_err(engine)?;
            let mut all = Vec::new();
            for entry in latest.iter().map_err(engine)? {
                let (k, _) = entry.map_err(engine)?;
                let (t, d, m) = k.value();
                all.push((t.to_owned(), d.to_owned(), m.to_owned()));
            }
            all
        };
        let mut points = txn.open_table(POINTS).map_err(engine)?;
        let mut rollups = txn.open_table(ROLLUPS).map_err(engine)?;
        for (t, d, m) in &series {
            let (t, d, m) = (t.as_str(), d.as_str(), m.as_str());
            if let Some(cutoff) = policy.cutoff(t, None, now_ms) {
                points
                    .retain_in((t, d, m, i64::MIN)..(t, d, m, cutoff), |_, _| {
                        removed += 1;
                        false
                    })
                    .map_err(engine)?;
            }
            for res in Resolution::ALL {
                if let Some(cutoff) = policy.cutoff(t, Some(res), now_ms) {
                    let c = code(res);
                    rollups
                        .retain_in((t, d, m, c, i64::MIN)..(t, d, m, c, cutoff), |_, _| {
                            removed += 1;
                            false
                        })
                        .map_err(engine)?;
                }
            }
        }
    }
    txn.commit().map_err(engine)?;
    Ok(removed)
}
