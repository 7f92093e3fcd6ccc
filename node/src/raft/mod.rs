//! The control plane: one openraft group holding the shard map, rules and alarms
//! (DESIGN.md §2, §3, §7), behind the [`ControlPlane`] facade.
//!
//! ## Layout
//! - [`command`]: log entries ([`Entry`], [`ControlCommand`]) and answers ([`ControlResponse`]).
//! - [`apply`]: applying one entry to the state, pure (no IO, no clock); table-tested.
//! - [`state_machine`]: the state on redb (`DIR/sm.redb`), one transaction per applied batch,
//!   caches of rules and shard map, snapshots, [`Applied`] events after commit;
//!   [`tables`]: its redb tables and reads.
//! - [`log_store`]: the Raft log and vote in an append-only journal (`DIR/raft.journal`),
//!   group-committed with one fdatasync before acknowledging.
//! - [`network`]: the peer transport (openraft RPCs over peer gRPC with mTLS).
//! - [`ops`]: membership changes, writes forwarded to the leader, cluster reads.
//! - [`outbox`]: notification deliveries committed but not yet delivered (survive a crash).
//! - [`mem_state`]: the control state in maps (table tests, the chaos simulation).
//! - [`types`]: openraft type configuration; [`error`]: [`ControlError`].
//!
//! ## What this module does not do
//! It never reads clocks for replicated state, never evaluates rules, and holds no telemetry.
//! It does not decide placement, leases or failure detection: `cluster/` does, and writes
//! its decisions through [`ControlPlane::write`].

pub mod apply;
pub mod command;
pub mod contact;
pub mod error;
pub mod log_store;
pub mod mem_state;
pub mod network;
pub mod ops;
pub mod outbox;
pub mod proposer;
pub mod registry;
pub mod state_machine;
pub mod tables;
pub mod timers;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use redb::Database;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use self::apply::Applied;
pub use self::command::{ControlCommand, ControlResponse, Entry, NodeInfo, NodeState, Rejection};
pub use self::error::ControlError;
use self::log_store::LogStore;
use self::network::NetworkFactory;
pub use self::ops::LeaderForward;
pub use self::state_machine::Ownership;
use self::state_machine::{Caches, StateMachineStore};
use self::types::{NodeId, Raft};
use crate::metrics_names::{RAFT_APPLIED, RAFT_IS_LEADER, RAFT_TERM};
use crate::model::{Alarm, DeviceKey, Rule};
use crate::shard::ShardId;
use crate::storage::volatile::create_database;

/// Capacity of the [`Applied`] broadcast; a receiver lagging further loses events
/// (`RecvError::Lagged`) and must reload what it derives from them.
pub const EVENTS_CAPACITY: usize = 1024;
/// How long `open_single` waits for leadership and for the log to be applied.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a write waits to be committed and applied.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for openraft's tasks to release the database files.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`ControlPlane::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlStatus {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Last committed log index, as last saved by openraft (0 before the first commit).
    pub commit_index: u64,
    /// Last applied log index (0 before anything is applied).
    pub last_applied: u64,
    /// (node id, peer address, voter) of every member.
    pub members: Vec<(u64, String, bool)>,
}

/// Handle on the running control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: Raft,
    /// Rules and shard map in memory, written by the state machine after each commit.
    caches: Arc<Caches>,
    /// The state machine's database for alarm reads. Weak, so that after `shutdown` the file
    /// is released even while clones of this handle live on (reads then fail with `Stopped`).
    sm_db: Weak<Database>,
    events: broadcast::Sender<Applied>,
    /// Committed index + 1, maintained by the log store.
    committed: Arc<AtomicU64>,
    /// Taken by the first `shutdown`.
    running: Mutex<Option<Running>>,
    /// Groups concurrent writes proposed here into shared entries (`proposer.rs`).
    proposer: proposer::Proposer,
    /// Sends writes to the leader when this node is not it (set once by `cluster/`).
    forwarder: proposer::Forwarder,
    /// When this node last acknowledged a leader, per term (recorded by the peer service).
    contact: Arc<contact::LeaderContact>,
}

