//! The leader's view of the cluster: heartbeats, failure detection, placement and Raft
//! membership. Every node runs it; it acts only while its node leads.
//!
//! - [`Supervisor::on_heartbeat`] grants or refuses a node's lease renewal. A node is refused
//!   while a move of shards away from it is being proposed and until it has applied that move
//!   (its `applied_index` reaches the move's epoch), so an old owner's lease never covers a
//!   shard after the new owner may activate it — also when the old owner was dead and comes
//!   back with the map it had.
//! - [`Supervisor::tick`] (every heartbeat interval) marks nodes not heard for
//!   `failure_timeout` down (naming a rescuer for their broker session, and another when that
//!   rescuer dies in turn), marks returning
//!   nodes active, places shards with [`placement::plan`], and keeps the voter count at
//!   `max_voters` by promoting live learners in place of dead voters.
//!
//! A new leader knows no heartbeat history. It declares a node it has not heard from dead
//! only once every lease granted by earlier leaders has certainly expired (the *takeover*
//! instant): `lease + drift` after its own election at first (every earlier grant was
//! confirmed by a quorum before a quorum voted for this term), then `lease + drift` after the
//! latest time a quorum of voters reports having acknowledged an earlier leader (see
//! [`crate::raft::contact`]) — usually the moment the old leader died. It requires every node
//! to have applied what the new leader had applied, so it never grants a lease to a node that
//! has not seen the latest moves.
//!
//! What it does not do: serve shards, or trust its own timing for safety (epochs do that).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ClusterSettings;
pub use super::view::Renewal;
use super::view::View;
use crate::raft::ops::now_ms;
use crate::raft::{ControlCommand, ControlError, ControlPlane, ControlResponse, NodeState};
use crate::shard::ShardId;
use crate::shard::placement::{self, Move};

/// What the leader knows of one node, for `cluster members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// "alive", "suspect" (not heard for longer than the lease), or "down" (not heard for
    /// longer than the failure timeout).
    pub health: &'static str,
    pub last_heard_ms_ago: Option<u64>,
}

pub struct Supervisor {
    view: Mutex<View>,
    /// Serializes leadership confirmations, so concurrent heartbeats share one round.
    confirming: tokio::sync::Mutex<()>,
    /// Start of the last confirmation that succeeded (a quorum acknowledged this leader).
    confirmed_from: Mutex<Option<Instant>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self {
            view: Mutex::new(View::default()),
            confirming: tokio::sync::Mutex::new(()),
            confirmed_from: Mutex::new(None),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resets the view when `term` is new (this node just became leader).
    fn observe_term(&self, control: &ControlPlane, settings: &ClusterSettings, now: Instant) {
        let term = control.status().term;
        let mut v = self.view();
        if v.term == term && v.since.is_some() {
            return;
        }
        let applied = control.applied_index();
        let nodes = control.nodes();
        v.term = term;
        v.since = Some(now);
        v.takeover = Some(now + settings.lease + settings.drift_margin);
        v.prior_acks.clear();
        v.last_heard.clear();
        v.min_applied = nodes.keys().map(|id| (*id, applied)).collect();
        v.moving_from.clear();
        tracing::info!(term, applied, "leading: heartbeat view reset");
    }

    /// Records `r`'s report on earlier leaders and tightens the takeover instant with it.
    fn observe_report(&self, control: &ControlPlane, settings: &ClusterSettings, r: &Renewal) {
        let mut v = self.view();
        if r.term != v.term {
            return;
        }
        v.prior_acks.insert(r.node, r.prior_ack);
        let Some(voters) = control.settled_voters() else {
            return;
        };
        let me = control.node_id();
        let mine = control.contact().last_before(v.term, Instant::now());
        v.tighten(&voters, me, mine, settings.lease + settings.drift_margin);
    }

    /// Confirms with a quorum that this node still leads, by a round that started at or after
    /// `since`. A deposed leader (paused, partitioned, or restarted with an old vote) cannot
    /// confirm, so it grants no lease.
    async fn confirm_leadership(
        &self,
        control: &ControlPlane,
        since: Instant,
        timeout: Duration,
    ) -> Result<(), String> {
        let confirmed = |s: &Self| {
            s.confirmed_from
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t >= since)
        };
        if confirmed(self) {
            return Ok(());
        }
        let _round = self.confirming.lock().await;
        if confirmed(self) {
            return Ok(());
        }
        let started = Instant::now();
        match tokio::time::timeout(timeout, control.raft().ensure_linearizable()).await {
            Ok(Ok(_)) => {
                *self
                    .confirmed_from
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(started);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("leadership not confirmed: {e}")),
            Err(_) => Err("leadership not confirmed in time".into()),
        }
    }

