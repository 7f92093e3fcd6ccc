//! Device actors: spawned on first message, passivated after the idle timeout, and a
//! passivated device comes back (state from the store and the control plane) on its next point.

mod common;

use common::*;

async fn gauge(node: &starling_chaos::StarlingNode, name: &str) -> f64 {
    node.metric(name).await.unwrap().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_actors_passivate_and_come_back() {
    let node = start_node(None, &["--idle-timeout", "300ms"])
        .await
        .unwrap();
    let client = client(&node.node).unwrap();
    client
        .apply_rule(
            r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}}}"#,
            "json",
        )
        .await
        .unwrap();
    let mut devs = Vec::new();
    for i in 0..3 {
        let mut d = Device::connect(node.node.mqtt_port(), &format!("idle-{i}"))
            .await
            .unwrap();
        d.send(r#"{"ts": 1, "temp": 50}"#).await.unwrap();
        d.wait_acks(1).await.unwrap();
        devs.push(d);
    }
    for d in &devs {
        wait_points(&client, &d.id, 1).await.unwrap();
    }
    // Three actors were spawned, then all passivate once idle.
    wait_metric(&node.node, "starling_device_passivations_total", 3.0)
        .await
        .unwrap();
    assert_eq!(gauge(&node.node, "starling_device_actors").await, 0.0);

    // A passivated device's next point spawns a fresh actor, which rehydrates the active alarm
    // from the control plane: still one alarm per device, not a second one.
    devs[0].send(r#"{"ts": 2, "temp": 60}"#).await.unwrap();
    devs[0].wait_acks(1).await.unwrap();
    wait_points(&client, "idle-0", 2).await.unwrap();
    let alarms = client
        .list_alarms(starling_sdk::proto::ListAlarmsRequest {
            device: "idle-0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
}
