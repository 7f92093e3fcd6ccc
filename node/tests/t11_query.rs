//! Columnar range reads end to end: one node, points published over gRPC, read back as rows
//! and as series through the SDK; the series carry every point and value the rows do, and a
//! columnar page holds up to 100,000 points where rows stop at 10,000.

mod common;

use std::collections::BTreeMap;

use common::*;
use starling_sdk::proto::{QueryRequest, Sample, Value, value::Kind};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// Sample `i`: `temp` always a number; `door` a boolean, text every fifth; `at` a position
/// every seventh.
fn sample(base: i64, i: i64) -> Sample {
    let mut values = BTreeMap::new();
    values.insert("temp".to_owned(), value(Kind::Number(i as f64 * 0.5)));
    let door = if i % 5 == 0 {
        Kind::Text(format!("state-{i}"))
    } else {
        Kind::Boolean(i % 2 == 0)
    };
    values.insert("door".to_owned(), value(door));
    if i % 7 == 0 {
        let at = starling_sdk::proto::Position {
            lat: 45.0,
            lon: i as f64 / 1000.0,
        };
        values.insert("at".to_owned(), value(Kind::Position(at)));
    }
    Sample {
        ts_ms: base + i,
        seq: None,
        values: values.into_iter().collect(),
    }
}

async fn publish(client: &starling_sdk::Client, device: &str, base: i64, n: i64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let samples: Vec<Sample> = chunk.iter().map(|i| sample(base, *i)).collect();
        client.publish("", device, samples).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn series_hold_every_point_the_rows_hold() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let base = now_ms() - 60_000;
    publish(&client, "mixed", base, 2_000).await;

    let request = QueryRequest {
        device: "mixed".into(),
        page_size: 700,
        ..Default::default()
    };
    let rows = client.query_all(request.clone()).await.unwrap();
    // 2,000 temp + 2,000 door + 286 at.
    assert_eq!(rows.len(), 4_286);
    // Pages of 700 cut series in the middle; the SDK joins them.
    let series = client.query_series_all(request).await.unwrap();
    let metrics: Vec<&str> = series.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["at", "door", "temp"]);
    let mut rebuilt = Vec::new();
    for s in &series {
        assert_eq!(s.ts_ms.len(), s.numbers.len(), "{}", s.metric);
        assert_eq!(s.other_at.len(), s.others.len(), "{}", s.metric);
        let mut others = s.other_at.iter().zip(&s.others).peekable();
        for (i, (ts, n)) in s.ts_ms.iter().zip(&s.numbers).enumerate() {
            let v = match others.peek() {
                Some((at, v)) if **at as usize == i => {
                    assert!(n.is_nan(), "a non-number has NaN in numbers");
                    let v = (*v).clone();
                    others.next();
                    v
                }
                _ => value(Kind::Number(*n)),
            };
            rebuilt.push((s.metric.clone(), *ts, v));
        }
        assert!(
            others.next().is_none(),
            "{}: every other value placed",
            s.metric
        );
    }
    let rows: Vec<_> = rows
        .into_iter()
        .map(|p| (p.metric, p.ts_ms, p.value.unwrap()))
        .collect();
    assert_eq!(rebuilt, rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_columnar_page_holds_more_than_the_row_cap() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let base = now_ms() - 60_000;
    publish(&client, "many", base, 12_000).await;
    let request = QueryRequest {
        device: "many".into(),
        metric: "temp".into(),
        page_size: 50_000,
        ..Default::default()
    };

    let rows = client.query(request.clone()).await.unwrap();
    assert_eq!(rows.points.len(), 10_000, "rows are capped at 10,000");
    assert!(!rows.next_page_token.is_empty());
    assert!(rows.series.is_empty());

    let columns = client
        .query(QueryRequest {
            columnar: true,
            ..request
        })
        .await
        .unwrap();
    assert!(columns.points.is_empty());
    assert!(columns.next_page_token.is_empty(), "one page holds all");
    assert_eq!(columns.series.len(), 1);
    let temp = &columns.series[0];
    let want_ts: Vec<i64> = (0..12_000).map(|i| base + i).collect();
    assert_eq!(temp.ts_ms, want_ts);
    let want: Vec<f64> = (0..12_000).map(|i| i as f64 * 0.5).collect();
    assert_eq!(temp.numbers, want);
    assert!(temp.other_at.is_empty());
}
