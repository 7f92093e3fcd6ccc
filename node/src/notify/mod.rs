//! Notification delivery: every committed alarm transition (raised, cleared, acknowledged) to
//! the targets of its rule — MQTT `alerts/{device}`, webhook, email (SMTP), SMS (provider
//! webhook) — at least once, after the Raft commit (DESIGN.md §7).
//!
//! ## How
//! Applying a transition whose rule has targets also records a pending delivery in the Raft
//! outbox (`raft/outbox.rs`): the event as committed and the targets of the rule's latest
//! version. [`start`] subscribes to the control plane's applied events (sent once the entry
//! is durable and applied on this node). The node that owns the device's shard in the
//! applied map — the node whose actor committed it (acknowledgements and rule-deletion clears
//! included) — delivers the pending row at once. Each target of a delivery: rate limit per
//! target ([`policy::RateLimits`]; over the limit it is dropped and counted), then attempts
//! with exponential backoff and jitter ([`policy::backoff`]) while the failure is retryable,
//! each attempt carrying the idempotency key `(alarm id, transition)` (`Idempotency-Key`
//! header, email Message-ID, `idempotency_key` in JSON bodies). When every target is done
//! (sent, given up, or dropped; each counted) the key is proposed, batched, in a
//! `NotificationsDelivered` entry that removes the row ([`outbox`]).
//!
//! A row still there after a crash is delivered again: the notifier scans the outbox for its
//! devices at start, when this node gains shards (failover, rebalancing), after a snapshot,
//! after falling behind the event stream, and every [`RESCAN_EVERY`].
//!
//! ## Gaps (at least once, not exactly once)
//! - A crash after a delivery but before its `NotificationsDelivered` is applied sends it
//!   again (same key); so does a shard move during a delivery (both owners send).
//! - A delivery given up after its retry schedule (or dropped by the rate limit) is removed
//!   from the outbox like a sent one: it is counted and logged, not kept for later.
//! - A shard move right at the commit can make neither node own the device when the event is
//!   applied; the owner's next periodic scan then delivers it (up to [`RESCAN_EVERY`] late).
//! - Deliveries of one target are not ordered: a retried `raised` may arrive after `cleared`.
//! - Mixed-version clusters: a build without the outbox cannot decode
//!   `NotificationsDelivered`; every node must be upgraded before alarms fire.
//!
//! ## Layout
//! [`payload`] (what is sent; pure), [`policy`] (retry schedule and rate limits; pure),
//! [`http`] (webhook and SMS POSTs), [`email`] (lettre), [`mqtt`] (QoS 1 publisher),
//! [`outbox`] (claims and scans of pending deliveries, recording finished ones).

pub mod email;
pub mod http;
pub mod mqtt;
pub mod outbox;
pub mod payload;
pub mod policy;

use std::sync::Arc;

use backon::Retryable;
use tokio::sync::{Semaphore, broadcast, watch};
use tracing::Instrument;

use crate::config::notify::NotifyConfig;
use crate::metrics_names::{
    NOTIFY_FAILED, NOTIFY_LAGGED, NOTIFY_OUTBOX_REPLAYED, NOTIFY_RATE_LIMITED, NOTIFY_RETRIED,
    NOTIFY_SENT,
};
use crate::model::{AlarmEvent, Target};
use crate::raft::outbox::PendingDelivery;
use crate::raft::{Applied, ControlPlane};

/// Most deliveries in progress at once on a node; further ones wait for a slot.
const MAX_CONCURRENT: usize = 256;

/// How often the outbox is scanned for pending deliveries of this node's devices that no
/// event started (besides the scans at start, on gained shards and on snapshots).
pub const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether another attempt may succeed (timeouts, 5xx, lost connections).
    pub retryable: bool,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

/// What [`start`] needs.
pub struct NotifyOptions {
    pub control: ControlPlane,
    /// This node; it delivers the events of devices whose shard it owns.
    pub node_id: u64,
    /// Number of virtual shards.
    pub shards: u32,
    pub config: NotifyConfig,
    /// The broker connection for MQTT targets.
    pub mqtt: mqtt::PublisherConfig,
}

/// The senders, shared by every delivery task.
struct Senders {
    config: NotifyConfig,
    http: http::HttpSender,
    mailer: Option<email::Mailer>,
    mqtt: mqtt::MqttPublisher,
    limits: policy::RateLimits,
}

