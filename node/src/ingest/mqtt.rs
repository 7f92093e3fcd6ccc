//! The MQTT ingress: subscribe, parse, store through the [`PointSink`], acknowledge in order.
//!
//! Protocol: **MQTT 5** (rumqttc `v5`), QoS 1 subscriptions (shared by default), persistent
//! session (clean start off, long session expiry) under a client id that is stable per node,
//! manual acks, and the window announced as Receive Maximum (`max_in_flight`). Tested against
//! Mosquitto 2.0.11 and the embedded rumqttd 0.20 (`tests/t05_ingest_mqtt.rs`): ordered acks,
//! poison acked, redelivery of un-acked messages after a crash and restart under the same id.
//! The brokers' own windows still apply: rumqttd 0.20 ignores Receive Maximum and keeps at most
//! 100 un-acked messages out per connection (read in its source); with Mosquitto set
//! `max_inflight_messages` ≥ our window (the tests use 1000). rumqttd's shared subscriptions
//! are not usable with persistent sessions, so `dev` subscribes without `$share` (see
//! `broker::INGEST_FILTERS`).
//!
//! The acknowledgement rule (DESIGN §5): a PUBACK leaves only once every accepted point of that
//! message is durable (the sink's `ingest` resolved `Ok`), and PUBACKs leave in the order the
//! PUBLISHes arrived on the connection: every message, valid or not, takes a place in one FIFO
//! (`FuturesOrdered`) and only its head is acknowledged. Consequences:
//! - a slow store for message k holds the acks of k+1, …;
//! - invalid messages (all samples rejected) are acknowledged in their turn, never stored:
//!   poison must not be redelivered forever;
//! - a failing sink is retried with capped backoff (10 ms → 1 s) until it succeeds, the
//!   connection the message came on is lost (the broker redelivers it), or shutdown starts;
//!   nothing is acknowledged meanwhile;
//! - acks of a lost connection are dropped, never sent on the next one (see `connection.rs`);
//! - backpressure: at most `max_in_flight` messages are held; beyond it the connection task
//!   stops reading.
//!
//! Rejections are counted ([`INGEST_REJECTED`] by reason), logged at most
//! [`LOG_REJECTIONS_PER_SEC`] a second, and reported to the device on `…/errors` (QoS 0,
//! best effort, at most [`REPORTS_PER_MESSAGE`] per message) as
//! `{"reason": …, "message": …, "sample": index|null}`.
//!
//! Shutdown: when `shutdown` turns true the loop takes no new messages, awaits the in-flight
//! ones, sends their acks, disconnects cleanly and returns `Ok`. Messages it did not take stay
//! un-acked in the persistent session and come back on the next connect.
//!
//! Rescue (`cluster/rescue.rs`) runs this same loop under a dead node's client id, and uses
//! [`MqttIngestConfig::unsubscribe`] to stop new messages reaching that session while the
//! ones already queued in it are still delivered and stored.
//!
//! Not here: parsing rules (`payload.rs`), routing/storage (behind [`PointSink`]), deciding
//! when to rescue, TLS to the broker.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{Instrument, debug, error, info, warn};

use super::connection::{ConnEvent, Connection};
pub use super::log_limit::LOG_REJECTIONS_PER_SEC;
use super::log_limit::LogLimiter;
use super::payload::{self, Limits};
use super::{IngestError, PointSink, SinkError};
use crate::metrics_names::{INGEST_ACKS, INGEST_IN_FLIGHT, INGEST_MESSAGES, INGEST_REJECTED};
use crate::model::{DeviceKey, Sample};

/// Default subscriptions: every node joins the same shared group for both topic forms.
pub const DEFAULT_FILTERS: [&str; 2] = [
    "$share/starling/devices/+/telemetry",
    "$share/starling/tenants/+/devices/+/telemetry",
];

/// At most this many error reports are published for one message.
pub const REPORTS_PER_MESSAGE: usize = 10;

