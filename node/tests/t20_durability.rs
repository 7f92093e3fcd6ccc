//! Durability: what the node acknowledged survives SIGKILL; what it had not acknowledged is
//! redelivered by the broker and stored after restart. Real process, real files, real kill.
//! The kill tests run once per engine of the embedded store (redb, fjall).

mod common;

use common::*;

/// `starling dev` arguments selecting the fjall engine.
const FJALL: &[&str] = &["--store-backend", "fjall"];

/// The store directory holds the files of the selected engine only.
fn assert_engine_files(node: &TestNode, fjall: bool) {
    let store = node.dir.path().join("store");
    assert_eq!(store.join("telemetry.fjall").is_dir(), fjall);
    assert_eq!(store.join("telemetry.redb").is_file(), !fjall);
}

/// gRPC: every publish that got a reply is there after kill -9 and restart.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_acknowledged_points_survive_sigkill() {
    grpc_sigkill(&[]).await;
}

/// The same on the fjall engine.
#[tokio::test(flavor = "multi_thread")]
async fn fjall_grpc_acknowledged_points_survive_sigkill() {
    grpc_sigkill(FJALL).await;
}

async fn grpc_sigkill(args: &[&str]) {
    let mut node = start_node(None, args).await.unwrap();
    let client = client(&node.node).unwrap();
    let acked = common::publish_numbers(&client, "kill-grpc", 300)
        .await
        .unwrap();
    // Kill right after the last acknowledgement, no graceful shutdown.
    node.node.kill9().await.unwrap();
    node.node.restart().await.unwrap();
    let client = common::client(&node.node).unwrap();
    let points = query_all(&client, "kill-grpc").await.unwrap();
    assert_exactly_once(&points, "v", &acked);
    assert_engine_files(&node, args == FJALL);
}

/// MQTT through Mosquitto: kill -9 the node mid-stream, restart it on the same dir; every
/// published point ends up stored exactly once (acknowledged ones survived the kill, the
/// others were redelivered from the node's persistent session).
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_points_survive_sigkill_mid_stream() {
    mqtt_sigkill(&[]).await;
}

/// The same on the fjall engine.
#[tokio::test(flavor = "multi_thread")]
async fn fjall_mqtt_points_survive_sigkill_mid_stream() {
    mqtt_sigkill(FJALL).await;
}

async fn mqtt_sigkill(args: &[&str]) {
    let mosq = start_mosquitto().await.unwrap();
    let mut node = start_node(Some(mosq.addr()), args).await.unwrap();
    let mut dev = Device::connect(mosq.port(), "kill-mqtt").await.unwrap();
    let n = 1000usize;
    let ts: Vec<i64> = (0..n as i64).map(|i| 5_000 + i).collect();
    for t in &ts[..n / 2] {
        dev.send(format!(r#"{{"ts": {t}, "temp": 1}}"#))
            .await
            .unwrap();
    }
    dev.wait_acks(n / 2).await.unwrap();
    // Kill as soon as the node has acknowledged some, while the rest is in flight.
    wait_metric(&node.node, "starling_ingest_acks_total", 50.0)
        .await
        .unwrap();
    let acked_before_kill = node
        .node
        .metric("starling_ingest_acks_total")
        .await
        .unwrap();
    node.node.kill9().await.unwrap();
    // Publish the second half while the node is down: the broker queues it.
    for t in &ts[n / 2..] {
        dev.send(format!(r#"{{"ts": {t}, "temp": 1}}"#))
            .await
            .unwrap();
    }
    dev.wait_acks(n - n / 2).await.unwrap();
    node.node.restart().await.unwrap();
    let client = client(&node.node).unwrap();
    let points = wait_points(&client, "kill-mqtt", n).await.unwrap();
    assert_exactly_once(&points, "temp", &ts);
    assert!(acked_before_kill.unwrap_or(0.0) >= 50.0);
    assert_engine_files(&node, args == FJALL);
}

/// A graceful stop (SIGTERM) exits 0 and keeps everything.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_graceful_and_restart_keeps_data_and_certs() {
    let mut node = start_node(None, &[]).await.unwrap();
    let ca_before = std::fs::read(node.dir.path().join("certs/ca.pem")).unwrap();
    let mut dev = Device::connect(node.node.mqtt_port(), "term")
        .await
        .unwrap();
    dev.send(r#"{"ts": 1, "temp": 1}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let client = client(&node.node).unwrap();
    wait_points(&client, "term", 1).await.unwrap();
    let status = node.node.terminate().await.unwrap();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        node.node.log_tail(30)
    );
    node.node.restart().await.unwrap();
    let ca_after = std::fs::read(node.dir.path().join("certs/ca.pem")).unwrap();
    assert_eq!(ca_before, ca_after, "restart must reuse the dev CA");
    let client = common::client(&node.node).unwrap();
    assert_eq!(query_all(&client, "term").await.unwrap().len(), 1);
}
