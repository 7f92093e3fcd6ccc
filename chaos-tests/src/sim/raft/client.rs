//! The simulated client: proposes Starling control commands to whichever node it believes
//! leads, and records which were acknowledged.
//!
//! Commands, drawn from the seed: `PutRule` (each a new version of one of two rules),
//! `AssignShards` (one shard to a random node: a new epoch), and `RaiseAlarm`/`ClearAlarm`
//! with the (shard, epoch) of the latest assignment the client saw acknowledged — or, one
//! time in four, an older epoch, which the state machine must refuse. Writes are not
//! retried after a timeout, except the two initial rules and the final write, which are
//! retried until acknowledged (applying one twice only makes a new rule version).
//!
//! In seeds with a joiner, the client also adds the last node as a learner and then makes it
//! a voter, from a time drawn from the seed (2–10 s), retrying between writes until it is
//! acknowledged (and before the final write if still pending).
//!
//! At the end the client writes a barrier until it is acknowledged and waits for every node
//! to apply it: that is the convergence the checks then rely on.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::EntryPayload;
use starling_node::model::{
    AlarmRaise, CmpOp, Condition, DeviceKey, RuleDoc, Selector, Threshold, Value,
};
use starling_node::raft::types::{NodeId, TypeConfig};
use starling_node::raft::{ControlCommand, ControlResponse, Entry};
use starling_node::shard::ShardId;

use super::net::{self, Reply, Request, WriteReply};
use super::obs::{Acked, Shared, hash_of};
use crate::schedule::SplitMix64;

/// Shards the client assigns and raises alarms on.
pub const SHARDS: u64 = 4;
/// How long the client waits for one write.
const WRITE_TTL: Duration = Duration::from_millis(2_000);
/// How long the client waits for a membership change (the learner catches up first).
const JOIN_TTL: Duration = Duration::from_millis(5_000);
/// How often the client polls for convergence at the end.
const POLL: Duration = Duration::from_millis(100);

/// What the client knows and draws from.
pub struct Client {
    rng: SplitMix64,
    /// Hosts running a node (the joiner included).
    nodes: u64,
    /// A node to add as learner then voter, and when to start trying.
    joiner: Option<(NodeId, u64)>,
    leader: NodeId,
    /// Latest acknowledged epoch per shard.
    epochs: BTreeMap<ShardId, u64>,
    obs: Shared,
}

fn rule_doc(id: &str, value: f64) -> RuleDoc {
    RuleDoc {
        id: id.into(),
        tenant: None,
        selector: Selector::default(),
        condition: Condition::Threshold(Threshold {
            metric: "temp".into(),
            op: CmpOp::Gt,
            value,
            hold: None,
            clear: None,
        }),
        severity: "major".into(),
        notify: Vec::new(),
    }
}

fn device(shard: ShardId) -> DeviceKey {
    DeviceKey::default_tenant(format!("d{shard}"))
}

