//! Device actors: one ractor actor per active device on this node.
//!
//! - [`state`]: the pure state machine (`on_samples → effects`), table-tested.
//! - [`actor`]: the actor that executes effects: persist, commit alarm transitions, reply.
//! - [`timers`]: pending timers (resume, records to write) and rule-update re-evaluation in
//!   the pure state; [`wake`]: the worker that starts actors for devices with recorded timers
//!   when this node gains their shard, and for open alarms of a changed rule.
//! - [`live`]: the hub through which actors report stored points to live subscribers.
//! - [`DeviceRouter`] (this file): finds or spawns a device's actor, retries when an actor
//!   passivated under a message, and counts actors. It is also the ingest `PointSink`.
//!
//! What this does not do: decide ownership. The caller (`cluster/`) passes the epoch under
//! which this node serves the device's shard; an actor lives for one epoch, and control
//! records it writes carry that epoch, so a stale actor's writes are refused by Raft.

pub mod actor;
pub mod live;
pub mod state;
pub mod timers;
pub mod wake;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::metrics_names;
use crate::model::{DeviceKey, Sample, TimestampMs};
use crate::raft::ControlPlane;
use crate::storage::{StorageError, TelemetryStore};

use actor::{DeviceActor, DeviceArgs, DeviceMsg};

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The points were not stored; the caller may retry (the write is idempotent).
    #[error("store failed: {0}")]
    Store(#[from] StorageError),
    /// The device's actor could not be reached after retries (node shutting down), or an
    /// earlier message of the device failed and this one must be retried.
    #[error("device actor unavailable: {0}")]
    Unavailable(String),
    /// An alarm transition could not be committed (no quorum, refused epoch). The points are
    /// stored; retrying re-evaluates them on a fresh actor.
    #[error("alarm transition not committed: {0}")]
    Alarm(String),
}

impl DeviceError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeviceError::Store(StorageError::Engine(_)) => true,
            // The store is closing (this node stops): not stored here, but the same points
            // are stored once redelivered to, or retried on, a node that runs. Treating it as
            // a refusal would acknowledge points that were never stored.
            DeviceError::Store(StorageError::Closed) => true,
            DeviceError::Store(StorageError::Invalid { .. }) => false,
            // The shard moved: a retry is routed to its new owner.
            DeviceError::Store(StorageError::StaleEpoch { .. }) => true,
            DeviceError::Unavailable(_) | DeviceError::Alarm(_) => true,
        }
    }
}

/// What one ingest call stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestReport {
    pub points_stored: usize,
}

/// Settings of device actors.
#[derive(Clone, Debug)]
pub struct DeviceSettings {
    /// An actor with no message for this long stops; its state is in the store and Raft.
    pub idle_timeout: Duration,
    /// Number of virtual shards (for the shard/epoch tag of control records).
    pub shards: u32,
}

/// Finds or spawns device actors and routes samples to them.
#[derive(Clone)]
pub struct DeviceRouter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Live actors by device, with the shard epoch each serves under. A std Mutex: it is
    /// held only for map operations, never across an await.
    actors: Mutex<HashMap<DeviceKey, (ActorRef<DeviceMsg>, u64)>>,
    store: Arc<dyn TelemetryStore>,
    control: ControlPlane,
    settings: DeviceSettings,
    /// Where actors report the points they stored (live subscriptions).
    live: live::LiveHub,
}

/// Live actors by device, with the epoch each serves under.
type ActorMap = HashMap<DeviceKey, (ActorRef<DeviceMsg>, u64)>;

/// How often a message is retried when its actor stopped under it (passivation race).
const ROUTE_ATTEMPTS: usize = 5;

