//! The conformance suite of [`TelemetryStore`]: what every backend must do, checked the same
//! way for all of them (embedded and Scylla). Fencing, rollups, aggregates and retention
//! are in `extra.rs`.
//!
//! Each check is a public async function that takes a fresh, empty store and panics with a
//! message naming the broken rule. [`crate::telemetry_store_conformance!`] turns the whole
//! list into one `#[tokio::test]` per check for a backend.
//!
//! Checked here: what the trait documents, plus one rule it leaves open (a zero `limit` is
//! `Invalid`). Not here: backend-specific promises (survival of a reopen, crash recovery),
//! which are tested next to the backend; and timing, which is never asserted.

mod extra;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use self::extra::{
    aggregate_rollups_match_raw, epoch_fencing, retention_sweep, rollup_range_edges,
    rollups_count_each_point_once,
};

use crate::model::{DeviceInfo, DeviceKey, Point, TimestampMs, Value};
use crate::storage::{Page, RangeQuery, StorageError, TelemetryStore};

/// Generates one `#[tokio::test(flavor = "multi_thread")]` per conformance check.
///
/// `$make` is a callable returning a future of `(Arc<S>, guard)`: a fresh, empty store and
/// anything that must outlive it (a temporary directory, a keyspace dropper). Invoke it
/// inside a test module:
/// `mod conformance { crate::telemetry_store_conformance!(super::fresh); }`.
///
/// For a backend that needs an external server, `optional: $make` takes a factory returning
/// a future of `Option<(Arc<S>, guard)>`: `None` means "no server configured", and the check
/// then returns without asserting (the factory says so on stdout).
#[macro_export]
macro_rules! telemetry_store_conformance {
    (optional: $make:expr) => {
        $crate::telemetry_store_conformance!(@list optional $make);
    };
    ($make:expr) => {
        $crate::telemetry_store_conformance!(@list required $make);
    };
    (@list $mode:ident $make:expr) => {
        $crate::telemetry_store_conformance!(@checks $mode $make;
            idempotent_writes,
            ordered_by_metric_then_ts,
            range_edges,
            metric_filter,
            paging_matches_one_read,
            bad_page_token_is_invalid,
            zero_limit_is_invalid,
            latest_per_metric,
            device_index,
            large_batch,
            concurrent_writers,
            every_value_kind_round_trips,
            closed_store_refuses_writes,
            epoch_fencing,
            rollups_count_each_point_once,
            rollup_range_edges,
            aggregate_rollups_match_raw,
            retention_sweep,
        );
    };
    (@checks required $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread")]
            async fn $check() {
                let (store, _guard) = ($make)().await;
                $crate::storage::conformance::$check(store).await;
            }
        )+
    };
    (@checks optional $make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread")]
            async fn $check() {
                let Some((store, _guard)) = ($make)().await else {
                    return;
                };
                $crate::storage::conformance::$check(store).await;
            }
        )+
    };
}

/// A base time so points look like real ones (2024-11-21).
const T0: TimestampMs = 1_732_200_000_000;

fn key(tenant: &str, device: &str) -> DeviceKey {
    DeviceKey::new(tenant, device)
}

fn point(device: &DeviceKey, metric: &str, ts_ms: TimestampMs, value: f64) -> Point {
    Point {
        device: device.clone(),
        metric: metric.to_owned(),
        ts_ms,
        value: Value::Number(value),
    }
}

fn range(
    device: &DeviceKey,
    metric: Option<&str>,
    from_ms: TimestampMs,
    to_ms: TimestampMs,
) -> RangeQuery {
    RangeQuery {
        device: device.clone(),
        metric: metric.map(str::to_owned),
        from_ms,
        to_ms,
        limit: 1_000_000,
        page_token: None,
    }
}

async fn write<S: TelemetryStore>(store: &S, points: Vec<Point>, what: &str) {
    if let Err(error) = store.write(points).await {
        panic!("{what}: write failed: {error}");
    }
}

async fn page<S: TelemetryStore>(store: &S, query: RangeQuery) -> Page {
    match store.query(query.clone()).await {
        Ok(page) => page,
        Err(error) => panic!("query {query:?} failed: {error}"),
    }
}

/// Every point of the range in one read (which must not need a second page).
async fn read_all<S: TelemetryStore>(store: &S, query: RangeQuery) -> Vec<Point> {
    let page = page(store, query.clone()).await;
    assert_eq!(
        page.next, None,
        "a read of at most {} points asked for another page",
        query.limit
    );
    page.points
}

