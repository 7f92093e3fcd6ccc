//! The device state machine, pure: `on_samples(&mut state, …) -> Vec<Effect>` and
//! `on_tick(&mut state, now, …) -> Vec<Effect>`.
//!
//! It turns accepted samples into points to persist and alarm transitions to commit, and
//! keeps what evaluation needs between messages: one [`RuleState`] per rule that selects the
//! device. It never awaits, never does I/O and never reads a clock: the actor
//! (`device::actor`) passes the receive time in, executes the effects in order, and schedules
//! one timer for [`DeviceState::next_deadline`] so time-driven conditions (no-data, `for`)
//! fire without new data.
//!
//! Time: rules are evaluated in event time (the sample's `ts`). A sample older than the
//! newest one already evaluated for this device is a *late* point: it is stored (history is
//! complete) and updates rule history (rate windows, no-data receipt), but does not re-open
//! evaluation, so a late point can neither raise nor clear. Before evaluating a message, the
//! deadlines that passed by its receive time are run, so a silence longer than a no-data
//! timeout raises (then the message clears) even if the timer had not fired yet.

use std::collections::{BTreeMap, HashMap};

use crate::model::{AlarmRaise, DeviceKey, DeviceMeta, Point, Rule, Sample, TimestampMs, Value};
use crate::rules::pending::PendingTimers;
use crate::rules::{RuleState, Transition};

/// Live state of one device.
#[derive(Clone, Debug)]
pub struct DeviceState {
    pub key: DeviceKey,
    /// Type and labels for selectors. Always `None` today: there is no device registry yet,
    /// so selectors naming a type or labels match no device.
    pub meta: Option<DeviceMeta>,
    /// Event time of the newest sample evaluated; older samples are late.
    pub evaluated_until: Option<TimestampMs>,
    /// Alarm state machine per rule id (active flags rehydrated from the control plane).
    pub rules: HashMap<String, RuleState>,
    /// Pending-timer records as last written to the control plane, per rule id; a record is
    /// written again only when the shape of the pending state changes (`device/timers.rs`).
    pub committed_timers: HashMap<String, PendingTimers>,
    /// The newest evaluated value of each metric and its event time (sample-and-hold), for
    /// re-evaluating open alarms when a rule changes.
    pub last_values: BTreeMap<String, (TimestampMs, Value)>,
}

/// What the actor must do, in this order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Store these points durably before anything else (the ack depends on it).
    Persist(Vec<Point>),
    /// Commit an alarm raise for (device, rule).
    Raise(AlarmRaise),
    /// Commit the clearing of (device, rule)'s active alarm, with a reason replacing the
    /// alarm's message when there is one (a rule update).
    Clear {
        rule_id: String,
        at_ms: TimestampMs,
        reason: Option<String>,
    },
    /// Commit the pending-timer record of (device, rule): `None` removes it.
    Timers {
        rule_id: String,
        timers: Option<PendingTimers>,
    },
}

impl DeviceState {
    /// A device with no evaluated history and no active alarm.
    pub fn new(key: DeviceKey) -> Self {
        Self {
            key,
            meta: None,
            evaluated_until: None,
            rules: HashMap::new(),
            committed_timers: HashMap::new(),
            last_values: BTreeMap::new(),
        }
    }

    /// Records that the control plane holds an active alarm of (device, `rule`).
    pub fn set_active(&mut self, rule: &Rule) {
        self.rules
            .entry(rule.doc.id.clone())
            .or_insert_with(|| RuleState::new(rule, true))
            .set_active(true);
    }

    /// Treats points before `ts` as late (stored, not evaluated): a new owner's actor starts
    /// from the event time of the last committed alarm transition.
    pub fn evaluated_at_least_until(&mut self, ts: TimestampMs) {
        self.evaluated_until = self.evaluated_until.max(Some(ts));
    }

    /// Whether this state believes the alarm of (device, `rule_id`) is active.
    pub fn is_active(&self, rule_id: &str) -> bool {
        self.rules.get(rule_id).is_some_and(RuleState::is_active)
    }

