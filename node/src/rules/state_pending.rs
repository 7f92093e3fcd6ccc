//! [`RuleState`]'s pending-timer record and rule-update re-evaluation, pure (a child of
//! `state.rs`). Leaves are numbered depth-first; a leaf that could not be built keeps its
//! number, so positions are stable for a given rule version.

use super::{Node, RuleState, Transition};
use crate::model::{Rule, TimestampMs, Value};
use crate::rules::leaf::Leaf;
use crate::rules::pending::PendingTimers;

impl Node {
    fn leaves<'a>(&'a self, out: &mut Vec<Option<&'a Leaf>>) {
        match self {
            Node::Leaf(l) => out.push(Some(l)),
            Node::Broken => out.push(None),
            Node::All(ns) | Node::Any(ns) => ns.iter().for_each(|n| n.leaves(out)),
        }
    }

    fn leaves_mut<'a>(&'a mut self, out: &mut Vec<Option<&'a mut Leaf>>) {
        match self {
            Node::Leaf(l) => out.push(Some(l)),
            Node::Broken => out.push(None),
            Node::All(ns) | Node::Any(ns) => ns.iter_mut().for_each(|n| n.leaves_mut(out)),
        }
    }
}

impl RuleState {
    /// The pending timers as a control record, or `None` when nothing is pending.
    pub fn pending(&self) -> Option<PendingTimers> {
        let mut leaves = Vec::new();
        self.root.leaves(&mut leaves);
        let timers: Vec<_> = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.and_then(|l| l.pending_timer(u32::try_from(i).ok()?)))
            .collect();
        (!timers.is_empty()).then_some(PendingTimers {
            rule_version: self.version,
            leaves: timers,
        })
    }

    /// A state for `rule` on a new owner: `active` as the control plane holds it, and the
    /// recorded timers resumed at receive time `now` unless they belong to another rule
    /// version. A deadline already passed fires on the first [`RuleState::on_tick`].
    pub fn resume(
        rule: &Rule,
        active: bool,
        record: Option<&PendingTimers>,
        now: TimestampMs,
    ) -> Self {
        let mut state = RuleState::new(rule, active);
        let Some(record) = record.filter(|r| r.rule_version == rule.version) else {
            return state;
        };
        let mut leaves = Vec::new();
        state.root.leaves_mut(&mut leaves);
        for timer in &record.leaves {
            if let Some(Some(leaf)) = usize::try_from(timer.leaf())
                .ok()
                .and_then(|i| leaves.get_mut(i))
            {
                leaf.resume(timer, now);
            }
        }
        state
    }

    /// The rule changed version while its alarm is open: evaluate the device's last values
    /// (`values` at event time `ts_ms`, sample-and-hold) under the new version at receive time
    /// `now`, so an alarm the new version no longer supports clears at once. Nothing happens
    /// if the version is unchanged or the alarm is not active (the next point evaluates).
    pub fn on_rule_update(
        &mut self,
        rule: &Rule,
        ts_ms: TimestampMs,
        values: &[(String, Value)],
        now: TimestampMs,
    ) -> Option<Transition> {
        if rule.version == self.version || !self.active {
            return None;
        }
        // `on_point` resets the condition state to the new version first (keeping `active`).
        self.on_point(rule, ts_ms, values, now)
    }
}

#[cfg(test)]
#[path = "state_pending_tests.rs"]
mod tests;
