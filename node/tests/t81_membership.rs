//! Membership of a real cluster: a 4th node joins through any member as a learner and takes
//! its share of the shards, is promoted when a voter dies, and shards move back when it is
//! removed — with every acknowledged point stored throughout; an owner frozen (SIGSTOP) between
//! storing a hot point and committing its alarm loses its shards, the new owner raises the
//! alarm, and after SIGCONT the old owner's commit is refused for its stale epoch: one alarm,
//! and no lease overlap.

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

/// Sum of a metric on a node's `/metrics`.
async fn metric(port: u16, name: &str) -> f64 {
    let body = starling_chaos::http::get(port, "/metrics")
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    starling_chaos::metrics::metric_sum(&body, name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_owner_loses_its_shards_and_its_stale_alarm_commit_is_refused() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    client.apply_rule(HOT, "json").await.expect("rule");
    let leader_id = leader(&client).await.expect("leader");
    let victim = [1, 2, 3].into_iter().find(|n| *n != leader_id).expect("f");
    // A frozen node accepts connections and never answers: talk to the leader only.
    let client = tc.client_of(leader_id).expect("client");

    // The victim restarts with a window between storing a message's points and committing
    // its alarm transition (fault injection), so the test can freeze it inside.
    let node = tc.cluster.node_mut(victim).expect("node");
    node.env
        .push(("STARLING_FAULT_ALARM_COMMIT_DELAY_MS".into(), "3000".into()));
    node.kill9().await.expect("kill");
    node.restart().await.expect("restart");
    wait_placed(&client, &[1, 2, 3])
        .await
        .expect("placed again");
    let mut name = String::new();
    for i in 0..10_000 {
        name = format!("paused-{i}");
        if owner_of(&client, &name).await.expect("owner") == victim {
            break;
        }
    }

    // The owner evaluates a hot message and is frozen before its commit.
    let mut device = Device::connect(tc.broker.port(), &name)
        .await
        .expect("device");
    device.send(r#"{"temp": 45}"#).await.expect("send");
    device.wait_acks(1).await.expect("broker ack");
    tokio::time::sleep(Duration::from_millis(700)).await;
    tc.cluster
        .node(victim)
        .expect("node")
        .pause()
        .expect("SIGSTOP");

    // Its shards move away; the message it never acknowledged reaches the new owner (session
    // rescue), which raises the alarm under the new epoch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while owner_of(&client, &name).await.expect("owner") == victim {
        assert!(tokio::time::Instant::now() < deadline, "shards never moved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alarms = |client: Client, name: String| async move {
        client
            .list_alarms(ListAlarmsRequest {
                device: name,
                ..Default::default()
            })
            .await
            .expect("alarms")
            .into_iter()
            .filter(|a| a.rule_id == "hot")
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alarms(client.clone(), name.clone()).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no alarm raised");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGCONT while its commit is still queued: the stale epoch is refused by Raft.
    let leader_http = tc.cluster.node(leader_id).expect("leader").http_port;
    let before = metric(leader_http, "starling_alarm_rejected_total").await;
    tc.cluster
        .node(victim)
        .expect("node")
        .resume()
        .expect("SIGCONT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(leader_http, "starling_alarm_rejected_total").await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale commit was not refused\n{}",
            tc.cluster.node(victim).expect("node").log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found = alarms(client.clone(), name.clone()).await;
    assert_eq!(found.len(), 1, "one alarm, not two: {found:?}");
    tc.assert_no_lease_overlap();
}

/// A node frozen (SIGSTOP) while it is removed never applies its removal: by the time it
/// resumes it is no longer a member, and its shard map, frozen too, still gives it shards. The
/// leader's refusal of its lease renewals tells it; from then on it stores nothing itself and
/// sends what reaches it (here a gRPC publish for a device its frozen map says it owns)
/// through an active member to the owner. Before, such points waited forever for a lease the
/// node would never get again.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_removed_while_frozen_learns_it_and_hands_its_points_to_the_owners() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    tc.cluster.add_node(4).await.expect("join");
    wait_placed(&client, &[1, 2, 3, 4])
        .await
        .expect("placed on 4");
    let device = device_owned_by(&client, 4, "frozen-").await;

    tc.cluster
        .node(4)
        .expect("node 4")
        .pause()
        .expect("SIGSTOP");
    client.remove_member(4).await.expect("remove");
    wait_placed(&client, &[1, 2, 3]).await.expect("moved away");
    // Give the supervisor time to take it out of the Raft membership too (what is checked
    // below holds either way: a node that applies its removal drains the same path).
    tokio::time::sleep(Duration::from_secs(3)).await;
    tc.cluster
        .node(4)
        .expect("node 4")
        .resume()
        .expect("SIGCONT");

    let frozen = tc.client_of(4).expect("client of node 4");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let acked = loop {
        match common::publish_numbers(&frozen, &device, 5).await {
            Ok(acked) => break acked,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "publishing through the removed node never succeeded: {e}\n{}",
                tc.cluster.node(4).expect("node").log_tail(30)
            ),
        }
    };
    assert_eq!(acked.len(), 5);
    // Nothing may live only on the removed node: stop it for good, then read.
    tc.cluster
        .node_mut(4)
        .expect("node 4")
        .kill9()
        .await
        .expect("kill");
    let (n, _partial) = query_full(&client, &device).await.expect("query");
    assert_eq!(
        n, 5,
        "{device}: points acknowledged by the removed node are not on the owner"
    );
    tc.assert_no_lease_overlap();
}