    /// A lease renewal `r` received at `now`. Granted only after a quorum confirmed this
    /// node's leadership since `now`.
    pub async fn on_heartbeat(
        &self,
        control: &ControlPlane,
        settings: &ClusterSettings,
        r: Renewal,
        now: Instant,
    ) -> Result<(), String> {
        if !control.is_leader() {
            return Err("not the leader".into());
        }
        let (node, applied) = (r.node, r.applied);
        // The report holds whether or not this leadership is confirmed yet.
        self.observe_term(control, settings, now);
        self.observe_report(control, settings, &r);
        self.confirm_leadership(control, now, settings.heartbeat)
            .await?;
        self.observe_term(control, settings, now);
        let info = control.node_info(node);
        if info.as_ref().is_some_and(|i| i.state == NodeState::Removed) {
            return Err(format!("node {node} was removed from the cluster"));
        }
        let mut v = self.view();
        // Heard, even if refused below: it is alive.
        v.last_heard.insert(node, now);
        if info.is_none() {
            return Err(format!("node {node} is not registered yet"));
        }
        if v.moving_from.contains(&node) {
            return Err("shards are moving away from this node".into());
        }
        let need = v.min_applied.get(&node).copied().unwrap_or(0);
        if applied < need {
            return Err(format!("applied index {applied} is behind {need}"));
        }
        // Once deposed, this node reports this grant as its last contact with a leader of
        // this term, so its successor waits for this lease too (see `raft::contact`).
        control.contact().led(v.term, Instant::now());
        Ok(())
    }

    /// The leader's view of each registered node (empty when not leading).
    pub fn liveness(
        &self,
        control: &ControlPlane,
        settings: &ClusterSettings,
    ) -> BTreeMap<u64, Liveness> {
        if !control.is_leader() {
            return BTreeMap::new();
        }
        let now = Instant::now();
        let v = self.view();
        control
            .nodes()
            .keys()
            .map(|id| {
                let ago = if *id == control.node_id() {
                    Some(Duration::ZERO)
                } else {
                    v.heard(*id, settings.failure_timeout)
                        .map(|t| now.saturating_duration_since(t))
                };
                let health = match ago {
                    Some(a) if a <= settings.lease => "alive",
                    Some(a) if a <= settings.failure_timeout => "suspect",
                    _ => "down",
                };
                let ms = ago.map(|a| a.as_millis() as u64);
                (
                    *id,
                    Liveness {
                        health,
                        last_heard_ms_ago: ms,
                    },
                )
            })
            .collect()
    }

    /// One round of leader duties. Errors are logged and retried at the next tick.
    ///
    /// Its decisions are proposed with `write_local`, never forwarded: they were taken on
    /// this leader's view, and a leader deposed mid-round (paused, say) must not have the new
    /// leader commit them (a chaos run saw a resumed deposed leader mark live nodes down and
    /// move shards to a removed node that way). A deposed leader's own entries never commit.
    pub async fn tick(&self, control: &ControlPlane, settings: &ClusterSettings) {
        if !control.is_leader() {
            return;
        }
        let now = Instant::now();
        self.observe_term(control, settings, now);
        if let Err(e) = self.round(control, settings, now).await {
            tracing::debug!(error = %e, "supervisor round incomplete; retrying next tick");
        }
    }

