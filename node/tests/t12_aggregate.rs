//! Aggregates end to end: points published through the API (some twice), rollups computed
//! at ingest, `Aggregate` over gRPC through the SDK (source picked per interval, paging
//! without a cap) and through the CLI, against a real `starling dev` node.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use starling_sdk::proto::{AggregateRequest, AggregateRow, Sample, Value, value::Kind};

const H: i64 = 3_600_000;
const M: i64 = 60_000;

/// Hour-aligned, five days ago (inside the default ingest window).
fn base() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now - 5 * 24 * H) / H * H
}

fn value_at(i: i64) -> f64 {
    ((i * 7) % 31) as f64 - 10.0
}

/// Three hours, one point every 10 s: (ts, value).
fn series(base: i64) -> Vec<(i64, f64)> {
    (0..(3 * H / 10_000))
        .map(|i| (base + i * 10_000, value_at(i)))
        .collect()
}

fn sample(ts: i64, v: f64) -> Sample {
    Sample {
        ts_ms: ts,
        seq: None,
        values: [(
            "temp".to_owned(),
            Value {
                kind: Some(Kind::Number(v)),
            },
        )]
        .into(),
    }
}

/// (start, avg, count) per interval, the slow way.
fn expected_avg(points: &[(i64, f64)], interval: i64) -> Vec<(i64, f64, u64)> {
    let mut by: BTreeMap<i64, (f64, u64)> = BTreeMap::new();
    for (ts, v) in points {
        let e = by.entry(ts / interval * interval).or_default();
        e.0 += v;
        e.1 += 1;
    }
    by.into_iter()
        .map(|(start, (sum, n))| (start, sum / n as f64, n))
        .collect()
}

fn rows(rows: &[AggregateRow]) -> Vec<(i64, f64, u64)> {
    rows.iter()
        .map(|r| (r.start_ms, r.value, r.count))
        .collect()
}

fn assert_close(got: &[(i64, f64, u64)], want: &[(i64, f64, u64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: intervals");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.2), (w.0, w.2), "{what}");
        assert!((g.1 - w.1).abs() < 1e-9, "{what}: {g:?} vs {w:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_through_sdk_and_cli_pick_their_source_and_count_redeliveries_once() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let base = base();
    let points = series(base);
    for chunk in points.chunks(500) {
        let samples = chunk.iter().map(|(ts, v)| sample(*ts, *v)).collect();
        let r = client.publish("", "agg-dev", samples).await.unwrap();
        assert!(r.rejections.is_empty(), "{:?}", r.rejections);
    }
    // A redelivery of the first 300 samples: stored once, counted once.
    let again = points[..300]
        .iter()
        .map(|(ts, v)| sample(*ts, *v))
        .collect();
    client.publish("", "agg-dev", again).await.unwrap();

    let request = |interval_ms, from_ms, page_size| AggregateRequest {
        tenant: String::new(),
        device: "agg-dev".into(),
        metric: "temp".into(),
        function: "avg".into(),
        interval_ms,
        from_ms,
        to_ms: base + 3 * H,
        page_size,
        page_token: String::new(),
    };
    // (interval, from, expected source)
    let cases = [
        (H, base, "1h"),
        (15 * M, base, "1m"),
        (M, base + M, "1m"),
        (45_000, base, "raw"),
        (H, base + 1, "raw"),
    ];
    for (interval, from, source) in cases {
        let page = client.aggregate(request(interval, from, 0)).await.unwrap();
        assert_eq!(page.source, source, "interval {interval} from {from}");
        assert!(!page.partial);
        assert!(page.next_page_token.is_empty());
        let want: Vec<(i64, f64)> = points
            .iter()
            .copied()
            .filter(|(ts, _)| *ts >= from)
            .collect();
        assert_close(&rows(&page.rows), &expected_avg(&want, interval), source);
    }
    // No cap on intervals: 1080 ten-second intervals in pages of 100.
    let all = client
        .aggregate_all(request(10_000, base, 100))
        .await
        .unwrap();
    assert_close(&rows(&all), &expected_avg(&points, 10_000), "paged");
    assert_eq!(all.len(), 1080);

    // Bad input names its field.
    let mut bad = request(0, base, 0);
    let err = client.aggregate(bad.clone()).await.unwrap_err();
    assert!(err.to_string().contains("interval"), "{err}");
    bad.interval_ms = M;
    bad.function = "median".into();
    let err = client.aggregate(bad).await.unwrap_err();
    assert!(err.to_string().contains("function"), "{err}");

    // The CLI: JSON lines, one per interval.
    let out = Command::new(bin())
        .args([
            "telemetry",
            "--format",
            "json",
            "aggregate",
            "--device",
            "agg-dev",
        ])
        .args([
            "--metric",
            "temp",
            "--function",
            "count",
            "--interval",
            "1h",
        ])
        .args([
            "--from",
            &base.to_string(),
            "--to",
            &(base + 3 * H).to_string(),
        ])
        .arg("--profile")
        .arg(node.node.profile_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["start_ms"], base + i as i64 * H);
        assert_eq!(line["value"], 360.0);
        assert_eq!(line["source"], "1h");
    }
}