impl DeviceRouter {
    pub fn new(
        store: Arc<dyn TelemetryStore>,
        control: ControlPlane,
        settings: DeviceSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                actors: Mutex::new(HashMap::new()),
                store,
                control,
                settings,
                live: live::LiveHub::default(),
            }),
        }
    }

    /// The hub reporting points this node's actors store, for live subscriptions.
    pub fn live(&self) -> &live::LiveHub {
        &self.inner.live
    }

    /// Stores the samples through the device's actor and evaluates its rules. Returns once
    /// every point is durable and every resulting alarm transition is committed. `epoch` is
    /// the shard epoch under which this node serves the device (from `cluster::Route`).
    #[tracing::instrument(name = "device.route", skip_all, fields(device = %device))]
    pub async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: TimestampMs,
        epoch: u64,
    ) -> Result<IngestReport, DeviceError> {
        let mut last_err = String::new();
        for _ in 0..ROUTE_ATTEMPTS {
            let actor = self.actor_for(&device, epoch).await?;
            // A retry re-sends the same shared samples: no copy.
            let samples = samples.clone();
            let span = tracing::Span::current();
            let res = actor
                .call(
                    |reply| DeviceMsg::Ingest {
                        samples,
                        received_at_ms,
                        reply,
                        span,
                    },
                    None,
                )
                .await;
            match res {
                Ok(ractor::rpc::CallResult::Success(result)) => return result,
                Ok(other) => last_err = format!("{other:?}"),
                Err(e) => last_err = e.to_string(),
            }
            // The actor stopped (passivated or failed) before answering: forget it and retry
            // with a fresh one. Writes are idempotent, so a repeat is harmless.
            self.forget(&device, &actor);
        }
        Err(DeviceError::Unavailable(last_err))
    }

    /// Makes sure `device` has an actor serving under `epoch` (spawning it resumes its
    /// recorded timers) and asks it to re-evaluate open alarms of changed rules.
    pub async fn wake(&self, device: &DeviceKey, epoch: u64) -> Result<(), DeviceError> {
        let actor = self.actor_for(device, epoch).await?;
        actor
            .cast(DeviceMsg::RulesChanged)
            .map_err(|e| DeviceError::Unavailable(e.to_string()))
    }

    /// Number of live device actors on this node.
    pub fn active_actors(&self) -> usize {
        self.lock().len()
    }

    /// Stops the actors of devices in `shards` (this node stopped serving them).
    pub fn stop_shards(&self, shards: &[crate::shard::ShardId]) {
        let shards: std::collections::HashSet<_> = shards.iter().copied().collect();
        let n = self.inner.settings.shards;
        let mut map = self.lock();
        let gone: Vec<DeviceKey> = map
            .keys()
            .filter(|d| shards.contains(&crate::shard::shard_of(d, n)))
            .cloned()
            .collect();
        for d in gone {
            if let Some((a, _)) = map.remove(&d) {
                a.stop(Some("shard moved away".into()));
            }
        }
        metrics::gauge!(metrics_names::DEVICE_ACTORS).set(map.len() as f64);
    }

    /// Stops every actor (node shutdown). Their state is durable already.
    pub fn stop_all(&self) {
        let actors: Vec<_> = self.lock().drain().map(|(_, (a, _))| a).collect();
        for a in actors {
            a.stop(Some("node shutdown".into()));
        }
        metrics::gauge!(metrics_names::DEVICE_ACTORS).set(0.0);
    }

    async fn actor_for(
        &self,
        device: &DeviceKey,
        epoch: u64,
    ) -> Result<ActorRef<DeviceMsg>, DeviceError> {
        {
            let mut map = self.lock();
            match map.get(device) {
                Some((a, e)) if *e == epoch => return Ok(a.clone()),
                // The shard was re-assigned: the old actor's epoch is stale.
                Some((a, _)) => {
                    a.stop(Some("new shard epoch".into()));
                    map.remove(device);
                }
                None => {}
            }
        }
        // Spawn outside the lock; if another task won the race, keep its actor.
        let args = DeviceArgs {
            key: device.clone(),
            store: self.inner.store.clone(),
            control: self.inner.control.clone(),
            settings: self.inner.settings.clone(),
            epoch,
            router: Arc::downgrade(&self.inner),
            live: self.inner.live.clone(),
        };
        let (actor, _handle) = Actor::spawn(None, DeviceActor, args)
            .await
            .map_err(|e| DeviceError::Unavailable(format!("spawn failed: {e}")))?;
        let mut map = self.lock();
        if let Some((existing, e)) = map.get(device)
            && *e == epoch
        {
            actor.stop(None);
            return Ok(existing.clone());
        }
        map.insert(device.clone(), (actor.clone(), epoch));
        metrics::gauge!(metrics_names::DEVICE_ACTORS).set(map.len() as f64);
        Ok(actor)
    }

    fn forget(&self, device: &DeviceKey, actor: &ActorRef<DeviceMsg>) {
        Inner::forget(&self.inner, device, actor);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActorMap> {
        lock_map(&self.inner.actors)
    }
}

impl Inner {
    /// Removes `actor` from the map if it is still the device's registered actor.
    fn forget(&self, device: &DeviceKey, actor: &ActorRef<DeviceMsg>) {
        let mut map = lock_map(&self.actors);
        if map
            .get(device)
            .is_some_and(|(a, _)| a.get_id() == actor.get_id())
        {
            map.remove(device);
        }
        metrics::gauge!(metrics_names::DEVICE_ACTORS).set(map.len() as f64);
    }
}

/// Locks the actor map; a poisoned lock only means a panic elsewhere while holding it, and
/// the map itself is always consistent (single insert/remove operations), so keep going.
fn lock_map(m: &Mutex<ActorMap>) -> std::sync::MutexGuard<'_, ActorMap> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