    async fn round(
        &self,
        control: &ControlPlane,
        settings: &ClusterSettings,
        now: Instant,
    ) -> Result<(), ControlError> {
        let me = control.node_id();
        let nodes = control.nodes();
        // A node never heard in this term counts as heard `failure_timeout` before the
        // takeover instant (see `View::heard`).
        let heard_within = |id: u64, d: Duration| {
            let heard = self.view().heard(id, settings.failure_timeout);
            id == me || heard.is_some_and(|t| now.saturating_duration_since(t) <= d)
        };
        // The rescuer of `dead`'s broker session: the first other active node holding a lease.
        let pick_rescuer = |dead: u64| {
            nodes
                .iter()
                .filter(|(n, i)| {
                    **n != dead && i.state == NodeState::Active && heard_within(**n, settings.lease)
                })
                .map(|(n, _)| *n)
                .next()
        };
        // 1. Failure detection and return.
        for (id, info) in &nodes {
            let alive = heard_within(*id, settings.failure_timeout);
            match info.state {
                NodeState::Active if !alive => {
                    let rescuer = pick_rescuer(*id);
                    tracing::warn!(node = id, ?rescuer, "node missed its lease: marking down");
                    control
                        .write_local(ControlCommand::SetNodeState {
                            node: *id,
                            state: NodeState::Down,
                            rescuer,
                            at_ms: now_ms(),
                        })
                        .await?;
                }
                // The rescuer of a dead node's session died too: name another.
                NodeState::Down
                    if !heard_within(*id, settings.failure_timeout)
                        && info
                            .rescuer
                            .is_none_or(|r| !heard_within(r, settings.failure_timeout)) =>
                {
                    let rescuer = pick_rescuer(*id);
                    if rescuer.is_some() && rescuer != info.rescuer {
                        tracing::warn!(node = id, ?rescuer, "the rescuer is gone: naming another");
                        control
                            .write_local(ControlCommand::SetNodeState {
                                node: *id,
                                state: NodeState::Down,
                                rescuer,
                                at_ms: now_ms(),
                            })
                            .await?;
                    }
                }
                NodeState::Down if heard_within(*id, settings.heartbeat * 2) => {
                    tracing::info!(node = id, "node is back: marking active");
                    control
                        .write_local(ControlCommand::SetNodeState {
                            node: *id,
                            state: NodeState::Active,
                            rescuer: None,
                            at_ms: now_ms(),
                        })
                        .await?;
                }
                _ => {}
            }
        }
        let nodes = control.nodes();
        let live: BTreeSet<u64> = nodes
            .iter()
            .filter(|(id, i)| {
                i.state == NodeState::Active && heard_within(**id, settings.failure_timeout)
            })
            .map(|(id, _)| *id)
            .collect();

        // 2. Placement. A pristine map waits for the bootstrap voters to register (or for
        // one failure timeout), so the first placement is already spread.
        let map = control.shard_map();
        let (voters, learners) = control.membership();
        if map.is_empty() {
            let since = self.view().since.unwrap_or(now);
            let all_in = voters.keys().all(|v| live.contains(v));
            if !all_in && now.saturating_duration_since(since) < settings.failure_timeout {
                return Ok(());
            }
        }
        let owners: BTreeMap<ShardId, u64> = map.iter().map(|(s, (n, _))| (*s, *n)).collect();
        let moves = placement::plan(&owners, settings.shards, &live);
        if !moves.is_empty() {
            self.commit_moves(control, settings, &moves, now, &heard_within)
                .await?;
        }

        // 3. Membership: dead voters replaced by live learners, up to `max_voters`; removed
        // nodes that own nothing leave the membership.
        let owned_by = |id: u64| map.values().any(|(n, _)| *n == id);
        let removed: BTreeSet<u64> = nodes
            .iter()
            .filter(|(id, i)| i.state == NodeState::Removed && !owned_by(**id) && **id != me)
            .map(|(id, _)| *id)
            .collect();
        let mut new_voters: BTreeSet<u64> = voters
            .keys()
            .copied()
            .filter(|v| !removed.contains(v))
            .collect();
        let dead_voters: Vec<u64> = new_voters
            .iter()
            .copied()
            .filter(|v| !live.contains(v) && *v != me)
            .collect();
        let mut candidates = learners
            .keys()
            .copied()
            .filter(|l| live.contains(l) && !removed.contains(l));
        for dead in dead_voters {
            if let Some(l) = candidates.next() {
                new_voters.remove(&dead);
                new_voters.insert(l);
            }
        }
        while new_voters.len() < settings.max_voters {
            match candidates.next() {
                Some(l) => {
                    new_voters.insert(l);
                }
                None => break,
            }
        }
        let current: BTreeSet<u64> = voters.keys().copied().collect();
        if new_voters != current && !new_voters.is_empty() {
            tracing::info!(from = ?current, to = ?new_voters, "changing voters");
            control.set_voters(new_voters, true).await?;
        }
        let gone: BTreeSet<u64> = removed
            .iter()
            .copied()
            .filter(|id| learners.contains_key(id) || voters.contains_key(id))
            .collect();
        if !gone.is_empty() {
            tracing::info!(nodes = ?gone, "removing nodes from the membership");
            control.remove_learners(gone).await?;
        }
        Ok(())
    }

