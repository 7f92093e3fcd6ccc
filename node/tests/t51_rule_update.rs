//! A rule update re-evaluates the open alarms of that rule on the device's last value,
//! without new data: a raised threshold the last value no longer meets clears the alarm with
//! a reason naming the new version; a threshold the value still meets keeps it. Real
//! `starling dev` process, real MQTT.

mod common;

use std::time::Duration;

use common::*;
use starling_sdk::Client;
use starling_sdk::proto::{Alarm, AlarmStatus, ListAlarmsRequest};

fn hot(threshold: u32) -> String {
    format!(
        r#"{{"id":"hot","condition":{{"threshold":{{"metric":"temp","op":">","value":{threshold}}}}},"severity":"major"}}"#
    )
}

async fn hot_alarms(client: &Client, device: &str) -> Vec<Alarm> {
    client
        .list_alarms(ListAlarmsRequest {
            device: device.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.rule_id == "hot")
        .collect()
}

/// Polls until `device`'s one "hot" alarm has `status` (or 30 s pass) and returns it.
async fn wait_status(client: &Client, device: &str, status: AlarmStatus) -> Alarm {
    for _ in 0..300 {
        let a = hot_alarms(client, device).await;
        if a.len() == 1 && a[0].status() == status {
            return a[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{device}: no single alarm with {status:?}: {:?}",
        hot_alarms(client, device).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_update_clears_alarms_the_new_version_no_longer_supports() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let v1 = client.apply_rule(&hot(30), "json").await.unwrap();
    // "warm" ends at 35, "boiling" at 90: both raise under `temp > 30`.
    for (device, temp) in [("warm", 35), ("boiling", 90)] {
        let mut d = Device::connect(node.node.mqtt_port(), device)
            .await
            .unwrap();
        d.send(format!(r#"{{"ts": 1000, "temp": {temp}}}"#))
            .await
            .unwrap();
        d.wait_acks(1).await.unwrap();
        let a = wait_status(&client, device, AlarmStatus::Active).await;
        assert_eq!(a.rule_version, v1.version);
    }

    // Raise the threshold to 40; no device sends anything.
    let v2 = client.apply_rule(&hot(40), "json").await.unwrap();
    let warm = wait_status(&client, "warm", AlarmStatus::Cleared).await;
    assert!(
        warm.message.contains(&format!("version {}", v2.version)),
        "the clear names the new version: {:?}",
        warm.message
    );
    assert!(
        warm.message.contains("no longer holds"),
        "{:?}",
        warm.message
    );
    // The alarm of a value the new version still supports stays active (and one alarm).
    let boiling = hot_alarms(&client, "boiling").await;
    assert_eq!(boiling.len(), 1, "{boiling:?}");
    assert_eq!(boiling[0].status(), AlarmStatus::Active);
}
