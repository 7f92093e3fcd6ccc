//! Cluster membership, leases and routing (DESIGN.md §2–§5): which node serves which device
//! right now, and the background work that keeps that true.
//!
//! ## Layout
//! - this file: [`Cluster`] (the handle), [`Route`], [`ClusterSettings`], and the node-side
//!   loops: lease heartbeats, following shard moves, registering this node, joining.
//! - [`lease`]: what this node may serve ([`lease::ServeState`], pure) and the lease log.
//! - [`supervisor`]: the leader's duties: heartbeats, failure detection, placement, voters.
//! - [`peers`]: clients of other nodes' peer ports; [`service`]: the peer services served.
//! - [`forward`]: points for shards owned elsewhere, batched to their owner; the ingest sink.
//! - [`rescue`]: draining the broker session of a node marked down.
//! - [`reads`]: history reads routed by ownership history and merged (embedded store).
//! - [`live`]: live subscriptions, fanned in from the device's owner and following moves.
//!
//! ## What it does not do
//! It does not store telemetry or evaluate rules (device actors do), and it never relies on
//! timing for safety: control records are fenced by (shard, epoch) in the state machine.

pub mod forward;
pub mod lease;
pub mod leave;
pub mod live;
pub mod peers;
pub mod provision;
pub mod reads;
pub mod rescue;
pub mod service;
pub mod supervisor;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use self::lease::{LeaseLog, ServeState};
use self::peers::Peers;
pub use self::supervisor::Renewal;
use self::supervisor::{Liveness, Supervisor};
use crate::model::DeviceKey;
use crate::raft::ops::now_ms;
use crate::raft::{Applied, ControlCommand, ControlPlane, ControlResponse, NodeInfo, NodeState};
use crate::shard::{self, ShardId};

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Timing and identity of this node in the cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Lease renewal interval.
    pub heartbeat: Duration,
    /// How long a granted lease lasts, from the send time of its heartbeat.
    pub lease: Duration,
    /// How long the leader waits without a heartbeat before moving a node's shards
    /// (> lease + drift_margin).
    pub failure_timeout: Duration,
    /// Allowance for clock-rate differences between nodes.
    pub drift_margin: Duration,
    /// Voters kept in the Raft group (3 or 5); other nodes are learners.
    pub max_voters: usize,
    /// Number of virtual shards.
    pub shards: u32,
    pub peer_addr: String,
    pub client_addr: String,
    pub mqtt_client_id: String,
    /// Peer addresses of members to join through (empty: bootstrap or single).
    pub join: Vec<String>,
    /// Where to append lease grants and releases (`None`: not logged).
    pub lease_log: Option<PathBuf>,
}

impl ClusterSettings {
    /// Timings for a cluster of one (`starling dev`) and tests.
    pub fn single(
        shards: u32,
        peer_addr: String,
        client_addr: String,
        mqtt_client_id: String,
    ) -> Self {
        Self {
            heartbeat: Duration::from_millis(200),
            lease: Duration::from_millis(1000),
            failure_timeout: Duration::from_millis(1500),
            drift_margin: Duration::from_millis(200),
            max_voters: 3,
            shards,
            peer_addr,
            client_addr,
            mqtt_client_id,
            join: Vec::new(),
            lease_log: None,
        }
    }
}

/// Where a device's points go now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node serves the device's shard under this epoch.
    Local { epoch: u64 },
    /// Another node owns it.
    Remote { node: u64, epoch: u64, addr: String },
    /// Nobody can take it right now (no lease, activation pending, owner unknown): retry.
    Unavailable(String),
}

/// One member as `cluster members` shows it.
#[derive(Clone, Debug)]
pub struct MemberView {
    pub info: Option<NodeInfo>,
    pub id: u64,
    pub peer_addr: String,
    pub voter: bool,
    /// "alive" / "suspect" / "down" from the leader's heartbeats, else the recorded state.
    pub health: String,
    pub last_heard_ms_ago: Option<u64>,
    pub shards: u32,
}

