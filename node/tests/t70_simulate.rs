//! `starling simulate` against a real node: the real binary publishes a seeded fleet over MQTT
//! to the node's embedded broker, and the SDK checks what the node stored.
//!
//! - Everything the simulator got acknowledged is stored: each device has exactly its
//!   messages' `temp` points, with the timestamps it sent once each.
//! - Malformed messages (probability 1) are acknowledged, counted as rejections, and stored
//!   nowhere.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use common::*;
use serde_json::Value as Json;
use starling_sdk::Client;
use starling_sdk::proto::Point;

/// Bound on one `starling simulate` run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `starling simulate ARGS --format json`, asserts it succeeded, returns its summary.
async fn simulate(args: &[&str]) -> Json {
    let run = tokio::process::Command::new(bin())
        .arg("simulate")
        .args(args)
        .args(["--format", "json"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("simulate finished in time")
        .expect("simulate started");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "simulate failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not one JSON object ({e}):\n{stdout}"))
}

/// Polls until `device` has at least `n` points of `metric` (bounded), then returns them.
async fn wait_metric_points(
    client: &Client,
    device: &str,
    metric: &str,
    n: usize,
) -> anyhow::Result<Vec<Point>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let points: Vec<Point> = query_all(client, device)
            .await?
            .into_iter()
            .filter(|p| p.metric == metric)
            .collect();
        if points.len() >= n {
            return Ok(points);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "device {device}: {} of {n} {metric} points after 60 s",
                points.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_fleet_is_stored_completely() {
    let node = start_node(None, &[]).await.unwrap();
    let broker = format!("127.0.0.1:{}", node.node.mqtt_port());
    let summary = simulate(&[
        "--broker",
        &broker,
        "--devices",
        "5",
        "--rate",
        "20",
        "--messages",
        "20",
        "--seed",
        "7",
        "--prefix",
        "t70-",
        "--malformed-probability",
        "0",
    ])
    .await;
    assert_eq!(summary["devices"], 5, "{summary}");
    assert_eq!(summary["published"], 100, "{summary}");
    assert_eq!(summary["acked"], 100, "{summary}");
    assert_eq!(summary["malformed"], 0, "{summary}");
    assert_eq!(summary["interrupted"], false, "{summary}");
    assert!(
        summary["seconds"].as_f64().is_some_and(|s| s > 0.5),
        "{summary}"
    );

    let client = client(&node.node).unwrap();
    for i in 0..5 {
        let device = format!("t70-{i}");
        let temps = wait_metric_points(&client, &device, "temp", 20)
            .await
            .unwrap();
        let ts: BTreeSet<i64> = temps.iter().map(|p| p.ts_ms).collect();
        assert_eq!(temps.len(), 20, "{device}: {temps:?}");
        assert_eq!(ts.len(), 20, "{device}: distinct timestamps");
        let all = query_all(&client, &device).await.unwrap();
        let metrics: BTreeSet<&str> = all.iter().map(|p| p.metric.as_str()).collect();
        assert_eq!(
            metrics,
            BTreeSet::from(["door", "fuel", "pos", "temp"]),
            "{device}"
        );
        assert_eq!(all.len(), 80, "{device}: 20 samples of 4 metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_fleet_is_rejected_and_not_stored() {
    let node = start_node(None, &[]).await.unwrap();
    let broker = format!("127.0.0.1:{}", node.node.mqtt_port());
    let summary = simulate(&[
        "--broker",
        &broker,
        "--devices",
        "2",
        "--rate",
        "20",
        "--messages",
        "5",
        "--prefix",
        "t70bad-",
        "--malformed-probability",
        "1",
    ])
    .await;
    assert_eq!(summary["published"], 10, "{summary}");
    assert_eq!(summary["acked"], 10, "{summary}");
    assert_eq!(summary["malformed"], 10, "{summary}");

    // Every one of the 10 messages is rejected (so all have been processed) …
    let rejected = wait_metric(&node.node, "starling_ingest_rejected_total", 10.0)
        .await
        .unwrap();
    assert!(rejected > 0.0);
    // … and nothing is stored for either device.
    let client = client(&node.node).unwrap();
    for device in ["t70bad-0", "t70bad-1"] {
        let points = query_all(&client, device).await.unwrap();
        assert!(points.is_empty(), "{device}: {points:?}");
    }
}
