//! Conformance checks of epoch fencing, rollups, aggregates and retention (issue 4): part of
//! the one suite, listed in [`crate::telemetry_store_conformance!`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{T0, key, point, range, read_all, write};
use crate::model::{DeviceKey, Point, TimestampMs, Value};
use crate::storage::aggregate::{self, AggregateQuery, Function, StoreSource};
use crate::storage::rollup::{Bucket, Resolution, RollupQuery};
use crate::storage::{Fence, Retention, RetentionPolicy, StorageError, TelemetryStore};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// An hour-aligned base time near T0.
const H0: TimestampMs = T0 - T0 % HOUR;

/// Fenced writes: an older epoch than the store has seen for the shard is refused with
/// `StaleEpoch` and stores nothing; equal and newer epochs pass; shards are independent;
/// unfenced writes are not checked.
pub async fn epoch_fencing<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "fenced");
    let fenced = |shard, epoch| Some(Fence { shard, epoch });
    let put = |ts: i64| vec![point(&dev, "m", ts, ts as f64)];
    store
        .write_fenced(fenced(7, 5), put(T0))
        .await
        .expect("epoch 5 on a fresh shard");
    store
        .write_fenced(fenced(7, 5), put(T0 + 1))
        .await
        .expect("same epoch again");
    match store.write_fenced(fenced(7, 4), put(T0 + 2)).await {
        Err(StorageError::StaleEpoch {
            shard: 7,
            epoch: 4,
            current: 5,
        }) => {}
        other => panic!("epoch 4 after 5 must be StaleEpoch {{ 7, 4, 5 }}, got {other:?}"),
    }
    store
        .write_fenced(fenced(7, 9), put(T0 + 3))
        .await
        .expect("newer epoch");
    assert!(
        matches!(
            store.write_fenced(fenced(7, 5), put(T0 + 4)).await,
            Err(StorageError::StaleEpoch { current: 9, .. })
        ),
        "the newer epoch is remembered"
    );
    store
        .write_fenced(fenced(8, 1), put(T0 + 5))
        .await
        .expect("another shard is independent");
    store.write(put(T0 + 6)).await.expect("unfenced write");
    let stored: Vec<i64> = read_all(&*store, range(&dev, None, T0, T0 + 10))
        .await
        .iter()
        .map(|p| p.ts_ms)
        .collect();
    assert_eq!(
        stored,
        [T0, T0 + 1, T0 + 3, T0 + 5, T0 + 6],
        "refused writes stored nothing"
    );
}

/// Every bucket of `points` at `res`, the slow way.
fn expected(points: &[Point], res: Resolution) -> Vec<Bucket> {
    let mut by: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    // The last write of an identity wins, as in the store.
    let mut unique: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for p in points {
        match p.value.as_f64() {
            Some(v) => unique.insert((p.metric.clone(), p.ts_ms), v),
            None => unique.remove(&(p.metric.clone(), p.ts_ms)),
        };
    }
    for ((_, ts), v) in unique {
        by.entry(res.bucket_start(ts)).or_default().push((ts, v));
    }
    by.into_iter()
        .filter_map(|(start, vs)| Bucket::of_all(start, vs))
        .collect()
}

async fn buckets<S: TelemetryStore>(store: &S, dev: &DeviceKey, res: Resolution) -> Vec<Bucket> {
    let q = RollupQuery {
        device: dev.clone(),
        metric: "m".into(),
        resolution: res,
        from_ms: H0 - 10 * HOUR,
        to_ms: H0 + 10 * HOUR,
        limit: 100_000,
    };
    match store.rollups(q).await {
        Ok(page) => {
            assert!(!page.more, "all buckets fit one page");
            page.buckets
        }
        Err(error) => panic!("rollups: {error}"),
    }
}