/// Sink retry backoff bounds.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a graceful shutdown waits for the DISCONNECT to be written.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of one ingest connection.
#[derive(Clone, Debug)]
pub struct MqttIngestConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// MQTT client id; stable per node (and per connection) so the persistent session, with
    /// its queued and un-acked messages, survives restarts. E.g. `starling-node-1`.
    pub client_id: String,
    /// Subscription filters, QoS 1. Default [`DEFAULT_FILTERS`].
    pub filters: Vec<String>,
    /// In-flight window: Receive Maximum announced to the broker, and the most messages held
    /// un-acked. Default 1000; keep it well above the store's group-commit batch.
    pub max_in_flight: u16,
    /// Largest accepted payload, bytes; larger ones are rejected (`oversized`) and acked.
    /// Default 64 KiB.
    pub max_payload_bytes: usize,
    /// MQTT keep-alive, ≥ 5 s. Default 30 s.
    pub keep_alive: Duration,
    /// Session expiry announced to the broker: how long it keeps our session (subscriptions,
    /// queued messages) while we are away. Default 7 days.
    pub session_expiry: Duration,
    /// Shared flag telling whether the subscription is live (for readiness).
    pub health: super::IngestHealth,
    /// Accepted `ts` window around the receive time (see [`Limits`]). Default: at most one
    /// day in the future, any age.
    pub max_ts_future: Option<Duration>,
    pub max_ts_age: Option<Duration>,
    /// Username and password for the broker (`None`: none sent).
    pub credentials: Option<(String, String)>,
    /// When this turns true, the filters are unsubscribed (the session stays, and what is
    /// queued in it keeps arriving). Used to drain a rescued session. `None`: never.
    pub unsubscribe: Option<watch::Receiver<bool>>,
}

impl MqttIngestConfig {
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            client_id: client_id.into(),
            filters: DEFAULT_FILTERS.iter().map(|f| (*f).to_owned()).collect(),
            max_in_flight: 1000,
            max_payload_bytes: Limits::default().max_payload_bytes,
            keep_alive: Duration::from_secs(30),
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            health: super::IngestHealth::default(),
            max_ts_future: Some(Duration::from_secs(86_400)),
            max_ts_age: None,
            unsubscribe: None,
            credentials: None,
        }
    }

    /// Checks rules the types do not; errors name the field.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |field, reason: &str| {
            Err(IngestError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.host.is_empty() {
            return bad("host", "empty");
        }
        if self.client_id.is_empty() {
            return bad("client_id", "empty: a persistent session needs a stable id");
        }
        if self.filters.is_empty() || self.filters.iter().any(String::is_empty) {
            return bad("filters", "need at least one non-empty filter");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes", "must be at least 1");
        }
        if self.keep_alive < Duration::from_secs(5) {
            return bad("keep_alive", "must be at least 5 s");
        }
        if self.session_expiry.is_zero() {
            return bad(
                "session_expiry",
                "0 would end the session at every disconnect",
            );
        }
        Ok(())
    }

    /// Payload limits: the documented defaults with this payload size.
    pub fn limits(&self) -> Limits {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_ts_future_ms: self.max_ts_future.map(ms),
            max_ts_age_ms: self.max_ts_age.map(ms),
            ..Limits::default()
        }
    }

    fn mqtt_options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        // Packets up to 4x the payload limit (at least 1 MiB) reach us, so an oversized payload
        // is rejected and acknowledged rather than failing the connection over and over.
        let max_packet = (self.max_payload_bytes.saturating_mul(4)).max(1 << 20);
        let expiry = u32::try_from(self.session_expiry.as_secs()).unwrap_or(u32::MAX);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(expiry))
            .set_receive_maximum(Some(self.max_in_flight))
            .set_max_packet_size(Some(u32::try_from(max_packet).unwrap_or(u32::MAX)))
            .set_manual_acks(true)
            .set_keep_alive(self.keep_alive);
        options
    }
}

