//! Group commit for the control plane: concurrent writes proposed on this node share Raft
//! entries.
//!
//! openraft 0.9's core task takes client writes one message at a time and appends, flushes and
//! replicates after each, so 64 concurrent writes cost 64 rounds of that pipeline. The proposer
//! task takes writes from a queue and keeps at most [`IN_FLIGHT`] entries in flight; while they
//! are, new writes queue up, and the next entry carries up to [`MAX_BATCH`] of them as one
//! [`ControlCommand::Batch`]. A lone write goes alone as its own command, so an idle cluster
//! adds no delay and writes the same entries as before.
//!
//! Which commands may share an entry is decided by the pure [`BatchSlots`] (`command.rs`): a
//! command that may not join the batch being built starts the next one, so no write waits for
//! more than the entries in flight ahead of it.
//!
//! On a follower, the leader refuses the entry with `NotLeader`; a batch of writes proposed
//! by this node's own callers is then forwarded to the leader as it is, in one peer call (the
//! leader proposes it as one entry). Writes that arrived forwarded from a peer are never
//! forwarded again (one hop at most): they get `NotLeader` and their sender retries.
//!
//! What it does not do: retrying (`ops.rs`).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::command::{BatchSlots, ControlCommand, ControlResponse, Entry};
use super::error::ControlError;
use super::ops::LeaderForward;
use super::types::Raft;

/// The leader forwarder, installed once by `cluster/` after the control plane opened.
pub type Forwarder = Arc<std::sync::OnceLock<Arc<dyn LeaderForward>>>;

/// Entries proposed and not yet answered, at most. One entry in flight would serialize the
/// writes behind each round trip; many would let the queue drain into small entries again.
pub const IN_FLIGHT: usize = 4;

/// Commands in one entry, at most (a `PutRule` entry stays well under a megabyte).
pub const MAX_BATCH: usize = 256;

/// What a write is answered with: the entry's log index and the command's own answer.
pub type Answer = Result<(u64, ControlResponse), ControlError>;

struct Proposal {
    cmd: ControlCommand,
    /// Whether the write may be forwarded to the leader (false: it came from a peer).
    forward: bool,
    reply: oneshot::Sender<Answer>,
}

/// The queue into the proposer task. Dropping every handle ends the task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the proposer task over `raft`; `timeout` bounds each entry's commit.
    pub fn spawn(raft: Raft, forwarder: Forwarder, timeout: Duration) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(Target { raft, forwarder }, rx, timeout));
        (Self { tx }, task)
    }

    /// Proposes `cmd` and waits for its answer, at most `timeout`; with `forward`, through the
    /// leader when this node is not it. A write that timed out may still be committed later.
    pub async fn propose(&self, cmd: ControlCommand, forward: bool, timeout: Duration) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Proposal {
                cmd,
                forward,
                reply,
            })
            .map_err(|_| ControlError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(not_committed(timeout)),
            Ok(Err(_)) => Err(ControlError::Stopped),
            Ok(Ok(answer)) => answer,
        }
    }
}

fn not_committed(timeout: Duration) -> ControlError {
    ControlError::unavailable(format!(
        "write not committed within {timeout:?}; it may still be applied"
    ))
}

/// Where entries go: this node's Raft, else the leader through the forwarder.
#[derive(Clone)]
struct Target {
    raft: Raft,
    forwarder: Forwarder,
}

/// Builds entries from the queue until every [`Proposer`] handle is dropped.
async fn run(target: Target, mut rx: mpsc::UnboundedReceiver<Proposal>, timeout: Duration) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Waiting here is what lets the queue fill while entries are in flight.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut slots = BatchSlots::default();
        let mut batch = vec![first];
        if slots.take(&batch[0].cmd) {
            while batch.len() < MAX_BATCH {
                let Ok(next) = rx.try_recv() else { break };
                if next.forward == batch[0].forward && slots.take(&next.cmd) {
                    batch.push(next);
                } else {
                    carried = Some(next);
                    break;
                }
            }
        }
        tokio::spawn(commit(target.clone(), batch, permit, timeout));
    }
}

/// Proposes one entry for `batch` and answers each of its writes.
async fn commit(
    target: Target,
    batch: Vec<Proposal>,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
) {
    // Every proposal of a batch has the same `forward` (see `run`).
    let forward = batch[0].forward;
    let (mut commands, mut replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let entry = if commands.len() == 1 {
        Entry::new(commands.pop().expect("one command"))
    } else {
        Entry::new(ControlCommand::Batch(commands))
    };
    let started = tokio::time::Instant::now();
    let mut answer = write(&target.raft, &entry, timeout).await;
    if let Err(ControlError::NotLeader { leader, addr }) = &answer
        && forward
        && let Some(forwarder) = target.forwarder.get()
    {
        let left = timeout.saturating_sub(started.elapsed());
        let forwarded = forwarder.forward(*leader, addr, &entry.command);
        answer = match tokio::time::timeout(left, forwarded).await {
            Ok(answer) => answer,
            Err(_) => Err(not_committed(timeout)),
        };
    }
    drop(permit);
    match answer {
        Ok((index, response)) if replies.len() == 1 => {
            let reply = replies.pop().expect("one proposal");
            let _ = reply.send(Ok((index, response)));
        }
        Ok((index, ControlResponse::Batch(responses))) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok((index, response)));
            }
        }
        Ok((index, other)) => {
            let reason = format!("batch entry {index} answered {other:?}");
            for reply in replies {
                let _ = reply.send(Err(ControlError::Fatal {
                    reason: reason.clone(),
                }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(share(&e)));
            }
        }
    }
}

/// Proposes one entry on this node.
async fn write(raft: &Raft, entry: &Entry, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, raft.client_write(entry.clone())).await {
        Err(_) => Err(not_committed(timeout)),
        Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
        Ok(Err(RaftError::Fatal(f))) => Err(f.into()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            match (f.leader_id, f.leader_node) {
                (Some(leader), Some(node)) => Err(ControlError::NotLeader {
                    leader,
                    addr: node.addr,
                }),
                _ => Err(ControlError::unavailable("no control-plane leader")),
            }
        }
        Ok(Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_)))) => {
            Err(ControlError::fatal(e))
        }
    }
}

/// The same error for every write of a batch: retryable ones keep their kind (callers retry
/// or forward on it), the others become `Fatal` with the same message.
fn share(e: &ControlError) -> ControlError {
    match e {
        ControlError::Unavailable { reason } => ControlError::Unavailable {
            reason: reason.clone(),
        },
        ControlError::NotLeader { leader, addr } => ControlError::NotLeader {
            leader: *leader,
            addr: addr.clone(),
        },
        ControlError::Stopped => ControlError::Stopped,
        other => ControlError::Fatal {
            reason: other.to_string(),
        },
    }
}