/// How a node's control plane starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// A cluster of one (`starling dev`): initialize with this node alone, wait to lead, and
    /// assign every shard to it.
    Single,
    /// First start of a pristine cluster: initialize with these voters (id, peer address).
    /// Every listed node may do it; openraft accepts the same membership twice. Ignored when
    /// the directory is already initialized.
    Bootstrap(Vec<(u64, String)>),
    /// Wait to be added by the leader (`cluster/` asks a member to add this node).
    Join,
}

/// What [`ControlPlane::open`] needs.
#[derive(Clone)]
pub struct OpenOptions {
    /// Directory of the Raft log and state machine (e.g. DIR/raft/).
    pub dir: std::path::PathBuf,
    pub node_id: u64,
    /// Where peers reach this node.
    pub peer_addr: String,
    /// Number of virtual shards: a power of two, fixed for the life of the cluster.
    pub shards: u32,
    pub network: NetworkFactory,
    pub start: Start,
}

/// What `shutdown` stops and waits for.
struct Running {
    stop_metrics: oneshot::Sender<()>,
    metrics_task: JoinHandle<()>,
    proposer_task: JoinHandle<()>,
    /// Yields `None` once every store clone (held by openraft's tasks) is dropped.
    released: mpsc::Receiver<()>,
}

/// Largest snapshot chunk sent in one InstallSnapshot RPC. The chunk travels as JSON (a byte
/// array costs up to 4 bytes per byte), so 512 KiB stays under tonic's 4 MiB message limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;

/// Openraft settings for a LAN cluster; validated in `open`.
fn raft_config() -> Config {
    Config {
        cluster_name: "starling".to_owned(),
        // A follower that hears nothing starts an election after openraft's leader lease
        // (= election_timeout_max) plus a random election timeout: 0.9–1.2 s.
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        // Snapshot every 5000 entries and keep 1000 entries behind the snapshot for followers
        // that lag a little; openraft purges the rest after each snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
        max_in_snapshot_log_to_keep: 1000,
        ..Config::default()
    }
}

impl ControlPlane {
    /// A cluster of one under `dir` (see [`Start::Single`]); returns once this node leads
    /// and has applied its log. Used by `starling dev` and tests.
    pub async fn open_single(
        dir: &Path,
        node_id: u64,
        peer_addr: &str,
        shards: u32,
    ) -> Result<ControlPlane, ControlError> {
        Self::open(OpenOptions {
            dir: dir.to_owned(),
            node_id,
            peer_addr: peer_addr.to_owned(),
            shards,
            network: NetworkFactory::new(tonic::transport::ClientTlsConfig::new()),
            start: Start::Single,
        })
        .await
    }