/// The cluster handle of this node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    me: u64,
    control: ControlPlane,
    settings: ClusterSettings,
    peers: Peers,
    serve: Mutex<ServeState>,
    lease_log: Mutex<LeaseLog>,
    supervisor: Supervisor,
    /// Shards this node stopped serving (their actors must stop).
    released: broadcast::Sender<Vec<ShardId>>,
    /// Wakes the heartbeat loop for a renewal now (shards gained).
    renew_now: tokio::sync::Notify,
    /// True once this node knows it was removed: from its applied state, or from a peer's
    /// heartbeat answer when it was down or paused while the removal committed (it is then
    /// no longer a member and never applies it).
    removed: watch::Sender<bool>,
}

impl Cluster {
    pub fn new(
        control: ControlPlane,
        settings: ClusterSettings,
        peers: Peers,
    ) -> std::io::Result<Self> {
        let me = control.node_id();
        let log = LeaseLog::open(me, settings.lease_log.as_deref())?;
        control.set_forwarder(Arc::new(peers.clone()));
        let (released, _) = broadcast::channel(256);
        Ok(Self {
            inner: Arc::new(Inner {
                me,
                control,
                settings,
                peers,
                serve: Mutex::new(ServeState::default()),
                lease_log: Mutex::new(log),
                supervisor: Supervisor::new(),
                released,
                renew_now: tokio::sync::Notify::new(),
                removed: watch::channel(false).0,
            }),
        })
    }

    pub fn me(&self) -> u64 {
        self.inner.me
    }

