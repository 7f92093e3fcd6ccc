//! The device actor: executes the effects of the pure state machine (`device::state`).
//!
//! Order per message: persist the points (durable) → commit alarm transitions through Raft
//! (tagged with the shard and its epoch) → reply. So when the caller (ingest) acknowledges,
//! the points are stored and the alarms they caused are committed.
//!
//! Passivation: a periodic check stops the actor after `idle_timeout` without messages; it
//! first removes itself from the router so new messages spawn a fresh actor.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::state::{DeviceState, Effect, RuleAlarm};
use super::{DeviceError, DeviceSettings, IngestReport, Inner};
use crate::metrics_names;
use crate::model::{DeviceKey, Sample, TimestampMs};
use crate::raft::ControlPlane;
use crate::raft::command::{ControlCommand, ControlResponse};
use crate::shard;
use crate::storage::TelemetryStore;

/// Messages a device actor handles.
pub enum DeviceMsg {
    /// Store and evaluate samples; reply when durable and committed.
    Ingest {
        samples: Vec<Sample>,
        received_at_ms: TimestampMs,
        reply: RpcReplyPort<Result<IngestReport, DeviceError>>,
    },
    /// Periodic idle check (passivation).
    IdleCheck,
}

/// Everything an actor needs, handed over at spawn.
pub struct DeviceArgs {
    pub key: DeviceKey,
    pub store: Arc<dyn TelemetryStore>,
    pub control: ControlPlane,
    pub settings: DeviceSettings,
    /// Weak: the router owns actors, not the other way round.
    pub(super) router: Weak<Inner>,
}

pub struct DeviceActor;

pub struct ActorState {
    core: DeviceState,
    args: DeviceArgs,
    shard: shard::ShardId,
    last_activity: Instant,
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
        // Rehydrate: which of this device's alarms are active, from the control plane.
        let mut core = DeviceState::new(args.key.clone());
        for rule in args.control.rules() {
            if rule.selects(&args.key)
                && args
                    .control
                    .active_alarm(&args.key, &rule.doc.id)?
                    .is_some()
            {
                core.alarms
                    .insert(rule.doc.id.clone(), RuleAlarm { active: true });
            }
        }
        let check = (args.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        myself.send_interval(check, || DeviceMsg::IdleCheck);
        Ok(ActorState {
            core,
            args,
            shard,
            last_activity: Instant::now(),
        })
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
            } => {
                state.last_activity = Instant::now();
                let result = state.ingest(&samples, received_at_ms).await;
                // The caller may have given up (shutdown); nothing to do then.
                let _ = reply.send(result);
            }
            DeviceMsg::IdleCheck => {
                if state.last_activity.elapsed() >= state.args.settings.idle_timeout {
                    if let Some(router) = state.args.router.upgrade() {
                        router.forget(&state.args.key, &myself);
                    }
                    metrics::counter!(metrics_names::DEVICE_PASSIVATIONS).increment(1);
                    myself.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

impl ActorState {
    async fn ingest(
        &mut self,
        samples: &[Sample],
        received_at_ms: TimestampMs,
    ) -> Result<IngestReport, DeviceError> {
        let rules = self.args.control.rules();
        // Evaluate on a copy: if persisting fails, the live state must not move ahead.
        let mut next = self.core.clone();
        let effects = next.on_samples(samples, received_at_ms, &rules);
        let mut report = IngestReport::default();
        for effect in effects {
            match effect {
                Effect::Persist(points) => {
                    let n = points.len();
                    self.args.store.write(points).await?;
                    metrics::counter!(metrics_names::POINTS_STORED).increment(n as u64);
                    report.points_stored += n;
                }
                Effect::Raise {
                    rule_id,
                    rule_version,
                    severity,
                    metric,
                    value,
                    at_ms,
                    message,
                } => {
                    let cmd = ControlCommand::RaiseAlarm {
                        shard: self.shard,
                        epoch: self.epoch(),
                        device: self.args.key.clone(),
                        rule_id: rule_id.clone(),
                        rule_version,
                        severity,
                        metric,
                        value,
                        at_ms,
                        message,
                    };
                    if !self.commit(cmd).await {
                        // Not committed: forget the optimistic raise so the next point retries.
                        next.alarms.insert(rule_id, RuleAlarm { active: false });
                    }
                }
                Effect::Clear { rule_id, at_ms } => {
                    let cmd = ControlCommand::ClearAlarm {
                        shard: self.shard,
                        epoch: self.epoch(),
                        device: self.args.key.clone(),
                        rule_id: rule_id.clone(),
                        at_ms,
                    };
                    if !self.commit(cmd).await {
                        next.alarms.insert(rule_id, RuleAlarm { active: true });
                    }
                }
            }
        }
        self.core = next;
        Ok(report)
    }

    fn epoch(&self) -> u64 {
        self.args
            .control
            .shard_owner(self.shard)
            .map(|(_, epoch)| epoch)
            .unwrap_or(0)
    }

    /// Commits an alarm transition; false when it was not committed. A refusal (stale epoch)
    /// or a Raft failure is logged and counted; the points are stored either way.
    async fn commit(&self, cmd: ControlCommand) -> bool {
        match self.args.control.write(cmd).await {
            Ok(ControlResponse::Alarm(events)) => {
                for ev in events {
                    let label = match ev.transition {
                        crate::model::Transition::Raised => "raised",
                        crate::model::Transition::Cleared => "cleared",
                        crate::model::Transition::Acknowledged => "acknowledged",
                    };
                    metrics::counter!(metrics_names::ALARM_TRANSITIONS, "transition" => label)
                        .increment(1);
                }
                true
            }
            Ok(ControlResponse::Rejected(r)) => {
                tracing::warn!(device = %self.args.key, reason = %r, "alarm transition refused");
                metrics::counter!(metrics_names::ALARM_REJECTED, "reason" => "rejected")
                    .increment(1);
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::error!(device = %self.args.key, error = %e, "alarm transition not committed");
                metrics::counter!(metrics_names::ALARM_REJECTED, "reason" => "raft_error")
                    .increment(1);
                false
            }
        }
    }
}
