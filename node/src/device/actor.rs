//! The device actor: executes the effects of the pure state machine (`device::state`).
//!
//! Per message, in the actor (sequential, no I/O): evaluate the samples against the rules,
//! which advances the device state and yields effects. Then, in a task of its own per
//! message, pipelined:
//!
//! 1. persist the points (durable) — concurrently with earlier messages' writes, so the
//!    store's group commit batches them and a busy device is not capped at one fsync per
//!    message;
//! 2. wait until the previous message of this device has finished (a chain of oneshots), so
//!    alarm transitions are committed and replies sent in message order; the stored points
//!    are reported to the device's live subscribers (`device::live`) then;
//! 3. commit alarm transitions through Raft, tagged with the shard and its epoch;
//! 4. reply.
//!
//! So when the caller (ingest) acknowledges, the points are stored and the alarms they caused
//! are committed. Failure is crash-only: if a write or a commit fails, the actor is poisoned
//! (removed from the router and stopped), every later message already in its pipeline fails
//! as retryable, and the retried messages reach a fresh actor that rehydrates from the
//! control plane. No partial repair of in-memory state is attempted.
//!
//! Time-driven conditions (no-data, `for` durations): after each message the actor keeps one
//! `send_after` timer for the state's earliest deadline (an absolute receive time); the
//! `Tick` it sends runs `DeviceState::on_tick` with the wall clock, and the resulting alarm
//! transitions go through the same ordered pipeline, without a reply. Pending timers are
//! control records too (`SetPendingTimers`, written when a `for` run or a no-data watch starts
//! or ends, tagged (shard, epoch)); a new actor resumes them in `pre_start`, and
//! `device::wake` starts actors for devices with records when this node gains their shard.
//!
//! Passivation: a periodic check stops the actor after `idle_timeout` without messages,
//! unless a deadline is pending (an actor watching for no-data must stay to see it pass); it
//! first removes itself from the router so new messages spawn a fresh actor.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::state::{DeviceState, Effect};
use super::{DeviceError, DeviceSettings, IngestReport, Inner};
use crate::metrics_names;
use crate::model::{DeviceKey, Point, Sample, TimestampMs, Transition};
use crate::raft::ControlPlane;
use crate::raft::command::{ControlCommand, ControlResponse};
use crate::shard;
use crate::storage::{Fence, TelemetryStore};

/// Messages a device actor handles.
pub enum DeviceMsg {
    /// Store and evaluate samples; reply when durable and committed.
    Ingest {
        samples: Arc<[Sample]>,
        received_at_ms: TimestampMs,
        reply: RpcReplyPort<Result<IngestReport, DeviceError>>,
        /// The caller's span, so the point's trace continues through the actor (explicit,
        /// instead of ractor's per-message span propagation feature).
        span: tracing::Span,
    },
    /// Periodic idle check (passivation).
    IdleCheck,
    /// The earliest rule deadline may have passed: run time-driven conditions.
    Tick,
    /// A rule changed version: re-evaluate open alarms on the last values. Also sent only to
    /// wake the actor (it resumes recorded timers when it starts).
    RulesChanged,
}

/// Everything an actor needs, handed over at spawn.
pub struct DeviceArgs {
    pub key: DeviceKey,
    pub store: Arc<dyn TelemetryStore>,
    pub control: ControlPlane,
    pub settings: DeviceSettings,
    /// The shard epoch this actor serves under; its control records carry it.
    pub epoch: u64,
    /// Weak: the router owns actors, not the other way round.
    pub(super) router: Weak<Inner>,
    /// Where stored points are reported to live subscribers.
    pub(super) live: super::live::LiveHub,
}

pub struct DeviceActor;

/// The task that will send the next `Tick` (abort it to cancel).
type TickTimer = JoinHandle<Result<(), MessagingErr<DeviceMsg>>>;

pub struct ActorState {
    core: DeviceState,
    args: Arc<DeviceArgs>,
    shard: shard::ShardId,
    last_activity: Instant,
    /// Completion of the newest message in the pipeline: `true` if it succeeded. The next
    /// message waits on it before committing and replying.
    tail: Option<oneshot::Receiver<bool>>,
    /// The pending `Tick` timer and the deadline it was set for.
    timer: Option<(TimestampMs, TickTimer)>,
}

