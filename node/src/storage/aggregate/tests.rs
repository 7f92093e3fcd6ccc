//! Aggregates: the source choice as a table, and answers over a real embedded store checked
//! against a brute-force computation from the points written, for raw and rollup sources,
//! with and without paging.

use std::sync::Arc;

use super::*;
use crate::model::{Point, Value};
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::storage::rollup::{RollupPage, RollupQuery};
use crate::storage::{Page, RangeQuery};

const H: i64 = 3_600_000;
const M: i64 = 60_000;
/// 2024-11-21T00:00Z, hour-aligned.
const T0: i64 = 1_732_147_200_000;

#[test]
fn source_choice() {
    let cases = [
        (H, T0, T0 + 24 * H, Some(Resolution::Hour)),
        (2 * H, T0, i64::MAX, Some(Resolution::Hour)),
        (H, T0 + M, T0 + 24 * H, Some(Resolution::Minute)),
        (30 * M, T0, T0 + H, Some(Resolution::Minute)),
        (M, T0, T0 + 1, None),
        (90_000, T0, T0 + H, None),
        (1_000, T0, T0 + H, None),
        (H, T0 + 1, T0 + H, None),
    ];
    for (interval, from, to, want) in cases {
        assert_eq!(pick(interval, from, to), want, "{interval} {from} {to}");
    }
}

fn point(ts: i64, v: f64) -> Point {
    Point {
        device: DeviceKey::new("t", "d"),
        metric: "temp".into(),
        ts_ms: ts,
        value: Value::Number(v),
    }
}

/// Three hours of one point every 7 s with a wavy value, plus a text point that must be
/// ignored.
fn workload() -> Vec<Point> {
    let mut points: Vec<Point> = (0..(3 * H / 7_000))
        .map(|i| point(T0 + i * 7_000, ((i * 37) % 101) as f64 - 50.0))
        .collect();
    points.push(Point {
        value: Value::Text("n/a".into()),
        ..point(T0 + 3, 0.0)
    });
    points
}

/// (start, value, count) per interval, computed the slow way.
fn brute(points: &[Point], f: Function, interval: i64, from: i64, to: i64) -> Vec<(i64, f64, u64)> {
    let mut by: std::collections::BTreeMap<i64, Vec<(i64, f64)>> = Default::default();
    for p in points {
        if let (Some(v), true) = (p.value.as_f64(), (from..to).contains(&p.ts_ms)) {
            by.entry(p.ts_ms.div_euclid(interval) * interval)
                .or_default()
                .push((p.ts_ms, v));
        }
    }
    by.into_iter()
        .map(|(start, vs)| {
            let b = Bucket::of_all(start, vs).expect("values");
            (start, f.of(&b), b.count)
        })
        .collect()
}

async fn all_pages(store: &EmbeddedStore, mut q: AggregateQuery) -> (Vec<(i64, f64, u64)>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let page = run(&StoreSource(store), &q).await.expect("aggregate");
        pages += 1;
        assert!(page.rows.len() <= q.limit, "page over its limit");
        rows.extend(page.rows.iter().map(|r| (r.start_ms, r.value, r.count)));
        match page.next {
            Some(next) => q.page_token = Some(next),
            None => return (rows, pages),
        }
    }
}

