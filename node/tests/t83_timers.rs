//! Pending timers survive the owning node: a `for` run armed on one node raises on the new
//! owner at the original deadline after the first owner is SIGKILLed — for a device that
//! stays silent (the new owner wakes its actor from the recorded timer) and for one that keeps
//! sending (the run continues instead of restarting). Three real `starling serve` processes
//! behind a real Mosquitto. A planned handoff (a 4th node joins and takes shards) keeps the
//! runs of the devices that move too.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cluster::*;
use common::{Device, bin};
use starling_sdk::Client;
use starling_sdk::proto::{Alarm, AlarmStatus, ListAlarmsRequest};

/// `temp > 30` must hold for 8 s.
const HOLD_MS: i64 = 8_000;
const HOT_FOR: &str = r#"{"id":"hot-for","condition":{"threshold":{"metric":"temp","op":">","value":30,"for":"8s"}},"severity":"major"}"#;

fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(d.as_millis()).expect("ms")
}

async fn alarms(client: &Client, device: &str) -> Vec<Alarm> {
    client
        .list_alarms(ListAlarmsRequest {
            device: device.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.rule_id == "hot-for")
        .collect()
}

/// Two device names whose shard `node` owns.
async fn two_devices_of(client: &Client, node: u64) -> (String, String) {
    let mut found = Vec::new();
    for i in 0..10_000 {
        let name = format!("timer-{i}");
        if owner_of(client, &name).await.expect("owner") == node {
            found.push(name);
            if found.len() == 2 {
                return (found.remove(0), found.remove(0));
            }
        }
    }
    panic!("no two devices of node {node}");
}

#[tokio::test(flavor = "multi_thread")]
async fn for_timer_fires_on_the_new_owner_at_the_original_deadline() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    client.apply_rule(HOT_FOR, "json").await.expect("rule");
    let leader_id = leader(&client).await.expect("leader");
    let victim = [1, 2, 3].into_iter().find(|n| *n != leader_id).expect("f");
    let (silent, chatty) = two_devices_of(&client, victim).await;

    // Both devices go hot on the victim: the `for` runs start there (event time = now).
    let mut devices = Vec::new();
    let mut since = Vec::new();
    for name in [&silent, &chatty] {
        let mut d = Device::connect(tc.broker.port(), name)
            .await
            .expect("device");
        let ts = now_ms();
        d.send(format!(r#"{{"ts": {ts}, "temp": 40}}"#))
            .await
            .expect("send");
        d.wait_acks(1).await.expect("ack");
        devices.push(d);
        since.push(ts);
    }
    // Let part of the run elapse on the victim, so a restarted run would end visibly later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        alarms(&client, &silent).await.is_empty(),
        "raised before the deadline"
    );
    let killed_at = now_ms();
    tc.cluster
        .node_mut(victim)
        .expect("victim")
        .kill9()
        .await
        .expect("kill");

    // Wait until another node owns the devices; the chatty one sends again (still hot).
    let survivors = tc.client_of(leader_id).expect("client");
    loop {
        if owner_of(&survivors, &chatty)
            .await
            .is_ok_and(|o| o != victim)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ts = now_ms();
    devices[1]
        .send(format!(r#"{{"ts": {ts}, "temp": 41}}"#))
        .await
        .expect("send after failover");
    devices[1].wait_acks(1).await.expect("ack after failover");

    // Both alarms appear, once, raised at the ORIGINAL deadline (since + for), not at a
    // deadline restarted on the new owner (which would be at least killed_at + for).
    for (name, since) in [(&silent, since[0]), (&chatty, since[1])] {
        let deadline = since + HOLD_MS;
        let mut found = Vec::new();
        for _ in 0..600 {
            found = alarms(&survivors, name).await;
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(found.len(), 1, "{name}: one alarm, got {found:?}");
        let a = &found[0];
        assert_eq!(a.status(), AlarmStatus::Active, "{name}");
        assert_eq!(a.raised_at_ms, deadline, "{name}: raised at since + for");
        assert!(
            a.raised_at_ms < killed_at + HOLD_MS,
            "{name}: the run was not restarted on the new owner"
        );
    }
    // The raise happened on a survivor: the victim is dead, and the record was removed.
    let again = alarms(&survivors, &silent).await;
    assert_eq!(again.len(), 1, "still one alarm: {again:?}");
    tc.assert_no_lease_overlap();
}

#[tokio::test(flavor = "multi_thread")]
async fn for_timers_survive_a_planned_handoff_to_a_joining_node() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    // A longer run, so the handoff completes before any deadline.
    client
        .apply_rule(&HOT_FOR.replace(r#""8s""#, r#""20s""#), "json")
        .await
        .expect("rule");
    let hold_ms = 20_000;

    // 40 devices go hot and stay silent: a quarter of the shards will move to node 4.
    let mut since = Vec::new();
    let mut conns = Vec::new();
    for i in 0..40 {
        let name = format!("handoff-{i}");
        let mut d = Device::connect(tc.broker.port(), &name)
            .await
            .expect("device");
        let ts = now_ms();
        d.send(format!(r#"{{"ts": {ts}, "temp": 40}}"#))
            .await
            .expect("send");
        d.wait_acks(1).await.expect("ack");
        since.push((name, ts));
        conns.push(d);
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for (name, _) in &since {
            v.push(owner_of(&client, name).await.expect("owner"));
        }
        v
    };
    tc.cluster.add_node(4).await.expect("join");
    wait_placed(&client, &[1, 2, 3, 4])
        .await
        .expect("rebalanced");

    let mut moved = 0;
    for ((name, ts), old) in since.iter().zip(&before) {
        let now_owner = owner_of(&client, name).await.expect("owner");
        let mut found = Vec::new();
        for _ in 0..600 {
            found = alarms(&client, name).await;
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(found.len(), 1, "{name}: one alarm, got {found:?}");
        assert_eq!(found[0].raised_at_ms, ts + hold_ms, "{name}: since + for");
        if now_owner != *old {
            moved += 1;
        }
    }
    assert!(
        moved > 0,
        "no device moved to node 4: nothing was handed off"
    );
    tc.assert_no_lease_overlap();
}