    pub fn control(&self) -> &ControlPlane {
        &self.inner.control
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    /// Shards this node stops serving, as they are released.
    pub fn subscribe_released(&self) -> broadcast::Receiver<Vec<ShardId>> {
        self.inner.released.subscribe()
    }

    fn serve(&self) -> std::sync::MutexGuard<'_, ServeState> {
        self.inner.serve.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `device`'s points go now.
    pub fn route(&self, device: &DeviceKey) -> Route {
        let shard = shard::shard_of(device, self.inner.settings.shards);
        self.route_shard(shard)
    }

    pub fn route_shard(&self, shard: ShardId) -> Route {
        let control = &self.inner.control;
        if self.is_removed() {
            return self.route_removed(shard);
        }
        match control.shard_owner(shard) {
            None => Route::Unavailable(format!("shard {shard} is not assigned yet")),
            Some((node, epoch)) if node == self.inner.me => {
                if self.serve().serves(shard, Instant::now()) {
                    Route::Local { epoch }
                } else {
                    Route::Unavailable(format!(
                        "shard {shard} is assigned here but not served yet (lease or handoff)"
                    ))
                }
            }
            Some((node, epoch)) => self.route_to(node, epoch),
        }
    }

    /// Where to send points for `node` (believed to own their shard under `epoch`).
    pub fn route_to(&self, node: u64, epoch: u64) -> Route {
        let control = &self.inner.control;
        match control.node_info(node) {
            Some(info) => Route::Remote {
                node,
                epoch,
                addr: info.peer_addr,
            },
            None => {
                let (v, l) = control.membership();
                match v.get(&node).or_else(|| l.get(&node)) {
                    Some(addr) => Route::Remote {
                        node,
                        epoch,
                        addr: addr.clone(),
                    },
                    None => Route::Unavailable(format!("owner {node} has no address")),
                }
            }
        }
    }

    /// Whether this node knows it was removed from the cluster (applied, or told by a peer).
    /// A flag read, cheap enough for every ingested message: the flag is set by
    /// [`Cluster::check_removed`] (at start, and on each applied change of this node) and by
    /// heartbeat answers.
    pub fn is_removed(&self) -> bool {
        *self.inner.removed.borrow()
    }

    /// Sets the removed flag when the applied state records this node's removal.
    pub fn check_removed(&self) -> bool {
        let applied = self
            .inner
            .control
            .node_info(self.inner.me)
            .is_some_and(|i| i.state == NodeState::Removed);
        if applied {
            self.learned_removed();
        }
        self.is_removed()
    }

    /// Turns true once this node knows it was removed (see [`Cluster::is_removed`]).
    pub fn removed_signal(&self) -> watch::Receiver<bool> {
        let rx = self.inner.removed.subscribe();
        // Starts removed: the applied state says so before any event.
        self.check_removed();
        rx
    }

    fn learned_removed(&self) {
        self.inner.removed.send_if_modified(|removed| {
            let first = !*removed;
            if first {
                tracing::warn!(
                    node = self.inner.me,
                    "this node was removed from the cluster: it stores nothing more and sends \
                     what reaches it to the active members"
                );
            }
            *removed = true;
            first
        });
    }

    /// A removed node stores nothing itself and no longer follows the shard map (it left
    /// the Raft group, so its map stops changing): it sends every point to an active member,
    /// which stores it if it owns the shard or answers `NotOwner` naming the owner its
    /// current map has; the sink follows that name. Which member is picked depends on the
    /// shard, to spread the drain.
    fn route_removed(&self, shard: ShardId) -> Route {
        let me = self.inner.me;
        let members: Vec<NodeInfo> = self
            .inner
            .control
            .nodes()
            .into_values()
            .filter(|i| i.id != me && i.state == NodeState::Active)
            .collect();
        if let Some((owner, epoch)) = self.inner.control.shard_owner(shard)
            && let Some(info) = members.iter().find(|i| i.id == owner)
        {
            return Route::Remote {
                node: owner,
                epoch,
                addr: info.peer_addr.clone(),
            };
        }
        match members.get(shard as usize % members.len().max(1)) {
            Some(info) => Route::Remote {
                node: info.id,
                epoch: 0,
                addr: info.peer_addr.clone(),
            },
            None => Route::Unavailable("this node was removed and knows no active member".into()),
        }
    }

    /// Whether this node holds a live lease.
    pub fn has_lease(&self) -> bool {
        self.serve().has_lease(Instant::now())
    }

    /// The leader's answer to a lease renewal.
    pub async fn on_heartbeat(&self, renewal: Renewal, now: Instant) -> Result<(), String> {
        self.inner
            .supervisor
            .on_heartbeat(&self.inner.control, &self.inner.settings, renewal, now)
            .await
    }

    /// Every member with its health, for `cluster members`.
    pub fn members(&self) -> Vec<MemberView> {
        let control = &self.inner.control;
        let (voters, learners) = control.membership();
        let nodes = control.nodes();
        let live = self
            .inner
            .supervisor
            .liveness(control, &self.inner.settings);
        let mut owned: BTreeMap<u64, u32> = BTreeMap::new();
        for (node, _) in control.shard_map().values() {
            *owned.entry(*node).or_default() += 1;
        }
        let ids: BTreeSet<u64> = voters
            .keys()
            .chain(learners.keys())
            .chain(nodes.keys())
            .copied()
            .collect();
        ids.into_iter()
            .map(|id| {
                let info = nodes.get(&id).cloned();
                let peer_addr = voters
                    .get(&id)
                    .or_else(|| learners.get(&id))
                    .cloned()
                    .or_else(|| info.as_ref().map(|i| i.peer_addr.clone()))
                    .unwrap_or_default();
                let (health, ago) = match (live.get(&id), &info) {
                    (_, Some(i)) if i.state == NodeState::Removed => ("removed".to_owned(), None),
                    (
                        Some(Liveness {
                            health,
                            last_heard_ms_ago,
                        }),
                        _,
                    ) => ((*health).to_owned(), *last_heard_ms_ago),
                    (None, Some(i)) => (format!("{} (recorded)", i.state.as_str()), None),
                    (None, None) => ("unknown".to_owned(), None),
                };
                MemberView {
                    id,
                    peer_addr,
                    voter: voters.contains_key(&id),
                    health,
                    last_heard_ms_ago: ago,
                    shards: owned.get(&id).copied().unwrap_or(0),
                    info,
                }
            })
            .collect()
    }

    /// Starts the node-side loops; they end when `stop` turns true.
    pub fn start(&self, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().heartbeat_loop(stop.clone())),
            tokio::spawn(self.clone().supervisor_loop(stop.clone())),
            tokio::spawn(self.clone().follow_moves(stop.clone())),
            tokio::spawn(self.clone().register(stop)),
        ]
    }

    /// Asks the members in `settings.join` to add this node, until one does.
    pub async fn join(&self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let s = &self.inner.settings;
        let mut pause = Duration::from_millis(100);
        loop {
            for addr in &s.join {
                match self
                    .inner
                    .peers
                    .join(addr, self.inner.me, &s.peer_addr, &s.client_addr)
                    .await
                {
                    Ok(reply) => {
                        tracing::info!(via = %addr, leader = reply.leader_id, "joined the cluster");
                        return Ok(());
                    }
                    Err(e) => tracing::warn!(via = %addr, error = %e, "join attempt failed"),
                }
            }
            tokio::select! {
                // Try the list again after a pause.
                _ = tokio::time::sleep(pause) => {}
                // Node shutdown.
                _ = stopped(&mut stop) => return Err("stopped before joining".into()),
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Renews the lease every heartbeat interval, and at once when a new leader is known (it
    /// waits for a quorum's reports before taking over dead nodes' shards) or this node
    /// gained shards (they are served from the grant that covers them).
    async fn heartbeat_loop(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut server = self.inner.control.raft().server_metrics();
        let mut leader = server.borrow().current_leader;
        let mut raft_running = true;
        loop {
            tokio::select! {
                // Time to renew.
                _ = tick.tick() => self.renew().await,
                // Raft's vote, state or leader changed.
                changed = server.changed(), if raft_running => {
                    raft_running = changed.is_ok();
                    let now_leader = server.borrow_and_update().current_leader;
                    if now_leader != leader && now_leader.is_some() {
                        self.renew().await;
                        tick.reset();
                    }
                    leader = now_leader;
                }
                // Shards gained.
                _ = self.inner.renew_now.notified() => {
                    self.renew().await;
                    tick.reset();
                }
                // Node shutdown.
                _ = stopped(&mut stop) => break,
            }
        }
        let covered: Vec<ShardId> = {
            let mut serve = self.serve();
            let owned: Vec<ShardId> = (0..self.inner.settings.shards).collect();
            serve.lost(&owned)
        };
        self.release(covered);
    }

    async fn renew(&self) {
        let (me, s) = (self.inner.me, &self.inner.settings);
        let control = &self.inner.control;
        let sent = Instant::now();
        let sent_ms = now_ms();
        let applied = control.applied_index();
        let term = control.status().term;
        // Read after the term: a bound on acknowledgements of leaders below it.
        let prior_ack = control.contact().last_before(term, Instant::now());
        let renewal = Renewal {
            node: me,
            applied,
            term,
            prior_ack,
        };
        let answer = match control.leader() {
            None => Err("no leader known".to_owned()),
            Some((leader, _)) if leader == me => self.on_heartbeat(renewal, sent).await,
            Some((_, addr)) => {
                match self
                    .inner
                    .peers
                    .heartbeat(&addr, renewal, s.heartbeat)
                    .await
                {
                    Ok(answer) => {
                        if answer.removed {
                            self.learned_removed();
                        }
                        answer.granted
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match answer {
            Ok(()) => {
                let owned = self.owned();
                let now = Instant::now();
                if now >= sent + s.lease {
                    // The answer came after the lease it grants had run out (this node or
                    // the network stalled): it covers nothing, and logging it would record
                    // an interval that ends before it starts.
                    tracing::debug!(late = ?(now - sent), "lease answer arrived after its lease expired");
                    return;
                }
                let covered = self.serve().grant(owned, sent + s.lease, now).clone();
                let until_ms = sent_ms + s.lease.as_millis() as i64;
                self.log().grant(now_ms(), until_ms, &covered);
            }
            Err(reason) => tracing::debug!(%reason, "lease not renewed"),
        }
    }

    /// The shards the applied map assigns to this node.
    fn owned(&self) -> BTreeSet<ShardId> {
        let me = self.inner.me;
        self.inner
            .control
            .shard_map()
            .into_iter()
            .filter(|(_, (node, _))| *node == me)
            .map(|(shard, _)| shard)
            .collect()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, LeaseLog> {
        self.inner
            .lease_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, shards: Vec<ShardId>) {
        if shards.is_empty() {
            return;
        }
        self.log().release(now_ms(), &shards);
        let _ = self.inner.released.send(shards);
    }

    /// Runs the leader's duties twice every heartbeat interval (detection granularity).
    async fn supervisor_loop(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.inner.settings.heartbeat / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // One round of leader duties (a no-op on followers).
                _ = tick.tick() => {
                    self.inner.supervisor.tick(&self.inner.control, &self.inner.settings).await;
                }
                // Node shutdown.
                _ = stopped(&mut stop) => break,
            }
        }
    }

    /// Applies shard moves to what this node serves, and this node's removal to the removed
    /// flag, as Raft applies them.
    async fn follow_moves(self, mut stop: watch::Receiver<bool>) {
        let mut events = self.inner.control.subscribe();
        let me = self.inner.me;
        self.check_removed();
        loop {
            let event = tokio::select! {
                // The next applied entry.
                e = events.recv() => e,
                // Node shutdown.
                _ = stopped(&mut stop) => break,
            };
            match event {
                Ok(Applied::ShardsAssigned {
                    node,
                    shards,
                    activate_after_ms,
                    ..
                }) => {
                    if node == me {
                        let delay = Duration::from_millis(activate_after_ms);
                        self.serve().gained(&shards, delay, Instant::now());
                        let me = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            me.inner.renew_now.notify_one();
                        });
                    } else {
                        let lost = self.serve().lost(&shards);
                        self.release(lost);
                    }
                }
                Ok(Applied::NodeChanged(info)) if info.id == me => {
                    self.check_removed();
                }
                Ok(Applied::SnapshotInstalled { .. })
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let owned = self.owned();
                    let lost = self.serve().retain_owned(&owned);
                    self.release(lost);
                    self.check_removed();
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    /// Registers this node's addresses (once a leader is known; retried until committed).
    async fn register(self, mut stop: watch::Receiver<bool>) {
        let s = &self.inner.settings;
        let wanted = |i: &NodeInfo| {
            i.state == NodeState::Active
                && i.peer_addr == s.peer_addr
                && i.client_addr == s.client_addr
                && i.mqtt_client_id == s.mqtt_client_id
        };
        loop {
            if self
                .inner
                .control
                .node_info(self.inner.me)
                .is_some_and(|i| i.state == NodeState::Removed)
            {
                tracing::error!(
                    node = self.inner.me,
                    "this node was removed from the cluster and its id is never reused: not \
                     registering (start a new node with a new node_id to add capacity)"
                );
                return;
            }
            if self
                .inner
                .control
                .node_info(self.inner.me)
                .is_some_and(|i| wanted(&i))
            {
                return;
            }
            let cmd = ControlCommand::RegisterNode {
                node: self.inner.me,
                peer_addr: s.peer_addr.clone(),
                client_addr: s.client_addr.clone(),
                mqtt_client_id: s.mqtt_client_id.clone(),
                at_ms: now_ms(),
            };
            // Committed is enough (the loop waits for the local apply): a removed node never
            // applies, and must still hear the refusal.
            match self.inner.control.write_committed(cmd).await {
                Ok(ControlResponse::Rejected(r)) => {
                    tracing::error!(node = self.inner.me, reason = %r, "registration refused");
                    return;
                }
                Ok(_) => tracing::info!(node = self.inner.me, "registered"),
                Err(e) => tracing::debug!(error = %e, "registration not committed yet"),
            }
            tokio::select! {
                // Check again (the write may have been applied by now).
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                // Node shutdown.
                _ = stopped(&mut stop) => return,
            }
        }
    }
}
