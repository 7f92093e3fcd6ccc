//! Shared helpers of the node's integration tests: real `starling` processes (through the
//! chaos-tests fixture), a real Mosquitto, real MQTT devices and the real SDK over TLS.
#![allow(dead_code)] // each test file uses a different subset

pub mod cluster;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use starling_chaos::{Mosquitto, MosquittoOptions, NodeOptions, StarlingNode};
use starling_sdk::proto::{Point, QueryRequest};
use starling_sdk::{Client, Profile};
use tempfile::TempDir;

/// The binary under test, built by cargo for integration tests.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_starling"))
}

/// A node with its data dir; the dir lives as long as this value.
pub struct TestNode {
    pub node: StarlingNode,
    pub dir: TempDir,
}

/// Starts `starling dev` on free ports: with the embedded broker, or with `broker`.
pub async fn start_node(broker: Option<String>, extra: &[&str]) -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let mut opts = NodeOptions::new(dir.path());
    opts.broker = broker;
    opts.extra_args = extra.iter().map(|s| s.to_string()).collect();
    let node = StarlingNode::start(bin(), opts).await?;
    Ok(TestNode { node, dir })
}

/// Starts a Mosquitto with the settings Starling ships (docker/mosquitto/mosquitto.conf).
pub async fn start_mosquitto() -> anyhow::Result<Mosquitto> {
    assert!(
        Mosquitto::available(),
        "these tests run a real Mosquitto: install it (apt-get install -y mosquitto) or run `make test`"
    );
    Mosquitto::start(MosquittoOptions::default()).await
}

/// An SDK client authenticated with the node's admin profile.
pub fn client(node: &StarlingNode) -> anyhow::Result<Client> {
    let profile = Profile::load(&node.profile_path())?;
    Ok(Client::connect(&profile)?)
}

/// A device: an MQTT 3.1.1 client publishing at QoS 1, as real devices do.
pub struct Device {
    pub client: AsyncClient,
    pub id: String,
    driver: tokio::task::JoinHandle<()>,
    acks: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Device {
    pub async fn connect(port: u16, id: &str) -> anyhow::Result<Device> {
        let mut opts = MqttOptions::new(format!("dev-{id}"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(opts, 1000);
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
        let driver = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = conn_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), conn_rx)
            .await
            .context("device connect timed out")??;
        Ok(Device {
            client,
            id: id.to_owned(),
            driver,
            acks,
        })
    }

    pub fn topic(&self) -> String {
        format!("devices/{}/telemetry", self.id)
    }

    /// Publishes one payload at QoS 1 (the broker acknowledges it).
    pub async fn send(&self, payload: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        self.client
            .publish(self.topic(), QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// Waits until `n` PUBACKs (from the broker) arrived since the last call.
    pub async fn wait_acks(&mut self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            tokio::time::timeout(Duration::from_secs(30), self.acks.recv())
                .await
                .with_context(|| format!("PUBACK {i} of {n} did not arrive"))?;
        }
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Every stored point of one device, all pages.
pub async fn query_all(client: &Client, device: &str) -> anyhow::Result<Vec<Point>> {
    Ok(client
        .query_all(QueryRequest {
            device: device.to_owned(),
            page_size: 500,
            ..Default::default()
        })
        .await?)
}

/// Polls until the device has at least `n` points stored (bounded), then returns them.
pub async fn wait_points(client: &Client, device: &str, n: usize) -> anyhow::Result<Vec<Point>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let points = query_all(client, device).await?;
        if points.len() >= n {
            return Ok(points);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "device {device}: {} of {n} points stored after 60 s",
                points.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls a node metric until it reaches `at_least` (bounded).
pub async fn wait_metric(node: &StarlingNode, name: &str, at_least: f64) -> anyhow::Result<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = node.metric(name).await?.unwrap_or(0.0);
        if v >= at_least {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "metric {name} is {v}, wanted {at_least}\n{}",
                node.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the points are exactly the timestamps `ts` (each once) of metric `metric`.
/// Publishes `n` points of metric `v` over gRPC, one request each, at ts 1000, 1001, …;
/// returns the timestamps that were acknowledged (all of them, or it fails).
pub async fn publish_numbers(client: &Client, device: &str, n: i64) -> anyhow::Result<Vec<i64>> {
    use starling_sdk::proto::{Sample, Value, value::Kind};
    let mut acked = Vec::new();
    for i in 0..n {
        let s = Sample {
            ts_ms: 1_000 + i,
            seq: None,
            values: [(
                "v".to_owned(),
                Value {
                    kind: Some(Kind::Number(i as f64)),
                },
            )]
            .into(),
        };
        client.publish("", device, vec![s]).await?;
        acked.push(1_000 + i);
    }
    Ok(acked)
}

pub fn assert_exactly_once(points: &[Point], metric: &str, ts: &[i64]) {
    let mut got: Vec<i64> = points
        .iter()
        .filter(|p| p.metric == metric)
        .map(|p| p.ts_ms)
        .collect();
    got.sort();
    let mut want = ts.to_vec();
    want.sort();
    assert_eq!(got.len(), want.len(), "point count of {metric}");
    assert_eq!(got, want, "stored timestamps of {metric}");
}
