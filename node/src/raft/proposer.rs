//! Group commit for the control plane: concurrent writes proposed on this node share Raft
//! entries.
//!
//! openraft 0.9's core task takes client writes one message at a time and appends, flushes and
//! replicates after each, so 64 concurrent writes cost 64 rounds of that pipeline. The proposer
//! task takes writes from a queue and keeps at most [`IN_FLIGHT`] entries in flight; while it
//! is, new writes queue up, and the next entry carries up to [`MAX_BATCH`] of them as one
//! [`ControlCommand::Batch`]. A lone write goes alone as its own command, so an idle cluster
//! adds no delay and writes the same entries as before.
//!
//! Which commands may share an entry is decided by the pure [`BatchSlots`] (`command.rs`): a
//! command that may not join the batch being built starts the next one, so no write waits for
//! more than the entries in flight ahead of it.
//!
//! On a follower, the leader refuses the entry with `NotLeader`; the writes proposed by this
//! node's own callers are then forwarded to the leader together, in one peer call. On the
//! leader, such a forwarded batch joins the next entry as one piece (its commands spliced in
//! among the leader's own writes and other followers' batches, all in one entry or not at
//! all), so the leader's entries carry the writes of the whole cluster, not one node's each.
//! Writes that arrived forwarded from a peer are never forwarded again (one hop at most):
//! they get `NotLeader` and their sender retries.
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

/// Entries proposed and not yet answered, at most. One: while an entry is in flight, every
/// write that arrives waits for the next, which then carries all of them (up to
/// [`MAX_BATCH`]), so entries grow with the load and each costs its append, fsync,
/// replication and apply once. Measured on 3 nodes with 64 writers (BENCHMARKS.md, Raft
/// writes): 1 in flight gave the most writes/s, ahead of 2 and 4. openraft still pipelines
/// appends and replication of the entries it has; a lone write goes at once.
pub const IN_FLIGHT: usize = 1;

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

/// How a proposal's command sits in its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// As itself: one command of the entry, or the whole entry.
    One,
    /// A batch forwarded by a follower, its `n` commands spliced into the entry.
    Spliced(usize),
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
        let first = join(&mut slots, first);
        let mut batch = vec![first];
        if batch[0].1.is_some() {
            while slots.len() < MAX_BATCH {
                let Ok(next) = rx.try_recv() else { break };
                match join(&mut slots, next) {
                    (next, Some(shape)) => batch.push((next, Some(shape))),
                    (next, None) => {
                        carried = Some(next);
                        break;
                    }
                }
            }
        }
        let batch = batch
            .into_iter()
            .map(|(p, shape)| (p, shape.unwrap_or(Shape::One)))
            .collect();
        tokio::spawn(commit(target.clone(), batch, permit, timeout));
    }
}

/// Whether `p` may join the entry whose slots are `slots` (taking its slots if so), and in
/// which shape. Writes proposed here and batches forwarded by followers share entries: the
/// leader's entries then carry the writes of the whole cluster, not one node's each.
fn join(slots: &mut BatchSlots, p: Proposal) -> (Proposal, Option<Shape>) {
    let shape = match &p.cmd {
        ControlCommand::Batch(cmds) => (slots.len() + cmds.len() <= MAX_BATCH
            && slots.take_all(cmds))
        .then_some(Shape::Spliced(cmds.len())),
        cmd => slots.take(cmd).then_some(Shape::One),
    };
    (p, shape)
}

/// The command of an entry for these parts: a lone part as itself, else one batch of every
/// part's commands in order.
fn entry_command(mut parts: Vec<(ControlCommand, Shape)>) -> ControlCommand {
    if let [(_, Shape::One)] = parts.as_slice() {
        return parts.pop().expect("one part").0;
    }
    let mut commands = Vec::new();
    for (cmd, shape) in parts {
        match (cmd, shape) {
            (ControlCommand::Batch(cmds), Shape::Spliced(_)) => commands.extend(cmds),
            (cmd, _) => commands.push(cmd),
        }
    }
    ControlCommand::Batch(commands)
}