/// Every point of the range, walking pages of `size`.
async fn read_paged<S: TelemetryStore>(
    store: &S,
    mut query: RangeQuery,
    size: usize,
) -> Vec<Point> {
    query.limit = size;
    let mut points = Vec::new();
    loop {
        let page = page(store, query.clone()).await;
        assert!(
            page.points.len() <= size,
            "a page of limit {size} held {} points",
            page.points.len()
        );
        let got = page.points.len();
        points.extend(page.points);
        match page.next {
            Some(token) => {
                assert!(got > 0, "an empty page came with a next token");
                let repeated = query.page_token.as_ref() == Some(&token);
                assert!(
                    !repeated,
                    "the same next token twice: paging makes no progress"
                );
                query.page_token = Some(token);
            }
            None => return points,
        }
    }
}

fn stamps(points: &[Point]) -> Vec<(String, TimestampMs)> {
    points.iter().map(|p| (p.metric.clone(), p.ts_ms)).collect()
}

/// Same (device, metric, ts) twice is one point, and a later write's value replaces the
/// earlier one; an identical duplicate inside one batch is stored once.
pub async fn idempotent_writes<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    write(&*store, vec![point(&dev, "temp", T0, 1.0)], "first write").await;
    write(&*store, vec![point(&dev, "temp", T0, 2.0)], "rewrite").await;
    let dup = point(&dev, "temp", T0 + 1, 5.0);
    write(
        &*store,
        vec![dup.clone(), dup.clone(), point(&dev, "temp", T0 + 2, 6.0)],
        "batch",
    )
    .await;
    write(&*store, vec![dup.clone()], "redelivery").await;

    let points = read_all(&*store, range(&dev, None, T0 - 10, T0 + 10)).await;
    let expected = vec![
        point(&dev, "temp", T0, 2.0),
        dup,
        point(&dev, "temp", T0 + 2, 6.0),
    ];
    assert_eq!(
        points, expected,
        "rewritten identities must be stored once, last value winning"
    );
}

/// Range reads come back ordered by (metric, ts) whatever the write order.
pub async fn ordered_by_metric_then_ts<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    let written = [
        point(&dev, "b", T0 + 2, 1.0),
        point(&dev, "a", T0 + 3, 2.0),
        point(&dev, "b", T0 - 5, 3.0),
        point(&dev, "a", T0 - 7, 4.0),
        point(&dev, "c", T0, 5.0),
        point(&dev, "a", T0, 6.0),
    ];
    write(&*store, written[..3].to_vec(), "first half").await;
    write(&*store, written[3..].to_vec(), "second half").await;
    let points = read_all(&*store, range(&dev, None, T0 - 100, T0 + 100)).await;
    let expected = [("a", -7), ("a", 0), ("a", 3), ("b", -5), ("b", 2), ("c", 0)]
        .map(|(m, dt)| (m.to_owned(), T0 + dt))
        .to_vec();
    assert_eq!(
        stamps(&points),
        expected,
        "points must be ordered by (metric, ts)"
    );
    // Negative timestamps sort numerically too.
    let old = key("t1", "dev-old");
    write(
        &*store,
        vec![point(&old, "x", 5, 0.0), point(&old, "x", -5, 0.0)],
        "negative ts",
    )
    .await;
    let points = read_all(&*store, range(&old, None, -10, 10)).await;
    assert_eq!(
        stamps(&points),
        vec![("x".to_owned(), -5), ("x".to_owned(), 5)]
    );
}

/// `from` is inclusive, `to` exclusive; empty and reversed ranges are empty pages.
pub async fn range_edges<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    let points: Vec<Point> = (0..10)
        .map(|i| point(&dev, "m", T0 + i * 10, i as f64))
        .collect();
    write(&*store, points, "points").await;
    let all = (0..10).map(|i| i * 10).collect::<Vec<i64>>();
    let cases = [
        ("[from, to)", None, T0 + 20, T0 + 50, vec![20, 30, 40]),
        ("from between", Some("m"), T0 + 21, T0 + 50, vec![30, 40]),
        ("one millisecond", None, T0 + 40, T0 + 41, vec![40]),
        ("from == to", None, T0 + 40, T0 + 40, vec![]),
        ("reversed", None, T0 + 50, T0 + 20, vec![]),
        ("after the data", None, T0 + 91, T0 + 500, vec![]),
        ("widest", None, i64::MIN, i64::MAX, all),
    ];
    for (what, metric, from, to, expected) in cases {
        let got: Vec<i64> = read_all(&*store, range(&dev, metric, from, to))
            .await
            .iter()
            .map(|p| p.ts_ms - T0)
            .collect();
        assert_eq!(got, expected, "range {what}");
    }
    let reversed = page(&*store, range(&dev, None, T0 + 50, T0 + 20)).await;
    assert_eq!(
        reversed,
        Page::default(),
        "a reversed range is an empty page without a token"
    );
    let unknown = page(&*store, range(&key("t1", "nobody"), None, T0, T0 + 100)).await;
    assert_eq!(
        unknown,
        Page::default(),
        "an unknown device has an empty page"
    );
}

