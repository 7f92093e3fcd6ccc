//! Reads of the fjall store, each over one snapshot (so a page never mixes two commits).
//!
//! The same answers as the redb store's reads, key for key: ranges in (metric, ts) order with
//! the shared page token, latest values, the device index, rollup pages. Blocking; the store
//! runs them on tokio's blocking pool. Never writes.

use std::ops::Bound;

use fjall::{Readable, Snapshot};

use super::{Parts, engine, keys};
use crate::model::{DeviceInfo, DeviceKey, Point};
use crate::storage::codec::{self, Cursor};
use crate::storage::embedded::{TOKEN_PREFIX, page_token_after};
use crate::storage::rollup::{Bucket, RollupPage, RollupQuery};
use crate::storage::{Page, RangeQuery, StorageError};

/// Decodes a page token of the embedded stores (redb's format, shared).
pub(super) fn decode_token(token: &str) -> Result<Cursor, StorageError> {
    codec::decode_token(TOKEN_PREFIX, token)
}

/// Every entry of `keyspace` in `[from, to)`, as owned (key, value) pairs, lazily.
fn entries<'a>(
    snap: &'a Snapshot,
    keyspace: &'a fjall::Keyspace,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
) -> impl Iterator<Item = Result<(fjall::Slice, fjall::Slice), StorageError>> + 'a {
    snap.range(keyspace, (from, to))
        .map(|guard| guard.into_inner().map_err(engine))
}

/// One page of a range read, in (metric, ts) order, resuming after `after` if given.
/// The caller has ruled out empty ranges and a zero limit.
pub(super) fn range(
    parts: &Parts,
    snap: &Snapshot,
    query: &RangeQuery,
    after: Option<Cursor>,
) -> Result<Page, StorageError> {
    let tenant = query.device.tenant.as_str();
    let device = query.device.device.as_str();
    let metrics = match &query.metric {
        Some(metric) => vec![metric.clone()],
        None => metrics_of(parts, snap, tenant, device, after.as_ref())?,
    };
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
        let from = keys::point(tenant, device, &metric, from_ms);
        let to = keys::point(tenant, device, &metric, query.to_ms);
        for entry in entries(
            snap,
            &parts.points,
            Bound::Included(from),
            Bound::Excluded(to),
        ) {
            let (key, value) = entry?;
            points.push(Point {
                device: query.device.clone(),
                metric: metric.clone(),
                ts_ms: keys::ts_suffix(&key)?,
                value: codec::decode_value(&value)?,
            });
            if points.len() >= wanted {
                break 'metrics;
            }
        }
    }
    let next = if points.len() > query.limit {
        points.truncate(query.limit);
        points
            .last()
            .map(|last| page_token_after(&last.metric, last.ts_ms))
    } else {
        None
    };
    Ok(Page { points, next })
}

/// The device's metrics in order, from the cursor's metric on (earlier ones are done).
fn metrics_of(
    parts: &Parts,
    snap: &Snapshot,
    tenant: &str,
    device: &str,
    after: Option<&Cursor>,
) -> Result<Vec<String>, StorageError> {
    let prefix = keys::device(tenant, device);
    let first = keys::series(tenant, device, after.map_or("", |c| c.metric.as_str()));
    let mut metrics = Vec::new();
    for entry in entries(
        snap,
        &parts.latest,
        Bound::Included(first),
        Bound::Unbounded,
    ) {
        let (key, _) = entry?;
        if !key.starts_with(&prefix) {
            break;
        }
        let ([_, _, metric], _) = keys::strings::<3>(&key)?;
        metrics.push(metric);
    }
    Ok(metrics)
}

/// The newest point of each metric of the device, ordered by metric.
pub(super) fn latest(
    parts: &Parts,
    snap: &Snapshot,
    device: &DeviceKey,
) -> Result<Vec<Point>, StorageError> {
    let prefix = keys::device(&device.tenant, &device.device);
    let mut points = Vec::new();
    for guard in snap.prefix(&parts.latest, &prefix) {
        let (key, value) = guard.into_inner().map_err(engine)?;
        let ([_, _, metric], _) = keys::strings::<3>(&key)?;
        let (ts_ms, bytes) = keys::split_latest(&value)?;
        points.push(Point {
            device: device.clone(),
            metric,
            ts_ms,
            value: codec::decode_value(bytes)?,
        });
    }
    Ok(points)
}

/// One device, if it has any stored point.
pub(super) fn device(
    parts: &Parts,
    snap: &Snapshot,
    device: DeviceKey,
) -> Result<Option<DeviceInfo>, StorageError> {
    let key = keys::device(&device.tenant, &device.device);
    let Some(value) = snap.get(&parts.devices, key).map_err(engine)? else {
        return Ok(None);
    };
    let (first_seen_ms, last_seen_ms) = keys::split_seen(&value)?;
    Ok(Some(DeviceInfo {
        key: device,
        first_seen_ms,
        last_seen_ms,
    }))
}

/// Devices of a tenant ordered by id, starting after `after`, at most `limit`.
pub(super) fn devices(
    parts: &Parts,
    snap: &Snapshot,
    tenant: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<DeviceInfo>, StorageError> {
    let mut prefix = Vec::new();
    keys::push_str(&mut prefix, tenant);
    let start = match after {
        Some(after) => Bound::Excluded(keys::device(tenant, after)),
        None => Bound::Included(prefix.clone()),
    };
    let mut found = Vec::new();
    for entry in entries(snap, &parts.devices, start, Bound::Unbounded) {
        if found.len() >= limit {
            break;
        }
        let (key, value) = entry?;
        if !key.starts_with(&prefix) {
            break;
        }
        let ([key_tenant, id], _) = keys::strings::<2>(&key)?;
        let (first_seen_ms, last_seen_ms) = keys::split_seen(&value)?;
        found.push(DeviceInfo {
            key: DeviceKey::new(key_tenant, id),
            first_seen_ms,
            last_seen_ms,
        });
    }
    Ok(found)
}

/// One page of buckets for a query (the caller checked `limit >= 1`).
pub(super) fn rollups(
    parts: &Parts,
    snap: &Snapshot,
    q: &RollupQuery,
) -> Result<RollupPage, StorageError> {
    if q.to_ms <= q.from_ms {
        return Ok(RollupPage::default());
    }
    let (t, d, m, c) = (
        q.device.tenant.as_str(),
        q.device.device.as_str(),
        q.metric.as_str(),
        q.resolution.code(),
    );
    let mut page = RollupPage::default();
    for entry in entries(
        snap,
        &parts.rollups,
        Bound::Included(keys::rollup(t, d, m, c, q.from_ms)),
        Bound::Excluded(keys::rollup(t, d, m, c, q.to_ms)),
    ) {
        if page.buckets.len() == q.limit {
            page.more = true;
            break;
        }
        let (key, value) = entry?;
        page.buckets
            .push(Bucket::decode(keys::ts_suffix(&key)?, &value)?);
    }
    Ok(page)
}