fn close(a: &[(i64, f64, u64)], b: &[(i64, f64, u64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: interval count");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.0, x.2), (y.0, y.2), "{what}: start/count");
        assert!((x.1 - y.1).abs() < 1e-9, "{what}: {x:?} vs {y:?}");
    }
}

async fn store() -> (Arc<EmbeddedStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).expect("open");
    (store, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_function_at_every_source_matches_brute_force() {
    let (store, _dir) = store().await;
    let points = workload();
    // Written in small batches, some twice (a redelivery must not count).
    for chunk in points.chunks(97) {
        store.write(chunk.to_vec()).await.expect("write");
    }
    for chunk in points.chunks(500).step_by(3) {
        store.write(chunk.to_vec()).await.expect("rewrite");
    }
    let windows = [
        (H, T0, T0 + 3 * H, Some(Resolution::Hour)),
        (15 * M, T0, T0 + 3 * H, Some(Resolution::Minute)),
        (M, T0 + 7 * M, T0 + 2 * H, Some(Resolution::Minute)),
        (45_000, T0, T0 + 3 * H, None),
        (H, T0 + 5, T0 + 3 * H, None),
    ];
    for f in [
        Function::Min,
        Function::Max,
        Function::Avg,
        Function::Sum,
        Function::Count,
        Function::Last,
    ] {
        for (interval, from, to, source) in windows {
            let q = AggregateQuery {
                device: DeviceKey::new("t", "d"),
                metric: "temp".into(),
                function: f,
                interval_ms: interval,
                from_ms: from,
                to_ms: to,
                limit: 1_000_000,
                page_token: None,
            };
            let page = run(&StoreSource(store.as_ref()), &q).await.expect("agg");
            assert_eq!(page.source, source, "{f:?} {interval}");
            let got: Vec<_> = page
                .rows
                .iter()
                .map(|r| (r.start_ms, r.value, r.count))
                .collect();
            close(
                &got,
                &brute(&points, f, interval, from, to),
                &format!("{f:?} {interval}"),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_has_no_cap_and_matches_one_read() {
    let (store, _dir) = store().await;
    let points = workload();
    store.write(points.clone()).await.expect("write");
    for (interval, limit) in [(M, 7), (10_000, 100), (H, 1)] {
        let q = AggregateQuery {
            device: DeviceKey::new("t", "d"),
            metric: "temp".into(),
            function: Function::Avg,
            interval_ms: interval,
            from_ms: T0,
            to_ms: i64::MAX,
            limit,
            page_token: None,
        };
        let (rows, pages) = all_pages(&store, q).await;
        let want = brute(&points, Function::Avg, interval, T0, i64::MAX);
        close(&rows, &want, &format!("paged {interval}"));
        assert_eq!(
            pages,
            want.len().div_ceil(limit).max(1),
            "pages of {interval}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_queries_name_their_field() {
    let (store, _dir) = store().await;
    let good = AggregateQuery {
        device: DeviceKey::new("t", "d"),
        metric: "temp".into(),
        function: Function::Avg,
        interval_ms: M,
        from_ms: T0,
        to_ms: T0 + H,
        limit: 10,
        page_token: None,
    };
    let cases: [(&str, AggregateQuery); 4] = [
        (
            "interval",
            AggregateQuery {
                interval_ms: 0,
                ..good.clone()
            },
        ),
        (
            "limit",
            AggregateQuery {
                limit: 0,
                ..good.clone()
            },
        ),
        (
            "metric",
            AggregateQuery {
                metric: String::new(),
                ..good.clone()
            },
        ),
        (
            "page_token",
            AggregateQuery {
                page_token: Some("p1:x".into()),
                ..good.clone()
            },
        ),
    ];
    for (field, q) in cases {
        match run(&StoreSource(store.as_ref()), &q).await {
            Err(StorageError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    }
    assert!(matches!(
        Function::parse("median"),
        Err(StorageError::Invalid {
            field: "function",
            ..
        })
    ));
    assert_eq!(Function::parse("mean").expect("mean"), Function::Avg);
}

/// Two holders of one device's history (an ownership change with the embedded store), read
/// as the cluster reads them: raw points merged with duplicates removed, rollups merged by
/// `merge::rollups`.
struct TwoHolders<'a>(&'a EmbeddedStore, &'a EmbeddedStore);

#[async_trait]
impl Source for TwoHolders<'_> {
    async fn raw(&self, q: RangeQuery) -> Result<Page, StorageError> {
        if q.page_token.is_some() {
            return Ok(Page::default());
        }
        let mut points = Vec::new();
        for store in [self.0, self.1] {
            let mut q = q.clone();
            q.limit = 1_000_000;
            points.extend(store.query(q).await?.points);
        }
        points.sort_by(|a, b| (&a.metric, a.ts_ms).cmp(&(&b.metric, b.ts_ms)));
        points.dedup_by(|b, a| a.metric == b.metric && a.ts_ms == b.ts_ms);
        Ok(Page { points, next: None })
    }

    async fn rollups(&self, q: RollupQuery) -> Result<RollupPage, StorageError> {
        let pages = vec![
            self.0.rollups(q.clone()).await?,
            self.1.rollups(q.clone()).await?,
        ];
        merge::rollups(pages, &q, self).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_point_redelivered_after_an_ownership_change_counts_once() {
    let (old_owner, _a) = store().await;
    let (new_owner, _b) = store().await;
    // The old owner stores 0..40 min; the new one 30..90 min: the 30..40 min points were
    // redelivered to the new owner after the shard moved (stored twice, one per node).
    let points: Vec<Point> = (0..90).map(|i| point(T0 + i * M + 500, i as f64)).collect();
    old_owner
        .write(points[..40].to_vec())
        .await
        .expect("old owner");
    new_owner
        .write(points[30..].to_vec())
        .await
        .expect("new owner");
    let holders = TwoHolders(&old_owner, &new_owner);
    for (interval, f) in [
        (H, Function::Count),
        (H, Function::Sum),
        (10 * M, Function::Avg),
        (M, Function::Count),
    ] {
        let q = AggregateQuery {
            device: DeviceKey::new("t", "d"),
            metric: "temp".into(),
            function: f,
            interval_ms: interval,
            from_ms: T0,
            to_ms: T0 + 2 * H,
            limit: 1000,
            page_token: None,
        };
        let page = run(&holders, &q).await.expect("aggregate");
        assert!(page.source.is_some(), "answered from rollups");
        let got: Vec<_> = page
            .rows
            .iter()
            .map(|r| (r.start_ms, r.value, r.count))
            .collect();
        close(
            &got,
            &brute(&points, f, interval, T0, T0 + 2 * H),
            &format!("{f:?} {interval}"),
        );
    }
    // Without the merge rule, summing both holders' hour buckets would count 100 points.
    assert_eq!(
        first_hour(&old_owner).await + first_hour(&new_owner).await,
        40 + 30
    );
}

async fn first_hour(s: &EmbeddedStore) -> u64 {
    let q = RollupQuery {
        device: DeviceKey::new("t", "d"),
        metric: "temp".into(),
        resolution: Resolution::Hour,
        from_ms: T0,
        to_ms: T0 + H,
        limit: 10,
    };
    s.rollups(q).await.expect("rollups").buckets[0].count
}