/// A metric filter returns that metric only (and nothing for an unknown metric);
/// no filter returns every metric of that device and no other device's.
pub async fn metric_filter<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    let other = key("t1", "dev-10");
    let mut points = Vec::new();
    for metric in ["hum", "temp", "temp2", "te"] {
        for i in 0..3 {
            points.push(point(&dev, metric, T0 + i, 1.0));
            points.push(point(&other, metric, T0 + i, 2.0));
        }
    }
    write(&*store, points, "points").await;
    let temp = read_all(&*store, range(&dev, Some("temp"), T0, T0 + 10)).await;
    assert_eq!(temp.len(), 3, "filter on temp");
    assert!(
        temp.iter().all(|p| p.metric == "temp" && p.device == dev),
        "filter leaked: {temp:?}"
    );
    assert!(
        read_all(&*store, range(&dev, Some("tem"), T0, T0 + 10))
            .await
            .is_empty(),
        "prefix matched"
    );
    let all = read_all(&*store, range(&dev, None, T0, T0 + 10)).await;
    assert_eq!(all.len(), 12, "no filter: every metric of the device");
    assert!(
        all.iter().all(|p| p.device == dev),
        "another device leaked into the read"
    );
}

/// Walking pages of any size gives exactly the one-read result; tokens stay valid when new
/// points land elsewhere.
pub async fn paging_matches_one_read<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    let mut points = Vec::new();
    for (m, metric) in ["a", "b.x", "c", "ü"].iter().enumerate() {
        for i in 0..(12 + m as i64 * 3) {
            points.push(point(&dev, metric, T0 + i * 3, i as f64));
        }
    }
    write(&*store, points, "points").await;
    for metric in [None, Some("b.x")] {
        let query = range(&dev, metric, T0 + 1, T0 + 60);
        let whole = read_all(&*store, query.clone()).await;
        assert!(whole.len() > 10, "the paging fixture is too small");
        for size in [1, 3, 1000] {
            let paged = read_paged(&*store, query.clone(), size).await;
            assert_eq!(
                stamps(&paged),
                stamps(&whole),
                "pages of {size} (metric {metric:?})"
            );
        }
        // A page exactly as large as the result has no next token.
        let mut exact = query.clone();
        exact.limit = whole.len();
        assert_eq!(
            page(&*store, exact).await.next,
            None,
            "exact-size page must not have a token"
        );
    }
    // A token from a page keeps working after more points are written.
    let mut query = range(&dev, Some("a"), T0, T0 + 1000);
    let before = read_all(&*store, query.clone()).await.len();
    query.limit = 2;
    let first = page(&*store, query.clone()).await;
    write(&*store, vec![point(&dev, "a", T0 + 500, 0.0)], "late point").await;
    query.page_token = first.next;
    let rest = read_paged(&*store, query, 2).await;
    assert_eq!(
        first.points.len() + rest.len(),
        before + 1,
        "a token must survive new writes"
    );
}

/// A token that this store did not make is `Invalid { field: "page_token" }`.
pub async fn bad_page_token_is_invalid<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    write(&*store, vec![point(&dev, "m", T0, 1.0)], "point").await;
    for token in ["", "not a token", "%%%", "p1.x.zz"] {
        let mut query = range(&dev, None, T0, T0 + 10);
        query.page_token = Some(token.to_owned());
        match store.query(query).await {
            Err(StorageError::Invalid {
                field: "page_token",
                ..
            }) => {}
            other => panic!("page token {token:?} must be Invalid(page_token), got {other:?}"),
        }
    }
}

/// A zero limit is a caller bug, reported as `Invalid { field: "limit" }` rather than an
/// endless walk of empty pages.
pub async fn zero_limit_is_invalid<S: TelemetryStore>(store: Arc<S>) {
    let mut query = range(&key("t1", "dev-1"), None, T0, T0 + 10);
    query.limit = 0;
    match store.query(query).await {
        Err(StorageError::Invalid { field: "limit", .. }) => {}
        other => panic!("limit 0 must be Invalid(limit), got {other:?}"),
    }
}

