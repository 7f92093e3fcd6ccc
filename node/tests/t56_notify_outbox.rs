//! Notifications survive a crash of the owner (issue 5): a real node process, a real
//! Mosquitto and a real HTTP server (axum on hyper) as the webhook. The webhook answers 503
//! while the alarm is raised and committed; the node is killed with SIGKILL in the middle of
//! its retries and restarted while the webhook answers 200: the pending delivery comes back
//! from the Raft outbox, with the same idempotency key.

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
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_interrupted_by_sigkill_is_sent_after_restart_with_the_same_key() {
    let work = tempfile::tempdir().unwrap();
    let broker = start_mosquitto().await.unwrap();
    let hook = Hook::default();
    let port = hook.start().await.unwrap();
    // Retries long enough (about 18 s of 503s) that the kill lands in the middle of them.
    let config = write_notify_config(
        work.path(),
        "retry_attempts = 20\nretry_min_delay = \"200ms\"\nretry_max_delay = \"1s\"\n",
    )
    .unwrap();
    let mut node = start_notifying_node(&broker, &config).await.unwrap();
    let client = client(&node.node).unwrap();
    let rule = format!(
        r#"{{"id":"hot","condition":{{"threshold":{{"metric":"temp","op":">","value":30}}}},
            "severity":"major","notify":[{{"webhook":{{"url":"http://127.0.0.1:{port}/hook"}}}}]}}"#
    );
    client.apply_rule(&rule, "json").await.unwrap();

    // The PUBACK comes after the alarm transition is committed.
    let mut dev = Device::connect(broker.port(), "boiler").await.unwrap();
    dev.send(r#"{"ts": 1, "temp": 35}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let (first_at, key) = eventually("a first webhook attempt", || {
        hook.attempts()
            .first()
            .map(|(at, k, _, _)| (*at, k.clone()))
    })
    .await
    .unwrap();
    assert!(key.ends_with(":raised"), "{key}");

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
    let before = hook.attempts();
    assert!(
        before
            .iter()
            .all(|(_, k, _, s)| *k == key && *s == StatusCode::SERVICE_UNAVAILABLE),
        "before the kill: only 503s for {key}: {before:?}"
    );
    hook.healthy.store(true, Ordering::SeqCst);

    node.node.restart().await.unwrap();
    let delivered = eventually("the webhook answering 200 after the restart", || {
        hook.attempts()
            .into_iter()
            .find(|(_, _, _, s)| *s == StatusCode::OK)
    })
    .await
    .unwrap();
    let (_, got_key, body, _) = delivered;
    assert_eq!(got_key, key, "same idempotency key after the restart");
    assert_eq!(body["idempotency_key"], key.as_str());
    assert_eq!(body["transition"], "raised");
    assert_eq!(body["alarm"]["device"], "boiler");
    assert_eq!(
        format!("{}:raised", body["alarm"]["id"].as_str().unwrap()),
        key
    );

    // It came from the outbox scan (the restarted node did not replay the raise), and its
    // row was removed through Raft.
    wait_metric(&node.node, "starling_notify_outbox_replayed_total", 1.0)
        .await
        .unwrap();
    wait_metric(&node.node, "starling_notify_outbox_recorded_total", 1.0)
        .await
        .unwrap();
    let keys: Vec<String> = hook.attempts().into_iter().map(|(_, k, _, _)| k).collect();
    assert!(keys.iter().all(|k| *k == key), "only {key}: {keys:?}");
}