    /// Commits `moves`, one entry per (destination, handoff kind). Shards of a node that may
    /// still be serving them are activated after lease + drift, and that node's lease is not
    /// renewed until it has applied the move.
    async fn commit_moves(
        &self,
        control: &ControlPlane,
        settings: &ClusterSettings,
        moves: &[Move],
        now: Instant,
        heard_within: &impl Fn(u64, Duration) -> bool,
    ) -> Result<(), ControlError> {
        let handoff = (settings.lease + settings.drift_margin).as_millis() as u64;
        // A source is "dead" only if not heard for the failure timeout: then its lease has
        // expired and the new owner may start at once.
        let live_source = |m: &Move| {
            m.from
                .is_some_and(|f| heard_within(f, settings.failure_timeout))
        };
        let (live_moves, free_moves): (Vec<Move>, Vec<Move>) =
            moves.iter().partition(|m| live_source(m));
        for (group, delay) in [(free_moves, 0u64), (live_moves, handoff)] {
            if group.is_empty() {
                continue;
            }
            let sources: BTreeSet<u64> = group.iter().filter_map(|m| m.from).collect();
            if delay > 0 {
                self.view().moving_from.extend(sources.iter().copied());
            }
            let result = self.assign_groups(control, &group, delay).await;
            let mut v = self.view();
            for s in &sources {
                v.moving_from.remove(s);
            }
            // Every source, dead ones included: a dead node that restarts with its old map
            // must apply the move before its lease is renewed, or it would cover shards it
            // lost while it was away.
            let last_epoch = result?;
            for s in sources {
                v.min_applied.insert(s, last_epoch);
            }
            drop(v);
            tracing::info!(
                moved = group.len(),
                delay_ms = delay,
                elapsed_ms = now.elapsed().as_millis() as u64,
                "shards moved"
            );
        }
        Ok(())
    }

    /// One AssignShards per destination; returns the last epoch.
    async fn assign_groups(
        &self,
        control: &ControlPlane,
        moves: &[Move],
        delay: u64,
    ) -> Result<u64, ControlError> {
        let mut last = 0;
        for (to, shards) in placement::by_destination(moves) {
            let cmd = ControlCommand::AssignShards {
                node: to,
                shards,
                at_ms: now_ms(),
                activate_after_ms: delay,
            };
            match control.write_local(cmd).await? {
                ControlResponse::ShardsAssigned { epoch } => last = last.max(epoch),
                other => {
                    return Err(ControlError::unavailable(format!(
                        "AssignShards answered {other:?}"
                    )));
                }
            }
        }
        Ok(last)
    }
}