/// `latest` is the point with the greatest ts of each metric, ordered by metric; a late older
/// point does not replace it; a rewrite of the newest point does.
pub async fn latest_per_metric<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    assert_eq!(
        latest(&*store, &dev).await,
        [],
        "latest of an unknown device"
    );
    let points = vec![
        point(&dev, "temp", T0, 1.0),
        point(&dev, "temp", T0 + 10, 2.0),
        point(&dev, "hum", T0 + 5, 3.0),
        point(&key("t1", "dev-2"), "temp", T0 + 99, 9.0),
    ];
    write(&*store, points, "points").await;
    write(&*store, vec![point(&dev, "temp", T0 + 3, 4.0)], "late").await;
    let expected = [
        point(&dev, "hum", T0 + 5, 3.0),
        point(&dev, "temp", T0 + 10, 2.0),
    ];
    assert_eq!(
        latest(&*store, &dev).await,
        expected,
        "newest per metric, by metric"
    );
    let newer = vec![
        point(&dev, "temp", T0 + 10, 7.0),
        point(&dev, "hum", T0 + 6, 8.0),
    ];
    write(&*store, newer.clone(), "newer").await;
    let expected = [newer[1].clone(), newer[0].clone()];
    assert_eq!(
        latest(&*store, &dev).await,
        expected,
        "newer point and rewrite of newest"
    );
}

async fn latest<S: TelemetryStore>(store: &S, device: &DeviceKey) -> Vec<Point> {
    match store.latest(device).await {
        Ok(points) => points,
        Err(error) => panic!("latest({device}) failed: {error}"),
    }
}

async fn device_ids<S: TelemetryStore>(
    store: &S,
    after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    match store.devices("t1", after, limit).await {
        Ok(found) => found.into_iter().map(|d| d.key.device).collect(),
        Err(error) => panic!("devices(t1, {after:?}, {limit}) failed: {error}"),
    }
}

async fn device_info<S: TelemetryStore>(store: &S, device: &DeviceKey) -> Option<DeviceInfo> {
    match store.device(device).await {
        Ok(info) => info,
        Err(error) => panic!("device({device}) failed: {error}"),
    }
}

/// The device index: first/last seen are the min/max point ts; `devices` lists one tenant in
/// id order and pages with `after`.
pub async fn device_index<S: TelemetryStore>(store: Arc<S>) {
    let store = &*store;
    assert_eq!(
        device_info(store, &key("t1", "a")).await,
        None,
        "an unknown device"
    );
    for (i, id) in ["b", "a", "c-2", "c", "d", "a0"].into_iter().enumerate() {
        let (dev, ts) = (key("t1", id), T0 + i as i64);
        write(
            store,
            vec![point(&dev, "m", ts, 0.0), point(&dev, "n", ts + 100, 0.0)],
            id,
        )
        .await;
    }
    let others = vec![
        point(&key("t2", "a"), "m", 1, 0.0),
        point(&key("t0", "z"), "m", 1, 0.0),
    ];
    write(store, others, "other tenants").await;
    write(
        store,
        vec![point(&key("t1", "a"), "m", T0 - 50, 0.0)],
        "late old point",
    )
    .await;
    write(
        store,
        vec![point(&key("t1", "a"), "m", T0 + 40, 0.0)],
        "a point in between",
    )
    .await;

    let a = DeviceInfo {
        key: key("t1", "a"),
        first_seen_ms: T0 - 50,
        last_seen_ms: T0 + 101,
    };
    let got = device_info(store, &key("t1", "a")).await;
    assert_eq!(got, Some(a.clone()), "first/last seen are min/max point ts");
    let other = device_info(store, &key("t2", "a")).await;
    assert_eq!(
        other.map(|d| d.last_seen_ms),
        Some(1),
        "tenants are separate"
    );

    let all = ["a", "a0", "b", "c", "c-2", "d"];
    assert_eq!(
        device_ids(store, None, 100).await,
        all,
        "t1 only, in id order"
    );
    assert_eq!(device_ids(store, None, 2).await, ["a", "a0"], "limit");
    assert_eq!(
        device_ids(store, Some("a0"), 2).await,
        ["b", "c"],
        "after is exclusive"
    );
    assert_eq!(
        device_ids(store, Some("b0"), 9).await,
        ["c", "c-2", "d"],
        "after a gap"
    );
    assert_eq!(
        device_ids(store, Some("d"), 9).await,
        [""; 0],
        "after the last device"
    );
    assert_eq!(device_ids(store, None, 0).await, [""; 0], "limit 0");
    let mut walked = Vec::new();
    loop {
        let found = device_ids(store, walked.last().map(String::as_str), 4).await;
        if found.is_empty() {
            break;
        }
        walked.extend(found);
    }
    assert_eq!(walked, all, "walk by 4");
    match store.devices("t1", None, 1).await {
        Ok(first) => assert_eq!(first, [a], "devices() and device() agree"),
        Err(error) => panic!("devices failed: {error}"),
    }
    match store.devices("nobody", None, 10).await {
        Ok(none) => assert_eq!(none, [], "an unknown tenant has no devices"),
        Err(error) => panic!("devices failed: {error}"),
    }
}