/// Starts delivery; the returned tasks end when `stop` turns true. Fails only when the
/// configuration cannot be used (the error names the field).
pub fn start(
    opts: NotifyOptions,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, SendError> {
    let NotifyOptions {
        control,
        node_id,
        shards,
        config,
        mqtt: mqtt_config,
    } = opts;
    let (publisher, mqtt_task) =
        mqtt::MqttPublisher::start(mqtt_config, config.attempt_timeout, stop.clone());
    let senders = Arc::new(Senders {
        http: http::HttpSender::new(config.attempt_timeout)?,
        mailer: email::Mailer::from_config(&config)?,
        mqtt: publisher,
        limits: policy::RateLimits::new(&config),
        config,
    });
    let events = control.subscribe();
    let (outbox, recorder) = outbox::Outbox::new(control, node_id, shards);
    let watcher = Watcher {
        outbox: Arc::new(outbox),
        node_id,
        senders,
        slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
    };
    Ok(vec![
        mqtt_task,
        tokio::spawn(recorder.run(stop.clone())),
        tokio::spawn(watcher.run(events, stop)),
    ])
}

/// Turns applied alarm events and outbox rows into delivery tasks.
struct Watcher {
    outbox: Arc<outbox::Outbox>,
    node_id: u64,
    senders: Arc<Senders>,
    slots: Arc<Semaphore>,
}

impl Watcher {
    async fn run(self, mut events: broadcast::Receiver<Applied>, mut stop: watch::Receiver<bool>) {
        let mut shrink = tokio::time::interval(std::time::Duration::from_secs(60));
        // The first tick is immediate: the scan at start delivers what a crash left behind.
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        loop {
            tokio::select! {
                // The next applied entry's event.
                ev = events.recv() => match ev {
                    Ok(Applied::Alarm(ev)) => self.live(&ev),
                    // Gained shards or a replaced state: their pending deliveries are ours now.
                    Ok(Applied::ShardsAssigned { node, .. }) if node == self.node_id => self.scan(),
                    Ok(Applied::SnapshotInstalled { .. }) => self.scan(),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!(NOTIFY_LAGGED).increment(n);
                        tracing::warn!(missed = n, "notify fell behind the control plane; delivering from the outbox");
                        self.scan();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                // Pending rows nobody here works on (a move right at the commit, a failed read).
                _ = rescan.tick() => self.scan(),
                // Forget the buckets of quiet targets.
                _ = shrink.tick() => self.senders.limits.shrink(),
                // Node shutdown (deliveries in progress are abandoned; they stay in the outbox).
                _ = crate::cluster::stopped(&mut stop) => break,
            }
        }
    }

    /// An applied transition: delivered at once if this node owns the device and it is
    /// still pending (a transition whose rule has no targets has no row).
    fn live(&self, ev: &AlarmEvent) {
        if let Some(pending) = self.outbox.live(ev)
            && self.outbox.claim(&pending.key())
        {
            self.spawn(pending);
        }
    }

    /// Starts every pending delivery of this node's devices that is not running yet.
    fn scan(&self) {
        for pending in self.outbox.scan() {
            metrics::counter!(NOTIFY_OUTBOX_REPLAYED).increment(1);
            self.spawn(pending);
        }
    }

    /// One task per delivery: every target at once (each holding a slot), then recorded.
    fn spawn(&self, pending: PendingDelivery) {
        let slots = self.slots.clone();
        let senders = self.senders.clone();
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let ev = &pending.event;
            let sends = pending.targets.iter().map(|target| {
                let span = tracing::info_span!(
                    "notify.deliver",
                    alarm = %ev.alarm.id,
                    transition = payload::transition_name(ev.transition),
                    target = kind(target),
                );
                let slots = slots.clone();
                let senders = senders.clone();
                async move {
                    // Waiting here, not in the event loop, keeps the loop from falling
                    // behind the control plane while slow targets hold every slot.
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    deliver(&senders, target, ev).await;
                }
                .instrument(span)
            });
            futures::future::join_all(sends).await;
            outbox.finished(pending.key());
        });
    }
}

/// The metric label of a target.
fn kind(target: &Target) -> &'static str {
    match target {
        Target::Webhook { .. } => "webhook",
        Target::Email { .. } => "email",
        Target::Sms { .. } => "sms",
        Target::Mqtt {} => "mqtt",
    }
}

/// The rate-limit key of a target for this event: one bucket per URL, address, number, or
/// device topic.
fn limit_key(target: &Target, ev: &AlarmEvent) -> String {
    match target {
        Target::Webhook { url } => format!("webhook {url}"),
        Target::Email { to } => format!("email {to}"),
        Target::Sms { to } => format!("sms {to}"),
        Target::Mqtt {} => format!("mqtt {}", payload::mqtt_topic(ev)),
    }
}

/// Rate limit, then attempts with backoff; counts the outcome.
async fn deliver(senders: &Senders, target: &Target, ev: &AlarmEvent) {
    let kind = kind(target);
    if !senders.limits.allow(&limit_key(target, ev)) {
        metrics::counter!(NOTIFY_RATE_LIMITED, "kind" => kind).increment(1);
        tracing::warn!(key = %payload::idempotency_key(ev), kind, "delivery dropped: target over its rate limit");
        return;
    }
    let attempt = || send_once(senders, target, ev);
    let result = attempt
        .retry(policy::backoff(&senders.config))
        .when(|e: &SendError| e.retryable)
        .notify(|e: &SendError, after| {
            metrics::counter!(NOTIFY_RETRIED, "kind" => kind).increment(1);
            tracing::debug!(error = %e, retry_in = ?after, "delivery attempt failed");
        })
        .await;
    match result {
        Ok(()) => metrics::counter!(NOTIFY_SENT, "kind" => kind).increment(1),
        Err(e) => {
            metrics::counter!(NOTIFY_FAILED, "kind" => kind).increment(1);
            tracing::warn!(key = %payload::idempotency_key(ev), kind, error = %e, "delivery failed");
        }
    }
}

/// One attempt.
async fn send_once(senders: &Senders, target: &Target, ev: &AlarmEvent) -> Result<(), SendError> {
    let key = payload::idempotency_key(ev);
    match target {
        Target::Webhook { url } => {
            senders
                .http
                .post_json(url, &key, &payload::json_body(ev), None)
                .await
        }
        Target::Sms { to } => {
            let Some(url) = &senders.config.sms_url else {
                return Err(SendError::permanent(
                    "SMS target but notify.sms_url is not set: configure the provider webhook",
                ));
            };
            let token = senders.config.sms_token.as_deref();
            senders
                .http
                .post_json(url, &key, &payload::sms_body(to, ev), token)
                .await
        }
        Target::Email { to } => match &senders.mailer {
            Some(mailer) => mailer.send(to, ev).await,
            None => Err(SendError::permanent(
                "email target but notify.smtp_host is not set: configure the SMTP server",
            )),
        },
        Target::Mqtt {} => {
            let body = payload::json_body(ev).to_string().into_bytes();
            senders.mqtt.publish(&payload::mqtt_topic(ev), body).await
        }
    }
}
