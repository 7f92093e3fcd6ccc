//! MQTT publisher of alarm events: `alerts/{device}` (tenant form
//! `tenants/{t}/alerts/{device}`), QoS 1, JSON, on the node's broker.
//!
//! One MQTT 5 connection per node under client id `{mqtt_client_id}-notify` (never the ingest
//! id: the broker would disconnect the ingest session), clean start, no subscriptions. A
//! publish resolves when the broker's PUBACK for it arrives: publishes are queued in order and
//! matched to packet ids as rumqttc writes them (`Outgoing::Publish(pkid)`), then to the
//! PUBACK of that id. When the connection fails every waiting publish fails as retryable and
//! the client is rebuilt, so nothing is matched across connections (the delivery's retry
//! publishes again; receivers deduplicate by the idempotency key in the payload).
//!
//! This and `ingest/` are the only modules that import rumqttc (and `simulate/`, which plays
//! devices).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::{oneshot, watch};

use super::SendError;

/// Pause after a connection error before reconnecting.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Requests rumqttc may hold before `try_publish` refuses (then retried by the delivery).
const REQUEST_CAPACITY: usize = 1024;

type Waiter = oneshot::Sender<Result<(), SendError>>;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
}

/// Publishes QoS 1 messages and reports their PUBACK. Cheap to clone.
#[derive(Clone)]
pub struct MqttPublisher {
    shared: Arc<Mutex<Shared>>,
    timeout: Duration,
}

struct Shared {
    client: AsyncClient,
    /// Publishes handed to rumqttc whose packet id is not known yet, in order.
    queued: VecDeque<Waiter>,
    /// Publishes written under a packet id, waiting for its PUBACK.
    in_flight: HashMap<u16, Waiter>,
}

impl Shared {
    fn fail_all(&mut self, reason: &str) {
        let waiters = self
            .queued
            .drain(..)
            .chain(self.in_flight.drain().map(|(_, w)| w));
        for w in waiters {
            let _ = w.send(Err(SendError::retryable(reason.to_owned())));
        }
    }
}

fn connect(config: &PublisherConfig) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_clean_start(true);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = &config.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    AsyncClient::new(options, REQUEST_CAPACITY)
}

impl MqttPublisher {
    /// Starts the connection task; it stops when `stop` turns true. A publish waits at most
    /// `timeout` for its PUBACK.
    pub fn start(
        config: PublisherConfig,
        timeout: Duration,
        stop: watch::Receiver<bool>,
    ) -> (MqttPublisher, tokio::task::JoinHandle<()>) {
        let (client, eventloop) = connect(&config);
        let shared = Arc::new(Mutex::new(Shared {
            client,
            queued: VecDeque::new(),
            in_flight: HashMap::new(),
        }));
        let task = tokio::spawn(run(config, eventloop, shared.clone(), stop));
        (MqttPublisher { shared, timeout }, task)
    }

    /// Publishes `payload` on `topic` at QoS 1; `Ok` once the broker acknowledged it.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        {
            // The lock keeps the order of `queued` the order rumqttc writes the publishes.
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| SendError::retryable(format!("MQTT publish to {topic}: {e}")))?;
            shared.queued.push_back(tx);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SendError::retryable(format!(
                "MQTT publish to {topic}: the connection task stopped"
            ))),
            Err(_) => Err(SendError::retryable(format!(
                "MQTT publish to {topic}: no PUBACK within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Drives the connection: matches packet ids and PUBACKs, rebuilds the client on errors.
async fn run(
    config: PublisherConfig,
    mut eventloop: EventLoop,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            // The next packet in or out (connects on the first poll, reconnects after errors).
            event = eventloop.poll() => event,
            // Node shutdown.
            _ = crate::cluster::stopped(&mut stop) => break,
        };
        if let Some(fresh) = handle(&config, &shared, event) {
            eventloop = fresh;
            tokio::select! {
                // Wait before reconnecting.
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                // Node shutdown.
                _ = crate::cluster::stopped(&mut stop) => break,
            }
        }
    }
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    s.fail_all("node shutting down");
    let _ = s.client.try_disconnect();
}

/// Applies one event to the waiters; after a connection error, returns the new event loop.
fn handle(
    config: &PublisherConfig,
    shared: &Mutex<Shared>,
    event: Result<Event, rumqttc::v5::ConnectionError>,
) -> Option<EventLoop> {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    match event {
        Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
            if let Some(w) = s.queued.pop_front() {
                s.in_flight.insert(pkid, w);
            }
        }
        Ok(Event::Incoming(Packet::PubAck(ack))) => {
            if let Some(w) = s.in_flight.remove(&ack.pkid) {
                let result = match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                    PubAckReason::NotAuthorized | PubAckReason::TopicNameInvalid => {
                        Err(SendError::permanent(format!(
                            "broker refused the alert publish: {:?}",
                            ack.reason
                        )))
                    }
                    other => Err(SendError::retryable(format!(
                        "broker refused the alert publish: {other:?}"
                    ))),
                };
                let _ = w.send(result);
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, client_id = %config.client_id, "alert publisher lost the broker");
            s.fail_all(&format!("MQTT connection lost: {e}"));
            // A fresh client and event loop: nothing pending crosses connections.
            let (client, fresh) = connect(config);
            s.client = client;
            return Some(fresh);
        }
    }
    None
}
