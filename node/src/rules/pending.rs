//! Pending timer state of one (device, rule) as a control record, pure: what a rule's
//! time-driven leaves are waiting for, in a form that survives the owning node.
//!
//! A record is written only when the *shape* of the pending state changes — a `for` run
//! starts or ends, a no-data watch is armed or disarmed — never per point, so the Raft write
//! rate follows condition changes, not telemetry (a threshold that flaps writes on every
//! flap, a steady one never). [`PendingTimers::same_shape`] is that comparison.
//!
//! Resuming on a new owner ([`crate::rules::RuleState::resume`]):
//! - a `for` run resumes with its original start (event time) and absolute deadline (receive
//!   time); a deadline already passed fires on the first tick, dated `since + for`;
//! - a no-data watch resumes from `max(last receipt recorded, resume time)`. The recorded
//!   receipt is the one at arming, and later receipts are not written (that would be one write
//!   per point), so the new owner cannot know the true last receipt `R`. Counting from the
//!   resume time never fires early (no false "offline" alarm after a failover); it fires late
//!   by `resume − R`, less than the no-data duration plus the failover time.
//!
//! A record of another rule version is ignored on resume (the new version starts fresh).

use serde::{Deserialize, Serialize};

use crate::model::{TimestampMs, Value};

/// Pending timers of one (device, rule) under one rule version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingTimers {
    /// The rule version whose leaves these are; another version ignores the record.
    pub rule_version: u64,
    /// One entry per leaf with a running timer, by leaf position (depth-first order).
    pub leaves: Vec<LeafTimer>,
}

/// The timer of one leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LeafTimer {
    /// A threshold's `for` run: the comparison has held since `since_ms` (event time) and
    /// matures at `deadline_ms` (absolute receive time) unless a point contradicts it.
    For {
        leaf: u32,
        since_ms: TimestampMs,
        deadline_ms: TimestampMs,
        /// The value that started the run (reported if the deadline raises the alarm).
        metric: String,
        value: Value,
    },
    /// A no-data watch: data was last received at `last_received_ms` when the record was
    /// written (receive time).
    NoData {
        leaf: u32,
        last_received_ms: TimestampMs,
    },
}

impl LeafTimer {
    /// The leaf position this timer belongs to.
    pub fn leaf(&self) -> u32 {
        match self {
            LeafTimer::For { leaf, .. } | LeafTimer::NoData { leaf, .. } => *leaf,
        }
    }
}

impl PendingTimers {
    /// Whether `a` and `b` describe the same pending state, ignoring what moves with every
    /// point (a no-data watch's last receipt). Only a change of shape is written.
    pub fn same_shape(a: Option<&PendingTimers>, b: Option<&PendingTimers>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.rule_version == b.rule_version
                    && a.leaves.len() == b.leaves.len()
                    && a.leaves.iter().zip(&b.leaves).all(|(x, y)| match (x, y) {
                        (LeafTimer::NoData { leaf: l, .. }, LeafTimer::NoData { leaf: m, .. }) => {
                            l == m
                        }
                        _ => x == y,
                    })
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_timer(since: i64, deadline: i64) -> LeafTimer {
        LeafTimer::For {
            leaf: 0,
            since_ms: since,
            deadline_ms: deadline,
            metric: "temp".into(),
            value: Value::Number(31.0),
        }
    }

    fn rec(version: u64, leaves: Vec<LeafTimer>) -> PendingTimers {
        PendingTimers {
            rule_version: version,
            leaves,
        }
    }

    #[test]
    fn same_shape_table() {
        let nd = |t| LeafTimer::NoData {
            leaf: 1,
            last_received_ms: t,
        };
        let cases: Vec<(&str, Option<PendingTimers>, Option<PendingTimers>, bool)> = vec![
            ("both none", None, None, true),
            (
                "armed vs none",
                Some(rec(1, vec![for_timer(0, 10)])),
                None,
                false,
            ),
            (
                "same run",
                Some(rec(1, vec![for_timer(0, 10)])),
                Some(rec(1, vec![for_timer(0, 10)])),
                true,
            ),
            (
                "restarted run",
                Some(rec(1, vec![for_timer(0, 10)])),
                Some(rec(1, vec![for_timer(5, 15)])),
                false,
            ),
            (
                "no-data receipt moves: same shape",
                Some(rec(1, vec![nd(0)])),
                Some(rec(1, vec![nd(900)])),
                true,
            ),
            (
                "other version",
                Some(rec(1, vec![nd(0)])),
                Some(rec(2, vec![nd(0)])),
                false,
            ),
            (
                "a leaf added",
                Some(rec(1, vec![for_timer(0, 10)])),
                Some(rec(1, vec![for_timer(0, 10), nd(0)])),
                false,
            ),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(
                PendingTimers::same_shape(a.as_ref(), b.as_ref()),
                want,
                "{name}"
            );
        }
    }
}