/// 50 000 points in one write are all stored.
pub async fn large_batch<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "big");
    let points: Vec<Point> = (0..50_000)
        .map(|i| point(&dev, &format!("m{}", i % 5), T0 + i / 5, i as f64))
        .collect();
    write(&*store, points.clone(), "50k points").await;
    let stored = read_paged(&*store, range(&dev, None, T0, T0 + 10_000), 20_000).await;
    assert_eq!(stored.len(), 50_000, "every point of the batch");
    let mut expected = points;
    expected.sort_by(|x, y| (&x.metric, x.ts_ms).cmp(&(&y.metric, y.ts_ms)));
    assert!(
        stored == expected,
        "the batch read back differs from what was written"
    );
}

/// 16 tasks × 200 single-point writes, concurrently: each point present exactly once.
pub async fn concurrent_writers<S: TelemetryStore>(store: Arc<S>) {
    const TASKS: i64 = 16;
    const WRITES: i64 = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let dev = key("t1", &format!("dev-{}", task % 4));
            for i in 0..WRITES {
                let p = point(
                    &dev,
                    &format!("m{task}"),
                    T0 + i,
                    (task * WRITES + i) as f64,
                );
                store
                    .write(vec![p])
                    .await
                    .map_err(|e| format!("task {task} write {i}: {e}"))?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{error}"),
            Err(error) => panic!("writer task failed: {error}"),
        }
    }
    let mut seen = BTreeMap::new();
    for d in 0..4 {
        let dev = key("t1", &format!("dev-{d}"));
        for p in read_paged(&*store, range(&dev, None, T0, T0 + WRITES), 500).await {
            *seen
                .entry((p.device.device, p.metric, p.ts_ms))
                .or_insert(0) += 1;
        }
    }
    assert_eq!(
        seen.len() as i64,
        TASKS * WRITES,
        "every concurrent write stored"
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "a point read more than once"
    );
}

/// Every kind of value comes back as written, in points and in latest.
pub async fn every_value_kind_round_trips<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "kinds");
    let values = [
        ("a-number", Value::Number(-273.15)),
        ("b-big", Value::Number(f64::MAX)),
        ("c-true", Value::Bool(true)),
        ("d-false", Value::Bool(false)),
        ("e-text", Value::Text("héllo ☃ \"quoted\"\n".to_owned())),
        ("f-empty", Value::Text(String::new())),
        (
            "g-pos",
            Value::Position {
                lat: -33.8688,
                lon: 151.2093,
            },
        ),
    ];
    let points: Vec<Point> = values
        .iter()
        .map(|(metric, value)| Point {
            device: dev.clone(),
            metric: (*metric).to_owned(),
            ts_ms: T0,
            value: value.clone(),
        })
        .collect();
    write(&*store, points.clone(), "every kind").await;
    assert_eq!(
        read_all(&*store, range(&dev, None, T0, T0 + 1)).await,
        points,
        "range read"
    );
    let latest = store
        .latest(&dev)
        .await
        .unwrap_or_else(|e| panic!("latest failed: {e}"));
    assert_eq!(latest, points, "latest");
}

/// After `close`, writes fail with `Closed`; closing twice is harmless.
pub async fn closed_store_refuses_writes<S: TelemetryStore>(store: Arc<S>) {
    let dev = key("t1", "dev-1");
    write(&*store, vec![point(&dev, "m", T0, 1.0)], "before close").await;
    store.close().await;
    match store.write(vec![point(&dev, "m", T0 + 1, 1.0)]).await {
        Err(StorageError::Closed) => {}
        other => panic!("a write after close must be Closed, got {other:?}"),
    }
    store.close().await;
}
