//! Live subscriptions (`Telemetry.Subscribe`): the points of one device as its owner stores
//! them, delivered by whichever node the client talks to.
//!
//! The owner's device actor reports each durable write to the owner's [`LiveHub`]. The node
//! serving the subscription reads from its own hub when it owns the device's shard, else from
//! the owner's hub over the peer port (`Data.Live`), and re-resolves the owner whenever Raft
//! applies a shard move (or the owner stops answering), so the subscription follows the
//! device across failovers and rebalancing.
//!
//! What it does not promise: points a new owner stores before this node has re-subscribed
//! to it are not delivered. The window is short (this node re-subscribes as soon as it
//! applies the move; the new owner serves the shard only once it has applied it and holds a
//! lease covering it, after an activation delay when the shard comes from a live node), it
//! is counted (`starling_live_resubscriptions_total`), and a query of the range fills it.
//! A subscriber that falls behind gets [`LiveError::Lagged`], never a silent gap.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use starling_proto::peer as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Cluster, Route};
use crate::device::live::LiveHub;
use crate::metrics_names;
use crate::model::{DeviceKey, Point};
use crate::raft::Applied;
use crate::shard;

/// Why a live subscription ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LiveError {
    /// The subscriber fell behind; `message` says how many points it missed.
    #[error("{0}")]
    Lagged(String),
    /// The owner is unknown or unreachable (at the start), or this node is shutting down.
    #[error("live subscription unavailable: {0}")]
    Unavailable(String),
}

impl LiveError {
    fn lagged(skipped: u64) -> Self {
        LiveError::Lagged(format!(
            "lagged, {skipped} points skipped; query the gap and subscribe again"
        ))
    }
}

/// A subscription's points, in the order the owner stored them.
pub type LiveStream = Pin<Box<dyn Stream<Item = Result<Point, LiveError>> + Send>>;

/// Batches of points from one source (this node's hub or the owner's `Data.Live`).
type Source = Pin<Box<dyn Stream<Item = Result<Vec<Point>, SourceError>> + Send>>;

/// How a source failed.
enum SourceError {
    /// The subscriber fell behind: the subscription ends.
    Lagged(LiveError),
    /// The owner could not be reached or went away: resolve the owner again.
    Lost(String),
}

/// Points a subscriber's pump buffers before it waits for the client.
const BUFFER: usize = 256;
/// Pause before resolving the owner again after it could not be reached.
const RETRY: Duration = Duration::from_millis(250);
/// Points sent per `Data.Live` message at most.
const BATCH: usize = 256;

/// Subscribes to `device`'s points, wherever it is owned. Returns once the first source
/// (this node's hub or the owner's) listens, so every point stored from then on is delivered;
/// `Unavailable` if the owner is unknown or unreachable now. The stream ends when the client
/// drops it, with `Lagged` when it fell behind, or with `Unavailable` at shutdown.
pub async fn subscribe(
    cluster: &Cluster,
    hub: &LiveHub,
    device: DeviceKey,
) -> Result<LiveStream, LiveError> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let pump = Pump {
        cluster: cluster.clone(),
        hub: hub.clone(),
        shard: shard::shard_of(&device, cluster.settings().shards),
        device,
        tx,
    };
    // Before resolving the owner, so no move applied meanwhile goes unseen.
    let events = cluster.control().subscribe();
    let (owner, source) = pump.resolve().await.map_err(LiveError::Unavailable)?;
    tokio::spawn(pump.run(events, owner, source));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Serves `Data.Live`: `device`'s points as this node's actors store them, batched.
pub fn serve_peer(
    hub: &LiveHub,
    device: &DeviceKey,
) -> impl Stream<Item = Result<pb::LivePoints, tonic::Status>> + Send + 'static {
    local(hub, device).map(|item| match item {
        Ok(points) => serde_json::to_vec(&points)
            .map(|points| pb::LivePoints { points })
            .map_err(|e| tonic::Status::internal(e.to_string())),
        Err(SourceError::Lagged(e)) => Err(tonic::Status::data_loss(e.to_string())),
        Err(SourceError::Lost(m)) => Err(tonic::Status::unavailable(m)),
    })
}

