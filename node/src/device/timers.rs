//! Pending timers and rule updates in the device state machine, pure (`impl DeviceState`).
//!
//! - [`DeviceState::resume`]: a new actor (new owner, new epoch, or a fresh actor after a
//!   crash) restores the pending timers recorded in the control plane, as absolute deadlines;
//!   one already passed fires on the first tick. Records it cannot use (rule deleted, no longer
//!   selecting the device, another rule version) are removed.
//! - [`DeviceState::timer_changes`]: after each message or tick, the records whose shape
//!   changed (a `for` run or a no-data watch started or ended) — the only timer writes.
//! - [`DeviceState::on_rules_changed`]: open alarms of rules that changed version are
//!   re-evaluated on the device's last values; a clear carries the reason and the version.

use std::collections::HashMap;

use super::state::{DeviceState, Effect, effect};
use crate::model::{Rule, TimestampMs};
use crate::rules::pending::PendingTimers;
use crate::rules::{RuleState, Transition};

/// Message of an alarm cleared because a rule update no longer supports it.
pub fn rule_updated_reason(version: u64) -> String {
    format!("rule updated to version {version}: condition no longer holds")
}

impl DeviceState {
    /// Restores recorded pending timers at receive time `now`. `active` lists the rule ids
    /// with an active alarm; `records` are this device's timer records by rule id.
    pub fn resume(
        &mut self,
        rules: &[Rule],
        active: &[String],
        records: HashMap<String, PendingTimers>,
        now: TimestampMs,
    ) -> Vec<Effect> {
        for rule in rules
            .iter()
            .filter(|r| r.selects_with(&self.key, self.meta.as_ref()))
        {
            let id = &rule.doc.id;
            let record = records.get(id);
            let is_active = active.contains(id);
            if record.is_none() && !is_active {
                continue;
            }
            self.rules
                .insert(id.clone(), RuleState::resume(rule, is_active, record, now));
        }
        // What is recorded is what the control plane holds; the diff then removes what the
        // resumed states do not use.
        self.committed_timers = records;
        self.timer_changes()
    }

    /// The timer records to write: one per rule whose pending state changed shape since the
    /// last write (or whose rule is gone). Updates what counts as written.
    pub fn timer_changes(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut ids: Vec<&String> = self
            .rules
            .keys()
            .chain(self.committed_timers.keys())
            .collect();
        ids.sort();
        ids.dedup();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for id in ids {
            let now = self.rules.get(&id).and_then(RuleState::pending);
            let before = self.committed_timers.get(&id);
            if PendingTimers::same_shape(before, now.as_ref()) {
                continue;
            }
            match &now {
                Some(t) => self.committed_timers.insert(id.clone(), t.clone()),
                None => self.committed_timers.remove(&id),
            };
            effects.push(Effect::Timers {
                rule_id: id,
                timers: now,
            });
        }
        effects
    }

    /// Rules changed: re-evaluates the open alarms of rules whose version changed on the
    /// device's last values (sample-and-hold) at receive time `now`.
    pub fn on_rules_changed(&mut self, now: TimestampMs, rules: &[Rule]) -> Vec<Effect> {
        self.forget_unselected(rules);
        let mut effects = Vec::new();
        if let Some(ts) = self.last_values.values().map(|(t, _)| *t).max() {
            let values: Vec<_> = self
                .last_values
                .iter()
                .map(|(m, (_, v))| (m.clone(), v.clone()))
                .collect();
            for rule in rules {
                let Some(state) = self.rules.get_mut(&rule.doc.id) else {
                    continue;
                };
                match state.on_rule_update(rule, ts, &values, now) {
                    Some(t @ Transition::Clear { .. }) => {
                        if let Effect::Clear { rule_id, at_ms, .. } = effect(rule, t) {
                            effects.push(Effect::Clear {
                                rule_id,
                                // The rule changed now; the last value may be older.
                                at_ms: at_ms.max(now),
                                reason: Some(rule_updated_reason(rule.version)),
                            });
                        }
                    }
                    // An active alarm cannot raise again.
                    Some(Transition::Raise { .. }) | None => {}
                }
            }
        }
        effects.extend(self.timer_changes());
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKey, RuleDoc, Sample, Selector, Value};

    fn rule(id: &str, condition: &str, version: u64) -> Rule {
        Rule {
            doc: RuleDoc {
                id: id.into(),
                tenant: None,
                selector: Selector::default(),
                condition: serde_json::from_str(condition).expect("condition"),
                severity: "major".into(),
                notify: Vec::new(),
            },
            version,
            updated_at_ms: 0,
        }
    }

    const HOT_FOR60: &str = r#"{"threshold":{"metric":"t","op":">","value":30,"for":"60s"}}"#;

    fn hot(ts: i64, x: f64) -> Sample {
        Sample {
            ts_ms: Some(ts),
            seq: None,
            values: vec![("t".into(), Value::Number(x))],
        }
    }

