//! Epoch fences, rollups and retention of the Scylla store (schema migration 2).
//!
//! - **Fences**, table `shard_epochs (shard) → epoch`. LWT-free: a fenced write first reads
//!   the shard's epoch (at the store's consistency) and is refused with `StaleEpoch` if it is
//!   greater than the write's; otherwise it offers its epoch with `USING TIMESTAMP <epoch>`,
//!   so the greatest epoch wins on every replica without a read-modify-write. The window this
//!   leaves open, and accepts: a stale writer whose read happened before the new owner's first
//!   write landed. Raw points are idempotent upserts, so such a write adds nothing wrong; it is
//!   the control records (Raft) that need exact fencing, and they have it.
//! - **Rollups**, table `rollups ((tenant, device, metric, res, slot), start)`, slot = bucket
//!   start div the slot width (a day of minute buckets, 64 days of hour buckets). Rows are
//!   *recomputed from the raw points*, never incremented: after the raw upserts of a write
//!   succeeded, each touched minute bucket is re-read from `points` and upserted, then each
//!   touched hour bucket is re-read from its minute buckets and upserted. A redelivered point
//!   is thus counted once whatever the history. Recomputations of one device are serialised
//!   in this process (a per-device lock), so the last one sees every earlier write; across
//!   processes the shard's single owner is the only writer. If a recomputation fails, the
//!   write fails (its points are stored); the caller's retry recomputes the same buckets.
//! - **Retention**: range deletes per (device, metric) of raw day partitions and rollup
//!   slots older than the policy's cutoff (the table TTL of `points` also applies).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::codec::{self, DAY_MS};
use super::{ScyllaStore, engine};
use crate::model::{DeviceKey, Point, TimestampMs};
use crate::storage::rollup::{Bucket, Resolution, RollupPage, RollupQuery, rolled};
use crate::storage::{Fence, RetentionPolicy, StorageError};

/// Width of one rollup partition (slot) per resolution; both are whole days, so the minute
/// buckets of an hour are always in one slot.
fn slot_width(res: Resolution) -> i64 {
    match res {
        Resolution::Minute => DAY_MS,
        Resolution::Hour => 64 * DAY_MS,
    }
}

fn slot_of(res: Resolution, start: TimestampMs) -> i64 {
    start.div_euclid(slot_width(res))
}

fn res_code(res: Resolution) -> i8 {
    match res {
        Resolution::Minute => 1,
        Resolution::Hour => 2,
    }
}

/// The DDL of migration 2.
pub(super) fn migration_cql(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.shard_epochs (shard int PRIMARY KEY, epoch bigint)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rollups (\
             tenant text, device text, metric text, res tinyint, slot bigint, start bigint, \
             min double, max double, sum double, count bigint, last_ts bigint, last double, \
             PRIMARY KEY ((tenant, device, metric, res, slot), start))"
        ),
    ]
}

/// Prepared statements of this module.
pub(super) struct RollupStatements {
    select_epoch: PreparedStatement,
    offer_epoch: PreparedStatement,
    upsert_bucket: PreparedStatement,
    delete_bucket: PreparedStatement,
    select_buckets: PreparedStatement,
    delete_buckets_before: PreparedStatement,
    delete_points_before: PreparedStatement,
    delete_day: PreparedStatement,
    select_tenants: PreparedStatement,
}

/// Per-device locks serialising rollup recomputation in this process.
#[derive(Default)]
pub(super) struct DeviceLocks(Mutex<HashMap<DeviceKey, Arc<tokio::sync::Mutex<()>>>>);

impl DeviceLocks {
    fn get(&self, key: &DeviceKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map stays as large as the active devices.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(key.clone()).or_default().clone()
    }
}