/// Rollups count each (device, metric, ts) once: redelivered points (same batch, later
/// batches, concurrent writers) change nothing; a rewrite with another value leaves the
/// buckets as if only the new value had been written; text values are not rolled up.
pub async fn rollups_count_each_point_once<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "rolled");
    // 150 minutes around an hour boundary, one point every 20 s.
    let mut points: Vec<Point> = (0..450)
        .map(|i| {
            point(
                &dev,
                "m",
                H0 - HOUR / 2 + i * 20_000,
                ((i * 13) % 17) as f64,
            )
        })
        .collect();
    let mut doubled = points[..10].to_vec();
    doubled.extend_from_slice(&points[..10]);
    write(&*store, doubled, "a batch holding each point twice").await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4 {
        let (store, points) = (Arc::clone(&store), points.clone());
        tasks.spawn(async move {
            for chunk in points.chunks(30 + task) {
                store
                    .write(chunk.to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task").expect("concurrent redelivery");
    }
    for res in Resolution::ALL {
        assert_eq!(
            buckets(&*store, &dev, res).await,
            expected(&points, res),
            "{res:?} buckets after redeliveries"
        );
    }
    // Rewrites with other values, and a text point that must not count.
    let rewrites = vec![
        point(&dev, "m", points[3].ts_ms, 1000.0),
        point(&dev, "m", points[200].ts_ms, -1000.0),
    ];
    write(&*store, rewrites.clone(), "rewrites").await;
    write(&*store, rewrites.clone(), "rewrites again").await;
    let text = Point {
        value: Value::Text("x".into()),
        ..point(&dev, "m", H0 + 7, 0.0)
    };
    write(&*store, vec![text.clone()], "a text point").await;
    points.extend(rewrites);
    points.push(text);
    for res in Resolution::ALL {
        assert_eq!(
            buckets(&*store, &dev, res).await,
            expected(&points, res),
            "{res:?} buckets after rewrites"
        );
    }
}

/// Rollup reads: limits page with `more`, empty and reversed ranges are empty, bounds are
/// [from, to) on bucket starts.
pub async fn rollup_range_edges<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "edges");
    let points: Vec<Point> = (0..5)
        .map(|i| point(&dev, "m", H0 + i * MIN + 1, 1.0))
        .collect();
    write(&*store, points, "five minutes").await;
    let q = |from_ms, to_ms, limit| RollupQuery {
        device: dev.clone(),
        metric: "m".into(),
        resolution: Resolution::Minute,
        from_ms,
        to_ms,
        limit,
    };
    let starts =
        |p: &crate::storage::RollupPage| p.buckets.iter().map(|b| b.start_ms).collect::<Vec<_>>();
    let all = store.rollups(q(H0, H0 + HOUR, 10)).await.expect("all");
    assert_eq!(
        starts(&all),
        (0..5).map(|i| H0 + i * MIN).collect::<Vec<_>>()
    );
    assert!(!all.more);
    let two = store.rollups(q(H0 + MIN, H0 + HOUR, 2)).await.expect("two");
    assert_eq!(
        (starts(&two), two.more),
        (vec![H0 + MIN, H0 + 2 * MIN], true)
    );
    let exclusive = store
        .rollups(q(H0, H0 + 2 * MIN, 10))
        .await
        .expect("to is exclusive");
    assert_eq!(starts(&exclusive), [H0, H0 + MIN]);
    for (from, to) in [(H0, H0), (H0 + HOUR, H0)] {
        let page = store.rollups(q(from, to, 10)).await.expect("empty");
        assert!(
            page.buckets.is_empty() && !page.more,
            "[{from}, {to}) is empty"
        );
    }
    assert!(matches!(
        store.rollups(q(H0, H0 + HOUR, 0)).await,
        Err(StorageError::Invalid { field: "limit", .. })
    ));
}

/// An aggregate over the store's rollups equals the same aggregate over its raw points.
pub async fn aggregate_rollups_match_raw<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "agg");
    let points: Vec<Point> = (0..(2 * HOUR / 10_000))
        .map(|i| point(&dev, "m", H0 + i * 10_000, (i % 23) as f64 * 0.5))
        .collect();
    write(&*store, points, "two hours at 0.1 Hz").await;
    for f in [
        Function::Avg,
        Function::Min,
        Function::Max,
        Function::Count,
        Function::Last,
    ] {
        let q = |interval_ms, from_ms| AggregateQuery {
            device: dev.clone(),
            metric: "m".into(),
            function: f,
            interval_ms,
            from_ms,
            to_ms: H0 + 2 * HOUR,
            limit: 1000,
            page_token: None,
        };
        let source = StoreSource(store.as_ref());
        // 30 min from rollups; the same intervals from raw points by starting 1 ms early
        // (no point lies in that millisecond).
        let rolled = aggregate::run(&source, &q(30 * MIN, H0))
            .await
            .expect("rollups");
        let raw = aggregate::run(&source, &q(30 * MIN, H0 - 1))
            .await
            .expect("raw");
        assert_eq!(rolled.source, Some(Resolution::Minute));
        assert_eq!(raw.source, None);
        let rows = |p: &aggregate::AggregatePage| {
            p.rows
                .iter()
                .map(|r| (r.start_ms, r.value, r.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&rolled), rows(&raw), "{f:?}");
        assert_eq!(rolled.rows.len(), 4, "{f:?}: four half hours");
    }
}

