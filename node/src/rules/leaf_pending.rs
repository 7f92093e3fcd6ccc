//! Export and import of a leaf's pending timer ([`LeafTimer`]), pure. A child of `leaf.rs`
//! so it can read the leaves' private state; see `rules/pending.rs` for what is recorded and
//! the lateness bound of a resumed no-data watch.

use super::{Leaf, Pending, Truth, Witness};
use crate::model::TimestampMs;
use crate::rules::pending::LeafTimer;

impl Leaf {
    /// The timer this leaf is waiting on, as the control record keeps it; `leaf` is its
    /// position in the condition tree.
    pub fn pending_timer(&self, leaf: u32) -> Option<LeafTimer> {
        match self {
            Leaf::Threshold(l) => {
                let run = l.pending?;
                Some(LeafTimer::For {
                    leaf,
                    since_ms: run.since_ms,
                    deadline_ms: run.deadline,
                    metric: l.cond.metric.clone(),
                    value: l.run_value.clone()?,
                })
            }
            Leaf::NoData(l) => {
                l.deadline()?;
                Some(LeafTimer::NoData {
                    leaf,
                    last_received_ms: l.last_ms?,
                })
            }
            Leaf::Geofence(_) | Leaf::Rate(_) => None,
        }
    }

    /// Restores a recorded timer into a fresh leaf at receive time `now` (see
    /// `rules/pending.rs`). A timer of the wrong kind for this leaf is ignored.
    pub fn resume(&mut self, timer: &LeafTimer, now: TimestampMs) {
        match (self, timer) {
            (
                Leaf::Threshold(l),
                LeafTimer::For {
                    since_ms,
                    deadline_ms,
                    metric,
                    value,
                    ..
                },
            ) if l.cond.hold.is_some() && *metric == l.cond.metric => {
                l.holds = Some(true);
                l.matured = false;
                l.pending = Some(Pending {
                    since_ms: *since_ms,
                    deadline: *deadline_ms,
                });
                l.run_value = Some(value.clone());
                l.witness = Some(Witness {
                    metric: metric.clone(),
                    value: value.clone(),
                    at_ms: *since_ms,
                });
            }
            (
                Leaf::NoData(l),
                LeafTimer::NoData {
                    last_received_ms, ..
                },
            ) => {
                // Never early: later receipts were not recorded (see rules/pending.rs).
                l.last_ms = Some((*last_received_ms).max(now));
                l.truth = Truth::Unknown;
            }
            _ => {}
        }
    }
}
