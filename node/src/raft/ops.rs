//! Cluster operations of the [`ControlPlane`]: writes forwarded to the leader, membership
//! changes, and reads of the cluster state (nodes, shard map, ownership history).
//!
//! What it does not do: decide anything. Who joins, who is promoted and where shards go is
//! decided by `cluster/` on the leader; this file only turns those decisions into openraft
//! calls and Raft entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};

use super::command::{ControlCommand, ControlResponse, NodeInfo};
use super::error::ControlError;
use super::log_store::LogStore;
use super::state_machine::{self, Ownership};
use super::types::Raft;
use super::{ControlPlane, wait_error};
use crate::shard::ShardId;

/// Sends a control write to the leader's peer port and returns its log index and answer.
///
/// Implemented by `cluster/` over peer gRPC; the remote side applies it with
/// [`ControlPlane::write_local_indexed`], so a write is forwarded at most once.
#[async_trait]
pub trait LeaderForward: Send + Sync {
    async fn forward(
        &self,
        leader: u64,
        addr: &str,
        cmd: &ControlCommand,
    ) -> Result<(u64, ControlResponse), ControlError>;
}

/// Pause between attempts while no leader is known or the leader just changed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Wall clock in Unix milliseconds, for times carried inside commands (decided by the
/// proposer, so every replica applies the same value).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ControlPlane {
    /// Installs the leader forwarder; later calls are ignored.
    pub fn set_forwarder(&self, forwarder: Arc<dyn LeaderForward>) {
        let _ = self.inner.forwarder.set(forwarder);
    }

    /// `write` with forwarding: local when leading, else to the leader (writes proposed
    /// together travel as one batch, `proposer.rs`); retried while there is no leader or the
    /// leader moved, until `timeout`. A timed-out attempt is never repeated (it may still
    /// commit). With `read_your_writes`, answered once this node has applied the entry too.
    pub(super) async fn write_forwarding(
        &self,
        cmd: ControlCommand,
        timeout: Duration,
        read_your_writes: bool,
    ) -> Result<ControlResponse, ControlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.inner.proposer.propose(cmd.clone(), true, left).await {
                Ok((index, response)) => {
                    if read_your_writes {
                        self.wait_applied(index, deadline).await?;
                    }
                    Ok(response)
                }
                Err(e) => Err(e),
            };
            match attempt {
                Err(e @ (ControlError::NotLeader { .. } | ControlError::Unavailable { .. }))
                    if Instant::now() + RETRY_PAUSE < deadline && !is_timeout(&e) =>
                {
                    tracing::debug!(error = %e, "control write retried");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until this node has applied the log up to `index` (on the state machine's own
    /// applied index, not openraft's metrics, which change far more often).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ControlError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let bound = left.max(Duration::from_millis(500));
        tokio::time::timeout(bound, self.inner.caches.applied_at_least(index))
            .await
            .map_err(|_| {
                ControlError::unavailable(format!(
                    "entry {index} not applied on this node within {bound:?}"
                ))
            })
    }

    /// The openraft handle (peer transport server, tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The current leader and its peer address, as this node knows it.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    /// Whether this node is the leader right now (it may lose leadership at any moment:
    /// decisions it writes are still checked by the state machine).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Last log index applied to this node's state machine (0 before anything).
    pub fn applied_index(&self) -> u64 {
        self.inner.caches.applied_index()
    }

    /// Waits until some node is known to lead.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ControlError> {
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(wait_error)?;
        m.current_leader
            .ok_or_else(|| ControlError::unavailable("no leader"))
    }

    /// Voters and learners of the Raft membership, with their peer addresses.
    pub fn membership(&self) -> (BTreeMap<u64, String>, BTreeMap<u64, String>) {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let (mut v, mut l) = (BTreeMap::new(), BTreeMap::new());
        for (id, node) in membership.nodes() {
            let map = if voters.contains(id) { &mut v } else { &mut l };
            map.insert(*id, node.addr.clone());
        }
        (v, l)
    }

    /// The voters, when the membership is one configuration (not joint) whose entry is
    /// committed in this node's log; `None` during a membership change.
    pub fn settled_voters(&self) -> Option<BTreeSet<u64>> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let stored = &m.membership_config;
        let membership = stored.membership();
        let committed = LogStore::committed_index(&self.inner.committed);
        let entry = stored.log_id().map(|l| l.index);
        let settled = membership.get_joint_config().len() == 1
            && entry.is_some_and(|i| committed.is_some_and(|c| i <= c));
        settled.then(|| membership.voter_ids().collect())
    }

    /// Adds a learner and waits until it has caught up with the leader's log. Leader only.
    pub async fn add_learner(&self, id: u64, peer_addr: &str) -> Result<(), ControlError> {
        let res = self
            .inner
            .raft
            .add_learner(id, BasicNode::new(peer_addr), true)
            .await;
        membership_result(res.map(|_| ()))
    }

    /// Makes exactly `voters` the voters; nodes dropped from the voters stay learners when
    /// `keep_as_learners` (promotion/demotion), or leave the membership. Leader only.
    pub async fn set_voters(
        &self,
        voters: BTreeSet<u64>,
        keep_as_learners: bool,
    ) -> Result<(), ControlError> {
        let res = self
            .inner
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), keep_as_learners)
            .await;
        membership_result(res.map(|_| ()))
    }

    /// Removes learners from the membership. Leader only.
    pub async fn remove_learners(&self, ids: BTreeSet<u64>) -> Result<(), ControlError> {
        let res = self
            .inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await;
        membership_result(res.map(|_| ()))
    }

    /// Every registered node, from the applied state.
    pub fn nodes(&self) -> BTreeMap<u64, NodeInfo> {
        self.inner.caches.nodes()
    }

    pub fn node_info(&self, id: u64) -> Option<NodeInfo> {
        self.inner.caches.node(id)
    }

    /// The applied shard map: shard → (node, epoch).
    pub fn shard_map(&self) -> BTreeMap<ShardId, (u64, u64)> {
        self.inner.caches.shard_map()
    }

    /// Every version of a rule, oldest first (also after it was deleted).
    pub fn rule_history(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<crate::model::Rule>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_rule_history(&db, tenant, id)?)
    }

    /// The owners of `shard` over time, oldest first (ownership history).
    pub fn history(&self, shard: ShardId) -> Result<Vec<Ownership>, ControlError> {
        let db = self.sm_db()?;
        Ok(state_machine::read_history(&db, shard)?)
    }
}

fn is_timeout(e: &ControlError) -> bool {
    matches!(e, ControlError::Unavailable { reason } if reason.contains("not committed within"))
}

fn membership_result(
    res: Result<(), RaftError<u64, ClientWriteError<u64, BasicNode>>>,
) -> Result<(), ControlError> {
    match res {
        Ok(()) => Ok(()),
        Err(RaftError::Fatal(f)) => Err(f.into()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            match (f.leader_id, f.leader_node) {
                (Some(leader), Some(node)) => Err(ControlError::NotLeader {
                    leader,
                    addr: node.addr,
                }),
                _ => Err(ControlError::unavailable("no control-plane leader")),
            }
        }
        // A membership change already in progress: the caller retries later.
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ ChangeMembershipError::InProgress(_),
        ))) => Err(ControlError::unavailable(e)),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(ControlError::Config {
                reason: e.to_string(),
            })
        }
    }
}