/// A sweep deletes raw points and buckets older than each tier's retention, per tenant, and
/// keeps the rest.
pub async fn retention_sweep<S: TelemetryStore>(store: Arc<S>) {
    let short = key("short", "d");
    let long = key("long", "d");
    let now = H0 + 10 * 24 * HOUR;
    let day = 24 * HOUR;
    // One point per device at 9, 3 and 0.5 days ago.
    for dev in [&short, &long] {
        let points = vec![
            point(dev, "m", now - 9 * day, 1.0),
            point(dev, "m", now - 3 * day, 2.0),
            point(dev, "m", now - day / 2, 3.0),
        ];
        write(&*store, points, "three ages").await;
    }
    let policy = RetentionPolicy {
        default: Retention::default(),
        tenants: BTreeMap::from([(
            "short".to_owned(),
            Retention {
                raw: Some(Duration::from_secs(86_400)),
                minute: Some(Duration::from_secs(5 * 86_400)),
                hour: None,
            },
        )]),
    };
    store.sweep(&policy, now).await.expect("sweep");
    let ages = |points: Vec<Point>| {
        points
            .iter()
            .map(|p| (now - p.ts_ms) / (day / 2))
            .collect::<Vec<_>>()
    };
    let all = |dev: &DeviceKey| range(dev, None, TimestampMs::MIN, TimestampMs::MAX);
    assert_eq!(
        ages(read_all(&*store, all(&short)).await),
        [1],
        "short: raw kept 1 day"
    );
    assert_eq!(
        ages(read_all(&*store, all(&long)).await),
        [18, 6, 1],
        "long: kept"
    );
    let rolled = |dev: &DeviceKey, res| {
        let store = Arc::clone(&store);
        let q = RollupQuery {
            device: dev.clone(),
            metric: "m".into(),
            resolution: res,
            from_ms: 0,
            to_ms: TimestampMs::MAX,
            limit: 100,
        };
        async move { store.rollups(q).await.expect("rollups").buckets.len() }
    };
    assert_eq!(
        rolled(&short, Resolution::Minute).await,
        2,
        "short: minutes kept 5 days"
    );
    assert_eq!(
        rolled(&short, Resolution::Hour).await,
        3,
        "short: hours kept"
    );
    assert_eq!(
        rolled(&long, Resolution::Minute).await,
        3,
        "long: minutes kept"
    );
    assert!(
        !store.latest(&short).await.expect("latest").is_empty(),
        "latest kept"
    );
}
