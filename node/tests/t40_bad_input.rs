//! Bad input over MQTT: malformed JSON, wrong value types, an oversized payload. Each is
//! acknowledged (the broker must not redeliver poison), counted by reason, never stored, and
//! the node keeps serving the next valid point.

mod common;

use common::*;

async fn rejected(node: &starling_chaos::StarlingNode, reason: &str) -> f64 {
    let text = node.metrics_text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("starling_ingest_rejected_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn bad_input_is_acked_counted_not_stored(mqtt_port: u16, node: &TestNode) {
    let client = client(&node.node).unwrap();
    let mut dev = Device::connect(mqtt_port, "bad").await.unwrap();
    let oversized = format!(r#"{{"ts": 3, "blob": "{}"}}"#, "x".repeat(200 * 1024));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two days ahead: outside the default one-day future window.
    let far_future = format!(r#"{{"ts": {}, "temp": 1}}"#, now_ms + 2 * 86_400_000);
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"ts": 1, "temp": null}"#.to_vec(),
        br#"{"ts": 2, "temp": [1, 2]}"#.to_vec(),
        oversized.into_bytes(),
        br#""just a string""#.to_vec(),
        far_future.into_bytes(),
        b"\xff\xfe".to_vec(),
    ];
    for b in &bad {
        dev.send(b.clone()).await.unwrap();
    }
    dev.send(r#"{"ts": 100, "temp": 21.5}"#).await.unwrap();
    dev.wait_acks(bad.len() + 1).await.unwrap();

    // The valid point after the poison is stored, and only it.
    let points = wait_points(&client, "bad", 1).await.unwrap();
    // Give the node time to have processed everything: every message acknowledged.
    wait_metric(
        &node.node,
        "starling_ingest_acks_total",
        (bad.len() + 1) as f64,
    )
    .await
    .unwrap();
    let points_after = query_all(&client, "bad").await.unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points_after.len(), 1, "{points_after:?}");
    assert_eq!(points_after[0].ts_ms, 100);

    assert!(rejected(&node.node, "malformed_json").await >= 2.0); // `{not json` and invalid UTF-8
    assert!(rejected(&node.node, "bad_value").await >= 2.0);
    assert!(rejected(&node.node, "oversized").await >= 1.0);
    assert!(rejected(&node.node, "not_an_object").await >= 1.0);
    assert!(rejected(&node.node, "ts_window").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_broker_bad_input() {
    let node = start_node(None, &[]).await.unwrap();
    let port = node.node.mqtt_port();
    bad_input_is_acked_counted_not_stored(port, &node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_bad_input() {
    let mosq = start_mosquitto().await.unwrap();
    let node = start_node(Some(mosq.addr()), &[]).await.unwrap();
    bad_input_is_acked_counted_not_stored(mosq.port(), &node).await;
}
