//! The real servers of the notification tests: an HTTP server (axum on hyper) recording
//! `Idempotency-Key`s and failing first attempts, aiosmtpd writing a Maildir, an MQTT
//! subscriber of `alerts/#`, and small polling helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use starling_sdk::proto::ListAlarmsRequest;

/// What the HTTP server saw: (path, Idempotency-Key, JSON body), in arrival order.
pub type Seen = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

#[derive(Clone)]
pub struct Hooks {
    seen: Seen,
    /// Attempts per idempotency key on `/flaky` answered 503 before the first 200.
    fail_first: usize,
}

pub async fn record(hooks: &Hooks, path: &str, headers: &HeaderMap, body: &str) -> usize {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    let mut seen = hooks.seen.lock().unwrap();
    seen.push((path.to_owned(), key.clone(), json));
    seen.iter()
        .filter(|(p, k, _)| p == path && *k == key)
        .count()
}

/// A real HTTP server on a free port: `/flaky` (503 for the first attempts of each key),
/// `/reject` (always 400), `/sms` (200).
pub async fn start_http(fail_first: usize) -> anyhow::Result<(u16, Seen)> {
    let hooks = Hooks {
        seen: Seen::default(),
        fail_first,
    };
    let app = Router::new()
        .route(
            "/flaky",
            post(
                |State(h): State<Hooks>, headers: HeaderMap, body: String| async move {
                    let n = record(&h, "/flaky", &headers, &body).await;
                    if n <= h.fail_first {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .route(
            "/reject",
            post(
                |State(h): State<Hooks>, headers: HeaderMap, body: String| async move {
                    record(&h, "/reject", &headers, &body).await;
                    StatusCode::BAD_REQUEST
                },
            ),
        )
        .route(
            "/sms",
            post(
                |State(h): State<Hooks>, headers: HeaderMap, body: String| async move {
                    record(&h, "/sms", &headers, &body).await;
                    StatusCode::OK
                },
            ),
        )
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, hooks.seen))
}

/// aiosmtpd writing every accepted message into a Maildir; killed on drop.
pub struct Smtp {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
}

impl Smtp {
    pub async fn start(dir: &Path) -> anyhow::Result<Smtp> {
        Self::start_with(dir, &[]).await
    }

    /// With extra aiosmtpd options (`--tlscert …`, `--smtpscert …`).
    pub async fn start_with(dir: &Path, extra: &[&Path]) -> anyhow::Result<Smtp> {
        let port = starling_chaos::free_port();
        let maildir = dir.join(format!("maildir-{port}"));
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start aiosmtpd: run scripts/ensure-test-deps (pip install aiosmtpd)")?;
        let smtp = Smtp {
            child,
            port,
            maildir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(smtp);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("aiosmtpd did not listen on {port}: is it installed (pip install aiosmtpd)?")
    }

    /// The raw text of every delivered message.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribes to `alerts/#` at QoS 1; yields (topic, JSON payload).
pub async fn subscribe_alerts(
    port: u16,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>> {
    let mut opts = MqttOptions::new("alerts-watcher", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("alerts/#", QoS::AtLeastOnce).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let _ = tx.send((p.topic.clone(), json));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .context("SUBACK for alerts/#")??;
    Ok(rx)
}

/// Polls `check` until it returns `Some` (bounded).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    for _ in 0..600 {
        if let Some(v) = check() {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

/// The value of one labelled series, e.g. `starling_notify_sent_total{kind="email"}`.
pub fn series(text: &str, name: &str, kind: &str) -> f64 {
    let prefix = format!("{name}{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `Alerts.List` until it returns `n` alarms (bounded): a device's PUBACK comes from the
/// broker, before Starling has evaluated the point.
pub async fn wait_alarms(
    client: &starling_sdk::Client,
    request: ListAlarmsRequest,
    n: usize,
) -> Vec<starling_sdk::proto::Alarm> {
    for _ in 0..600 {
        let alarms = client.list_alarms(request.clone()).await.unwrap();
        if alarms.len() >= n {
            return alarms;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} alarms for {request:?}")
}

/// Starts `starling dev` on `broker` with the `[notify]` table of `config`.
pub async fn start_notifying_node(
    broker: &starling_chaos::Mosquitto,
    config: &Path,
) -> anyhow::Result<crate::common::TestNode> {
    let config = config.to_str().context("notify config path is UTF-8")?;
    crate::common::start_node(Some(broker.addr()), &["--notify-config", config]).await
}

pub fn write_notify_config(dir: &Path, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("notify.toml");
    std::fs::write(&path, format!("[notify]\n{body}"))?;
    Ok(path)
}