    /// Handles accepted samples received at `received_at_ms`: persist them all, run the
    /// deadlines that passed by then, then evaluate the rules that select this device on each
    /// sample in event-time order (late samples update history only).
    pub fn on_samples(
        &mut self,
        samples: &[Sample],
        received_at_ms: TimestampMs,
        rules: &[Rule],
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut timed: Vec<(TimestampMs, &Sample)> = samples
            .iter()
            .map(|s| (s.ts_ms.unwrap_or(received_at_ms), s))
            .collect();
        let points: Vec<Point> = timed
            .iter()
            .flat_map(|(ts, s)| {
                s.values.iter().map(|(metric, value)| Point {
                    device: self.key.clone(),
                    metric: metric.clone(),
                    ts_ms: *ts,
                    value: value.clone(),
                })
            })
            .collect();
        if points.is_empty() {
            return effects;
        }
        effects.push(Effect::Persist(points));
        self.forget_unselected(rules);
        effects.extend(self.tick(received_at_ms, rules));

        timed.sort_by_key(|(ts, _)| *ts); // stable: equal timestamps keep arrival order
        for (ts, sample) in timed {
            let late = self.evaluated_until.is_some_and(|until| ts < until);
            if !late {
                self.evaluated_until = Some(ts);
                for (metric, value) in &sample.values {
                    self.last_values.insert(metric.clone(), (ts, value.clone()));
                }
            }
            for rule in rules
                .iter()
                .filter(|r| r.selects_with(&self.key, self.meta.as_ref()))
            {
                let state = self
                    .rules
                    .entry(rule.doc.id.clone())
                    .or_insert_with(|| RuleState::new(rule, false));
                if late {
                    state.on_late_point(rule, ts, &sample.values, received_at_ms);
                } else if let Some(t) = state.on_point(rule, ts, &sample.values, received_at_ms) {
                    effects.push(effect(rule, t));
                }
            }
        }
        effects.extend(self.timer_changes());
        effects
    }

    /// The receive clock reads `now`: time-driven conditions whose deadline passed fire.
    pub fn on_tick(&mut self, now: TimestampMs, rules: &[Rule]) -> Vec<Effect> {
        self.forget_unselected(rules);
        let mut effects = self.tick(now, rules);
        effects.extend(self.timer_changes());
        effects
    }

    /// The earliest absolute receive time at which [`DeviceState::on_tick`] may do something.
    pub fn next_deadline(&self) -> Option<TimestampMs> {
        self.rules
            .values()
            .filter_map(RuleState::next_deadline)
            .min()
    }

    fn tick(&mut self, now: TimestampMs, rules: &[Rule]) -> Vec<Effect> {
        let mut effects = Vec::new();
        for rule in rules {
            if let Some(state) = self.rules.get_mut(&rule.doc.id)
                && let Some(t) = state.on_tick(rule, now)
            {
                effects.push(effect(rule, t));
            }
        }
        effects
    }

    /// Drops the state of rules that were deleted (deletion cleared their alarms) or no
    /// longer select this device.
    pub(super) fn forget_unselected(&mut self, rules: &[Rule]) {
        let key = &self.key;
        let meta = self.meta.as_ref();
        self.rules.retain(|id, _| {
            rules
                .iter()
                .any(|r| r.doc.id == *id && r.selects_with(key, meta))
        });
    }
}

