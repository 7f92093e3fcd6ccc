//! Notification delivery: every committed alarm transition (raised, cleared, acknowledged) to
//! the targets of its rule — MQTT `alerts/{device}`, webhook, email (SMTP), SMS (provider
//! webhook) — at least once, after the Raft commit (DESIGN.md §7).
//!
//! ## How
//! [`start`] subscribes to the control plane's applied events (sent once the entry is durable
//! and applied on this node). An alarm event is delivered by the node that owns the device's
//! shard in the applied map — the node whose actor committed it (acknowledgements and
//! rule-deletion clears included), so each transition is sent from one node. Its targets come
//! from the rule's current version, or its last version when the rule was deleted. Each
//! (event, target) is one task: rate limit per target ([`policy::RateLimits`]; over the limit
//! it is dropped and counted), then attempts with exponential backoff and jitter
//! ([`policy::backoff`]) while the failure is retryable, each attempt carrying the idempotency
//! key `(alarm id, transition)` (`Idempotency-Key` header, email Message-ID, `idempotency_key`
//! in JSON bodies).
//!
//! ## Gaps (at-least-once holds while the owner runs)
//! - A node crash (or restart) between the commit and the end of the delivery loses that
//!   delivery: pending deliveries live in memory only. Closing it needs a delivered-marker
//!   in the Raft state machine that a new owner replays; not done.
//! - A shard move right at the commit can make both nodes or neither think they own the
//!   device when the event is applied (both: a duplicate, harmless by the key; neither: lost).
//! - If this task falls more than `raft::EVENTS_CAPACITY` events behind the state machine,
//!   the missed events are not delivered (`starling_notify_lagged_events_total`).
//! - Deliveries of one target are not ordered: a retried `raised` may arrive after `cleared`.
//!
//! ## Layout
//! [`payload`] (what is sent; pure), [`policy`] (retry schedule and rate limits; pure),
//! [`http`] (webhook and SMS POSTs), [`email`] (lettre), [`mqtt`] (QoS 1 publisher).

pub mod email;
pub mod http;
pub mod mqtt;
pub mod payload;
pub mod policy;

use std::sync::Arc;

use backon::Retryable;
use tokio::sync::{Semaphore, broadcast, watch};
use tracing::Instrument;

use crate::config::notify::NotifyConfig;
use crate::metrics_names::{
    NOTIFY_FAILED, NOTIFY_LAGGED, NOTIFY_RATE_LIMITED, NOTIFY_RETRIED, NOTIFY_SENT,
};
use crate::model::{AlarmEvent, Target};
use crate::raft::{Applied, ControlPlane};

/// Most deliveries in progress at once on a node; further ones wait for a slot.
const MAX_CONCURRENT: usize = 256;

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
    let watcher = Watcher {
        control,
        node_id,
        shards,
        senders,
        slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
    };
    Ok(vec![mqtt_task, tokio::spawn(watcher.run(events, stop))])
}

/// Turns applied alarm events into delivery tasks.
struct Watcher {
    control: ControlPlane,
    node_id: u64,
    shards: u32,
    senders: Arc<Senders>,
    slots: Arc<Semaphore>,
}

impl Watcher {
    async fn run(self, mut events: broadcast::Receiver<Applied>, mut stop: watch::Receiver<bool>) {
        let mut shrink = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                // The next applied entry's event.
                ev = events.recv() => match ev {
                    Ok(Applied::Alarm(ev)) => self.dispatch(ev),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!(NOTIFY_LAGGED).increment(n);
                        tracing::error!(missed = n, "notify fell behind the control plane; those alarm events are not delivered");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                // Forget the buckets of quiet targets.
                _ = shrink.tick() => self.senders.limits.shrink(),
                // Node shutdown (deliveries in progress are abandoned).
                _ = crate::cluster::stopped(&mut stop) => break,
            }
        }
    }

    /// Spawns one delivery per target, if this node owns the device.
    fn dispatch(&self, ev: AlarmEvent) {
        let device = &ev.alarm.device;
        let shard = crate::shard::shard_of(device, self.shards);
        if self.control.shard_owner(shard).map(|(node, _)| node) != Some(self.node_id) {
            return;
        }
        let targets = self.targets(&ev);
        for target in targets {
            let slots = self.slots.clone();
            let senders = self.senders.clone();
            let ev = ev.clone();
            let span = tracing::info_span!(
                "notify.deliver",
                alarm = %ev.alarm.id,
                transition = payload::transition_name(ev.transition),
                target = kind(&target),
            );
            tokio::spawn(
                async move {
                    // Waiting here, not in the event loop, keeps the loop from falling behind
                    // the control plane while slow targets hold every slot.
                    let Ok(_slot) = slots.acquire_owned().await else {
                        return;
                    };
                    deliver(&senders, &target, &ev).await;
                }
                .instrument(span),
            );
        }
    }

    /// The rule's targets: its current version, else (deleted) its last version.
    fn targets(&self, ev: &AlarmEvent) -> Vec<Target> {
        let tenant = &ev.alarm.device.tenant;
        let rule_id = &ev.alarm.rule_id;
        if let Some(rule) = self.control.rule(tenant, rule_id) {
            return rule.doc.notify;
        }
        match self.control.rule_history(tenant, rule_id) {
            Ok(history) => history
                .last()
                .map(|r| r.doc.notify.clone())
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(rule = %rule_id, error = %e, "cannot read the rule's targets");
                Vec::new()
            }
        }
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