    /// Opens or creates the Raft log and state machine under `opts.dir` and starts openraft.
    /// Restarts on the same dir keep everything (no re-initialization). With
    /// [`Start::Single`] it returns once this node leads and owns every shard; otherwise at
    /// once (the cluster layer waits for a leader and for placement).
    ///
    /// Reopening a directory needs the previous instance's `shutdown` to have returned.
    pub async fn open(opts: OpenOptions) -> Result<ControlPlane, ControlError> {
        let OpenOptions {
            dir,
            node_id,
            peer_addr,
            shards,
            network,
            start,
        } = opts;
        if !shards.is_power_of_two() {
            return Err(ControlError::Config {
                reason: format!("shard count {shards} is not a power of two"),
            });
        }
        let config = raft_config().validate().map_err(|e| ControlError::Config {
            reason: e.to_string(),
        })?;
        std::fs::create_dir_all(&dir).map_err(|source| ControlError::Io {
            path: dir.clone(),
            source,
        })?;
        let (alive, released) = mpsc::channel(1);
        if dir.join("log.redb").exists() && !dir.join(log_store::JOURNAL).exists() {
            return Err(ControlError::Config {
                reason: format!(
                    "{} holds a Raft log in the format of Starling before the journal \
                     (log.redb); it cannot be migrated: start this node with an empty data \
                     directory and let it join the cluster",
                    dir.display()
                ),
            });
        }
        let log = LogStore::open(&dir, alive.clone()).map_err(|source| ControlError::Io {
            path: dir.join(log_store::JOURNAL),
            source,
        })?;
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let sm = StateMachineStore::open(
            create_database(&dir.join("sm.redb"), crate::faults::power_loss())?,
            events.clone(),
            alive,
        )?;
        let (caches, sm_db, committed) = (sm.caches(), sm.reader(), log.committed_handle());

        let raft = Raft::new(node_id, Arc::new(config), network, log, sm).await?;
        let (stop_metrics, stop_rx) = oneshot::channel();
        let metrics_task = tokio::spawn(export_metrics(raft.clone(), stop_rx));
        let forwarder = proposer::Forwarder::default();
        let (proposer, proposer_task) =
            proposer::Proposer::spawn(raft.clone(), forwarder.clone(), WRITE_TIMEOUT);
        let cp = ControlPlane {
            inner: Arc::new(Inner {
                node_id,
                raft,
                caches,
                sm_db,
                events,
                committed,
                running: Mutex::new(Some(Running {
                    stop_metrics,
                    metrics_task,
                    proposer_task,
                    released,
                })),
                proposer,
                forwarder,
                contact: Arc::default(),
            }),
        };
        let started = match start {
            Start::Single => cp.start_single(&peer_addr, shards).await,
            Start::Bootstrap(members) => cp.bootstrap(members, shards).await,
            Start::Join => cp.check_shard_count(shards),
        };
        match started {
            Ok(()) => Ok(cp),
            Err(e) => {
                cp.shutdown().await;
                Err(e)
            }
        }
    }

