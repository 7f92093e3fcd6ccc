//! MQTT device load: publish a telemetry workload at QoS 1, count what a subscriber receives.
//!
//! Devices are rumqttc clients (MQTT 3.1.1), one connection each, as real devices are. A
//! workload is connected first and then released at once, so a measurement starts at the
//! first PUBLISH and not at the first TCP handshake. Every wait is bounded by a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::process::remaining;

/// Bound on connecting one client (TCP + CONNECT/CONNACK) or one SUBSCRIBE/SUBACK.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `devices` devices each publishing `messages_per_device` telemetry messages, one point each.
#[derive(Debug, Clone)]
pub struct Workload {
    pub devices: usize,
    pub messages_per_device: usize,
    /// Device ids are `{device_prefix}{index}`; use a distinct prefix per run on one broker.
    pub device_prefix: String,
    /// `ts` of each device's first message; message `j` carries `base_ts_ms + j`, so every
    /// point is distinct under (device, ts) idempotency.
    pub base_ts_ms: i64,
}

impl Workload {
    /// A workload whose timestamps start now.
    pub fn new(devices: usize, messages_per_device: usize, device_prefix: &str) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Workload {
            devices,
            messages_per_device,
            device_prefix: device_prefix.to_owned(),
            base_ts_ms: now_ms,
        }
    }

    /// Messages (and points) in the whole workload.
    pub fn total(&self) -> u64 {
        (self.devices as u64) * (self.messages_per_device as u64)
    }

    pub fn device_id(&self, device: usize) -> String {
        format!("{}{device}", self.device_prefix)
    }

    /// `devices/{id}/telemetry`.
    pub fn topic(&self, device: usize) -> String {
        format!("devices/{}/telemetry", self.device_id(device))
    }

    /// Message `j`: `{"ts": base_ts_ms + j, "temp": …}`.
    pub fn payload(&self, j: usize) -> String {
        let ts = self.base_ts_ms + j as i64;
        let temp = 15.0 + (j % 200) as f64 / 10.0;
        format!(r#"{{"ts":{ts},"temp":{temp:.1}}}"#)
    }
}

/// The outcome of [`publish`].
#[derive(Debug, Clone)]
pub struct PublishReport {
    /// When the devices were released (just before the first PUBLISH).
    pub started: Instant,
    /// When the last PUBACK arrived.
    pub finished: Instant,
    /// PUBACKs received, over all devices.
    pub acked: u64,
}

