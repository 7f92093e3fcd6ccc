//! Membership of a real cluster: a 4th node joins through any member as a learner and takes
//! its share of the shards, is promoted when a voter dies, and shards move back when it is
//! removed — with every acknowledged point stored throughout; a paused owner (SIGSTOP) loses
//! its shards, and after SIGCONT its queued message is stored once, raising one alarm, with no
//! lease overlap. (That its stale control records are refused by epoch is shown by the state
//! machine tables, `raft::apply_tests`; here the timing of the stale write cannot be forced.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::*;
use common::{Device, bin};
use starling_chaos::load::{self, Workload};
use starling_sdk::Client;
use starling_sdk::proto::ListAlarmsRequest;

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(90);

async fn publish_and_check(tc: &TestCluster, client: &Client, w: &Workload) {
    let report = load::publish(tc.broker.port(), w, PUBLISH_TIMEOUT)
        .await
        .expect("publish");
    assert_eq!(report.acked, w.total());
    for d in 0..w.devices {
        let device = w.device_id(d);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (n, _) = query_full(client, &device).await.expect("query");
            if n == w.messages_per_device {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device}: {n} points"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls until the voters are exactly `want`.
async fn wait_voters(client: &Client, want: &[u64]) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let voters: BTreeSet<u64> = client
            .cluster_members()
            .await
            .map(|m| {
                m.members
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| m.node_id)
                    .collect()
            })
            .unwrap_or_default();
        if voters == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "voters {voters:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn join_promote_and_remove_move_shards_without_loss() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    publish_and_check(&tc, &client, &Workload::new(8, 50, "m1-")).await;

    // Node 4 joins through the members' peer ports: a learner (3 voters is the maximum)
    // that takes a quarter of the shards.
    tc.cluster.add_node(4).await.expect("join");
    wait_placed(&client, &[1, 2, 3, 4])
        .await
        .expect("placed on 4");
    wait_voters(&client, &[1, 2, 3]).await;
    publish_and_check(&tc, &client, &Workload::new(8, 50, "m2-")).await;

    // A voter dies: the learner replaces it.
    let leader_id = leader(&client).await.expect("leader");
    let dead = [1, 2, 3]
        .into_iter()
        .find(|n| *n != leader_id)
        .expect("voter");
    tc.cluster
        .node_mut(dead)
        .expect("node")
        .kill9()
        .await
        .expect("kill");
    let mut voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|n| *n != dead).collect();
    voters.sort_unstable();
    wait_voters(&client, &voters).await;
    publish_and_check(&tc, &client, &Workload::new(8, 50, "m3-")).await;
    tc.cluster
        .node_mut(dead)
        .expect("node")
        .restart()
        .await
        .expect("restart");
    wait_placed(&client, &[1, 2, 3, 4])
        .await
        .expect("placed again");

    // Node 4 is removed: its shards move to the others and it leaves the voters.
    client.remove_member(4).await.expect("remove");
    wait_placed(&client, &[1, 2, 3]).await.expect("moved back");
    wait_voters(&client, &[1, 2, 3]).await;
    publish_and_check(&tc, &client, &Workload::new(8, 50, "m4-")).await;

    tc.assert_no_lease_overlap();
}

const HOT: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}},"severity":"major"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owner_loses_its_shards_and_resumes_without_a_second_alarm() {
    let _ = bin();
    let tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    client.apply_rule(HOT, "json").await.expect("rule");
    let leader_id = leader(&client).await.expect("leader");
    let victim = [1, 2, 3].into_iter().find(|n| *n != leader_id).expect("f");
    // A frozen node accepts connections and never answers: talk to the leader only.
    let client = tc.client_of(leader_id).expect("client");
    let mut name = String::new();
    for i in 0..10_000 {
        name = format!("paused-{i}");
        if owner_of(&client, &name).await.expect("owner") == victim {
            break;
        }
    }

    // The owner is frozen with a message for the device in its socket (queued work).
    let mut device = Device::connect(tc.broker.port(), &name)
        .await
        .expect("device");
    tc.cluster
        .node(victim)
        .expect("node")
        .pause()
        .expect("SIGSTOP");
    device.send(r#"{"temp": 45}"#).await.expect("send");
    device.wait_acks(1).await.expect("broker ack");
    // Its shards move away (lease expired, failure detected).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while owner_of(&client, &name).await.expect("owner") == victim {
        assert!(tokio::time::Instant::now() < deadline, "shards never moved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGCONT while it still has its queued work; the message is stored (by the new owner
    // after the old one forwards it, or by the rescue) and raises exactly one alarm.
    tc.cluster
        .node(victim)
        .expect("node")
        .resume()
        .expect("SIGCONT");
    device.send(r#"{"temp": 46}"#).await.expect("send");
    device.wait_acks(1).await.expect("broker ack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (n, _) = query_full(&client, &name).await.expect("query");
        if n >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} points stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alarms: Vec<_> = client
        .list_alarms(ListAlarmsRequest {
            device: name.clone(),
            ..Default::default()
        })
        .await
        .expect("alarms")
        .into_iter()
        .filter(|a| a.rule_id == "hot")
        .collect();
    assert_eq!(alarms.len(), 1, "{alarms:?}");

    tc.assert_no_lease_overlap();
}
