//! The live hub: points of a device, handed to its live subscribers as this node's device
//! actor stores them (`Telemetry.Subscribe`, fanned in by `cluster/live.rs`).
//!
//! One bounded broadcast channel per subscribed device, created by the first subscriber and
//! dropped when the last one is gone; a device nobody watches costs one map lookup per
//! stored batch. A subscriber that falls more than [`CAPACITY`] points behind sees
//! `Lagged(n)` from its receiver and must say so, never skip silently.
//!
//! What it does not do: buffer history, or decide anything about ownership. It only reports
//! what this node's actors stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use crate::model::{DeviceKey, Point};

/// Points a subscriber may fall behind before it is told it lagged.
pub const CAPACITY: usize = 4096;

/// The per-device channels of this node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveHub {
    /// A std Mutex: held for map operations only, never across an await.
    channels: Arc<Mutex<HashMap<DeviceKey, broadcast::Sender<Point>>>>,
    /// True once the node stops: subscriptions end (an open stream would hold up the gRPC
    /// servers' graceful shutdown forever).
    closed: Arc<watch::Sender<bool>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self {
            channels: Arc::default(),
            closed: Arc::new(watch::channel(false).0),
        }
    }
}

impl LiveHub {
    /// Ends every subscription (node shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`LiveHub::close`] was called.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Points of `device` stored on this node from now on.
    pub fn subscribe(&self, device: &DeviceKey) -> broadcast::Receiver<Point> {
        let mut map = self.lock();
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(device.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// The channel of `device` if someone watches it (so points are cloned only then).
    pub fn watchers(&self, device: &DeviceKey) -> Option<broadcast::Sender<Point>> {
        let map = self.lock();
        map.get(device)
            .filter(|tx| tx.receiver_count() > 0)
            .cloned()
    }

    /// Number of devices with at least one live subscriber on this node.
    pub fn watched_devices(&self) -> usize {
        self.lock()
            .values()
            .filter(|tx| tx.receiver_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceKey, broadcast::Sender<Point>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands stored points to the device's subscribers, if it has any.
pub fn report(watchers: Option<&broadcast::Sender<Point>>, points: &[Point]) {
    if let Some(tx) = watchers {
        for p in points {
            // `Err` only means the last subscriber left meanwhile.
            let _ = tx.send(p.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn point(ts_ms: i64) -> Point {
        Point {
            device: DeviceKey::new("t", "d"),
            metric: "m".into(),
            ts_ms,
            value: Value::Number(1.0),
        }
    }

    #[tokio::test]
    async fn subscribers_get_points_in_order_and_a_lag_is_counted() {
        let hub = LiveHub::default();
        let key = DeviceKey::new("t", "d");
        assert!(hub.watchers(&key).is_none(), "nobody watches yet");
        let mut rx = hub.subscribe(&key);
        let tx = hub.watchers(&key);
        report(tx.as_ref(), &[point(1), point(2)]);
        assert_eq!(rx.recv().await.expect("first").ts_ms, 1);
        assert_eq!(rx.recv().await.expect("second").ts_ms, 2);

        let many: Vec<Point> = (0..CAPACITY as i64 + 5).map(point).collect();
        report(tx.as_ref(), &many);
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("expected a lag, got {other:?}"),
        }
        drop(rx);
        assert!(hub.watchers(&key).is_none(), "the last subscriber left");
        assert_eq!(hub.watched_devices(), 0);
        hub.close();
        hub.closed().await;
    }
}
