//! Points of shards owned by another node travel there in batches (DESIGN.md §5), and the
//! ingest sink that decides, per message, whether to store here or forward.
//!
//! [`Forwarder`] keeps one queue per owner address; a sender task takes everything queued
//! (up to [`MAX_BATCH`]) into one `Data.Forward` call, so batches grow with load and a lone
//! message is not delayed. [`ClusterSink`] retries a message until it is stored: at the new
//! owner after `NOT_OWNER`, or later while nobody serves the shard. It answers only when the
//! owner has stored the points, so ingest acknowledges nothing that is not durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use starling_proto::peer as pb;
use tokio::sync::{mpsc, oneshot};

use super::peers::Peers;
use super::{Cluster, Route};
use crate::device::DeviceRouter;
use crate::ingest::{PointSink, SINK_REFUSED, SinkError};
use crate::model::{DeviceKey, Sample};

/// Most items in one `Data.Forward` call.
pub const MAX_BATCH: usize = 512;
/// How long one message keeps trying before ingest's own retry takes over.
const ROUTE_BUDGET: Duration = Duration::from_secs(10);
/// Pause before re-resolving the owner.
const REROUTE_PAUSE: Duration = Duration::from_millis(25);

/// Outcome of one forwarded item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forwarded {
    Stored,
    NotOwner { owner: u64, epoch: u64 },
    Retry(String),
    Failed(String),
}

type Job = (pb::ForwardItem, oneshot::Sender<Forwarded>);

/// Batching sender of forwarded points, one queue per destination.
#[derive(Clone)]
pub struct Forwarder {
    peers: Peers,
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>>,
}

impl Forwarder {
    pub fn new(peers: Peers) -> Self {
        Self {
            peers,
            queues: Arc::default(),
        }
    }

    /// Forwards one device's samples to the node at `addr` and waits for its answer.
    pub async fn send(
        &self,
        addr: &str,
        device: &DeviceKey,
        samples: &[Sample],
        received_at_ms: i64,
    ) -> Forwarded {
        let samples = match serde_json::to_vec(samples) {
            Ok(s) => s,
            Err(e) => return Forwarded::Failed(format!("encode samples: {e}")),
        };
        let item = pb::ForwardItem {
            tenant: device.tenant.clone(),
            device: device.device.clone(),
            samples,
            received_at_ms,
        };
        let (tx, rx) = oneshot::channel();
        let queue = self.queue(addr);
        if queue.send((item, tx)).is_err() {
            return Forwarded::Retry(format!("forward queue to {addr} closed"));
        }
        rx.await
            .unwrap_or_else(|_| Forwarded::Retry(format!("forward to {addr} dropped")))
    }

    fn queue(&self, addr: &str) -> mpsc::UnboundedSender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(addr).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(self.peers.clone(), addr.to_owned(), rx));
        queues.insert(addr.to_owned(), tx.clone());
        tx
    }
}

/// Drains one destination's queue in batches until every sender is gone.
async fn send_batches(peers: Peers, addr: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let n = items.len();
        metrics::histogram!(crate::metrics_names::FORWARD_BATCH).record(n as f64);
        let answer = match peers.data(&addr) {
            Ok(mut client) => client
                .forward(pb::ForwardRequest { items })
                .await
                .map(|r| r.into_inner().results)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(results) if results.len() == n => {
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(decode(r));
                }
            }
            Ok(results) => {
                let why = format!("{addr} answered {} results for {n} items", results.len());
                for reply in replies {
                    let _ = reply.send(Forwarded::Retry(why.clone()));
                }
            }
            Err(why) => {
                for reply in replies {
                    let _ = reply.send(Forwarded::Retry(format!("forward to {addr}: {why}")));
                }
            }
        }
    }
}

fn decode(r: pb::ForwardResult) -> Forwarded {
    match pb::ForwardCode::try_from(r.code) {
        Ok(pb::ForwardCode::Ok) => Forwarded::Stored,
        Ok(pb::ForwardCode::NotOwner) => Forwarded::NotOwner {
            owner: r.owner,
            epoch: r.epoch,
        },
        Ok(pb::ForwardCode::Failed) => Forwarded::Failed(r.message),
        _ => Forwarded::Retry(r.message),
    }
}

/// The owner to try next after `node` answered `NotOwner` naming `owner`: `None` when the
/// name is no help (this node itself, whose own route decides, or the node that just refused).
fn follow_hint(me: u64, node: u64, owner: u64, epoch: u64) -> Option<(u64, u64)> {
    (owner != me && owner != node && owner != 0).then_some((owner, epoch))
}

/// The ingest sink of a cluster node: store here when this node serves the device's shard,
/// else forward to the owner; retry across moves until stored or the budget is spent.
pub struct ClusterSink {
    pub cluster: Cluster,
    pub router: DeviceRouter,
    pub forwarder: Forwarder,
}

#[async_trait]
impl PointSink for ClusterSink {
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: i64,
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut last = String::new();
        // The owner a peer named in its `NotOwner` answer: its map may be newer than ours
        // (ours lags while Raft catches up, and stops changing on a removed node).
        let mut hint: Option<(u64, u64)> = None;
        let mut followed = false;
        while started.elapsed() < ROUTE_BUDGET {
            let route = match hint.take() {
                Some((owner, epoch)) => self.cluster.route_to(owner, epoch),
                None => self.cluster.route(&device),
            };
            match route {
                Route::Local { epoch } => {
                    return self
                        .router
                        .ingest(device, samples, received_at_ms, epoch)
                        .await
                        .map(|_| ())
                        .map_err(|e| SinkError {
                            retryable: e.is_retryable(),
                            message: e.to_string(),
                            reason: SINK_REFUSED,
                        });
                }
                Route::Remote { addr, node, .. } => {
                    match self
                        .forwarder
                        .send(&addr, &device, &samples, received_at_ms)
                        .await
                    {
                        Forwarded::Stored => {
                            metrics::counter!(crate::metrics_names::FORWARDED).increment(1);
                            return Ok(());
                        }
                        Forwarded::Failed(message) => {
                            return Err(SinkError::fatal(message));
                        }
                        Forwarded::NotOwner { owner, epoch } => {
                            last =
                                format!("node {node} is not the owner (it names {owner}@{epoch})");
                            hint = follow_hint(self.cluster.me(), node, owner, epoch);
                            // The first named owner is tried at once; later ones after the
                            // pause, so two stale peers naming each other cannot spin.
                            if hint.is_some() && !followed {
                                followed = true;
                                continue;
                            }
                        }
                        Forwarded::Retry(why) => last = why,
                    }
                }
                Route::Unavailable(why) => last = why,
            }
            tokio::time::sleep(REROUTE_PAUSE).await;
        }
        Err(SinkError::retryable(format!(
            "not stored within {ROUTE_BUDGET:?}: {last}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::follow_hint;

    #[test]
    fn which_named_owners_are_followed() {
        // (me, refused by, named owner, followed)
        let cases = [
            (1, 2, 3, true),
            (1, 2, 1, false), // names this node: our own route (lease, map) decides
            (1, 2, 2, false), // names itself: nothing new
            (1, 2, 0, false), // no owner named
        ];
        for (me, node, owner, want) in cases {
            assert_eq!(
                follow_hint(me, node, owner, 7).is_some(),
                want,
                "me {me}, refused by {node}, names {owner}"
            );
        }
        assert_eq!(follow_hint(1, 2, 3, 7), Some((3, 7)));
    }
}