pub(super) fn effect(rule: &Rule, t: Transition) -> Effect {
    match t {
        Transition::Raise {
            trigger,
            at_ms,
            message,
            ..
        } => Effect::Raise(AlarmRaise {
            rule_id: rule.doc.id.clone(),
            rule_version: rule.version,
            severity: rule.doc.severity.clone(),
            metric: trigger.metric,
            value: trigger.value,
            at_ms,
            message,
        }),
        Transition::Clear { at_ms, .. } => Effect::Clear {
            rule_id: rule.doc.id.clone(),
            at_ms,
            reason: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CmpOp, Condition, RuleDoc, Selector, Threshold, Value};

    fn hot_rule(devices: &[&str]) -> Rule {
        Rule {
            doc: RuleDoc {
                id: "hot".into(),
                tenant: None,
                selector: Selector {
                    devices: devices.iter().map(|d| d.to_string()).collect(),
                    ..Default::default()
                },
                condition: Condition::Threshold(Threshold {
                    metric: "temp".into(),
                    op: CmpOp::Gt,
                    value: 30.0,
                    hold: None,
                    clear: None,
                }),
                severity: "major".into(),
                notify: Vec::new(),
            },
            version: 3,
            updated_at_ms: 0,
        }
    }

    fn sample(ts: Option<i64>, temp: f64) -> Sample {
        Sample {
            ts_ms: ts,
            seq: None,
            values: vec![("temp".into(), Value::Number(temp))],
        }
    }

    /// Summarizes effects as short strings: P<n> persist n points, R@ts raise, C@ts clear.
    fn summary(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Persist(p) => format!("P{}", p.len()),
                Effect::Raise(r) => format!("R@{}", r.at_ms),
                Effect::Clear { at_ms, .. } => format!("C@{at_ms}"),
                Effect::Timers {
                    timers: Some(_), ..
                } => "T+".into(),
                Effect::Timers { timers: None, .. } => "T-".into(),
            })
            .collect()
    }

    #[test]
    fn event_table() {
        // Each case: a sequence of messages (samples) fed to one fresh state, and the
        // effects expected for each message.
        type Msg = Vec<Sample>;
        type Case = (&'static str, Vec<Msg>, Vec<Vec<&'static str>>);
        let cases: Vec<Case> = vec![
            (
                "cool stays quiet",
                vec![vec![sample(Some(1), 20.0)]],
                vec![vec!["P1"]],
            ),
            (
                "hot raises once",
                vec![vec![sample(Some(1), 31.0)], vec![sample(Some(2), 35.0)]],
                vec![vec!["P1", "R@1"], vec!["P1"]],
            ),
            (
                "raise then clear",
                vec![vec![sample(Some(1), 31.0)], vec![sample(Some(2), 30.0)]],
                vec![vec!["P1", "R@1"], vec!["P1", "C@2"]],
            ),
            (
                "batch evaluated in event-time order",
                vec![vec![sample(Some(5), 20.0), sample(Some(3), 40.0)]],
                vec![vec!["P2", "R@3", "C@5"]],
            ),
            (
                "late point stored but not evaluated",
                vec![vec![sample(Some(10), 20.0)], vec![sample(Some(5), 99.0)]],
                vec![vec!["P1"], vec!["P1"]],
            ),
            (
                "equal timestamp is not late",
                vec![vec![sample(Some(10), 20.0)], vec![sample(Some(10), 99.0)]],
                vec![vec!["P1"], vec!["P1", "R@10"]],
            ),
            (
                "missing ts takes receive time",
                vec![vec![sample(None, 50.0)]],
                vec![vec!["P1", "R@1000"]],
            ),
        ];
        let rules = vec![hot_rule(&[])];
        for (name, msgs, want) in cases {
            let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
            for (i, (msg, want)) in msgs.iter().zip(want).enumerate() {
                let got = summary(&st.on_samples(msg, 1000, &rules));
                assert_eq!(got, want, "{name}: message {i}");
            }
        }
    }

    #[test]
    fn selector_limits_rules_to_listed_devices() {
        let rules = vec![hot_rule(&["other"])];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1"]
        );
        let mut other = DeviceState::new(DeviceKey::default_tenant("other"));
        assert_eq!(
            summary(&other.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1", "R@1"]
        );
    }

    #[test]
    fn rehydrated_active_alarm_is_not_raised_again() {
        let rules = vec![hot_rule(&[])];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.set_active(&rules[0]);
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1"]
        );
    }

    #[test]
    fn deleted_rule_state_is_dropped() {
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.set_active(&hot_rule(&[]));
        st.on_samples(&[sample(Some(1), 1.0)], 0, &[]);
        assert!(st.rules.is_empty());
    }

    #[test]
    fn raise_records_rule_version_and_value() {
        let rules = vec![hot_rule(&[])];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        let eff = st.on_samples(&[sample(Some(7), 42.0)], 0, &rules);
        assert!(matches!(
            &eff[1],
            Effect::Raise(AlarmRaise { rule_version: 3, value: Value::Number(v), metric, .. })
                if *v == 42.0 && metric == "temp"
        ));
    }

    #[test]
    fn empty_samples_do_nothing() {
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        assert!(st.on_samples(&[], 0, &[]).is_empty());
    }

    fn offline_rule(id: &str, seconds: u64) -> Rule {
        let mut r = hot_rule(&[]);
        r.doc.id = id.into();
        r.doc.condition = Condition::NoData(crate::model::NoData {
            metric: None,
            seconds: Some(seconds),
            after: None,
        });
        r
    }

    #[test]
    fn no_data_fires_on_tick_with_injected_time() {
        let rules = vec![offline_rule("offline", 60)];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        assert_eq!(st.next_deadline(), None);
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(5), 1.0)], 1_000, &rules)),
            ["P1", "T+"],
            "the watch is armed: its record is written once"
        );
        assert_eq!(st.next_deadline(), Some(61_000));
        assert!(st.on_tick(60_999, &rules).is_empty());
        let fired = st.on_tick(61_000, &rules);
        assert!(matches!(
            &fired[..],
            [
                Effect::Raise(AlarmRaise { rule_id, at_ms: 61_000, .. }),
                Effect::Timers { timers: None, .. },
            ] if rule_id == "offline"
        ));
        assert_eq!(st.next_deadline(), None);
        assert!(st.on_tick(1_000_000, &rules).is_empty());
        // Data again: cleared at the sample's event time.
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(70_000), 1.0)], 70_000, &rules)),
            ["P1", "C@70000", "T+"]
        );
    }

    #[test]
    fn a_message_after_a_missed_deadline_raises_then_clears() {
        // The timer did not fire (or the actor was busy): the message's receive time runs it.
        let rules = vec![offline_rule("offline", 60)];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.on_samples(&[sample(Some(0), 1.0)], 0, &rules);
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(90_000), 1.0)], 90_000, &rules)),
            ["P1", "R@60000", "C@90000"]
        );
    }

    #[test]
    fn next_deadline_is_the_earliest_of_all_rules() {
        let rules = vec![
            offline_rule("slow", 600),
            offline_rule("fast", 60),
            hot_rule(&[]),
        ];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.on_samples(&[sample(Some(0), 1.0)], 500, &rules);
        assert_eq!(st.next_deadline(), Some(60_500));
    }

    #[test]
    fn late_samples_are_stored_and_count_as_data_but_do_not_evaluate() {
        let rules = vec![hot_rule(&[]), offline_rule("offline", 60)];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.on_samples(&[sample(Some(100), 1.0)], 100, &rules);
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(50), 99.0)], 30_000, &rules)),
            ["P1"]
        );
        assert_eq!(
            st.next_deadline(),
            Some(90_000),
            "receipt of the late sample counts"
        );
    }

    #[test]
    fn a_new_owner_does_not_raise_a_finished_episode_again() {
        // An earlier owner raised at 909 and cleared at 919; a redelivered hot point at 914
        // reaches a fresh actor seeded with that last transition time.
        let rules = vec![hot_rule(&[])];
        let mut fresh = DeviceState::new(DeviceKey::default_tenant("d1"));
        fresh.evaluated_at_least_until(919);
        assert_eq!(
            summary(&fresh.on_samples(&[sample(Some(914), 99.0)], 2_000, &rules)),
            ["P1"],
            "stored, not evaluated"
        );
        assert!(!fresh.is_active("hot"));
        // A new hot point after the last transition raises as usual.
        let effects = summary(&fresh.on_samples(&[sample(Some(930), 99.0)], 2_010, &rules));
        assert!(effects.iter().any(|e| e.starts_with("R")), "{effects:?}");
        // Without the seed, the same late point would have raised a second alarm.
        let mut unseeded = DeviceState::new(DeviceKey::default_tenant("d1"));
        let effects = summary(&unseeded.on_samples(&[sample(Some(914), 99.0)], 2_000, &rules));
        assert!(effects.iter().any(|e| e.starts_with("R")), "{effects:?}");
    }

    #[test]
    fn type_and_label_selectors_need_device_metadata() {
        let mut by_type = hot_rule(&[]);
        by_type.doc.selector.device_type = Some("boiler".into());
        let rules = vec![by_type];
        // Today: no registry, no metadata, no match.
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1"]
        );
        // With metadata (what the registry will supply), it matches.
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.meta = Some(DeviceMeta {
            device_type: Some("boiler".into()),
            labels: Default::default(),
        });
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1", "R@1"]
        );
    }
}
