//! Power loss: with `STARLING_FAULT_POWER_LOSS=1` the node keeps every write it has not
//! fsynced in its own memory (node/src/storage/volatile.rs), so SIGKILL loses what a power cut
//! would. What the node acknowledged must still be there after the restart: points (stored
//! before their PUBACK or gRPC reply) and Raft state (a rule applied before the kill). Real
//! process, real Mosquitto, real files, real kill.

mod common;

use common::*;
use starling_chaos::{NodeOptions, StarlingNode};

const HOT: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}},"severity":"major"}"#;
const HOTTER: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":40}},"severity":"major"}"#;

/// Starts `starling dev` in the power-loss mode, with `broker` (or the embedded one).
async fn start_power_loss_node(broker: Option<String>) -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let mut opts = NodeOptions::new(dir.path());
    opts.broker = broker;
    opts.env = vec![("STARLING_FAULT_POWER_LOSS".into(), "1".into())];
    let node = StarlingNode::start(bin(), opts).await?;
    Ok(TestNode { node, dir })
}

/// The mode is on: the node said so in its log.
fn assert_mode_on(node: &StarlingNode) {
    let log = std::fs::read_to_string(node.log_path()).expect("node log");
    assert!(
        log.contains("POWER LOSS mode"),
        "the node did not report the power-loss mode:\n{}",
        node.log_tail(30)
    );
}

/// MQTT through Mosquitto: points acknowledged by the broker (PUBACK) are all stored exactly
/// once after SIGKILL mid-stream and a restart: those the node acknowledged were fsynced,
/// the others are redelivered. The rules applied before the kill are there at their last
/// version.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_points_and_raft_state_survive_power_loss() {
    let mosq = start_mosquitto().await.unwrap();
    let mut node = start_power_loss_node(Some(mosq.addr())).await.unwrap();
    assert_mode_on(&node.node);
    let client = client(&node.node).unwrap();
    client.apply_rule(HOT, "json").await.unwrap();
    let applied = client.apply_rule(HOTTER, "json").await.unwrap();

    let mut dev = Device::connect(mosq.port(), "power-loss").await.unwrap();
    let n = 1000usize;
    let ts: Vec<i64> = (0..n as i64).map(|i| 7_000 + i).collect();
    for t in &ts[..n / 2] {
        dev.send(format!(r#"{{"ts": {t}, "temp": 1}}"#))
            .await
            .unwrap();
    }
    dev.wait_acks(n / 2).await.unwrap();
    // Kill once the node has acknowledged some, while the rest is in flight.
    wait_metric(&node.node, "starling_ingest_acks_total", 50.0)
        .await
        .unwrap();
    node.node.kill9().await.unwrap();
    for t in &ts[n / 2..] {
        dev.send(format!(r#"{{"ts": {t}, "temp": 1}}"#))
            .await
            .unwrap();
    }
    dev.wait_acks(n - n / 2).await.unwrap();

    node.node.restart().await.unwrap();
    assert_mode_on(&node.node);
    let client = common::client(&node.node).unwrap();
    let points = wait_points(&client, "power-loss", n).await.unwrap();
    assert_exactly_once(&points, "temp", &ts);
    let rule = client.get_rule("hot").await.unwrap();
    assert_eq!(rule.version, applied.version, "the rule's last version");
}

/// gRPC: every publish that got a reply is there after SIGKILL and a restart, when nothing
/// the node did not fsync survives the kill.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_acknowledged_points_survive_power_loss() {
    let mut node = start_power_loss_node(None).await.unwrap();
    let client = client(&node.node).unwrap();
    let acked = common::publish_numbers(&client, "power-grpc", 300)
        .await
        .unwrap();
    node.node.kill9().await.unwrap();
    node.node.restart().await.unwrap();
    let client = common::client(&node.node).unwrap();
    let points = query_all(&client, "power-grpc").await.unwrap();
    assert_exactly_once(&points, "v", &acked);
}
