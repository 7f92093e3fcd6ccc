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
        let mut ids: Vec<&String> = self.rules.keys().chain(self.committed_timers.keys()).collect();
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