    /// `P` persist, `R@`/`C@` alarm transitions, `T+`/`T-` record written/removed.
    fn summary(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Persist(_) => "P".into(),
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
    fn records_are_written_only_when_a_run_starts_or_ends() {
        let rules = vec![rule("r", HOT_FOR60, 1)];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d"));
        // (samples at receive time = event time, expected effects)
        let steps: Vec<(Sample, &[&str])> = vec![
            (hot(0, 31.0), &["P", "T+"]),
            (hot(1_000, 32.0), &["P"]),
            (hot(2_000, 33.0), &["P"]),
            (hot(3_000, 20.0), &["P", "T-"]),
            (hot(4_000, 31.0), &["P", "T+"]),
            (hot(64_000, 31.0), &["P", "R@64000", "T-"]),
            (hot(65_000, 31.0), &["P"]),
        ];
        for (i, (s, want)) in steps.into_iter().enumerate() {
            let rx = s.ts_ms.unwrap_or(0);
            assert_eq!(summary(&st.on_samples(&[s], rx, &rules)), want, "step {i}");
        }
    }

    #[test]
    fn resume_table() {
        let rules = vec![rule("r", HOT_FOR60, 1)];
        let run = PendingTimers {
            rule_version: 1,
            leaves: vec![crate::rules::pending::LeafTimer::For {
                leaf: 0,
                since_ms: 1_000,
                deadline_ms: 61_000,
                metric: "t".into(),
                value: Value::Number(31.0),
            }],
        };
        // (name, records, resume time, effects of resume, tick time, effects of the tick)
        type Case = (
            &'static str,
            Vec<(&'static str, PendingTimers)>,
            i64,
            &'static [&'static str],
            i64,
            &'static [&'static str],
        );
        let cases: Vec<Case> = vec![
            (
                "future deadline: nothing until it",
                vec![("r", run.clone())],
                30_000,
                &[],
                60_999,
                &[],
            ),
            (
                "future deadline fires at it",
                vec![("r", run.clone())],
                30_000,
                &[],
                61_000,
                &["R@61000", "T-"],
            ),
            (
                "passed deadline fires at once",
                vec![("r", run.clone())],
                90_000,
                &[],
                90_000,
                &["R@61000", "T-"],
            ),
            (
                "record of a deleted rule is removed",
                vec![("gone", run.clone())],
                30_000,
                &["T-"],
                90_000,
                &[],
            ),
            (
                "record of an older rule version is removed",
                vec![(
                    "r",
                    PendingTimers {
                        rule_version: 0,
                        ..run.clone()
                    },
                )],
                30_000,
                &["T-"],
                90_000,
                &[],
            ),
        ];
        for (name, records, at, want_resume, tick, want_tick) in cases {
            let mut st = DeviceState::new(DeviceKey::default_tenant("d"));
            let records = records
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(
                summary(&st.resume(&rules, &[], records, at)),
                want_resume,
                "{name}: resume"
            );
            assert_eq!(
                summary(&st.on_tick(tick, &rules)),
                want_tick,
                "{name}: tick"
            );
        }
    }

    #[test]
    fn rule_update_clears_an_open_alarm_with_reason_and_version() {
        let v1 = vec![rule(
            "r",
            r#"{"threshold":{"metric":"t","op":">","value":30}}"#,
            1,
        )];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d"));
        assert_eq!(
            summary(&st.on_samples(&[hot(1_000, 35.0)], 1_000, &v1)),
            ["P", "R@1000"]
        );
        let v2 = vec![rule(
            "r",
            r#"{"threshold":{"metric":"t","op":">","value":40}}"#,
            7,
        )];
        let effects = st.on_rules_changed(9_000, &v2);
        assert_eq!(
            effects,
            [Effect::Clear {
                rule_id: "r".into(),
                at_ms: 9_000,
                reason: Some(rule_updated_reason(7)),
            }]
        );
        assert!(rule_updated_reason(7).contains("version 7"));
        assert!(!st.is_active("r"));
        // Nothing more to do once re-evaluated.
        assert!(st.on_rules_changed(9_500, &v2).is_empty());
    }

    #[test]
    fn rule_update_keeps_an_alarm_the_new_version_supports() {
        let v1 = vec![rule(
            "r",
            r#"{"threshold":{"metric":"t","op":">","value":30}}"#,
            1,
        )];
        let mut st = DeviceState::new(DeviceKey::default_tenant("d"));
        st.on_samples(&[hot(1_000, 45.0)], 1_000, &v1);
        let v2 = vec![rule(
            "r",
            r#"{"threshold":{"metric":"t","op":">","value":40}}"#,
            2,
        )];
        assert!(st.on_rules_changed(9_000, &v2).is_empty());
        assert!(st.is_active("r"));
    }
}