/// This node's hub for `device`, as batches of what is ready; ends when the hub closes.
fn local(hub: &LiveHub, device: &DeviceKey) -> Source {
    /// The receiver, the hub (for its close signal), and a lag seen while batching, to
    /// report after the batch (`try_recv` reports a lag once, then moves on).
    type State = (broadcast::Receiver<Point>, LiveHub, Option<u64>);
    let lag = |n| Err(SourceError::Lagged(LiveError::lagged(n)));
    let state: State = (hub.subscribe(device), hub.clone(), None);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut rx, hub, lagged)| async move {
            if let Some(n) = lagged {
                return Some((lag(n), (rx, hub, None)));
            }
            let first = tokio::select! {
                // The next stored point.
                received = rx.recv() => match received {
                    Ok(p) => p,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some((lag(n), (rx, hub, None)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                // The node stops.
                _ = hub.closed() => return None,
            };
            let mut batch = vec![first];
            let mut lagged = None;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        lagged = Some(n);
                        break;
                    }
                    Err(_) => break,
                }
            }
            Some((Ok(batch), (rx, hub, lagged)))
        },
    ))
}

/// The owner's hub over the peer port.
async fn remote(cluster: &Cluster, addr: &str, device: &DeviceKey) -> Result<Source, String> {
    let mut client = cluster.peers().data(addr).map_err(|e| e.to_string())?;
    let stream = client
        .live(pb::LiveRequest {
            tenant: device.tenant.clone(),
            device: device.device.clone(),
        })
        .await
        .map_err(|s| format!("{addr}: {}", s.message()))?
        .into_inner();
    Ok(Box::pin(stream.map(|item| {
        match item {
            Ok(msg) => serde_json::from_slice::<Vec<Point>>(&msg.points)
                .map_err(|e| SourceError::Lost(format!("undecodable live points: {e}"))),
            Err(s) if s.code() == tonic::Code::DataLoss => Err(SourceError::Lagged(
                LiveError::Lagged(s.message().to_owned()),
            )),
            Err(s) => Err(SourceError::Lost(s.message().to_owned())),
        }
    })))
}

/// Moves points from the current owner's source to one subscriber.
struct Pump {
    cluster: Cluster,
    hub: LiveHub,
    device: DeviceKey,
    /// The device's shard, whose moves the subscription follows.
    shard: shard::ShardId,
    tx: mpsc::Sender<Result<Point, LiveError>>,
}

/// What ended one source.
enum Next {
    /// Resolve the owner again (now, or after `RETRY`).
    Resolve { pause: bool },
    /// The subscription is over.
    Stop,
}

impl Pump {
    /// The shard's owner now and a source reading from it.
    async fn resolve(&self) -> Result<(Option<u64>, Source), String> {
        let control = self.cluster.control();
        let shard = self.shard;
        let owner = control.shard_owner(shard).map(|(node, _)| node);
        let source = match (owner, self.cluster.route_shard(shard)) {
            (Some(node), _) if node == self.cluster.me() => local(&self.hub, &self.device),
            (Some(_), Route::Remote { addr, .. }) => {
                remote(&self.cluster, &addr, &self.device).await?
            }
            (_, Route::Unavailable(reason)) => return Err(reason),
            (_, route) => return Err(format!("owner of shard {shard} unresolved ({route:?})")),
        };
        Ok((owner, source))
    }

    async fn run(
        self,
        mut events: broadcast::Receiver<Applied>,
        mut owner: Option<u64>,
        source: Source,
    ) {
        metrics::gauge!(metrics_names::LIVE_SUBSCRIPTIONS).increment(1.0);
        self.follow(&mut events, &mut owner, source).await;
        metrics::gauge!(metrics_names::LIVE_SUBSCRIPTIONS).decrement(1.0);
    }

    /// Pumps from the first source, then from each owner the shard moves to, until the
    /// subscription is over.
    async fn follow(
        &self,
        events: &mut broadcast::Receiver<Applied>,
        owner: &mut Option<u64>,
        source: Source,
    ) {
        let mut next = self.pump(source, events, *owner).await;
        loop {
            match next {
                Next::Stop => return,
                Next::Resolve { pause: false } => {}
                Next::Resolve { pause: true } => {
                    tokio::select! {
                        // Try again.
                        _ = tokio::time::sleep(RETRY) => {}
                        // The subscriber left.
                        _ = self.tx.closed() => return,
                        // The node stops.
                        _ = self.hub.closed() => return self.stopping(),
                    }
                }
            }
            next = match self.resolve().await {
                Ok((now, source)) => {
                    metrics::counter!(metrics_names::LIVE_RESUBSCRIBED).increment(1);
                    *owner = now;
                    self.pump(source, events, *owner).await
                }
                Err(reason) => {
                    tracing::debug!(device = %self.device, %reason, "live source not ready");
                    Next::Resolve { pause: true }
                }
            };
        }
    }