/// Runs the ingress until `shutdown` turns true (or its sender is dropped), then drains and
/// disconnects. Broker outages are not errors: the loop reconnects. See the module doc.
pub async fn run(
    config: MqttIngestConfig,
    sink: Arc<dyn PointSink>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    config.validate()?;
    let window_size = usize::from(config.max_in_flight);
    // Room for every ack of a full window twice over, plus reports and control packets.
    let (client, eventloop) = AsyncClient::new(config.mqtt_options(), window_size * 2 + 64);
    // One slot more than the window, held by the connection task while it waits for a packet,
    // so a broker that fills our Receive Maximum does not stop keep-alives.
    let window = Arc::new(Semaphore::new(window_size + 1));
    let (generation_tx, generation) = watch::channel(0u64);
    let (events_tx, events) = mpsc::unbounded_channel();
    let connection = Connection {
        eventloop,
        client: client.clone(),
        filters: config.filters.clone(),
        window: window.clone(),
        generation: generation_tx,
        events: events_tx,
        shutdown: shutdown.clone(),
        health: config.health.clone(),
    };
    // Aborted if this future is dropped (the caller's task cancelled): no orphan connection.
    let mut task = AbortOnDrop(tokio::spawn(connection.run()));
    let _unsubscriber = config.unsubscribe.clone().map(|mut when| {
        let (client, filters) = (client.clone(), config.filters.clone());
        AbortOnDrop(tokio::spawn(async move {
            if when.wait_for(|u| *u).await.is_ok() {
                for f in filters {
                    if let Err(e) = client.unsubscribe(f.clone()).await {
                        warn!(filter = %f, error = %e, "could not queue the unsubscribe");
                    }
                }
                info!("MQTT ingest unsubscribed (draining the session)");
            }
        }))
    });
    info!(
        broker = %format!("{}:{}", config.host, config.port),
        client_id = %config.client_id,
        filters = ?config.filters,
        max_in_flight = config.max_in_flight,
        "MQTT ingest starting"
    );
    let ingress = Ingress {
        sink,
        client,
        generation,
        shutdown,
        limits: config.limits(),
        log_limiter: LogLimiter::default(),
    };
    let client = ingress.run(events).await;

    // Drained: release the connection task from any wait; it flushes the acks queued before
    // the DISCONNECT, writes it and ends.
    window.close();
    if let Err(e) = client.try_disconnect() {
        debug!(error = %e, "DISCONNECT not queued (connection already gone)");
    }
    match tokio::time::timeout(DISCONNECT_TIMEOUT, &mut task.0).await {
        Ok(Ok(())) => {
            info!("MQTT ingest stopped");
            Ok(())
        }
        Ok(Err(join)) => Err(IngestError::TaskFailed {
            task: "mqtt connection",
            reason: join.to_string(),
        }),
        Err(_) => {
            warn!("MQTT ingest: DISCONNECT not written in time; dropping the connection");
            Ok(())
        }
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What became of one message's points.
enum Outcome {
    /// Nothing to store (all samples rejected) or everything stored: acknowledge.
    Done,
    /// The sink refused the samples for good: acknowledge, report as rejected.
    Refused { device: DeviceKey, error: SinkError },
    /// Not stored (connection lost or shutdown during retries): never acknowledge.
    Abandoned,
}

/// A message leaving the head of the window.
struct Finished {
    generation: u64,
    qos: QoS,
    pkid: u16,
    /// Where to report a refusal; `None` when the topic was invalid.
    errors_topic: Option<String>,
    outcome: Outcome,
    /// The window slot, released when this is dropped.
    _slot: OwnedSemaphorePermit,
}

/// The per-connection ingest state that is not the window itself.
struct Ingress {
    sink: Arc<dyn PointSink>,
    client: AsyncClient,
    /// Generation of the live connection (0: none); written by the connection task.
    generation: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    log_limiter: LogLimiter,
}

impl Ingress {
    /// The loop: takes messages into the ordered window and acknowledges its head. Returns the
    /// client once stopping and the window is empty (or the connection task is gone and the
    /// window drained).
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<ConnEvent>) -> AsyncClient {
        let mut in_flight: FuturesOrdered<BoxFuture<'static, Finished>> = FuturesOrdered::new();
        let mut shutdown = self.shutdown.clone();
        let mut stopping = *shutdown.borrow();
        let mut connection_open = true;
        loop {
            if stopping && in_flight.is_empty() {
                return self.client;
            }
            tokio::select! {
                // The oldest message is done: acknowledge it. Acks leave in arrival order
                // because only the head of the ordered window is ever taken.
                Some(finished) = in_flight.next(), if !in_flight.is_empty() => {
                    self.acknowledge(finished);
                }
                // Connection news and new messages; messages are left un-acked once stopping.
                event = events.recv(), if connection_open => match event {
                    Some(event) => {
                        if let Some(work) = self.on_event(event, stopping) {
                            in_flight.push_back(work);
                        }
                    }
                    None => {
                        // The connection task ended (only after shutdown began).
                        connection_open = false;
                        stopping = true;
                    }
                },
                // Shutdown requested, or its sender dropped: stop taking messages.
                changed = shutdown.changed(), if !stopping => {
                    stopping = changed.is_err() || *shutdown.borrow();
                    if stopping {
                        info!(in_flight = in_flight.len(), "MQTT ingest draining");
                    }
                }
            }
            metrics::gauge!(INGEST_IN_FLIGHT).set(in_flight.len() as f64);
        }
    }

    fn on_event(
        &mut self,
        event: ConnEvent,
        stopping: bool,
    ) -> Option<BoxFuture<'static, Finished>> {
        match event {
            ConnEvent::Up {
                generation,
                session_present,
            } => {
                debug!(generation, session_present, "ingest connection up");
                None
            }
            ConnEvent::Down { generation, error } => {
                debug!(generation, %error, "ingest connection down");
                None
            }
            ConnEvent::Message { .. } if stopping => None,
            ConnEvent::Message {
                generation,
                publish,
                received_at_ms,
                slot,
            } => Some(self.take(generation, publish, received_at_ms, slot)),
        }
    }

    /// Parses one message, counts and reports its rejections, and returns the future that
    /// stores its accepted samples.
    fn take(
        &mut self,
        generation: u64,
        publish: Publish,
        received_at_ms: i64,
        slot: OwnedSemaphorePermit,
    ) -> BoxFuture<'static, Finished> {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let errors_topic = payload::errors_topic(&topic);
        let mut finished = Finished {
            generation,
            qos: publish.qos,
            pkid: publish.pkid,
            errors_topic: None,
            outcome: Outcome::Done,
            _slot: slot,
        };
        let parsed =
            match payload::parse_message(&topic, &publish.payload, &self.limits, received_at_ms) {
                Ok(parsed) => parsed,
                Err(rejection) => {
                    metrics::counter!(INGEST_MESSAGES, "result" => "rejected").increment(1);
                    self.reject(
                        &topic,
                        rejection.device.as_ref().and(errors_topic.as_deref()),
                        rejection.reason.as_str(),
                        &rejection.message,
                        None,
                    );
                    return Box::pin(std::future::ready(finished));
                }
            };
        let result = if parsed.samples.is_empty() {
            "rejected"
        } else {
            "accepted"
        };
        metrics::counter!(INGEST_MESSAGES, "result" => result).increment(1);
        for (n, rejected) in parsed.rejected.iter().enumerate() {
            let report_to = errors_topic.as_deref().filter(|_| n < REPORTS_PER_MESSAGE);
            self.reject(
                &topic,
                report_to,
                rejected.reason.as_str(),
                &rejected.message,
                Some(rejected.index),
            );
        }
        if parsed.samples.is_empty() {
            return Box::pin(std::future::ready(finished));
        }
        finished.errors_topic = errors_topic;
        let sink = self.sink.clone();
        let connection = self.generation.clone();
        let shutdown = self.shutdown.clone();
        // The root of the point's trace: MQTT receive → device actor → store → alarms.
        let span = tracing::info_span!(
            "ingest.message",
            device = %parsed.device,
            samples = parsed.samples.len(),
            pkid = finished.pkid,
        );
        Box::pin(async move {
            finished.outcome = store(
                sink,
                parsed.device,
                parsed.samples.into(),
                received_at_ms,
                generation,
                connection,
                shutdown,
            )
            .instrument(span)
            .await;
            finished
        })
    }

    /// Acknowledges the head of the window if its connection is still the live one.
    fn acknowledge(&mut self, finished: Finished) {
        match &finished.outcome {
            Outcome::Abandoned => {
                debug!(pkid = finished.pkid, "not stored: left for redelivery");
                return;
            }
            Outcome::Refused { device, error } => {
                let message = format!("{device}: {}", error.message);
                self.reject(
                    "",
                    finished.errors_topic.as_deref(),
                    error.reason,
                    &message,
                    None,
                );
            }
            Outcome::Done => {}
        }
        if finished.qos == QoS::AtMostOnce {
            return;
        }
        let mut ack = Publish::new("", finished.qos, Vec::new(), None);
        ack.pkid = finished.pkid;
        // Checked and queued under the generation lock: see `connection.rs`.
        let live = self.generation.borrow();
        if *live != finished.generation {
            debug!(
                pkid = finished.pkid,
                of = finished.generation,
                live = *live,
                "ack of an earlier connection dropped"
            );
            return;
        }
        match self.client.try_ack(&ack) {
            Ok(()) => metrics::counter!(INGEST_ACKS).increment(1),
            // Only when the broker ignores our Receive Maximum: the message stays un-acked
            // and is redelivered after the next reconnect (a duplicate, not a loss).
            Err(e) => error!(pkid = finished.pkid, error = %e, "ack could not be queued"),
        }
    }

    /// Counts, logs (rate-limited) and reports one rejection.
    fn reject(
        &mut self,
        topic: &str,
        report_to: Option<&str>,
        reason: &'static str,
        message: &str,
        sample: Option<usize>,
    ) {
        metrics::counter!(INGEST_REJECTED, "reason" => reason).increment(1);
        if self.log_limiter.allow() {
            warn!(topic, reason, sample, message, "telemetry rejected");
        }
        if let Some(errors_topic) = report_to {
            let report =
                serde_json::json!({"reason": reason, "message": message, "sample": sample});
            let sent = self.client.try_publish(
                errors_topic,
                QoS::AtMostOnce,
                false,
                report.to_string().into_bytes(),
            );
            if let Err(e) = sent {
                debug!(error = %e, errors_topic, "rejection report dropped");
            }
        }
    }
}