    /// Initializes a pristine group with `members` as voters.
    async fn bootstrap(
        &self,
        members: Vec<(u64, String)>,
        shards: u32,
    ) -> Result<(), ControlError> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await? {
            let members: BTreeMap<u64, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode::new(addr)))
                .collect();
            tracing::info!(
                node = self.inner.node_id,
                ?members,
                "bootstrapping the control plane"
            );
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ControlError::fatal(e)),
            }
        }
        self.check_shard_count(shards)
    }

    /// Refuses a directory whose shard map has another size than configured.
    fn check_shard_count(&self, shards: u32) -> Result<(), ControlError> {
        let stored = self.inner.caches.shard_count();
        if stored != 0 && stored != shards as usize {
            return Err(ControlError::ShardCountMismatch {
                stored,
                configured: shards,
            });
        }
        Ok(())
    }

    /// Initializes the group if pristine, waits for leadership and the applied log, and
    /// assigns all shards to this node if no shard is assigned yet.
    async fn start_single(&self, peer_addr: &str, shards: u32) -> Result<(), ControlError> {
        let raft = &self.inner.raft;
        let me = self.inner.node_id;
        if !raft.is_initialized().await? {
            let members = BTreeMap::from([(me, BasicNode::new(peer_addr))]);
            tracing::info!(
                node = me,
                peer_addr,
                "initializing single-member control plane"
            );
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ControlError::fatal(e)),
            }
        }
        raft.wait(Some(OPEN_TIMEOUT))
            .metrics(
                |m| m.state == ServerState::Leader && m.current_leader == Some(me),
                "this node leads the single-member group",
            )
            .await
            .map_err(wait_error)?;
        // Linearizable barrier: returns once everything committed so far is applied here.
        match tokio::time::timeout(OPEN_TIMEOUT, raft.ensure_linearizable()).await {
            Err(_) => return Err(ControlError::unavailable("log not applied in time")),
            Ok(Err(RaftError::Fatal(f))) => return Err(f.into()),
            Ok(Err(RaftError::APIError(e))) => return Err(ControlError::unavailable(e)),
            Ok(Ok(_)) => {}
        }
        let stored = self.inner.caches.shard_count();
        if stored == 0 {
            let cmd = ControlCommand::AssignShards {
                node: me,
                shards: (0..shards).collect(),
                at_ms: ops::now_ms(),
                activate_after_ms: 0,
            };
            match self.write(cmd).await? {
                ControlResponse::ShardsAssigned { epoch } => {
                    tracing::info!(node = me, shards, epoch, "assigned all shards to this node");
                }
                other => {
                    return Err(ControlError::fatal(format!(
                        "AssignShards answered {other:?}"
                    )));
                }
            }
        } else if stored != shards as usize {
            return Err(ControlError::ShardCountMismatch {
                stored,
                configured: shards,
            });
        }
        Ok(())
    }

    /// Proposes through Raft and returns the state machine's response once committed and
    /// applied. On a follower the write is forwarded to the leader (see [`ops`]); while
    /// there is no leader it is retried until `WRITE_TIMEOUT` (10 s).
    pub async fn write(&self, cmd: ControlCommand) -> Result<ControlResponse, ControlError> {
        self.write_forwarding(cmd, WRITE_TIMEOUT, true).await
    }

    /// [`write`](Self::write) that answers once the entry is committed and applied on the
    /// leader, without waiting for this node to apply it (a node removed from the membership
    /// never would).
    pub async fn write_committed(
        &self,
        cmd: ControlCommand,
    ) -> Result<ControlResponse, ControlError> {
        self.write_forwarding(cmd, WRITE_TIMEOUT, false).await
    }

    /// Proposes on this node only: `NotLeader` when another node leads. Forwarded writes
    /// arriving from peers use this, so a write never travels more than one hop.
    pub async fn write_local(&self, cmd: ControlCommand) -> Result<ControlResponse, ControlError> {
        self.write_local_indexed(cmd).await.map(|(_, r)| r)
    }

    /// [`write_local`](Self::write_local), also returning the entry's log index (shared by
    /// the writes batched into the same entry, `proposer.rs`).
    pub async fn write_local_indexed(
        &self,
        cmd: ControlCommand,
    ) -> Result<(u64, ControlResponse), ControlError> {
        self.inner.proposer.propose(cmd, false, WRITE_TIMEOUT).await
    }

    /// All rules, from the in-memory cache (kept in sync by apply).
    /// Every rule, ordered by (tenant, id); cheap (a shared list, rebuilt only on change).
    pub fn rules(&self) -> std::sync::Arc<[Rule]> {
        self.inner.caches.rules()
    }

    pub fn rule(&self, tenant: &str, id: &str) -> Option<Rule> {
        self.inner.caches.rule(tenant, id)
    }

    /// All alarms (active and cleared) in the order they were raised, read from disk.
    pub fn alarms(&self) -> Result<Vec<Alarm>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_alarms(&db)?)
    }

    pub fn alarm(&self, id: &str) -> Result<Option<Alarm>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_alarm(&db, id)?)
    }

    /// The active alarm of (device, rule), if any.
    pub fn active_alarm(
        &self,
        device: &DeviceKey,
        rule_id: &str,
    ) -> Result<Option<Alarm>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_active_alarm(&db, device, rule_id)?)
    }

    /// Event time of the latest alarm transition of (device, rule), if any: a new owner's
    /// actor evaluates only points after it.
    pub fn last_transition_ms(
        &self,
        device: &DeviceKey,
        rule_id: &str,
    ) -> Result<Option<i64>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_last_transition(&db, device, rule_id)?)
    }

    /// The index of the last entry applied to this node's state machine, read from disk (it
    /// is written in the same transaction as the entry's effects).
    pub fn applied_index_on_disk(&self) -> Result<u64, ControlError> {
        let db = self.sm_db()?;
        let last: Option<Option<types::LogId>> = tables::read_meta(&db, tables::LAST_APPLIED)?;
        Ok(last.flatten().map_or(0, |l| l.index))
    }

    /// The registry record of a device, read from disk (see [`registry`]).
    pub fn device(&self, key: &DeviceKey) -> Result<Option<registry::DeviceRecord>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_device(&db, key)?)
    }

    /// The metadata rule selectors match on (type, labels), `None` for an unregistered
    /// device or when the registry cannot be read. Meant for the device actor, which sets
    /// `DeviceState::meta` from it before evaluating (not wired yet: see ARCHITECTURE.md).
    pub fn device_meta(&self, key: &DeviceKey) -> Option<crate::model::DeviceMeta> {
        match self.device(key) {
            Ok(record) => record.map(|r| r.meta()),
            Err(e) => {
                tracing::warn!(device = %key, error = %e, "device registry unreadable");
                None
            }
        }
    }

    /// Up to `limit` registered devices of `tenant` matching `filter`, by id, after `after`.
    pub fn devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        filter: &registry::DeviceFilter,
    ) -> Result<Vec<registry::DeviceRecord>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_devices(
            &db, tenant, after, limit, filter,
        )?)
    }

    /// (node, epoch) owning `shard`, if assigned.
    pub fn shard_owner(&self, shard: ShardId) -> Option<(u64, u64)> {
        self.inner.caches.shard_owner(shard)
    }

    /// Events of entries applied from now on, sent after their batch is durable.
    pub fn subscribe(&self) -> broadcast::Receiver<Applied> {
        self.inner.events.subscribe()
    }

    /// When this node last acknowledged a leader, per term: the peer `Raft` service records
    /// it, a new leader asks for it (see [`contact`]).
    pub fn contact(&self) -> &Arc<contact::LeaderContact> {
        &self.inner.contact
    }

    pub fn status(&self) -> ControlStatus {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        ControlStatus {
            node_id: self.inner.node_id,
            leader: m.current_leader,
            term: m.current_term,
            commit_index: LogStore::committed_index(&self.inner.committed).unwrap_or(0),
            last_applied: m.last_applied.map_or(0, |l| l.index),
            members: membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone(), voters.contains(id)))
                .collect(),
        }
    }

    /// Stops openraft and the metrics task and waits until the database files are released,
    /// so the directory can be opened again. Idempotent; later calls return at once.
    pub async fn shutdown(&self) {
        let Some(running) = self.inner.running.lock().await.take() else {
            return;
        };
        let _ = running.stop_metrics.send(());
        running.proposer_task.abort();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core task ended abnormally");
        }
        let _ = running.metrics_task.await;
        let mut released = running.released;
        if tokio::time::timeout(RELEASE_TIMEOUT, released.recv())
            .await
            .is_err()
        {
            tracing::warn!("control-plane stores still referenced after {RELEASE_TIMEOUT:?}");
        }
    }

    fn sm_db(&self) -> Result<Arc<Database>, ControlError> {
        self.inner.sm_db.upgrade().ok_or(ControlError::Stopped)
    }
}

