//! One simulated device's MQTT 3.1.1 connection (rumqttc): connect and wait for the CONNACK,
//! publish at QoS 1, and count the broker's PUBACKs with their latency.
//!
//! Latency is measured per connection from the moment rumqttc's event loop sends a PUBLISH
//! (`Event::Outgoing(Publish(pkid))`) to the PUBACK with the same packet id; a retransmission
//! after a reconnect keeps the first send time. Time spent in the client's own queue before
//! that is not included. What it does not do: TLS, authentication, subscriptions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fleet::Outgoing;

/// Bound on one device's TCP connect + CONNECT/CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on handing one message to its client (waits only when the client's queue is full).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the clean MQTT disconnect at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before rumqttc reconnects after a connection error.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// Requests a client queues before `publish` waits.
const CLIENT_QUEUE: usize = 1000;
/// The largest latency the histograms hold, µs; longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 600_000_000;

/// A histogram of publish→PUBACK latencies in microseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (1 ≤ low, high ≥ 2 × low, 3 digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What the driver of one connection counted; read while the run goes on.
pub struct Acks {
    /// PUBACKs received.
    acked: AtomicU64,
    /// Their latencies, µs. A std mutex: it is never held across an await.
    latency: Mutex<Histogram<u64>>,
}

impl Acks {
    fn new() -> Acks {
        Acks {
            acked: AtomicU64::new(0),
            latency: Mutex::new(latency_histogram()),
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Adds this connection's latencies to `into`.
    pub fn add_latencies_to(&self, into: &mut Histogram<u64>) {
        let latency = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        // Same bounds on both sides: adding cannot fail.
        let _ = into.add(&*latency);
    }

    fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(us);
        self.acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// One device's MQTT connection: the client, and the task driving its event loop.
pub struct Connection {
    client: AsyncClient,
    /// Counted by the driver.
    acks: Arc<Acks>,
    /// Polls the event loop; aborted when the connection is dropped, so it lives exactly as
    /// long as the run.
    driver: JoinHandle<()>,
}

impl Connection {
    /// Connects device `id` (client id `sim-{id}`) and waits for the CONNACK (bounded).
    pub async fn connect(host: &str, port: u16, id: &str) -> anyhow::Result<Connection> {
        let client_id = format!("sim-{id}");
        let mut options = MqttOptions::new(client_id.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
        let acks = Arc::new(Acks::new());
        let (connected_tx, connected_rx) = oneshot::channel();
        let driver = tokio::spawn(drive(eventloop, connected_tx, acks.clone(), client_id));
        let connection = Connection {
            client,
            acks,
            driver,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connected_rx).await {
            Ok(Ok(Ok(()))) => Ok(connection),
            Ok(Ok(Err(e))) => Err(anyhow!("device {id}: cannot connect to {host}:{port}: {e}")),
            Ok(Err(_)) => Err(anyhow!("device {id}: connection task ended")),
            Err(_) => Err(anyhow!(
                "device {id}: no CONNACK from {host}:{port} within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// The counters of this connection (shared with its driver).
    pub fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    /// Hands one message to the client at QoS 1 (bounded).
    pub async fn publish(&self, message: &Outgoing) -> anyhow::Result<()> {
        let sent = self.client.publish(
            message.topic.as_str(),
            QoS::AtLeastOnce,
            false,
            message.payload.clone().into_bytes(),
        );
        tokio::time::timeout(PUBLISH_TIMEOUT, sent)
            .await
            .with_context(|| {
                format!(
                    "{}: client queue full for {} s",
                    message.topic,
                    PUBLISH_TIMEOUT.as_secs()
                )
            })?
            .with_context(|| format!("{}: publish failed", message.topic))
    }

    /// Sends DISCONNECT and lets the driver flush it (bounded), then stops the driver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            if self.client.disconnect().await.is_ok() {
                let _ = (&mut self.driver).await;
            }
        })
        .await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Drives one client's event loop: reports the first CONNACK (or the first error, which ends
/// it), times PUBLISH→PUBACK by packet id, and after a later error lets rumqttc reconnect
/// after a pause. Ends after sending DISCONNECT; otherwise runs until its [`Connection`]
/// aborts it.
async fn drive(
    mut eventloop: EventLoop,
    connected: oneshot::Sender<Result<(), String>>,
    acks: Arc<Acks>,
    client_id: String,
) {
    let mut connected = Some(connected);
    let mut errors = 0u64;
    // Send time of each unacknowledged packet id (at most the in-flight window).
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                in_flight.entry(pkid).or_insert_with(Instant::now);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => match in_flight.remove(&ack.pkid) {
                Some(sent) => acks.record(sent.elapsed()),
                None => tracing::debug!(client_id, pkid = ack.pkid, "PUBACK of no publish"),
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
                errors += 1;
                // The first error of a device, then every hundredth: a broker outage must not
                // flood the log.
                if errors % 100 == 1 {
                    tracing::warn!(client_id, error = %e, errors, "MQTT connection error; reconnecting");
                }
                tokio::time::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}