/// The inverse of [`entry_command`]: each part's command back, in order.
fn split_command(command: ControlCommand, shapes: &[Shape]) -> Vec<ControlCommand> {
    match (command, shapes) {
        (cmd, [Shape::One]) => vec![cmd],
        (ControlCommand::Batch(cmds), _) => {
            let mut cmds = cmds.into_iter();
            shapes
                .iter()
                .map(|shape| match shape {
                    Shape::One => cmds.next().expect("one command per part"),
                    Shape::Spliced(n) => ControlCommand::Batch(cmds.by_ref().take(*n).collect()),
                })
                .collect()
        }
        (cmd, _) => vec![cmd],
    }
}

/// Answers each part of an entry from the entry's answer.
fn answer(parts: Vec<(oneshot::Sender<Answer>, Shape)>, result: Answer) {
    let commands: usize = parts
        .iter()
        .map(|(_, shape)| match shape {
            Shape::One => 1,
            Shape::Spliced(n) => *n,
        })
        .sum();
    match result {
        Ok((index, response)) if matches!(parts.as_slice(), [(_, Shape::One)]) => {
            let (reply, _) = parts.into_iter().next().expect("one part");
            let _ = reply.send(Ok((index, response)));
        }
        Ok((index, ControlResponse::Batch(responses))) if responses.len() == commands => {
            let mut responses = responses.into_iter();
            for (reply, shape) in parts {
                let response = match shape {
                    Shape::One => responses.next().expect("one answer per command"),
                    Shape::Spliced(n) => {
                        ControlResponse::Batch(responses.by_ref().take(n).collect())
                    }
                };
                let _ = reply.send(Ok((index, response)));
            }
        }
        Ok((index, other)) => {
            let reason = format!("batch entry {index} answered {other:?}");
            for (reply, _) in parts {
                let _ = reply.send(Err(ControlError::Fatal {
                    reason: reason.clone(),
                }));
            }
        }
        Err(e) => {
            for (reply, _) in parts {
                let _ = reply.send(Err(share(&e)));
            }
        }
    }
}

/// Proposes one entry for `batch` and answers each of its writes. On a follower, the writes
/// proposed by this node's callers go on to the leader in one call; writes forwarded here by
/// a peer are answered `NotLeader` (one hop at most).
async fn commit(
    target: Target,
    batch: Vec<(Proposal, Shape)>,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
) {
    let shapes: Vec<Shape> = batch.iter().map(|(_, shape)| *shape).collect();
    let mut pending = Vec::with_capacity(batch.len());
    let mut parts = Vec::with_capacity(batch.len());
    for (p, shape) in batch {
        pending.push((p.reply, shape, p.forward));
        parts.push((p.cmd, shape));
    }
    let entry = Entry::new(entry_command(parts));
    let started = tokio::time::Instant::now();
    let answered = write(&target.raft, &entry, timeout).await;
    let (Err(ControlError::NotLeader { leader, addr }), Some(forwarder)) =
        (&answered, target.forwarder.get())
    else {
        drop(permit);
        let parts = pending.into_iter().map(|(r, s, _)| (r, s)).collect();
        return answer(parts, answered);
    };
    // Not the leader: forward this node's own writes, refuse the forwarded ones.
    let mut own = (Vec::new(), Vec::new());
    let mut refused = Vec::new();
    for ((reply, shape, forward), cmd) in pending
        .into_iter()
        .zip(split_command(entry.command, &shapes))
    {
        if forward {
            own.0.push((reply, shape));
            own.1.push((cmd, shape));
        } else {
            refused.push((reply, shape));
        }
    }
    answer(
        refused,
        Err(share(answered.as_ref().expect_err("not leader"))),
    );
    if own.0.is_empty() {
        drop(permit);
        return;
    }
    let left = timeout.saturating_sub(started.elapsed());
    let command = entry_command(own.1);
    let forwarded = forwarder.forward(*leader, addr, &command);
    let answered = match tokio::time::timeout(left, forwarded).await {
        Ok(answered) => answered,
        Err(_) => Err(not_committed(timeout)),
    };
    drop(permit);
    answer(own.0, answered);
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

#[cfg(test)]
#[path = "proposer_tests.rs"]
mod tests;
