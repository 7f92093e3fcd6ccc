//! A node removed from the cluster drains its own MQTT session (DESIGN.md §5).
//!
//! `starling cluster remove N` commits node N's state `Removed`; the leader then moves its
//! shards away and takes it out of the Raft membership. Node N itself, once it has applied its
//! own removal, unsubscribes its ingest from the shared subscription: the broker stops sending
//! it new messages, what is already queued in its session still arrives and is forwarded, and
//! every message is acknowledged only once stored, as always. A removed node stores nothing
//! itself and does not trust its shard map (it left the Raft group, so the map stops changing
//! and may still name it): `Cluster::route_shard` sends each point to an active member, and the
//! sink follows the owner that member's `NotOwner` answer names.
//! Without this a removed node that keeps running would keep taking its share of the fleet's
//! messages through a node that no longer follows the cluster.
//!
//! A node that was down or paused while its removal committed is no longer a member and never
//! applies it: the leader refuses its lease renewals and says why (`HeartbeatReply.removed`),
//! and the node then drains the same way.
//!
//! Not here: stopping the process (an operator's choice; it stays up, not ready).

use tokio::sync::{broadcast, watch};

use super::Cluster;
use crate::raft::Applied;

/// A flag that turns true once this node knows it was removed: it applied its own removal,
/// starts removed, or a peer's heartbeat answer told it (it was down or paused while the
/// removal committed, so it is no longer a member and never applies it).
pub fn unsubscribe_when_removed(
    cluster: Cluster,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let me = cluster.me();
    let mut learned = cluster.removed_signal();
    let (tx, rx) = watch::channel(*learned.borrow());
    if *rx.borrow() {
        tracing::warn!(
            node = me,
            "this node was removed from the cluster: not subscribing"
        );
        return rx;
    }
    let mut events = cluster.control().subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(Applied::NodeChanged(info)) if info.id == me => {}
                    Ok(_) => continue,
                    // Missed events: look at the applied state instead.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = learned.wait_for(|removed| *removed) => {}
                _ = stop.changed() => return,
            }
            if cluster.check_removed() {
                tracing::warn!(
                    node = me,
                    "this node was removed from the cluster: unsubscribing MQTT ingest and \
                     draining its session"
                );
                let _ = tx.send(true);
                return;
            }
        }
    });
    rx
}
