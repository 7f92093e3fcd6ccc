//! Three `starling serve` processes behind a real Mosquitto configured as shipped: every
//! point the broker acknowledged to a device is stored by Starling and survives a follower kill and a leader kill mid-stream (session rescue,
//! failover), an active alarm stays one alarm, rules carry the same version on every node,
//! and no two nodes ever hold a lease on the same shard at once (from the nodes' lease logs).

mod common;

use std::time::Duration;

use common::cluster::*;
use common::{Device, bin};
use starling_chaos::load::{self, Workload};
use starling_sdk::Client;
use starling_sdk::proto::{AlarmStatus, ListAlarmsRequest};

const HOT: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}},"severity":"major"}"#;

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(90);

/// Every device of `w` has exactly its points, read through `client`; `complete` also
/// requires the reads not to be partial.
async fn assert_stored(client: &Client, w: &Workload, complete: bool) {
    for d in 0..w.devices {
        let device = w.device_id(d);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (n, partial) = query_full(client, &device).await.expect("query");
            if n == w.messages_per_device && (!complete || !partial) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device}: {n} of {} points (partial: {partial})",
                w.messages_per_device
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The device's alarms of rule "hot", once the answering node shows at least `min` (reads
/// of a follower trail the leader by up to a heartbeat).
async fn hot_alarms(client: &Client, device: &str, min: usize) -> Vec<starling_sdk::proto::Alarm> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alarms = hot_alarms_now(client, device).await;
        if alarms.len() >= min || tokio::time::Instant::now() > deadline {
            return alarms;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hot_alarms_now(client: &Client, device: &str) -> Vec<starling_sdk::proto::Alarm> {
    client
        .list_alarms(ListAlarmsRequest {
            device: device.to_owned(),
            ..Default::default()
        })
        .await
        .expect("alarms")
        .into_iter()
        .filter(|a| a.rule_id == "hot")
        .collect()
}

/// Publishes `w` while killing `victim` shortly after the start; every message must still be
/// acknowledged.
async fn publish_through_kill(tc: &mut TestCluster, w: &Workload, victim: u64) {
    let port = tc.broker.port();
    let workload = w.clone();
    let publishing =
        tokio::spawn(async move { load::publish(port, &workload, PUBLISH_TIMEOUT).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tc.cluster
        .node_mut(victim)
        .expect("victim")
        .kill9()
        .await
        .expect("kill");
    let report = publishing.await.expect("task").expect("publish");
    assert_eq!(report.acked, w.total(), "every message acknowledged");
}

/// 32 rules applied at once through a follower (its proposer forwards what queues up to the
/// leader as batch entries): each write gets its own answer, and every node holds each rule
/// at the version its write was answered with.
async fn concurrent_rule_writes_on_a_follower(tc: &TestCluster, follower: u64) {
    let fc = tc.client_of(follower).expect("client");
    let before = fc.cluster_status().await.expect("status").commit_index;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..32 {
        let fc = fc.clone();
        writes.spawn(async move {
            let doc = format!(
                r#"{{"id":"many-{i}","condition":{{"threshold":{{"metric":"load","op":">","value":{i}}}}},"severity":"minor"}}"#
            );
            (i, fc.apply_rule(&doc, "json").await)
        });
    }
    let mut versions = Vec::new();
    while let Some(joined) = writes.join_next().await {
        let (i, answer) = joined.expect("task");
        versions.push((i, answer.expect("apply").version));
    }
    let after = fc.cluster_status().await.expect("status").commit_index;
    println!(
        "32 concurrent rule writes took {} log entries",
        after - before
    );
    for id in [1, 2, 3] {
        let c = tc.client_of(id).expect("client");
        for (i, version) in &versions {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match c.get_rule(&format!("many-{i}")).await {
                    Ok(r) if r.version == *version => break,
                    _ if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("node {id}: many-{i} is {other:?}, want version {version}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_keeps_every_acknowledged_point_and_one_alarm() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");

    // A rule written on node 1 has the same version on every node.
    let rule = tc
        .client_of(1)
        .expect("client")
        .apply_rule(HOT, "json")
        .await
        .expect("apply");
    for id in [2, 3] {
        let c = tc.client_of(id).expect("client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c.get_rule("hot").await {
                Ok(r) if r.version == rule.version => break,
                _ if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("node {id} has {other:?}, want version {}", rule.version),
            }
        }
    }

    let leader_id = leader(&client).await.expect("leader");
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader_id).expect("f");
    concurrent_rule_writes_on_a_follower(&tc, follower).await;

    // An alarm raised on the follower's device.
    let hot = device_owned_by(&client, follower, "hot-").await;
    let mut device = Device::connect(tc.broker.port(), &hot)
        .await
        .expect("device");
    device.send(r#"{"temp": 40}"#).await.expect("send");
    device.wait_acks(1).await.expect("ack");
    assert_eq!(hot_alarms(&client, &hot, 1).await.len(), 1);

    // Before any fault: every acknowledged point is readable from every node.
    let a = Workload::new(12, 100, "a-");
    let report = load::publish(tc.broker.port(), &a, PUBLISH_TIMEOUT)
        .await
        .expect("publish a");
    assert_eq!(report.acked, a.total());
    for id in [1, 2, 3] {
        assert_stored(&tc.client_of(id).expect("client"), &a, true).await;
    }

    // SIGKILL a follower mid-stream, then publish again while it is down.
    let b = Workload::new(12, 300, "b-");
    publish_through_kill(&mut tc, &b, follower).await;
    let c = Workload::new(12, 50, "c-");
    load::publish(tc.broker.port(), &c, PUBLISH_TIMEOUT)
        .await
        .expect("publish c");
    assert_stored(&client, &c, false).await;

    // The alarm's device is served by another node now, and its alarm stays one alarm.
    device.send(r#"{"temp": 41}"#).await.expect("send");
    device.wait_acks(1).await.expect("ack after failover");
    assert_ne!(owner_of(&client, &hot).await.expect("owner"), follower);
    let alarms = hot_alarms(&client, &hot, 1).await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].status(), AlarmStatus::Active);

    // The follower comes back (a three-node cluster survives one fault at a time), then
    // SIGKILL the leader mid-stream.
    tc.cluster
        .node_mut(follower)
        .expect("node")
        .restart()
        .await
        .expect("restart follower");
    wait_placed(&client, &[1, 2, 3]).await.expect("rebalanced");
    let d = Workload::new(12, 300, "d-");
    publish_through_kill(&mut tc, &d, leader_id).await;
    let e = Workload::new(12, 50, "e-");
    load::publish(tc.broker.port(), &e, PUBLISH_TIMEOUT)
        .await
        .expect("publish e");
    assert_stored(&client, &e, false).await;

    // The old leader comes back; the shards spread again and every acknowledged point of
    // every phase is readable, complete, from any node.
    tc.cluster
        .node_mut(leader_id)
        .expect("node")
        .restart()
        .await
        .expect("restart leader");
    wait_placed(&client, &[1, 2, 3]).await.expect("rebalanced");
    for (i, w) in [&a, &b, &c, &d, &e].into_iter().enumerate() {
        let reader = tc.client_of(1 + i as u64 % 3).expect("client");
        assert_stored(&reader, w, true).await;
    }
    let alarms = hot_alarms(&client, &hot, 1).await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].rule_version, rule.version);

    // No shard was ever leased to two nodes at overlapping times.
    tc.assert_no_lease_overlap();
}
