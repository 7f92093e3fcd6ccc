//! Rollup buckets of the embedded store: table `rollups_v1`,
//! (tenant, device, metric, resolution code, bucket start) → [`Bucket::encode`].
//!
//! Maintained by the writer thread in the transaction that inserts the raw points, which is
//! what makes them idempotent: a point is folded in only when its raw insert found no entry
//! (a redelivered point finds one and counts nothing); a rewrite with another value marks its
//! buckets dirty, and dirty buckets are recomputed from the raw points (already updated in the
//! same transaction). A crash loses both or neither.
//!
//! Not here: queries over buckets (`storage::aggregate`), retention (`sweep`).

use redb::{ReadableTable, TableDefinition};

use super::{POINTS, engine};
use crate::model::TimestampMs;
use crate::storage::StorageError;
use crate::storage::codec;
use crate::storage::rollup::{Bucket, Changes, Resolution, RollupPage, RollupQuery, rolled};

/// (tenant, device, metric, resolution code, bucket start) → encoded bucket.
pub(super) const ROLLUPS: TableDefinition<(&str, &str, &str, u8, TimestampMs), &[u8]> =
    TableDefinition::new("rollups_v1");

/// The resolution's code in keys.
pub(super) fn code(res: Resolution) -> u8 {
    res.code()
}

/// Writes a batch's changes: merges deltas into stored buckets, recomputes dirty ones.
pub(super) fn apply(
    txn: &redb::WriteTransaction,
    changes: Changes<'_>,
) -> Result<(), StorageError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(ROLLUPS).map_err(engine)?;
    for (k, delta) in changes.deltas {
        if changes.dirty.contains(&k) {
            continue;
        }
        let stored = table
            .get(k)
            .map_err(engine)?
            .map(|g| Bucket::decode(k.4, g.value()))
            .transpose()?;
        let merged = match stored {
            Some(mut b) => {
                b.merge(&delta);
                b
            }
            None => delta,
        };
        table
            .insert(k, merged.encode().as_slice())
            .map_err(engine)?;
    }
    if changes.dirty.is_empty() {
        return Ok(());
    }
    let points = txn.open_table(POINTS).map_err(engine)?;
    for k in changes.dirty {
        let (tenant, device, metric, res, start) = k;
        let width = Resolution::from_code(res).width_ms();
        let mut values = Vec::new();
        for entry in points
            .range((tenant, device, metric, start)..(tenant, device, metric, start + width))
            .map_err(engine)?
        {
            let (pk, pv) = entry.map_err(engine)?;
            if let Some(v) = rolled(&codec::decode_value(pv.value())?) {
                values.push((pk.value().3, v));
            }
        }
        match Bucket::of_all(start, values) {
            Some(b) => {
                table.insert(k, b.encode().as_slice()).map_err(engine)?;
            }
            None => {
                table.remove(k).map_err(engine)?;
            }
        }
    }
    Ok(())
}

/// One page of buckets for a query (the caller checked `limit >= 1`).
pub(super) fn read(
    txn: &redb::ReadTransaction,
    q: &RollupQuery,
) -> Result<RollupPage, StorageError> {
    if q.to_ms <= q.from_ms {
        return Ok(RollupPage::default());
    }
    let table = txn.open_table(ROLLUPS).map_err(engine)?;
    let (t, d, m, c) = (
        q.device.tenant.as_str(),
        q.device.device.as_str(),
        q.metric.as_str(),
        code(q.resolution),
    );
    let mut page = RollupPage::default();
    for entry in table
        .range((t, d, m, c, q.from_ms)..(t, d, m, c, q.to_ms))
        .map_err(engine)?
    {
        if page.buckets.len() == q.limit {
            page.more = true;
            break;
        }
        let (k, v) = entry.map_err(engine)?;
        page.buckets.push(Bucket::decode(k.value().4, v.value())?);
    }
    Ok(page)
}
