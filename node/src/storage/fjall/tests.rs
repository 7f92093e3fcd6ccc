//! Tests of the fjall store: the conformance suite, plus what only a durable local store
//! promises (everything survives a close and a reopen: points, latest, devices, fences,
//! rollups), and the bounded sweep chunks.

use super::*;
use crate::model::Value;
use crate::storage::rollup::{Resolution, RollupQuery};
use crate::storage::{Retention, RetentionPolicy};
use tempfile::TempDir;

/// A fresh store in its own temporary directory, which lives as long as the returned guard.
async fn fresh() -> (Arc<FjallStore>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    (store, dir)
}

mod conformance {
    crate::telemetry_store_conformance!(super::fresh);
}

fn point(device: &str, metric: &str, ts_ms: TimestampMs, value: f64) -> Point {
    Point {
        device: DeviceKey::new("t", device),
        metric: metric.to_owned(),
        ts_ms,
        value: Value::Number(value),
    }
}

fn everything(device: &str) -> RangeQuery {
    RangeQuery {
        device: DeviceKey::new("t", device),
        metric: None,
        from_ms: TimestampMs::MIN,
        to_ms: TimestampMs::MAX,
        limit: 1_000_000,
        page_token: None,
    }
}

fn minutes(device: &str, metric: &str) -> RollupQuery {
    RollupQuery {
        device: DeviceKey::new("t", device),
        metric: metric.to_owned(),
        resolution: Resolution::Minute,
        from_ms: TimestampMs::MIN,
        to_ms: TimestampMs::MAX,
        limit: 1000,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reopen_after_close_keeps_points_latest_devices_fences_and_rollups() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    let fence = |epoch| Some(Fence { shard: 7, epoch });
    store
        .write_fenced(
            fence(3),
            vec![point("d", "m", 1, 1.0), point("d", "n", 2, 2.0)],
        )
        .await
        .expect("write");
    store
        .write(vec![point("d", "m", 3, 3.0)])
        .await
        .expect("write");
    store.close().await;
    assert!(matches!(
        store.write(vec![point("d", "m", 4, 4.0)]).await,
        Err(StorageError::Closed)
    ));
    drop(store);

    let store = FjallStore::open(dir.path(), EmbeddedOptions::default()).expect("reopen");
    let page = store.query(everything("d")).await.expect("query");
    assert_eq!(
        page.points,
        vec![
            point("d", "m", 1, 1.0),
            point("d", "m", 3, 3.0),
            point("d", "n", 2, 2.0)
        ]
    );
    let latest = store
        .latest(&DeviceKey::new("t", "d"))
        .await
        .expect("latest");
    assert_eq!(
        latest,
        vec![point("d", "m", 3, 3.0), point("d", "n", 2, 2.0)]
    );
    let info = store
        .device(&DeviceKey::new("t", "d"))
        .await
        .expect("device");
    assert_eq!(
        info.map(|i| (i.first_seen_ms, i.last_seen_ms)),
        Some((1, 3))
    );
    let buckets = store.rollups(minutes("d", "m")).await.expect("rollups");
    assert_eq!(
        buckets
            .buckets
            .iter()
            .map(|b| (b.start_ms, b.count, b.sum))
            .collect::<Vec<_>>(),
        vec![(0, 2, 4.0)]
    );
    // The fence survived: epoch 2 is stale, 3 is accepted.
    assert!(matches!(
        store
            .write_fenced(fence(2), vec![point("d", "m", 9, 9.0)])
            .await,
        Err(StorageError::StaleEpoch {
            shard: 7,
            epoch: 2,
            current: 3
        })
    ));
    store
        .write_fenced(fence(3), vec![point("d", "m", 9, 9.0)])
        .await
        .expect("same epoch");
    // Redelivering the stored points after the reopen counts nothing twice.
    store
        .write(vec![point("d", "m", 1, 1.0), point("d", "m", 3, 3.0)])
        .await
        .expect("redeliver");
    let buckets = store.rollups(minutes("d", "m")).await.expect("rollups");
    assert_eq!(
        buckets.buckets.first().map(|b| (b.count, b.sum)),
        Some((3, 13.0))
    );
    store.close().await;
}

/// A sweep larger than one chunk is done in several writer steps and removes everything old.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_in_chunks_removes_everything_old() {
    let (store, _dir) = fresh().await;
    let old = SWEEP_CHUNK as i64 + 500;
    let points: Vec<Point> = (0..old)
        .map(|ts| point("d", "m", ts, 1.0))
        .chain([point("d", "m", 10_000_000, 2.0)])
        .collect();
    store.write(points).await.expect("write");
    let policy = RetentionPolicy {
        default: Retention {
            raw: Some(std::time::Duration::from_millis(1)),
            minute: None,
            hour: None,
        },
        tenants: Default::default(),
    };
    let removed = store.sweep(&policy, 10_000_000).await.expect("sweep");
    assert_eq!(removed, old as u64);
    let page = store.query(everything("d")).await.expect("query");
    assert_eq!(page.points, vec![point("d", "m", 10_000_000, 2.0)]);
    // Rollups were not swept (kept forever by this policy).
    let buckets = store.rollups(minutes("d", "m")).await.expect("rollups");
    assert_eq!(
        buckets.buckets.iter().map(|b| b.count).sum::<u64>(),
        old as u64 + 1
    );
    assert_eq!(store.sweep(&policy, 10_000_000).await.expect("again"), 0);
}

/// One group commit that writes a point and then rewrites it, and rewrites a stored point:
/// the writer reads through what the batch itself wrote (fjall shows a batch only once
/// committed), so the buckets are as if only the final values had been written.
#[tokio::test(flavor = "multi_thread")]
async fn rewrites_inside_one_batch_read_the_batch_itself() {
    let (store, _dir) = fresh().await;
    store
        .write(vec![point("d", "m", 1_000, 5.0)])
        .await
        .expect("first");
    store
        .write(vec![
            point("d", "m", 2_000, 1.0),
            point("d", "m", 2_000, 7.0),
            point("d", "m", 1_000, 3.0),
            point("d", "m", 1_000, 3.0),
        ])
        .await
        .expect("rewrites");
    let page = store.query(everything("d")).await.expect("query");
    assert_eq!(
        page.points,
        vec![point("d", "m", 1_000, 3.0), point("d", "m", 2_000, 7.0)]
    );
    let buckets = store.rollups(minutes("d", "m")).await.expect("rollups");
    assert_eq!(
        buckets
            .buckets
            .iter()
            .map(|b| (b.count, b.sum, b.min, b.max, b.last))
            .collect::<Vec<_>>(),
        vec![(2, 10.0, 3.0, 7.0, 7.0)]
    );
    let latest = store
        .latest(&DeviceKey::new("t", "d"))
        .await
        .expect("latest");
    assert_eq!(latest, vec![point("d", "m", 2_000, 7.0)]);
}
