//! The alarm state machine of one (device, rule), pure: [`RuleState`] takes points and clock
//! ticks and answers the alarm [`Transition`] they cause, if any.
//!
//! - The condition tree is mirrored by a tree of leaf states (`leaf.rs`) combined with
//!   three-valued logic: `all` is false if any part is false, true if all are true, unknown
//!   otherwise (so it raises only once every part is known to hold); `any` is true if any
//!   part is true, false if none is true and at least one is false, unknown if nothing is
//!   known (so a part whose metric never arrives does not hold an alarm open forever).
//!   True and not active → raise; false and active → clear; unknown changes nothing.
//! - Points are evaluated in event time. A point older than the newest one this state
//!   evaluated is late: it updates history (rate windows, no-data receipt) and cannot raise or
//!   clear. Equal timestamps are not late (duplicates are evaluated again, in arrival order).
//! - Time-driven conditions (`for` durations, no-data) keep absolute deadlines in receive
//!   time; [`RuleState::next_deadline`] exposes the earliest and [`RuleState::on_tick`] lets
//!   them pass, so they fire without new data. Callers run `on_tick(now)` before evaluating a
//!   message received at `now`, so the outcome does not depend on how late a timer fired.
//! - A new rule version resets the condition state (keeping whether the alarm is active); the
//!   next point or tick evaluates under the new version.
//!
//! - Pending timers are exported as a control record ([`RuleState::pending`]) and a new owner
//!   resumes them ([`RuleState::resume`]); a rule update re-evaluates an open alarm on the
//!   device's last values ([`RuleState::on_rule_update`]). Both live in `state_pending.rs`.
//!
//! What this does not do: read clocks, write records, or know about devices, selectors or
//! effects (`device/state.rs` drives it).

use super::doc::{Condition, GeoTrigger, Shape};
use super::leaf::{Leaf, Observation, Truth, Witness};
use crate::model::{Rule, TimestampMs, Value};

/// An alarm transition decided by a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Raise {
        /// The value that made the condition true, its metric and its time.
        trigger: Witness,
        /// Event time of the raise (the trigger's time; for a deadline, the deadline).
        at_ms: TimestampMs,
        /// Receive time of the point or tick that decided it.
        received_at_ms: TimestampMs,
        message: String,
    },
    Clear {
        /// The value that made the condition false, when one leaf reports it.
        trigger: Option<Witness>,
        /// Event time of the clear (never before the raise this state decided).
        at_ms: TimestampMs,
        received_at_ms: TimestampMs,
    },
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(Leaf),
    All(Vec<Node>),
    Any(Vec<Node>),
    /// A leaf that could not be built (an invalid shape that bypassed validation): unknown.
    Broken,
}

impl Node {
    fn new(condition: &Condition) -> Node {
        match condition {
            Condition::All(cs) => Node::All(cs.iter().map(Node::new).collect()),
            Condition::Any(cs) => Node::Any(cs.iter().map(Node::new).collect()),
            leaf => Leaf::new(leaf).map_or(Node::Broken, Node::Leaf),
        }
    }

    fn visit(&mut self, f: &mut impl FnMut(&mut Leaf)) {
        match self {
            Node::Leaf(l) => f(l),
            Node::All(ns) | Node::Any(ns) => ns.iter_mut().for_each(|n| n.visit(f)),
            Node::Broken => {}
        }
    }

    fn truth(&self) -> Truth {
        match self {
            Node::Leaf(l) => l.truth(),
            Node::All(ns) => {
                let ts: Vec<Truth> = ns.iter().map(Node::truth).collect();
                if ts.contains(&Truth::False) {
                    Truth::False
                } else if ts.iter().all(|t| *t == Truth::True) {
                    Truth::True
                } else {
                    Truth::Unknown
                }
            }
            Node::Any(ns) => {
                let ts: Vec<Truth> = ns.iter().map(Node::truth).collect();
                if ts.contains(&Truth::True) {
                    Truth::True
                } else if ts.contains(&Truth::False) {
                    Truth::False
                } else {
                    Truth::Unknown
                }
            }
            Node::Broken => Truth::Unknown,
        }
    }

    /// The most recent witness among leaves whose truth is `want` (ties: the first).
    fn witness(&self, want: Truth) -> Option<&Witness> {
        match self {
            Node::Leaf(l) if l.truth() == want => l.witness(),
            Node::Leaf(_) | Node::Broken => None,
            Node::All(ns) | Node::Any(ns) => {
                ns.iter()
                    .filter_map(|n| n.witness(want))
                    .fold(None, |best: Option<&Witness>, w| match best {
                        Some(b) if b.at_ms >= w.at_ms => Some(b),
                        _ => Some(w),
                    })
            }
        }
    }

    fn deadline(&self) -> Option<TimestampMs> {
        match self {
            Node::Leaf(l) => l.deadline(),
            Node::All(ns) | Node::Any(ns) => ns.iter().filter_map(Node::deadline).min(),
            Node::Broken => None,
        }
    }
}

/// Alarm state of one (device, rule).
#[derive(Clone, Debug)]
pub struct RuleState {
    /// The rule version the condition state was built for.
    version: u64,
    /// Whether the alarm is active (as committed, or as this state decided).
    active: bool,
    /// Event time of the raise this state decided, so a clear is never dated before it.
    raised_at_ms: Option<TimestampMs>,
    /// Event time of the newest point evaluated; older points are late.
    evaluated_until: Option<TimestampMs>,
    root: Node,
}