/// Stores the samples, retrying retryable sink errors with capped backoff while the message's
/// connection lives and shutdown has not started.
async fn store(
    sink: Arc<dyn PointSink>,
    device: DeviceKey,
    samples: Arc<[Sample]>,
    received_at_ms: i64,
    generation: u64,
    mut connection: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let mut backoff = RETRY_MIN;
    loop {
        match sink
            .ingest(device.clone(), samples.clone(), received_at_ms)
            .await
        {
            Ok(()) => return Outcome::Done,
            Err(error) if !error.retryable => return Outcome::Refused { device, error },
            Err(error) => {
                debug!(%device, %error, ?backoff, "store failed; retrying");
                tokio::select! {
                    // Wait before retrying.
                    _ = tokio::time::sleep(backoff) => {}
                    // The connection is gone: the broker redelivers, give up here.
                    _ = connection.wait_for(|live| *live != generation) => return Outcome::Abandoned,
                    // Shutdown: finish what succeeds, stop retrying what fails.
                    _ = shutdown.wait_for(|stop| *stop) => return Outcome::Abandoned,
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_field() {
        let ok = MqttIngestConfig::new("localhost", 1883, "starling-node-1");
        assert!(ok.validate().is_ok());
        type Breaker = fn(&mut MqttIngestConfig);
        let cases: Vec<(&str, Breaker)> = vec![
            ("host", |c| c.host.clear()),
            ("client_id", |c| c.client_id.clear()),
            ("filters", |c| c.filters.clear()),
            ("filters", |c| c.filters.push(String::new())),
            ("max_in_flight", |c| c.max_in_flight = 0),
            ("max_payload_bytes", |c| c.max_payload_bytes = 0),
            ("keep_alive", |c| c.keep_alive = Duration::from_secs(4)),
            ("session_expiry", |c| c.session_expiry = Duration::ZERO),
        ];
        for (field, break_it) in cases {
            let mut config = ok.clone();
            break_it(&mut config);
            match config.validate() {
                Err(IngestError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
