//! The wake worker: starts device actors that have work without a message from the device.
//!
//! - Shards gained (a failover or a planned handoff): devices with pending-timer records in
//!   those shards get an actor once this node serves the shard, so a `for` run or a no-data
//!   watch fires on the new owner even if the device never sends again. Activation waits for
//!   the lease and handoff delay; the worker retries every [`RETRY`] until the route is local
//!   (or the shard went elsewhere), so a resumed timer fires at most that much after
//!   activation when its deadline passed during the failover.
//! - A rule changed version: devices with an open alarm of that rule, served here, are asked
//!   to re-evaluate it on their last values.
//! - Node start and every [`SWEEP`]: all records of shards served here (a restart of the
//!   only node, a missed event).
//!
//! What this does not do: decide ownership. `route` answers the epoch under which this node
//! serves a device now (`None` when it does not).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::DeviceRouter;
use crate::model::DeviceKey;
use crate::raft::ControlPlane;
use crate::raft::apply::Applied;
use crate::shard::ShardId;

/// How often a device whose shard is not served yet is tried again.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long to keep trying a gained shard before leaving it to the sweep.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Period of the full sweep.
pub const SWEEP: Duration = Duration::from_secs(5);

/// Where this node serves a device: `Some(epoch)` when it is the live owner now.
pub type RouteFn = Arc<dyn Fn(&DeviceKey) -> Option<u64> + Send + Sync>;

/// Runs until `stop` turns true.
pub async fn run(
    router: DeviceRouter,
    control: ControlPlane,
    route: RouteFn,
    me: u64,
    shards: u32,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = control.subscribe();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            // Applied entries: gained shards and rule updates.
            e = events.recv() => match e {
                Ok(Applied::ShardsAssigned { node, shards: gained, .. }) if node == me => {
                    tokio::spawn(wake_gained(router.clone(), control.clone(), route.clone(), gained));
                }
                Ok(Applied::RuleChanged { tenant, id, rule: Some(_) }) => {
                    let devices = control.active_devices_of_rule(&tenant, &id).unwrap_or_default();
                    wake_local(&router, &route, &devices).await;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => sweep.reset_immediately(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // Safety net: every record of a shard served here has an actor.
            _ = sweep.tick() => {
                let all: Vec<ShardId> = (0..shards).collect();
                let devices = control.timer_devices(&all).unwrap_or_default();
                wake_local(&router, &route, &devices).await;
            }
            // Node shutdown.
            _ = crate::cluster::stopped(&mut stop) => break,
        }
    }
}

/// Wakes the devices with records in `gained` as their shard becomes served here.
async fn wake_gained(
    router: DeviceRouter,
    control: ControlPlane,
    route: RouteFn,
    gained: Vec<ShardId>,
) {
    let Ok(devices) = control.timer_devices(&gained) else {
        return;
    };
    let mut left: HashSet<DeviceKey> = devices.into_iter().collect();
    let started = tokio::time::Instant::now();
    while !left.is_empty() && started.elapsed() < GIVE_UP {
        let mut done = Vec::new();
        for d in &left {
            if let Some(epoch) = route(d) {
                if let Err(e) = router.wake(d, epoch).await {
                    tracing::debug!(device = %d, error = %e, "wake failed; will retry");
                    continue;
                }
                done.push(d.clone());
            }
        }
        for d in done {
            left.remove(&d);
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn wake_local(router: &DeviceRouter, route: &RouteFn, devices: &[DeviceKey]) {
    for d in devices {
        if let Some(epoch) = route(d)
            && let Err(e) = router.wake(d, epoch).await
        {
            tracing::debug!(device = %d, error = %e, "wake failed");
        }
    }
}
