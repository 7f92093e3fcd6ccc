//! Rescue of a dead node's broker session (DESIGN.md §5).
//!
//! Mosquitto keeps handing a share of the shared subscription to a disconnected persistent
//! session and queues it there. When the leader marks a node down it names a rescuer; the
//! rescuer connects with the dead node's client id (clean start off, so it inherits the
//! session with its queued and un-acknowledged messages), stores them through the normal
//! ingest path (routing to their new owners), then unsubscribes the session so the broker
//! stops routing new messages to it, keeps storing what was already queued until the session
//! has been quiet for [`QUIET`], and disconnects. The session stays, without subscriptions:
//! when the dead node returns it takes its session back and subscribes again.
//!
//! The rescue stops early when the dead node comes back (it takes over its client id and the
//! broker disconnects us; nothing acknowledged is lost, and what was not is redelivered to it)
//! or when this node stops.
//!
//! A node named rescuer before it (re)started rescues at start; when a rescuer dies the leader
//! names another, which rescues again (harmless when there is nothing left: it connects,
//! unsubscribes, finds the session quiet and leaves).
//!
//! What it does not do: pick the rescuer (the leader's supervisor does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::{Cluster, stopped};
use crate::ingest::mqtt::{self, MqttIngestConfig};
use crate::ingest::{PointSink, SinkError};
use crate::model::{DeviceKey, Sample};
use crate::raft::{Applied, NodeState};

/// A rescued session is done when no message arrived for this long after unsubscribing.
pub const QUIET: Duration = Duration::from_millis(1500);
/// How often the rescue checks for quiet.
const POLL: Duration = Duration::from_millis(100);

/// Counts messages through to the real sink and remembers the last one.
struct Activity {
    inner: Arc<dyn PointSink>,
    last: Mutex<Instant>,
    messages: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn quiet_for(&self) -> Duration {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

#[async_trait]
impl PointSink for Activity {
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: i64,
    ) -> Result<(), SinkError> {
        self.touch();
        self.messages.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.ingest(device, samples, received_at_ms).await;
        self.touch();
        r
    }
}

/// Watches for "node N is down, rescuer is me" and rescues N's session each time.
/// `base` is this node's own ingest configuration (broker, filters, limits).
pub async fn run(
    cluster: Cluster,
    sink: Arc<dyn PointSink>,
    base: MqttIngestConfig,
    mut stop: watch::Receiver<bool>,
) {
    let me = cluster.me();
    let mut events = cluster.control().subscribe();
    // Rescues this node was named for before it (re)started.
    for info in cluster.control().nodes().into_values() {
        if info.state == NodeState::Down && info.rescuer == Some(me) {
            spawn_rescue(&cluster, &info, &base, &sink, &stop);
        }
    }
    loop {
        let event = tokio::select! {
            // The next applied entry.
            e = events.recv() => e,
            // Node shutdown.
            _ = stopped(&mut stop) => return,
        };
        match event {
            Ok(Applied::NodeChanged(info))
                if info.state == NodeState::Down && info.rescuer == Some(me) =>
            {
                spawn_rescue(&cluster, &info, &base, &sink, &stop);
            }
            Err(broadcast::error::RecvError::Closed) => return,
            _ => {}
        }
    }
}

fn spawn_rescue(
    cluster: &Cluster,
    info: &crate::raft::NodeInfo,
    base: &MqttIngestConfig,
    sink: &Arc<dyn PointSink>,
    stop: &watch::Receiver<bool>,
) {
    let mut config = base.clone();
    config.client_id = info.mqtt_client_id.clone();
    config.health = crate::ingest::IngestHealth::default();
    tokio::spawn(rescue(
        cluster.clone(),
        info.id,
        config,
        sink.clone(),
        stop.clone(),
    ));
}

/// Rescues one session; see the module doc.
async fn rescue(
    cluster: Cluster,
    dead: u64,
    mut config: MqttIngestConfig,
    sink: Arc<dyn PointSink>,
    mut node_stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let client_id = config.client_id.clone();
    tracing::warn!(dead, %client_id, "rescuing the broker session of a dead node");
    let activity = Arc::new(Activity {
        inner: sink,
        last: Mutex::new(Instant::now()),
        messages: AtomicU64::new(0),
    });
    let (unsubscribe, unsub_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    config.unsubscribe = Some(unsub_rx);
    let health = config.health.clone();
    let task = tokio::spawn(mqtt::run(config, activity.clone(), stop_rx));
    let back = |c: &Cluster| {
        c.control()
            .node_info(dead)
            .is_some_and(|i| i.state != NodeState::Down)
    };
    let mut poll = tokio::time::interval(POLL);
    let mut unsubscribed_at: Option<Instant> = None;
    loop {
        tokio::select! {
            // Check progress.
            _ = poll.tick() => {}
            // This node stops: leave the rest queued in the session.
            _ = stopped(&mut node_stop) => break,
        }
        if back(&cluster) {
            tracing::info!(dead, "the node is back: it takes its session over");
            break;
        }
        match unsubscribed_at {
            // Connected and subscribed: the session is ours; stop new messages coming in.
            None if health.is_subscribed() => {
                activity.touch();
                let _ = unsubscribe.send(true);
                unsubscribed_at = Some(Instant::now());
            }
            Some(_) if activity.quiet_for() >= QUIET => break,
            _ => {}
        }
    }
    let _ = stop_tx.send(true);
    let result = task.await;
    tracing::warn!(
        dead,
        %client_id,
        messages = activity.messages.load(Ordering::Relaxed),
        elapsed_ms = started.elapsed().as_millis() as u64,
        ?result,
        "session rescue finished"
    );
}