pub(super) async fn prepare(session: &Session, ks: &str) -> Result<RollupStatements, StorageError> {
    let prepare = |cql: String| async move {
        let mut s = session
            .prepare(cql.as_str())
            .await
            .map_err(|e| engine(&cql, e))?;
        s.set_is_idempotent(true);
        Ok::<_, StorageError>(s)
    };
    Ok(RollupStatements {
        select_epoch: prepare(format!(
            "SELECT epoch FROM {ks}.shard_epochs WHERE shard = ?"
        ))
        .await?,
        offer_epoch: prepare(format!(
            "UPDATE {ks}.shard_epochs USING TIMESTAMP ? SET epoch = ? WHERE shard = ?"
        ))
        .await?,
        upsert_bucket: prepare(format!(
            "INSERT INTO {ks}.rollups (tenant, device, metric, res, slot, start, min, max, sum, \
             count, last_ts, last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await?,
        delete_bucket: prepare(format!(
            "DELETE FROM {ks}.rollups WHERE tenant = ? AND device = ? AND metric = ? AND res = ? \
             AND slot = ? AND start = ?"
        ))
        .await?,
        select_buckets: prepare(format!(
            "SELECT start, min, max, sum, count, last_ts, last FROM {ks}.rollups \
             WHERE tenant = ? AND device = ? AND metric = ? AND res = ? AND slot = ? \
             AND start >= ? AND start < ?"
        ))
        .await?,
        delete_buckets_before: prepare(format!(
            "DELETE FROM {ks}.rollups WHERE tenant = ? AND device = ? AND metric = ? AND res = ? \
             AND slot = ? AND start < ?"
        ))
        .await?,
        delete_points_before: prepare(format!(
            "DELETE FROM {ks}.points WHERE tenant = ? AND device = ? AND day = ? AND metric = ? \
             AND ts < ?"
        ))
        .await?,
        delete_day: prepare(format!(
            "DELETE FROM {ks}.point_days WHERE tenant = ? AND device = ? AND metric = ? AND day = ?"
        ))
        .await?,
        select_tenants: prepare(format!("SELECT DISTINCT tenant FROM {ks}.devices")).await?,
    })
}

/// Refuses a stale fence, or offers its epoch (see the module docs).
pub(super) async fn check_fence(store: &ScyllaStore, fence: Fence) -> Result<(), StorageError> {
    let r = &store.rollup;
    let shard = i32::try_from(fence.shard).unwrap_or(i32::MAX);
    let rows: Vec<(Option<i64>,)> = store.rows(&r.select_epoch, (shard,), 1).await?;
    let current = rows.first().and_then(|(e,)| *e).map(|e| e as u64);
    match current {
        Some(current) if fence.epoch < current => Err(StorageError::StaleEpoch {
            shard: fence.shard,
            epoch: fence.epoch,
            current,
        }),
        Some(current) if fence.epoch == current => Ok(()),
        _ => {
            let epoch = i64::try_from(fence.epoch).unwrap_or(i64::MAX);
            store
                .session
                .execute_unpaged(&r.offer_epoch, (epoch, epoch, shard))
                .await
                .map_err(|e| engine(r.offer_epoch.get_statement(), e))?;
            Ok(())
        }
    }
}

/// Recomputes the buckets `points` touch, minute then hour, from the stored raw points.
pub(super) async fn recompute(store: &ScyllaStore, points: &[Point]) -> Result<(), StorageError> {
    let mut touched: BTreeSet<(&DeviceKey, &str, TimestampMs)> = BTreeSet::new();
    for p in points.iter().filter(|p| rolled(&p.value).is_some()) {
        touched.insert((
            &p.device,
            &p.metric,
            Resolution::Minute.bucket_start(p.ts_ms),
        ));
    }
    let devices: BTreeSet<&DeviceKey> = touched.iter().map(|(d, _, _)| *d).collect();
    for device in devices {
        let lock = store.locks.get(device);
        let _held = lock.lock().await;
        let mut hours = BTreeSet::new();
        for (_, metric, minute) in touched.iter().filter(|(d, _, _)| *d == device) {
            let rows: Vec<(i64, Vec<u8>)> = store
                .rows(
                    &store.statements.select_points,
                    (
                        &device.tenant,
                        &device.device,
                        codec::day_of(*minute),
                        metric,
                        *minute,
                        minute + Resolution::Minute.width_ms(),
                    ),
                    usize::MAX,
                )
                .await?;
            let mut values = Vec::with_capacity(rows.len());
            for (ts, bytes) in rows {
                if let Some(v) = rolled(&codec::decode_value(&bytes)?) {
                    values.push((ts, v));
                }
            }
            put(
                store,
                device,
                metric,
                Resolution::Minute,
                *minute,
                Bucket::of_all(*minute, values),
            )
            .await?;
            hours.insert((*metric, Resolution::Hour.bucket_start(*minute)));
        }
        for (metric, hour) in hours {
            let minutes = read_slot(
                store,
                device,
                metric,
                Resolution::Minute,
                hour,
                hour + Resolution::Hour.width_ms(),
                usize::MAX,
            )
            .await?;
            let mut merged: Option<Bucket> = None;
            for b in minutes {
                match &mut merged {
                    Some(m) => m.merge(&b),
                    None => {
                        merged = Some(Bucket {
                            start_ms: hour,
                            ..b
                        })
                    }
                }
            }
            put(store, device, metric, Resolution::Hour, hour, merged).await?;
        }
    }
    Ok(())
}

/// Upserts a bucket, or deletes it when it holds nothing.
async fn put(
    store: &ScyllaStore,
    device: &DeviceKey,
    metric: &str,
    res: Resolution,
    start: TimestampMs,
    bucket: Option<Bucket>,
) -> Result<(), StorageError> {
    let r = &store.rollup;
    let (t, d, c, slot) = (
        &device.tenant,
        &device.device,
        res_code(res),
        slot_of(res, start),
    );
    let result = match bucket {
        Some(b) => {
            let count = i64::try_from(b.count).unwrap_or(i64::MAX);
            let values = (
                t,
                d,
                metric,
                c,
                slot,
                start,
                b.min,
                b.max,
                b.sum,
                count,
                b.last_ts_ms,
                b.last,
            );
            store
                .session
                .execute_unpaged(&r.upsert_bucket, values)
                .await
        }
        None => {
            let values = (t, d, metric, c, slot, start);
            store
                .session
                .execute_unpaged(&r.delete_bucket, values)
                .await
        }
    };
    result
        .map(drop)
        .map_err(|e| engine("writing a rollup bucket", e))
}

type BucketRow = (i64, f64, f64, f64, i64, i64, f64);

/// Buckets of [from, to) within the one slot holding `from`, at most `max`.
async fn read_slot(
    store: &ScyllaStore,
    device: &DeviceKey,
    metric: &str,
    res: Resolution,
    from: TimestampMs,
    to: TimestampMs,
    max: usize,
) -> Result<Vec<Bucket>, StorageError> {
    let slot = slot_of(res, from);
    let rows: Vec<BucketRow> = store
        .rows(
            &store.rollup.select_buckets,
            (
                &device.tenant,
                &device.device,
                metric,
                res_code(res),
                slot,
                from,
                to,
            ),
            max,
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(start, min, max, sum, count, last_ts, last)| Bucket {
            start_ms: start,
            min,
            max,
            sum,
            count: u64::try_from(count).unwrap_or(0),
            last_ts_ms: last_ts,
            last,
        })
        .collect())
}

/// A page of buckets: walks the slots of the range, clamped to the device's seen span so an
/// open range does not walk empty slots forever.
pub(super) async fn read(store: &ScyllaStore, q: &RollupQuery) -> Result<RollupPage, StorageError> {
    let Some((first, last)) = store.seen_span(&q.device).await? else {
        return Ok(RollupPage::default());
    };
    let from = q.from_ms.max(q.resolution.bucket_start(first));
    let to = q.to_ms.min(last.saturating_add(1));
    let mut page = RollupPage::default();
    let mut cursor = from;
    while cursor < to {
        let slot_end = (slot_of(q.resolution, cursor) + 1) * slot_width(q.resolution);
        let want = q.limit + 1 - page.buckets.len();
        let found = read_slot(
            store,
            &q.device,
            &q.metric,
            q.resolution,
            cursor,
            to.min(slot_end),
            want,
        )
        .await?;
        page.buckets.extend(found);
        if page.buckets.len() > q.limit {
            page.buckets.truncate(q.limit);
            page.more = true;
            break;
        }
        cursor = slot_end;
    }
    Ok(page)
}

/// Deletes raw points and buckets older than the policy keeps; returns the number of range
/// deletes issued (Scylla does not report how many rows a range delete covered).
pub(super) async fn sweep(
    store: &ScyllaStore,
    policy: &RetentionPolicy,
    now_ms: TimestampMs,
) -> Result<u64, StorageError> {
    let r = &store.rollup;
    let s = &store.statements;
    let tenants: Vec<(String,)> = store.rows(&r.select_tenants, (), usize::MAX).await?;
    let mut issued = 0u64;
    for (tenant,) in tenants {
        let devices: Vec<(String, Option<i64>, Option<i64>)> = store
            .rows(&s.select_devices, (&tenant, i32::MAX), usize::MAX)
            .await?;
        for (id, first, _) in devices {
            let device = DeviceKey::new(tenant.clone(), id);
            let Some(first) = first else { continue };
            let metrics: Vec<(String, i64, Vec<u8>)> = store
                .rows(
                    &s.select_latest,
                    (&device.tenant, &device.device),
                    usize::MAX,
                )
                .await?;
            for (metric, _, _) in metrics {
                issued += sweep_series(store, policy, now_ms, &device, &metric, first).await?;
            }
        }
    }
    Ok(issued)
}

async fn sweep_series(
    store: &ScyllaStore,
    policy: &RetentionPolicy,
    now_ms: TimestampMs,
    device: &DeviceKey,
    metric: &str,
    first_seen: TimestampMs,
) -> Result<u64, StorageError> {
    let r = &store.rollup;
    let (t, d) = (&device.tenant, &device.device);
    let mut issued = 0;
    let run = |statement: &'static str, result: Result<_, scylla::errors::ExecutionError>| {
        result.map(drop).map_err(|e| engine(statement, e))
    };
    if let Some(cutoff) = policy.cutoff(t, None, now_ms)
        && cutoff > first_seen
    {
        let days: Vec<(i64,)> = store
            .rows(
                &store.statements.select_days,
                (t, d, metric, i64::MIN, codec::day_of(cutoff)),
                usize::MAX,
            )
            .await?;
        for (day,) in days {
            let values = (t, d, day, metric, cutoff);
            run(
                "deleting old points",
                store
                    .session
                    .execute_unpaged(&r.delete_points_before, values)
                    .await,
            )?;
            if (day + 1) * DAY_MS <= cutoff {
                let values = (t, d, metric, day);
                run(
                    "deleting a day index entry",
                    store.session.execute_unpaged(&r.delete_day, values).await,
                )?;
            }
            issued += 1;
        }
    }
    for res in Resolution::ALL {
        if let Some(cutoff) = policy.cutoff(t, Some(res), now_ms)
            && cutoff > first_seen
        {
            let first_slot = slot_of(res, res.bucket_start(first_seen));
            for slot in first_slot..=slot_of(res, cutoff) {
                let values = (t, d, metric, res_code(res), slot, cutoff);
                run(
                    "deleting old buckets",
                    store
                        .session
                        .execute_unpaged(&r.delete_buckets_before, values)
                        .await,
                )?;
                issued += 1;
            }
        }
    }
    Ok(issued)
}
