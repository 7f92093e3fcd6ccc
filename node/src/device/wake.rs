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
/// Applied events handled in one round at most.
const DRAIN_MAX: usize = 1024;

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
            // Applied entries: gained shards and rule updates. The events already queued are
            // taken together, so a burst of rule writes costs one read of the active alarms.
            first = events.recv() => {
                let queued = take_events(first, &mut events, me);
                for gained in queued.gained {
                    let (router, control, route) = (router.clone(), control.clone(), route.clone());
                    tokio::spawn(wake_gained(router, control, route, gained));
                }
                if queued.lagged {
                    sweep.reset_immediately();
                }
                if !queued.rules.is_empty() {
                    let devices = control.active_devices_of_rules(&queued.rules);
                    let devices = devices.unwrap_or_default();
                    wake_local(&router, &route, &devices).await;
                }
                if queued.closed {
                    break;
                }
            }
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

/// What the applied events queued now ask of this worker.
#[derive(Debug, Default, PartialEq)]
struct Queued {
    /// Shards assigned to this node, one list per assignment.
    gained: Vec<Vec<ShardId>>,
    /// Rules (tenant, id) that got a new version, sorted, each once.
    rules: Vec<(String, String)>,
    /// Events were lost: only a sweep finds what they asked for.
    lagged: bool,
    /// The control plane is gone.
    closed: bool,
}

/// `first` and the events queued behind it (at most [`DRAIN_MAX`] in all), as one [`Queued`].
fn take_events(
    first: Result<Applied, broadcast::error::RecvError>,
    events: &mut broadcast::Receiver<Applied>,
    me: u64,
) -> Queued {
    use broadcast::error::{RecvError, TryRecvError};
    let mut queued = Queued::default();
    let mut event = first;
    for taken in 1.. {
        match event {
            Ok(Applied::ShardsAssigned { node, shards, .. }) if node == me => {
                queued.gained.push(shards);
            }
            Ok(Applied::RuleChanged {
                tenant,
                id,
                rule: Some(_),
            }) => queued.rules.push((tenant, id)),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => queued.lagged = true,
            Err(RecvError::Closed) => queued.closed = true,
        }
        if taken >= DRAIN_MAX {
            break;
        }
        event = match events.try_recv() {
            Ok(e) => Ok(e),
            Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
            // Empty, or closed: the next `recv` says so.
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        };
    }
    // A rule written twice in the burst wakes its devices once.
    queued.rules.sort();
    queued.rules.dedup();
    queued
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, live: bool) -> Applied {
        let json = format!(
            r#"{{"id":"{id}","condition":{{"threshold":{{"metric":"m","op":">","value":1}}}}}}"#
        );
        let doc = crate::rules::validate::parse(&json, "json").expect("valid rule");
        Applied::RuleChanged {
            tenant: "t".into(),
            id: id.into(),
            rule: live.then_some(crate::model::Rule {
                doc,
                version: 1,
                updated_at_ms: 0,
            }),
        }
    }

    fn assigned(node: u64, shards: Vec<ShardId>) -> Applied {
        Applied::ShardsAssigned {
            node,
            shards,
            epoch: 1,
            activate_after_ms: 0,
        }
    }

    #[test]
    fn queued_events_table() {
        let rules = |ids: &[&str]| -> Vec<(String, String)> {
            ids.iter()
                .map(|i| ("t".to_owned(), (*i).to_owned()))
                .collect()
        };
        // (case, events queued after the first, what one round takes)
        let cases: Vec<(&str, Vec<Applied>, Queued)> = vec![
            (
                "one event",
                vec![],
                Queued {
                    rules: rules(&["a"]),
                    ..Queued::default()
                },
            ),
            (
                "a burst of rule writes is one round, each rule once; deletions wake nobody",
                vec![
                    rule("d", true),
                    rule("c", false),
                    rule("b", true),
                    rule("a", true),
                ],
                Queued {
                    rules: rules(&["a", "b", "d"]),
                    ..Queued::default()
                },
            ),
            (
                "shards gained here, not elsewhere",
                vec![assigned(7, vec![1, 2]), assigned(8, vec![3])],
                Queued {
                    gained: vec![vec![1, 2]],
                    rules: rules(&["a"]),
                    ..Queued::default()
                },
            ),
        ];
        for (case, queued, want) in cases {
            let (tx, mut rx) = broadcast::channel(16);
            for e in queued {
                tx.send(e).expect("receiver alive");
            }
            assert_eq!(take_events(Ok(rule("a", true)), &mut rx, 7), want, "{case}");
            assert!(
                rx.try_recv().is_err(),
                "{case}: everything queued was taken"
            );
        }
    }

    #[test]
    fn a_round_stops_at_the_cap_and_leaves_the_rest_queued() {
        let (tx, mut rx) = broadcast::channel(2 * DRAIN_MAX);
        for _ in 0..DRAIN_MAX + 5 {
            tx.send(rule("x", true)).expect("receiver alive");
        }
        let first = take_events(Ok(rule("x", true)), &mut rx, 7);
        assert_eq!(first.rules, [("t".to_owned(), "x".to_owned())]);
        assert_eq!(
            rx.len(),
            6,
            "the first plus {} queued were taken",
            DRAIN_MAX - 1
        );
        let rest = take_events(Ok(rule("y", true)), &mut rx, 7);
        assert_eq!(
            rest.rules,
            [("t".into(), "x".into()), ("t".into(), "y".into())]
        );
        assert!(rx.try_recv().is_err(), "the 6 left behind were taken");
    }

    #[test]
    fn lost_events_and_a_closed_channel_are_reported() {
        let (tx, mut rx) = broadcast::channel(1);
        tx.send(rule("a", true)).expect("receiver alive");
        tx.send(rule("b", true)).expect("receiver alive");
        let queued = take_events(Err(broadcast::error::RecvError::Lagged(3)), &mut rx, 7);
        assert!(queued.lagged);
        drop(tx);
        let queued = take_events(Err(broadcast::error::RecvError::Closed), &mut rx, 7);
        assert!(queued.closed);
    }
}
