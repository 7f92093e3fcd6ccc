//! Ingest end to end: MQTT QoS 1 devices → broker → node → store, read back through the SDK
//! over TLS. Against the embedded broker and against a real Mosquitto.

mod common;

use common::*;

/// Publishes `per_device` points from each of `devices` devices and checks every point is
/// stored exactly once with its value.
async fn publish_and_read_back(mqtt_port: u16, node: &TestNode, devices: usize, per_device: usize) {
    let client = client(&node.node).unwrap();
    let base = 1_700_000_000_000i64;
    let mut devs = Vec::new();
    for d in 0..devices {
        devs.push(
            Device::connect(mqtt_port, &format!("truck-{d}"))
                .await
                .unwrap(),
        );
    }
    for dev in &mut devs {
        for j in 0..per_device {
            dev.send(format!(r#"{{"ts": {}, "temp": {}.5}}"#, base + j as i64, j))
                .await
                .unwrap();
        }
        dev.wait_acks(per_device).await.unwrap();
    }
    let ts: Vec<i64> = (0..per_device).map(|j| base + j as i64).collect();
    for dev in &devs {
        let points = wait_points(&client, &dev.id, per_device).await.unwrap();
        assert_exactly_once(&points, "temp", &ts);
        for p in &points {
            let j = p.ts_ms - base;
            let want = starling_sdk::proto::value::Kind::Number(j as f64 + 0.5);
            assert_eq!(p.value.as_ref().and_then(|v| v.kind.clone()), Some(want));
        }
    }
    // The node acknowledged every message it stored.
    let acks = wait_metric(
        &node.node,
        "starling_ingest_acks_total",
        (devices * per_device) as f64,
    )
    .await
    .unwrap();
    assert!(acks >= (devices * per_device) as f64);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_broker_every_point_stored_exactly_once() {
    let node = start_node(None, &[]).await.unwrap();
    let port = node.node.mqtt_port();
    publish_and_read_back(port, &node, 3, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_every_point_stored_exactly_once() {
    let mosq = start_mosquitto().await.unwrap();
    let node = start_node(Some(mosq.addr()), &[]).await.unwrap();
    publish_and_read_back(mosq.port(), &node, 3, 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_forms_flat_values_and_batches() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let mut dev = Device::connect(node.node.mqtt_port(), "forms")
        .await
        .unwrap();
    dev.send(r#"{"ts": 1000, "temp": 1.5, "door": true, "state": "idle"}"#)
        .await
        .unwrap();
    dev.send(
        r#"{"ts": 2000, "seq": 7, "values": {"temp": 2.5, "pos": {"lat": 48.1, "lon": 11.6}}}"#,
    )
    .await
    .unwrap();
    dev.send(r#"[{"ts": 3000, "temp": 3.5}, {"ts": 4000, "values": {"temp": 4.5}}]"#)
        .await
        .unwrap();
    dev.wait_acks(3).await.unwrap();
    let points = wait_points(&client, "forms", 7).await.unwrap();
    assert_exactly_once(&points, "temp", &[1000, 2000, 3000, 4000]);
    assert_exactly_once(&points, "door", &[1000]);
    assert_exactly_once(&points, "state", &[1000]);
    assert_exactly_once(&points, "pos", &[2000]);
    let latest = client.latest("", "forms").await.unwrap();
    let temp = latest.iter().find(|p| p.metric == "temp").unwrap();
    assert_eq!(temp.ts_ms, 4000);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_publish_answers_after_durable_store() {
    use starling_sdk::proto::{Sample, Value, value::Kind};
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let sample = |ts: i64, v: f64| Sample {
        ts_ms: ts,
        seq: None,
        values: [(
            "temp".to_owned(),
            Value {
                kind: Some(Kind::Number(v)),
            },
        )]
        .into(),
    };
    let resp = client
        .publish(
            "",
            "grpc-dev",
            vec![sample(10, 1.0), sample(20, f64::NAN), sample(30, 3.0)],
        )
        .await
        .unwrap();
    assert_eq!(resp.accepted_points, 2);
    assert_eq!(resp.rejections.len(), 1);
    assert_eq!(resp.rejections[0].sample, 1);
    // The reply came after the store: the points are readable at once, no waiting.
    let points = query_all(&client, "grpc-dev").await.unwrap();
    assert_exactly_once(&points, "temp", &[10, 30]);
}
