//! `starling simulate` against a real node: the real binary publishes a seeded fleet over MQTT
//! to the node's embedded broker, and the SDK checks what the node stored.
//!
//! - Every scenario (trucks, weather stations, machines): everything the simulator got
//!   acknowledged is stored; each device has exactly its messages' points of its scenario's
//!   metrics, with the timestamps it sent once each; the summary has the ack latency
//!   percentiles.
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

/// (scenario, the metrics of its samples; the first is checked point by point).
const SCENARIOS: [(&str, &[&str]); 3] = [
    ("logistics", &["temp", "fuel", "door", "pos"]),
    ("weather", &["temp", "humidity", "pressure"]),
    ("factory", &["vibration", "spindle_temp", "rpm"]),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_is_acknowledged_and_stored_completely() {
    const DEVICES: usize = 3;
    const MESSAGES: u64 = 20;
    let node = start_node(None, &[]).await.unwrap();
    let broker = format!("127.0.0.1:{}", node.node.mqtt_port());
    let client = client(&node.node).unwrap();
    for (scenario, metrics) in SCENARIOS {
        let prefix = format!("t70-{scenario}-");
        let summary = simulate(&[
            "--broker",
            &broker,
            "--scenario",
            scenario,
            "--devices",
            &DEVICES.to_string(),
            "--rate",
            "20",
            "--messages",
            &MESSAGES.to_string(),
            "--seed",
            "7",
            "--prefix",
            &prefix,
            "--fault-probability",
            "0.2",
            "--malformed-probability",
            "0",
        ])
        .await;
        let total = DEVICES as u64 * MESSAGES;
        assert_eq!(summary["scenario"], scenario, "{summary}");
        assert_eq!(summary["devices"], DEVICES, "{summary}");
        assert_eq!(summary["sent"], total, "{summary}");
        assert_eq!(summary["acked"], total, "{summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_eq!(summary["malformed"], 0, "{summary}");
        assert_eq!(summary["interrupted"], false, "{summary}");
        let p50 = summary["ack_p50_ms"].as_f64().expect("p50 present");
        let p99 = summary["ack_p99_ms"].as_f64().expect("p99 present");
        assert!(0.0 < p50 && p50 <= p99, "{summary}");
        assert!(
            summary["seconds"].as_f64().is_some_and(|s| s > 0.5),
            "{summary}"
        );

        // What the broker acknowledged is what the node stored: every sample once, each with
        // the scenario's metrics.
        let mut stored = 0;
        for i in 0..DEVICES {
            let device = format!("{prefix}{i}");
            let points = wait_metric_points(&client, &device, metrics[0], MESSAGES as usize)
                .await
                .unwrap();
            let ts: BTreeSet<i64> = points.iter().map(|p| p.ts_ms).collect();
            assert_eq!(points.len(), MESSAGES as usize, "{device}: {points:?}");
            assert_eq!(ts.len(), MESSAGES as usize, "{device}: distinct timestamps");
            stored += points.len() as u64;
            let all = query_all(&client, &device).await.unwrap();
            let names: BTreeSet<&str> = all.iter().map(|p| p.metric.as_str()).collect();
            assert_eq!(names, metrics.iter().copied().collect(), "{device}");
            assert_eq!(all.len(), MESSAGES as usize * metrics.len(), "{device}");
        }
        assert_eq!(summary["acked"], stored, "{scenario}: acked vs stored");
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
    assert_eq!(summary["sent"], 10, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
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