impl Actor for DeviceActor {
    type Msg = DeviceMsg;
    type State = ActorState;
    type Arguments = DeviceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DeviceArgs,
    ) -> Result<ActorState, ActorProcessingErr> {
        let shard = shard::shard_of(&args.key, args.settings.shards);
        // Rehydrate: active alarms and pending timers from the control plane (deadlines
        // resume as absolute times). Last values are read from the store only when a rule
        // update needs them (`RulesChanged`), not on every spawn.
        let mut core = DeviceState::new(args.key.clone());
        // Type and labels for rule selectors, from the registry as the actor starts (a
        // relabel reaches a running actor at its next start: passivation or shard move).
        core.meta = args.control.device_meta(&args.key);
        let rules = args.control.rules();
        let mut active = Vec::new();
        let mut last_transition = None;
        for rule in rules.iter() {
            if !rule.selects_with(&args.key, core.meta.as_ref()) {
                continue;
            }
            if args
                .control
                .active_alarm(&args.key, &rule.doc.id)?
                .is_some()
            {
                active.push(rule.doc.id.clone());
            }
            let at = args.control.last_transition_ms(&args.key, &rule.doc.id)?;
            last_transition = last_transition.max(at);
        }
        let records = args
            .control
            .pending_timers(&args.key, args.settings.shards)?;
        let resumed = core.resume(
            &rules,
            &active,
            records.into_iter().collect(),
            wall_clock_ms(),
        );
        // Points older than the last committed transition belong to episodes an earlier
        // owner already decided: stored, not evaluated (a redelivered point cannot raise a
        // finished episode again).
        if let Some(at) = last_transition {
            core.evaluated_at_least_until(at);
        }
        let check = (args.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        myself.send_interval(check, || DeviceMsg::IdleCheck);
        let mut state = ActorState {
            core,
            args: Arc::new(args),
            shard,
            last_activity: Instant::now(),
            tail: None,
            timer: None,
        };
        if !resumed.is_empty() {
            state.start_effects(resumed, None, myself.clone());
        }
        state.schedule(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut ActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DeviceMsg::Ingest {
                samples,
                received_at_ms,
                reply,
                span,
            } => {
                state.last_activity = Instant::now();
                let _entered = span.enter();
                state.start_ingest(&samples, received_at_ms, reply, myself.clone());
                state.schedule(&myself);
            }
            DeviceMsg::Tick => {
                state.timer = None;
                let rules = state.args.control.rules();
                let effects = state.core.on_tick(wall_clock_ms(), &rules);
                if !effects.is_empty() {
                    let span = tracing::info_span!("device.tick", device = %state.args.key);
                    let _entered = span.enter();
                    state.start_effects(effects, None, myself.clone());
                }
                state.schedule(&myself);
            }
            DeviceMsg::RulesChanged => {
                if state.core.last_values.is_empty() {
                    // A fresh actor: the last values this node stored (a new owner with the
                    // embedded store has none until the device sends again).
                    for p in state.args.store.latest(&state.args.key).await? {
                        state.core.last_values.insert(p.metric, (p.ts_ms, p.value));
                    }
                }
                let rules = state.args.control.rules();
                let effects = state.core.on_rules_changed(wall_clock_ms(), &rules);
                if !effects.is_empty() {
                    let span =
                        tracing::info_span!("device.rules_changed", device = %state.args.key);
                    let _entered = span.enter();
                    state.start_effects(effects, None, myself.clone());
                }
                state.schedule(&myself);
            }
            DeviceMsg::IdleCheck => {
                if state.last_activity.elapsed() >= state.args.settings.idle_timeout
                    && state.core.next_deadline().is_none()
                {
                    forget(&state.args, &myself);
                    metrics::counter!(metrics_names::DEVICE_PASSIVATIONS).increment(1);
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

fn forget(args: &DeviceArgs, actor: &ActorRef<DeviceMsg>) {
    if let Some(router) = args.router.upgrade() {
        router.forget(&args.key, actor);
    }
}

/// The receive clock: Unix milliseconds, as ingest stamps `received_at_ms`.
fn wall_clock_ms() -> TimestampMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ActorState {
    /// Evaluates now (in message order) and runs the effects in a pipelined task.
    fn start_ingest(
        &mut self,
        samples: &[Sample],
        received_at_ms: TimestampMs,
        reply: RpcReplyPort<Result<IngestReport, DeviceError>>,
        myself: ActorRef<DeviceMsg>,
    ) {
        let rules = self.args.control.rules();
        let effects = self.core.on_samples(samples, received_at_ms, &rules);
        self.start_effects(effects, Some(reply), myself);
    }

    /// Keeps one timer, for the state's earliest deadline.
    fn schedule(&mut self, myself: &ActorRef<DeviceMsg>) {
        let next = self.core.next_deadline();
        if self.timer.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            handle.abort();
        }
        if let Some(at) = next {
            let wait = Duration::from_millis(u64::try_from(at - wall_clock_ms()).unwrap_or(0));
            // If the actor stops first, the send fails and nothing happens.
            let handle = myself.send_after(wait, || DeviceMsg::Tick);
            self.timer = Some((at, handle));
        }
    }

    /// Runs effects in a pipelined task: persist, wait for the previous message, commit,
    /// reply (if someone waits for one).
    fn start_effects(
        &mut self,
        effects: Vec<Effect>,
        reply: Option<RpcReplyPort<Result<IngestReport, DeviceError>>>,
        myself: ActorRef<DeviceMsg>,
    ) {
        let epoch = self.args.epoch;
        let mut points: Vec<Point> = Vec::new();
        let mut commands = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(p) => points.extend(p),
                Effect::Raise(raise) => commands.push(ControlCommand::RaiseAlarm {
                    shard: self.shard,
                    epoch,
                    device: self.args.key.clone(),
                    raise,
                }),
                Effect::Clear {
                    rule_id,
                    at_ms,
                    reason,
                } => commands.push(ControlCommand::ClearAlarm {
                    shard: self.shard,
                    epoch,
                    device: self.args.key.clone(),
                    rule_id,
                    at_ms,
                    reason,
                }),
                Effect::Timers { rule_id, timers } => {
                    commands.push(ControlCommand::SetPendingTimers {
                        shard: self.shard,
                        epoch,
                        device: self.args.key.clone(),
                        rule_id,
                        timers,
                    })
                }
            }
        }
        let previous = self.tail.take();
        let (done_tx, done_rx) = oneshot::channel();
        self.tail = Some(done_rx);
        let args = self.args.clone();
        let span = tracing::info_span!(
            "device.execute",
            device = %self.args.key,
            points = points.len(),
            transitions = commands.len(),
        );
        let task = async move {
            let result = execute(&args, points, commands, previous).await;
            if result.is_err() {
                // Crash-only: the in-memory state assumed this message would succeed.
                forget(&args, &myself);
                myself.stop(Some("poisoned by a failed write or commit".into()));
            }
            let _ = done_tx.send(result.is_ok());
            // The caller may have given up (shutdown); nothing to do then.
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        tokio::spawn(task.instrument(span));
    }
}

/// Persists, waits for the previous message, commits alarm transitions in order.
async fn execute(
    args: &DeviceArgs,
    points: Vec<Point>,
    commands: Vec<ControlCommand>,
    previous: Option<oneshot::Receiver<bool>>,
) -> Result<IngestReport, DeviceError> {
    let n = points.len();
    // Copies for live subscribers, only when the device has some.
    let watchers = args.live.watchers(&args.key);
    let reported = watchers.as_ref().map(|_| points.clone());
    let stored = if points.is_empty() {
        Ok(())
    } else {
        // Fenced by (shard, epoch): a store that has seen a newer owner's epoch refuses the
        // write (rollups are maintained by the store in the same write).
        let fence = Fence {
            shard: shard::shard_of(&args.key, args.settings.shards),
            epoch: args.epoch,
        };
        args.store
            .write_fenced(Some(fence), points)
            .instrument(tracing::info_span!("store.write", points = n))
            .await
    };
    // A previous message that failed (or whose task died) poisoned the state this message
    // was evaluated on: fail too, so it is retried on a fresh actor.
    let previous_ok = match previous {
        Some(rx) => rx.await.unwrap_or(false),
        None => true,
    };
    stored?;
    metrics::counter!(metrics_names::POINTS_STORED).increment(n as u64);
    if !previous_ok {
        return Err(DeviceError::Unavailable(
            "an earlier message of this device failed; retry".into(),
        ));
    }
    // Durable, and after the previous message's points: subscribers see message order.
    super::live::report(watchers.as_ref(), reported.as_deref().unwrap_or_default());
    if !commands.is_empty()
        && let Some(delay) = crate::faults::alarm_commit_delay()
    {
        tokio::time::sleep(delay).await;
    }
    for cmd in commands {
        commit(args, cmd).await?;
    }
    Ok(IngestReport { points_stored: n })
}

/// Commits one alarm transition. `Unchanged` (already active / not active) is success: the
/// control plane holds the truth. A refusal or a Raft failure is an error.
async fn commit(args: &DeviceArgs, cmd: ControlCommand) -> Result<(), DeviceError> {
    let span = match &cmd {
        ControlCommand::RaiseAlarm { raise, .. } => tracing::info_span!(
            "alarm.raise",
            rule = %raise.rule_id,
            rule_version = raise.rule_version
        ),
        ControlCommand::ClearAlarm { rule_id, .. } => {
            tracing::info_span!("alarm.clear", rule = %rule_id)
        }
        _ => tracing::info_span!("control.write"),
    };
    match args.control.write(cmd).instrument(span).await {
        Ok(ControlResponse::Alarm(events)) => {
            for ev in events {
                let label = match ev.transition {
                    Transition::Raised => "raised",
                    Transition::Cleared => "cleared",
                    Transition::Acknowledged => "acknowledged",
                };
                metrics::counter!(metrics_names::ALARM_TRANSITIONS, "transition" => label)
                    .increment(1);
            }
            Ok(())
        }
        Ok(ControlResponse::Rejected(r)) => {
            tracing::warn!(device = %args.key, reason = %r, "alarm transition refused");
            metrics::counter!(metrics_names::ALARM_REJECTED, "reason" => "rejected").increment(1);
            Err(DeviceError::Alarm(r.to_string()))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(device = %args.key, error = %e, "alarm transition not committed");
            metrics::counter!(metrics_names::ALARM_REJECTED, "reason" => "raft_error").increment(1);
            Err(DeviceError::Alarm(e.to_string()))
        }
    }
}