fn wait_error(e: WaitError) -> ControlError {
    match e {
        WaitError::Timeout(..) => ControlError::unavailable(e),
        WaitError::ShuttingDown => ControlError::Stopped,
    }
}

/// How often the Raft gauges are refreshed besides on a change of term, leader or role.
const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Mirrors Raft metrics into the gauges until `stop` fires or Raft stops: at once when the
/// term, leader or role changes (openraft's server metrics), else every [`METRICS_EVERY`].
/// Not on every change of the full metrics: those change on every append, flush and
/// replication ack, and waking for each cost CPU on the write path.
async fn export_metrics(raft: Raft, mut stop: oneshot::Receiver<()>) {
    let mut server = raft.server_metrics();
    let mut tick = tokio::time::interval(METRICS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            metrics::gauge!(RAFT_TERM).set(m.current_term as f64);
            metrics::gauge!(RAFT_APPLIED).set(m.last_applied.map_or(0.0, |l| l.index as f64));
            let leader = if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            };
            metrics::gauge!(RAFT_IS_LEADER).set(leader);
        }
        tokio::select! {
            // A new term, leader or role; an error means Raft has stopped.
            changed = server.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
            // `shutdown` asked us to stop (or dropped the sender).
            _ = &mut stop => break,
        }
    }
    metrics::gauge!(RAFT_IS_LEADER).set(0.0);
}

#[cfg(test)]
mod tests;
