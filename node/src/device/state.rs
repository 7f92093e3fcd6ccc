//! The device state machine, pure: `on_samples(&mut state, …) -> Vec<Effect>`.
//!
//! It turns accepted samples into points to persist and alarm transitions to commit, and
//! keeps what evaluation needs between messages. It never awaits, never does I/O and never
//! reads a clock: the actor (`device::actor`) executes the effects in order.
//!
//! Time: rules are evaluated in event time (the sample's `ts`). A sample older than the
//! newest one already evaluated for this device is a *late* point: it is stored (history is
//! complete) but does not re-open evaluation, so a late point can neither raise nor clear.

use std::collections::HashMap;

use crate::model::{AlarmRaise, DeviceKey, Point, Rule, Sample, TimestampMs};
use crate::rules::{self, Decision};

/// What the actor knows about one rule's alarm for this device.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleAlarm {
    /// Whether the control plane holds an active alarm of (device, rule).
    pub active: bool,
}

/// Live state of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceState {
    pub key: DeviceKey,
    /// Event time of the newest sample evaluated; older samples are late.
    pub evaluated_until: Option<TimestampMs>,
    /// Alarm state per rule id, as committed (rehydrated from the control plane on activation).
    pub alarms: HashMap<String, RuleAlarm>,
}

/// What the actor must do, in this order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Store these points durably before anything else (the ack depends on it).
    Persist(Vec<Point>),
    /// Commit an alarm raise for (device, rule).
    Raise(AlarmRaise),
    /// Commit the clearing of (device, rule)'s active alarm.
    Clear { rule_id: String, at_ms: TimestampMs },
}

impl DeviceState {
    /// A device with no evaluated history and no active alarm.
    pub fn new(key: DeviceKey) -> Self {
        Self {
            key,
            evaluated_until: None,
            alarms: HashMap::new(),
        }
    }

    /// Handles accepted samples: persist them all, then evaluate the rules that select this
    /// device on each non-late sample in event-time order.
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

        // Rules that no longer exist have no alarm left to track (deletion cleared it).
        self.alarms
            .retain(|id, _| rules.iter().any(|r| r.doc.id == *id));

        timed.sort_by_key(|(ts, _)| *ts); // stable: equal timestamps keep arrival order
        for (ts, sample) in timed {
            if self.evaluated_until.is_some_and(|until| ts < until) {
                continue; // late point: stored, not evaluated
            }
            self.evaluated_until = Some(ts);
            for rule in rules.iter().filter(|r| r.selects(&self.key)) {
                let entry = self
                    .alarms
                    .entry(rule.doc.id.clone())
                    .or_insert(RuleAlarm { active: false });
                match rules::evaluate(rule, entry.active, &sample.values) {
                    Decision::Keep => {}
                    Decision::Raise {
                        metric,
                        value,
                        message,
                    } => {
                        entry.active = true;
                        effects.push(Effect::Raise(AlarmRaise {
                            rule_id: rule.doc.id.clone(),
                            rule_version: rule.version,
                            severity: rule.doc.severity.clone(),
                            metric,
                            value,
                            at_ms: ts,
                            message,
                        }));
                    }
                    Decision::Clear => {
                        entry.active = false;
                        effects.push(Effect::Clear {
                            rule_id: rule.doc.id.clone(),
                            at_ms: ts,
                        });
                    }
                }
            }
        }
        effects
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
                },
                condition: Condition::Threshold(Threshold {
                    metric: "temp".into(),
                    op: CmpOp::Gt,
                    value: 30.0,
                }),
                severity: "major".into(),
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
        st.alarms.insert("hot".into(), RuleAlarm { active: true });
        assert_eq!(
            summary(&st.on_samples(&[sample(Some(1), 99.0)], 0, &rules)),
            ["P1"]
        );
    }

    #[test]
    fn deleted_rule_state_is_dropped() {
        let mut st = DeviceState::new(DeviceKey::default_tenant("d1"));
        st.alarms.insert("gone".into(), RuleAlarm { active: true });
        st.on_samples(&[sample(Some(1), 1.0)], 0, &[]);
        assert!(st.alarms.is_empty());
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
}
