//! Delivering from the Raft outbox (`raft/outbox.rs`): which pending deliveries this node
//! starts, and recording finished ones with `NotificationsDelivered`.
//!
//! A delivery starts from the live event (the owner applied the transition) or from a scan of
//! the outbox (this node started, gained shards, installed a snapshot, fell behind the event
//! stream, or the periodic rescan found a row nobody here is working on). Both paths go
//! through `Outbox::claim`, so one node never runs two deliveries of one key at once. A
//! finished delivery (sent, given up after its retries or a permanent error, or dropped by
//! the rate limit; each counted) is sent to the `Recorder`, which proposes its key in a
//! batch; the key stays claimed until the entry is applied, so a scan in between does not
//! deliver it again. A crash before that leaves the row in the outbox: the next owner
//! delivers it again, with the same idempotency key.
//!
//! What this does not do: send (the parent module does) or decide targets (the outbox row
//! carries them, fixed when the transition was applied).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::metrics_names::NOTIFY_OUTBOX_RECORDED;
use crate::model::{AlarmEvent, DeviceKey};
use crate::raft::ControlPlane;
use crate::raft::command::ControlCommand;
use crate::raft::outbox::{DeliveryKey, PendingDelivery};

/// Most keys in one `NotificationsDelivered` entry.
const MAX_BATCH: usize = 512;

/// Wait before proposing a failed batch again (no leader, say).
const RETRY_RECORD: Duration = Duration::from_secs(1);

/// The keys this node is delivering or recording.
pub(super) struct Outbox {
    control: ControlPlane,
    node_id: u64,
    shards: u32,
    /// Claimed keys: delivering, or delivered and waiting for their entry to be applied.
    claimed: Arc<Mutex<HashSet<DeliveryKey>>>,
    done: mpsc::UnboundedSender<DeliveryKey>,
}

impl Outbox {
    /// The outbox and the recorder that must run beside it.
    pub(super) fn new(control: ControlPlane, node_id: u64, shards: u32) -> (Self, Recorder) {
        let claimed = Arc::new(Mutex::new(HashSet::new()));
        let (done, finished) = mpsc::unbounded_channel();
        let recorder = Recorder {
            control: control.clone(),
            claimed: claimed.clone(),
            finished,
        };
        let outbox = Self {
            control,
            node_id,
            shards,
            claimed,
            done,
        };
        (outbox, recorder)
    }

    /// Whether this node owns `device` in the applied shard map.
    fn owns(&self, device: &DeviceKey) -> bool {
        let shard = crate::shard::shard_of(device, self.shards);
        self.control.shard_owner(shard).map(|(node, _)| node) == Some(self.node_id)
    }

    /// Claims `key` for one delivery; `false` when this node already works on it.
    pub(super) fn claim(&self, key: &DeliveryKey) -> bool {
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.insert(key.clone())
    }

    /// Hands a finished delivery to the recorder (it keeps the claim until recorded).
    pub(super) fn finished(&self, key: DeliveryKey) {
        // The recorder stops only with the node; a key lost then is delivered again later.
        let _ = self.done.send(key);
    }

    /// The still-pending row of a live event, if this node owns its device (checked first, so
    /// other nodes do not read the disk).
    pub(super) fn live(&self, ev: &AlarmEvent) -> Option<PendingDelivery> {
        if !self.owns(&ev.alarm.device) {
            return None;
        }
        let key = DeliveryKey::of(ev);
        match self.control.pending_delivery(&key) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot read the outbox; the next scan delivers it");
                None
            }
        }
    }

    /// The pending rows of devices this node owns that it is not working on yet (claimed).
    pub(super) fn scan(&self) -> Vec<PendingDelivery> {
        let rows = match self.control.pending_deliveries() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan the notification outbox");
                return Vec::new();
            }
        };
        rows.into_iter()
            .filter(|p| self.owns(&p.event.alarm.device) && self.claim(&p.key()))
            .collect()
    }
}

/// Proposes finished keys in batches and then releases their claims.
pub(super) struct Recorder {
    control: ControlPlane,
    claimed: Arc<Mutex<HashSet<DeliveryKey>>>,
    finished: mpsc::UnboundedReceiver<DeliveryKey>,
}

impl Recorder {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch: Vec<DeliveryKey> = Vec::new();
        loop {
            if batch.is_empty() {
                tokio::select! {
                    // The next finished delivery.
                    key = self.finished.recv() => match key {
                        Some(key) => batch.push(key),
                        None => break,
                    },
                    // Node shutdown: unrecorded keys stay in the outbox.
                    _ = crate::cluster::stopped(&mut stop) => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.finished.try_recv() {
                    Ok(key) => batch.push(key),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let cmd = ControlCommand::NotificationsDelivered {
                keys: batch.clone(),
            };
            match self.control.write(cmd).await {
                Ok(_) => {
                    metrics::counter!(NOTIFY_OUTBOX_RECORDED).increment(n as u64);
                    let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
                    for key in batch.drain(..) {
                        claimed.remove(&key);
                    }
                }
                Err(e) => {
                    tracing::warn!(keys = n, error = %e, "cannot record finished deliveries; retrying");
                    tokio::select! {
                        // Try the same keys (and any new ones) again.
                        _ = tokio::time::sleep(RETRY_RECORD) => {}
                        // Node shutdown.
                        _ = crate::cluster::stopped(&mut stop) => break,
                    }
                }
            }
        }
    }
}