    /// Tells the subscriber this node stops (it subscribes again elsewhere), if its buffer
    /// has room: a subscriber that does not read must not hold up the node's stop.
    fn stopping(&self) {
        let closing = LiveError::Unavailable("the node is shutting down".into());
        let _ = self.tx.try_send(Err(closing));
    }

    /// Hands one item to the subscriber; false when it left or the node stops meanwhile.
    async fn deliver(&self, item: Result<Point, LiveError>) -> bool {
        tokio::select! {
            // Room in the subscriber's buffer.
            sent = self.tx.send(item) => sent.is_ok(),
            // The node stops while the subscriber is not reading.
            _ = self.hub.closed() => false,
        }
    }

    /// Forwards `source` until it ends, the shard's owner changes, or the subscriber leaves.
    async fn pump(
        &self,
        mut source: Source,
        events: &mut broadcast::Receiver<Applied>,
        owner: Option<u64>,
    ) -> Next {
        let (control, shard) = (self.cluster.control(), self.shard);
        loop {
            tokio::select! {
                // Points from the current owner.
                item = source.next() => match item {
                    Some(Ok(points)) => {
                        for p in points {
                            if !self.deliver(Ok(p)).await {
                                return Next::Stop;
                            }
                        }
                    }
                    Some(Err(SourceError::Lagged(e))) => {
                        metrics::counter!(metrics_names::LIVE_LAGGED).increment(1);
                        self.deliver(Err(e)).await;
                        return Next::Stop;
                    }
                    Some(Err(SourceError::Lost(reason))) => {
                        tracing::debug!(device = %self.device, %reason, "live source lost");
                        return Next::Resolve { pause: true };
                    }
                    None => return Next::Resolve { pause: true },
                },
                // An applied Raft entry: follow a move of the device's shard.
                event = events.recv() => match event {
                    Ok(Applied::ShardsAssigned { .. } | Applied::SnapshotInstalled { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if control.shard_owner(shard).map(|(node, _)| node) != owner {
                            return Next::Resolve { pause: false };
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        self.stopping();
                        return Next::Stop;
                    }
                },
                // The subscriber left.
                _ = self.tx.closed() => return Next::Stop,
                // The node stops.
                _ = self.hub.closed() => {
                    self.stopping();
                    return Next::Stop;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::live::{CAPACITY, report};
    use crate::model::Value;

    fn points(from: i64, n: usize) -> Vec<Point> {
        (from..from + n as i64)
            .map(|ts_ms| Point {
                device: DeviceKey::new("t", "d"),
                metric: "m".into(),
                ts_ms,
                value: Value::Number(0.0),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_local_source_batches_what_is_ready_and_reports_a_lag_then_ends_on_close() {
        let hub = LiveHub::default();
        let key = DeviceKey::new("t", "d");
        let mut source = local(&hub, &key);
        let tx = hub.watchers(&key);

        report(tx.as_ref(), &points(0, 3));
        let batch = source.next().await.expect("a batch").ok().expect("points");
        assert_eq!(batch.iter().map(|p| p.ts_ms).collect::<Vec<_>>(), [0, 1, 2]);

        // More than a batch is ready: batches of at most BATCH, in order.
        report(tx.as_ref(), &points(3, BATCH + 1));
        let batch = source.next().await.expect("a batch").ok().expect("points");
        assert_eq!((batch.len(), batch[0].ts_ms), (BATCH, 3));
        let batch = source.next().await.expect("a batch").ok().expect("points");
        assert_eq!((batch.len(), batch[0].ts_ms), (1, 3 + BATCH as i64));

        // Overflowing the hub: the lag is reported with the number of points skipped.
        report(tx.as_ref(), &points(1_000, CAPACITY + 7));
        match source.next().await {
            Some(Err(SourceError::Lagged(LiveError::Lagged(m)))) => {
                assert!(m.starts_with("lagged, 7 points skipped"), "{m}")
            }
            _ => panic!("expected a lag"),
        }

        hub.close();
        let rest: Vec<_> = source.collect().await;
        assert!(rest.iter().all(|item| item.is_ok()), "no further error");
    }
}
