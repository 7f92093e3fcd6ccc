//! The SDK against a three-node cluster: a client publishing over gRPC keeps going when the
//! node it uses is killed mid-stream (failover to the next endpoint), and every publish that
//! got a reply is stored and readable from the survivors.

mod common;

use std::time::Duration;

use common::bin;
use common::cluster::*;
use starling_sdk::proto::{Sample, Value, value::Kind};

fn sample(ts: i64) -> Sample {
    Sample {
        ts_ms: ts,
        seq: None,
        values: [(
            "v".to_owned(),
            Value {
                kind: Some(Kind::Number(ts as f64)),
            },
        )]
        .into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_fails_over_when_its_node_is_killed_mid_stream() {
    let _ = bin();
    let mut tc = TestCluster::start(3).await.expect("cluster");
    let client = tc.client().expect("client");
    wait_placed(&client, &[1, 2, 3]).await.expect("placed");
    // The client's first endpoint is node 1: it is the node in use.
    let status = client.cluster_status().await.expect("status");
    assert_eq!(status.node_id, 1);

    let devices = ["sdk-a", "sdk-b", "sdk-c", "sdk-d"];
    let mut acked: Vec<(String, i64)> = Vec::new();
    for i in 0..400i64 {
        if i == 150 {
            tc.cluster
                .node_mut(1)
                .expect("node 1")
                .kill9()
                .await
                .expect("kill");
        }
        let device = devices[i as usize % devices.len()];
        let ts = 1_000 + i;
        // Retried by the SDK across endpoints; while node 1's shards move, the survivors
        // answer UNAVAILABLE and the next round succeeds.
        let mut tries = 0;
        loop {
            match client.publish("", device, vec![sample(ts)]).await {
                Ok(r) => {
                    assert_eq!(r.accepted_points, 1);
                    break;
                }
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("publish {i} retried by the test: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("publish {i} failed: {e}"),
            }
        }
        acked.push((device.to_owned(), ts));
    }
    let status = client.cluster_status().await.expect("status");
    assert_ne!(status.node_id, 1, "the client moved to a live node");

    // Node 1 comes back so that history it stored before the kill is readable again.
    tc.cluster
        .node_mut(1)
        .expect("node 1")
        .restart()
        .await
        .expect("restart");
    for device in devices {
        let want = acked.iter().filter(|(d, _)| d == device).count();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (n, partial) = query_full(&client, device).await.expect("query");
            if n == want && !partial {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{device}: {n} of {want} points (partial: {partial})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