impl Client {
    /// A client of a cluster of `nodes` nodes, of which the last joins at `join_ms` if
    /// `joins`.
    pub fn new(seed: u64, nodes: u64, joins: bool, obs: Shared) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x00C1_1E57);
        let join_ms = rng.between(2_000, 10_000);
        Self {
            rng,
            nodes,
            joiner: joins.then_some((nodes, join_ms)),
            leader: 1,
            epochs: BTreeMap::new(),
            obs,
        }
    }

    /// Proposes commands until `stop_ms` of virtual time, then the barrier; waits up to
    /// `converge_ms` more for every node to apply it.
    pub async fn run(mut self, stop_ms: u64, converge_ms: u64) -> turmoil::Result {
        for r in ["r0", "r1"] {
            let put = self.put_rule(r);
            while self.propose(put.clone()).await.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        while now_ms() < stop_ms {
            if let Some((node, at)) = self.joiner
                && now_ms() >= at
            {
                self.join(node).await;
            }
            let cmd = self.next_command();
            self.propose(cmd).await;
            let pause = self.rng.between(20, 200);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let deadline = now_ms() + converge_ms;
        // A join still pending is finished first: the final write must reach all voters.
        while let Some((node, _)) = self.joiner
            && now_ms() < deadline
        {
            self.join(node).await;
            tokio::time::sleep(POLL).await;
        }
        let barrier = loop {
            if now_ms() > deadline {
                return Ok(());
            }
            let put = self.put_rule("barrier");
            if let Some((index, _)) = self.propose(put).await {
                break index;
            }
            tokio::time::sleep(POLL).await;
        };
        self.obs.lock().barrier = Some(barrier);
        while now_ms() < deadline {
            let done = {
                let obs = self.obs.lock();
                (1..=obs.voters).all(|n| obs.last_applied(n) >= barrier)
            };
            if done {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// One attempt to add `node` as a learner and then a voter, through the believed leader
    /// (following at most two redirections).
    async fn join(&mut self, node: NodeId) {
        let req = Request::Join {
            node,
            voters: (1..=node).collect(),
        };
        for _ in 0..3 {
            match net::call(self.leader, &req, JOIN_TTL).await {
                Ok(Reply::Write(WriteReply::Applied { index, .. })) => {
                    self.joiner = None;
                    let mut obs = self.obs.lock();
                    obs.voters = node;
                    obs.trace(
                        turmoil::elapsed().as_millis(),
                        0,
                        &format!("joined {index}"),
                    );
                    return;
                }
                Ok(Reply::Write(WriteReply::Forward(Some(l)))) if l != self.leader => {
                    self.leader = l;
                }
                _ => break,
            }
        }
        self.leader = 1 + self.rng.below(self.nodes);
    }

    fn put_rule(&mut self, id: &str) -> ControlCommand {
        ControlCommand::PutRule {
            doc: rule_doc(id, self.rng.between(10, 90) as f64),
            at_ms: now_ms() as i64,
        }
    }

    /// The epoch to write with for `shard`: the latest acknowledged one, or an older one.
    fn epoch_for(&mut self, shard: ShardId) -> u64 {
        let known = self.epochs.get(&shard).copied().unwrap_or(0);
        if self.rng.below(4) == 0 {
            known.saturating_sub(1 + self.rng.below(3))
        } else {
            known
        }
    }

    /// The next command: one in five is a batch of two to four commands drawn the same way,
    /// any mix (the state machine refuses those that may not share an entry).
    fn next_command(&mut self) -> ControlCommand {
        if self.rng.below(5) == 0 {
            let n = self.rng.between(2, 4);
            return ControlCommand::Batch((0..n).map(|_| self.one_command()).collect());
        }
        self.one_command()
    }

    fn one_command(&mut self) -> ControlCommand {
        let at_ms = now_ms() as i64;
        let shard = self.rng.below(SHARDS) as ShardId;
        match self.rng.below(10) {
            0 => {
                let id = format!("r{}", self.rng.below(2));
                self.put_rule(&id)
            }
            1 | 2 => ControlCommand::AssignShards {
                node: 1 + self.rng.below(self.nodes),
                shards: vec![shard],
                at_ms,
                activate_after_ms: 0,
            },
            3..=6 => ControlCommand::RaiseAlarm {
                shard,
                epoch: self.epoch_for(shard),
                device: device(shard),
                raise: AlarmRaise {
                    rule_id: format!("r{}", self.rng.below(2)),
                    rule_version: 1,
                    severity: "major".into(),
                    metric: "temp".into(),
                    value: Value::Number(99.0),
                    at_ms,
                    message: "hot".into(),
                },
            },
            _ => ControlCommand::ClearAlarm {
                shard,
                epoch: self.epoch_for(shard),
                device: device(shard),
                rule_id: format!("r{}", self.rng.below(2)),
                at_ms,
                reason: None,
            },
        }
    }

    /// Sends `cmd` to the believed leader, following at most two redirections. Returns the
    /// acknowledged (index, response), recorded in the observations.
    async fn propose(&mut self, cmd: ControlCommand) -> Option<(u64, ControlResponse)> {
        let entry = Entry::new(cmd);
        let req = Request::Write(entry.clone());
        for _ in 0..3 {
            match net::call(self.leader, &req, WRITE_TTL).await {
                Ok(Reply::Write(WriteReply::Applied {
                    index,
                    term,
                    response,
                })) => {
                    if let ControlResponse::ShardsAssigned { epoch } = &response
                        && let ControlCommand::AssignShards { shards, .. } = &entry.command
                    {
                        for s in shards {
                            let e = self.epochs.entry(*s).or_default();
                            *e = (*e).max(*epoch);
                        }
                    }
                    let payload = EntryPayload::<TypeConfig>::Normal(entry);
                    let mut obs = self.obs.lock();
                    obs.acked.push(Acked {
                        index,
                        term,
                        hash: hash_of(&payload),
                    });
                    obs.trace(turmoil::elapsed().as_millis(), 0, &format!("ack {index}"));
                    return Some((index, response));
                }
                Ok(Reply::Write(WriteReply::Forward(Some(l)))) if l != self.leader => {
                    self.leader = l;
                }
                _ => break,
            }
        }
        self.leader = 1 + self.rng.below(self.nodes);
        None
    }
}

fn now_ms() -> u64 {
    turmoil::elapsed().as_millis() as u64
}
