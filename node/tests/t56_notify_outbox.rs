//! Notifications survive a crash of the owner (issue 5): a real node process, a real
//! Mosquitto and a real HTTP server (axum on hyper) as the webhook. The webhook answers 503
//! while the alarm is raised and committed; the node is killed with SIGKILL in the middle of
//! its retries and restarted while the webhook answers 200: the pending delivery comes back
//! from the Raft outbox, with the same idempotency key. In a three-node cluster, the node
//! that takes over a killed owner's shards delivers what the owner left pending.

mod common;

#[allow(dead_code)] // this file uses a few of the notification test helpers
#[path = "t55_notify/servers.rs"]
mod servers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::cluster::*;
use common::*;
use servers::{eventually, start_notifying_node, write_notify_config};

/// One webhook attempt: when, its `Idempotency-Key`, its JSON body, the status answered.
type Attempt = (Instant, String, serde_json::Value, StatusCode);

/// The webhook: answers 503 until `healthy` is set, then 200; records every attempt.
#[derive(Clone, Default)]
struct Hook {
    healthy: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl Hook {
    async fn start(&self) -> anyhow::Result<u16> {
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(h): State<Hook>, headers: HeaderMap, body: String| async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let json = serde_json::from_str(&body).unwrap_or_default();
                        let status = if h.healthy.load(Ordering::SeqCst) {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        h.attempts
                            .lock()
                            .unwrap()
                            .push((Instant::now(), key, json, status));
                        status
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(port)
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// When the first attempt came and its key, once there is one.
    async fn first_key(&self) -> (Instant, String) {
        let (at, key) = eventually("a first webhook attempt", || {
            self.attempts()
                .first()
                .map(|(at, k, _, _)| (*at, k.clone()))
        })
        .await
        .unwrap();
        assert!(key.ends_with(":raised"), "{key}");
        (at, key)
    }

    /// Asserts every attempt so far carried `key` and was answered 503, then answers 200.
    fn recover(&self, key: &str) {
        let before = self.attempts();
        assert!(
            before
                .iter()
                .all(|(_, k, _, s)| k == key && *s == StatusCode::SERVICE_UNAVAILABLE),
            "before the kill: only 503s for {key}: {before:?}"
        );
        self.healthy.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `within`) for an attempt answered 200; asserts it is the raise of
    /// `device` with the idempotency key `key`, and that no other key was ever sent.
    async fn delivered(&self, key: &str, device: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let (_, got_key, body, _) = loop {
            let ok = self.attempts().into_iter().find(|a| a.3 == StatusCode::OK);
            if let Some(ok) = ok {
                break ok;
            }
            assert!(Instant::now() < deadline, "no delivery within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(got_key, key, "the same idempotency key after the kill");
        assert_eq!(body["idempotency_key"], key);
        assert_eq!(body["transition"], "raised");
        assert_eq!(body["alarm"]["device"], device);
        let id = body["alarm"]["id"].as_str().unwrap();
        assert_eq!(format!("{id}:raised"), key);
        let keys: Vec<String> = self.attempts().into_iter().map(|a| a.1).collect();
        assert!(keys.iter().all(|k| k == key), "only {key}: {keys:?}");
    }
}

/// Retries long enough (about 18 s of 503s) that the kill lands in the middle of them.
const RETRIES: &str =
    "retry_attempts = 20\nretry_min_delay = \"200ms\"\nretry_max_delay = \"1s\"\n";

/// Rule `hot` notifying the webhook on `port`.
fn hot_rule(port: u16) -> String {
    format!(
        r#"{{"id":"hot","condition":{{"threshold":{{"metric":"temp","op":">","value":30}}}},
            "severity":"major","notify":[{{"webhook":{{"url":"http://127.0.0.1:{port}/hook"}}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_interrupted_by_sigkill_is_sent_after_restart_with_the_same_key() {
    let work = tempfile::tempdir().unwrap();
    let broker = start_mosquitto().await.unwrap();
    let hook = Hook::default();
    let port = hook.start().await.unwrap();
    let config = write_notify_config(work.path(), RETRIES).unwrap();
    let mut node = start_notifying_node(&broker, &config).await.unwrap();
    let client = client(&node.node).unwrap();
    client.apply_rule(&hot_rule(port), "json").await.unwrap();

    // The PUBACK comes after the alarm transition is committed.
    let mut dev = Device::connect(broker.port(), "boiler").await.unwrap();
    dev.send(r#"{"ts": 1, "temp": 35}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let (first_at, key) = hook.first_key().await;

    // The state machine commits most batches without fsync and replays the log after a crash,
    // which would publish the raise again and hide a missing outbox. An entry applied more
    // than `DURABLE_EVERY` (1 s) after the raise commits durably and takes the raise with it:
    // wait until the webhook has been retried for that long, then apply another rule.
    eventually("1.2 s of webhook retries", || {
        hook.attempts()
            .last()
            .is_some_and(|(at, _, _, _)| at.duration_since(first_at) >= Duration::from_millis(1200))
            .then_some(())
    })
    .await
    .unwrap();
    client
        .apply_rule(
            r#"{"id":"quiet","condition":{"threshold":{"metric":"x","op":">","value":1}},"severity":"minor"}"#,
            "json",
        )
        .await
        .unwrap();

    node.node.kill9().await.unwrap();
    hook.recover(&key);
    node.node.restart().await.unwrap();
    hook.delivered(&key, "boiler", Duration::from_secs(30))
        .await;

    // It came from the outbox scan (the restarted node did not replay the raise), and its
    // row was removed through Raft.
    wait_metric(&node.node, "starling_notify_outbox_replayed_total", 1.0)
        .await
        .unwrap();
    wait_metric(&node.node, "starling_notify_outbox_recorded_total", 1.0)
        .await
        .unwrap();
}

/// Three `starling serve` nodes: the owner of the device is killed while the webhook answers
/// 503; the node that takes its shards over delivers the pending raise (no other node had
/// started it: only the owner delivers live events).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_owner_delivers_what_a_killed_owner_left_pending() {
    let _ = bin();
    let hook = Hook::default();
    let port = hook.start().await.unwrap();
    let extra = format!("{AUTO_PROVISION}\n[notify]\n{RETRIES}");
    let mut tc = TestCluster::start_with(3, &extra).await.unwrap();
    let client = tc.client().unwrap();
    wait_placed(&client, &[1, 2, 3]).await.unwrap();
    let leader_id = leader(&client).await.unwrap();
    let victim = [1, 2, 3].into_iter().find(|n| *n != leader_id).unwrap();
    tc.client_of(leader_id)
        .unwrap()
        .apply_rule(&hot_rule(port), "json")
        .await
        .unwrap();
    // The victim evaluates the device's points: it must have applied the rule.
    let on_victim = tc.client_of(victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_victim.get_rule("hot").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "rule not applied on node {victim}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let hot = device_owned_by(&client, victim, "hot-").await;
    let mut device = Device::connect(tc.broker.port(), &hot).await.unwrap();
    device.send(r#"{"temp": 40}"#).await.unwrap();
    device.wait_acks(1).await.unwrap();
    let (_, key) = hook.first_key().await;

    tc.cluster.node_mut(victim).unwrap().kill9().await.unwrap();
    hook.recover(&key);
    // Failure detection, placement and the takeover of the shards come first.
    hook.delivered(&key, &hot, Duration::from_secs(90)).await;
    assert_ne!(owner_of(&client, &hot).await.unwrap(), victim);
    tc.assert_no_lease_overlap();
}