/// Connects every device of `workload` to the broker on 127.0.0.1:`port`, releases them at
/// once, and waits until each has its messages acknowledged (QoS 1). Fails if anything is not
/// acknowledged within `timeout` of the release.
pub async fn publish(
    port: u16,
    workload: &Workload,
    timeout: Duration,
) -> anyhow::Result<PublishReport> {
    let mut connected = Vec::with_capacity(workload.devices);
    for device in 0..workload.devices {
        let client_id = format!("chaos-{}", workload.device_id(device));
        connected.push(connect(port, &client_id).await?);
    }

    let (release_tx, release_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(workload.devices);
    for (device, (client, eventloop)) in connected.into_iter().enumerate() {
        let (topic, workload) = (workload.topic(device), workload.clone());
        let mut release = release_rx.clone();
        tasks.push(tokio::spawn(async move {
            release.wait_for(|go| *go).await?;
            let deadline = Instant::now() + timeout;
            publish_one(client, eventloop, topic, &workload, deadline).await
        }));
    }
    let started = Instant::now();
    release_tx.send(true).context("no device is waiting")?;

    let (mut finished, mut acked) = (started, 0);
    for task in tasks {
        let (last_ack, count) = task.await.context("device task panicked")??;
        finished = finished.max(last_ack);
        acked += count;
    }
    Ok(PublishReport {
        started,
        finished,
        acked,
    })
}

/// One device: push its messages into the client while polling the event loop for PUBACKs.
/// Returns the time of the last PUBACK and the number received.
async fn publish_one(
    client: AsyncClient,
    mut eventloop: EventLoop,
    topic: String,
    workload: &Workload,
    deadline: Instant,
) -> anyhow::Result<(Instant, u64)> {
    let expected = workload.messages_per_device as u64;
    let payloads: Vec<String> = (0..workload.messages_per_device)
        .map(|j| workload.payload(j))
        .collect();
    let label = topic.clone();
    let publisher = client.clone();
    // Publishing awaits room in the client's request channel, which only the event loop
    // drains, so it runs beside the loop below.
    let feeder = tokio::spawn(async move {
        for payload in payloads {
            publisher
                .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                .await?;
        }
        anyhow::Ok(())
    });
    let _abort_feeder = AbortOnDrop(feeder);

    let (mut acked, mut last_ack) = (0, Instant::now());
    while acked < expected {
        let Some(left) = remaining(deadline) else {
            bail!("{label}: {acked} of {expected} PUBACKs before the deadline");
        };
        match tokio::time::timeout(left, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                acked += 1;
                last_ack = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{label}: connection failed after {acked} PUBACKs: {e}"),
            Err(_) => bail!("{label}: {acked} of {expected} PUBACKs before the deadline"),
        }
    }
    disconnect(client, eventloop).await;
    Ok((last_ack, acked))
}

/// A subscriber that counts the PUBLISHes it receives (QoS 1, acknowledged by rumqttc).
#[derive(Debug)]
pub struct CountingSubscriber {
    received: Arc<AtomicU64>,
    /// Nanoseconds after `origin` of the latest receive.
    last_receive_ns: Arc<AtomicU64>,
    origin: Instant,
    task: JoinHandle<anyhow::Result<()>>,
}

impl CountingSubscriber {
    /// Connects to 127.0.0.1:`port`, subscribes to `filter` at QoS 1 and returns once the
    /// broker has acknowledged the subscription.
    pub async fn start(port: u16, filter: &str) -> anyhow::Result<CountingSubscriber> {
        // Unique per subscriber: a broker disconnects the older of two clients with one id.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("chaos-sub-{}-{n}", std::process::id());
        let (client, mut eventloop) = connect(port, &client_id).await?;
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let left = remaining(deadline).context("no SUBACK in time")?;
            match tokio::time::timeout(left, eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("subscriber connection failed: {e}"),
                Err(_) => bail!("no SUBACK within {HANDSHAKE_TIMEOUT:?}"),
            }
        }

        let received = Arc::new(AtomicU64::new(0));
        let last_receive_ns = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let (count, last) = (received.clone(), last_receive_ns.clone());
        let task = tokio::spawn(async move {
            // Keeps the client (and so the connection) alive as long as the task runs.
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        let ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        last.store(ns, Ordering::Relaxed);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => bail!("subscriber connection failed: {e}"),
                }
            }
        });
        Ok(CountingSubscriber {
            received,
            last_receive_ns,
            origin,
            task,
        })
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` messages have arrived; returns the time of the latest receive.
    /// Fails on timeout (with the count reached) or if the connection fails.
    pub async fn wait_for(&mut self, n: u64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        while self.received() < n {
            if self.task.is_finished() {
                let result = (&mut self.task).await.context("subscriber task panicked")?;
                result?;
                bail!(
                    "subscriber stopped after {} of {n} messages",
                    self.received()
                );
            }
            let Some(left) = remaining(deadline) else {
                bail!(
                    "received {} of {n} messages within {timeout:?}",
                    self.received()
                );
            };
            tokio::time::sleep(Duration::from_millis(10).min(left)).await;
        }
        let ns = self.last_receive_ns.load(Ordering::Relaxed);
        Ok(self.origin + Duration::from_nanos(ns))
    }
}

impl Drop for CountingSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts a helper task when its owner returns early.
struct AbortOnDrop(JoinHandle<anyhow::Result<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A clean-session client connected to 127.0.0.1:`port` (CONNACK received).
async fn connect(port: u16, client_id: &str) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let left = remaining(deadline).context("no CONNACK in time")?;
        match tokio::time::timeout(left, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, eventloop)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{client_id} cannot connect to 127.0.0.1:{port}: {e}"),
            Err(_) => {
                bail!("{client_id}: no CONNACK from 127.0.0.1:{port} within {HANDSHAKE_TIMEOUT:?}")
            }
        }
    }
}

/// Sends DISCONNECT and drives the event loop until it is on the wire (bounded).
async fn disconnect(client: AsyncClient, mut eventloop: EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    let flush = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), flush)
        .await
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mosquitto, MosquittoOptions};

    #[test]
    fn payloads_are_distinct_flat_json() {
        let workload = Workload {
            devices: 2,
            messages_per_device: 3,
            device_prefix: "d".into(),
            base_ts_ms: 1_732_200_000_000,
        };
        assert_eq!(workload.total(), 6);
        assert_eq!(workload.topic(1), "devices/d1/telemetry");
        assert_eq!(workload.payload(0), r#"{"ts":1732200000000,"temp":15.0}"#);
        assert_eq!(workload.payload(2), r#"{"ts":1732200000002,"temp":15.2}"#);
    }

    #[tokio::test]
    async fn subscriber_counts_a_published_workload() {
        let broker = Mosquitto::start(MosquittoOptions::default()).await.unwrap();
        let mut subscriber = CountingSubscriber::start(broker.port(), "devices/+/telemetry")
            .await
            .unwrap();
        let workload = Workload::new(3, 50, "load-test-");
        let report = publish(broker.port(), &workload, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(report.acked, 150);
        subscriber
            .wait_for(150, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(subscriber.received(), 150);
    }
}