impl RuleState {
    /// A fresh state for `rule`; `active` as the control plane holds it.
    pub fn new(rule: &Rule, active: bool) -> Self {
        Self {
            version: rule.version,
            active,
            raised_at_ms: None,
            evaluated_until: None,
            root: Node::new(&rule.doc.condition),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Records the committed alarm status (rehydration).
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// Evaluates one point (a sample's values at event time `ts_ms`) received at
    /// `received_at_ms`. Late points are remembered but decide nothing.
    pub fn on_point(
        &mut self,
        rule: &Rule,
        ts_ms: TimestampMs,
        values: &[(String, Value)],
        received_at_ms: TimestampMs,
    ) -> Option<Transition> {
        self.sync(rule);
        let obs = Observation {
            ts_ms,
            received_at_ms,
            values,
        };
        if self.evaluated_until.is_some_and(|until| ts_ms < until) {
            self.root.visit(&mut |l| l.observe_late(&obs));
            return None;
        }
        self.evaluated_until = Some(ts_ms);
        self.root.visit(&mut |l| l.observe(&obs));
        self.decide(Some(ts_ms), received_at_ms, rule)
    }

    /// A point the caller found late (older than the device's newest evaluated point): it
    /// updates history only.
    pub fn on_late_point(
        &mut self,
        rule: &Rule,
        ts_ms: TimestampMs,
        values: &[(String, Value)],
        received_at_ms: TimestampMs,
    ) {
        self.sync(rule);
        let obs = Observation {
            ts_ms,
            received_at_ms,
            values,
        };
        self.root.visit(&mut |l| l.observe_late(&obs));
    }

    /// The receive clock reads `now`: deadlines at or before it pass.
    pub fn on_tick(&mut self, rule: &Rule, now: TimestampMs) -> Option<Transition> {
        self.sync(rule);
        if self.next_deadline().is_none_or(|d| d > now) {
            return None;
        }
        self.root.visit(&mut |l| l.tick(now));
        self.decide(None, now, rule)
    }

    /// The earliest absolute receive time at which a tick may change something.
    pub fn next_deadline(&self) -> Option<TimestampMs> {
        self.root.deadline()
    }

    fn sync(&mut self, rule: &Rule) {
        if rule.version != self.version {
            *self = RuleState::new(rule, self.active);
        }
    }

    fn decide(
        &mut self,
        point_ts: Option<TimestampMs>,
        received_at_ms: TimestampMs,
        rule: &Rule,
    ) -> Option<Transition> {
        match (self.root.truth(), self.active) {
            (Truth::True, false) => {
                // A true leaf always has the witness that made it true.
                let trigger = self.root.witness(Truth::True)?.clone();
                let at_ms = point_ts.unwrap_or(trigger.at_ms);
                self.active = true;
                self.raised_at_ms = Some(at_ms);
                Some(Transition::Raise {
                    message: message(&rule.doc.condition, &trigger),
                    trigger,
                    at_ms,
                    received_at_ms,
                })
            }
            (Truth::False, true) => {
                let at = point_ts.unwrap_or(received_at_ms);
                let at_ms = self.raised_at_ms.map_or(at, |r| at.max(r));
                self.active = false;
                self.raised_at_ms = None;
                Some(Transition::Clear {
                    trigger: self.root.witness(Truth::False).cloned(),
                    at_ms,
                    received_at_ms,
                })
            }
            _ => None,
        }
    }
}

/// The alarm message: the condition and the value that raised it. For a single threshold,
/// `temp > 30 (value 42.5)`.
pub fn message(condition: &Condition, trigger: &Witness) -> String {
    let value = value_text(&trigger.value);
    match condition {
        Condition::All(_) | Condition::Any(_) => {
            format!("{} ({} {value})", describe(condition), trigger.metric)
        }
        Condition::NoData(_) => format!("{} (silent {value} s)", describe(condition)),
        Condition::RateOfChange(_) => format!("{} (rate {value}/s)", describe(condition)),
        _ => format!("{} (value {value})", describe(condition)),
    }
}

/// A short human description of a condition.
pub fn describe(condition: &Condition) -> String {
    match condition {
        Condition::Threshold(t) => {
            let mut s = format!("{} {} {}", t.metric, t.op, t.value);
            if let Some(d) = t.hold {
                s.push_str(&format!(" for {d}"));
            }
            s
        }
        Condition::NoData(n) => {
            let d = n.duration().map(|d| d.to_string()).unwrap_or_default();
            match &n.metric {
                Some(m) => format!("no {m} data for {d}"),
                None => format!("no data for {d}"),
            }
        }
        Condition::Geofence(g) => {
            let verb = match g.trigger {
                GeoTrigger::Enter => "enters",
                GeoTrigger::Exit => "exits",
                GeoTrigger::Inside => "inside",
                GeoTrigger::Outside => "outside",
            };
            let shape = match &g.shape {
                Shape::Circle(c) => format!("{} m around ({}, {})", c.radius_m, c.lat, c.lon),
                Shape::Polygon(p) => format!("polygon of {} points", p.exterior.len()),
            };
            format!("{} {verb} {shape}", g.metric)
        }
        Condition::RateOfChange(r) => {
            format!(
                "rate of {} over {} {} {}/s",
                r.metric, r.window, r.op, r.value
            )
        }
        Condition::All(cs) => format!("all of ({})", join(cs)),
        Condition::Any(cs) => format!("any of ({})", join(cs)),
    }
}

fn join(cs: &[Condition]) -> String {
    cs.iter().map(describe).collect::<Vec<_>>().join("; ")
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(t) => format!("{t:?}"),
        Value::Position { lat, lon } => format!("({lat}, {lon})"),
    }
}

#[path = "state_pending.rs"]
mod pending;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "state_tests_more.rs"]
mod tests_more;
