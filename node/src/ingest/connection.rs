//! The task that owns the rumqttc event loop of one MQTT connection.
//!
//! It polls the event loop without ever cancelling a poll (a cancelled poll can lose a queued
//! PUBACK), forwards connection changes and incoming PUBLISHes to the ingest loop, and
//! reconnects with capped backoff. Before reading the next packet it takes a slot of the
//! in-flight window (a semaphore permit that travels with the message): when the window is full
//! it stops polling, so the socket fills up and the broker holds further messages. A broker
//! that honours our Receive Maximum never gets there.
//!
//! Connection generations: the shared `generation` watch holds the generation of the live
//! connection, 0 while disconnected. It is changed only here, and on a disconnect it is changed
//! together with purging PUBACKs still queued for the dead connection (under the watch's lock),
//! so an ack checked against the generation under the same lock can never reach a later
//! connection: the broker redelivers those messages instead.
//!
//! It does not parse, store, or decide what to acknowledge.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

/// What the connection task tells the ingest loop.
// The large variant is the hot one; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnEvent {
    /// Connected (CONNACK received) as generation `generation`.
    Up {
        generation: u64,
        session_present: bool,
    },
    /// The connection of `generation` is gone; its un-acked messages will be redelivered.
    Down { generation: u64, error: String },
    /// A PUBLISH, holding one slot of the in-flight window until dropped.
    Message {
        generation: u64,
        publish: Publish,
        received_at_ms: i64,
        slot: OwnedSemaphorePermit,
    },
}

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) struct Connection {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
    pub filters: Vec<String>,
    pub window: Arc<Semaphore>,
    pub generation: watch::Sender<u64>,
    pub events: mpsc::UnboundedSender<ConnEvent>,
    pub shutdown: watch::Receiver<bool>,
    pub health: super::IngestHealth,
}

impl Connection {
    /// Runs until the ingest loop has closed the window and the DISCONNECT is written (or the
    /// connection fails while draining, or shutdown comes while disconnected).
    pub async fn run(mut self) {
        let mut slot: Option<OwnedSemaphorePermit> = None;
        let mut draining = false;
        let mut last_generation = 0;
        let mut backoff = BACKOFF_MIN;
        loop {
            if slot.is_none() && !draining {
                // Backpressure: wait for a free window slot before reading more. A closed
                // window means the ingest loop is done: only acks and DISCONNECT remain.
                match self.window.clone().acquire_owned().await {
                    Ok(permit) => slot = Some(permit),
                    Err(_) => draining = true,
                }
            }
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    last_generation += 1;
                    backoff = BACKOFF_MIN;
                    self.generation.send_replace(last_generation);
                    info!(
                        generation = last_generation,
                        session_present = connack.session_present,
                        "MQTT ingest connected"
                    );
                    // Subscribe on every connect: harmless when the session kept the
                    // subscription, needed when the broker lost it.
                    let filters = self
                        .filters
                        .iter()
                        .map(|f| Filter::new(f, QoS::AtLeastOnce));
                    if let Err(e) = self.client.try_subscribe_many(filters) {
                        warn!(error = %e, "could not queue the subscription");
                    }
                    let _ = self.events.send(ConnEvent::Up {
                        generation: last_generation,
                        session_present: connack.session_present,
                    });
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if draining {
                        // Not acknowledged: the broker redelivers it to the session later.
                        continue;
                    }
                    let Some(permit) = slot.take() else {
                        // Only reachable while draining, handled above.
                        continue;
                    };
                    let _ = self.events.send(ConnEvent::Message {
                        generation: last_generation,
                        publish,
                        received_at_ms: now_ms(),
                        slot: permit,
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    debug!(reasons = ?suback.return_codes, "subscribed");
                    let granted = suback.return_codes.iter().all(|c| {
                        matches!(
                            c,
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                        )
                    });
                    if !granted {
                        warn!(reasons = ?suback.return_codes, "broker refused a subscription");
                    }
                    self.health.set_subscribed(granted);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if draining => {
                    info!("MQTT ingest disconnected cleanly");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let was = *self.generation.borrow();
                    // Purge acks that may have been queued for the dead connection after the
                    // event loop's own purge, atomically with marking it dead.
                    self.generation.send_modify(|generation| {
                        *generation = 0;
                        self.eventloop.clean();
                    });
                    self.health.set_subscribed(false);
                    if was != 0 {
                        warn!(generation = was, error = %e, "MQTT ingest connection lost");
                        let _ = self.events.send(ConnEvent::Down {
                            generation: was,
                            error: e.to_string(),
                        });
                    } else {
                        debug!(error = %e, "MQTT ingest connect failed");
                    }
                    if draining || *self.shutdown.borrow() {
                        return;
                    }
                    tokio::select! {
                        // Wait before reconnecting.
                        _ = tokio::time::sleep(backoff) => {}
                        // Shutdown: nothing left to acknowledge on a dead connection.
                        _ = self.shutdown.wait_for(|stop| *stop) => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
