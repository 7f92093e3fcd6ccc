//! A node removed from the cluster drains its own MQTT session (DESIGN.md §5).
//!
//! `starling cluster remove N` commits node N's state `Removed`; the leader then moves its
//! shards away and takes it out of the Raft membership. Node N itself, once it has applied its
//! own removal, unsubscribes its ingest from the shared subscription: the broker stops sending
//! it new messages, what is already queued in its session still arrives and is forwarded to the
//! owners (it owns nothing), and every message is acknowledged only once stored, as always.
//! Without this a removed node that keeps running would keep taking its share of the fleet's
//! messages through a node that no longer follows the cluster.
//!
//! Not here: stopping the process (an operator's choice; it stays up, not ready) and a node
//! that was down while it was removed: it cannot apply its removal once it is no longer a
//! member, so it keeps its subscription until the operator stops it.

use tokio::sync::{broadcast, watch};

use crate::raft::{Applied, ControlPlane, NodeState};

/// A flag that turns true once this node has applied its own removal (or starts removed).
pub fn unsubscribe_when_removed(
    control: ControlPlane,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let me = control.node_id();
    let removed = move |control: &ControlPlane| {
        control
            .node_info(me)
            .is_some_and(|i| i.state == NodeState::Removed)
    };
    let (tx, rx) = watch::channel(removed(&control));
    if *rx.borrow() {
        tracing::warn!(
            node = me,
            "this node was removed from the cluster: not subscribing"
        );
        return rx;
    }
    let mut events = control.subscribe();
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
                _ = stop.changed() => return,
            }
            if removed(&control) {
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
