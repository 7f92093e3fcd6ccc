//! Invariant: never two active alarms for one (device, rule).
//!
//! Source: DESIGN.md §7 "Rules and alarms": "Alarm per (device, rule): … exactly one *active*
//! at a time, raised only by the owning actor"; ARCHITECTURE.md: "the state machine refuses
//! stale epochs and a second active alarm for the same (device, rule)". A paused or
//! partitioned old owner must not raise a second alarm next to the new owner's.
//!
//! Input: every alarm the cluster lists after healing (active and cleared). Each alarm was
//! active from `raised_at_ms` until `cleared_at_ms` (or still is); two alarms of one
//! (device, rule) whose active intervals overlap — or two still active — are a violation.

use std::collections::BTreeMap;

use super::Violation;
use crate::history::AlarmRecord;

/// One violation per overlapping pair (first pair per (device, rule)).
pub fn check(alarms: &[AlarmRecord]) -> Vec<Violation> {
    let mut by_key: BTreeMap<(&str, &str), Vec<&AlarmRecord>> = BTreeMap::new();
    for a in alarms {
        by_key.entry((&a.device, &a.rule_id)).or_default().push(a);
    }
    let mut out = Vec::new();
    for ((device, rule), mut list) in by_key {
        list.sort_by_key(|a| (a.raised_at_ms, a.cleared_at_ms.unwrap_or(i64::MAX)));
        let mut reach: Option<&AlarmRecord> = None;
        for b in list {
            if let Some(a) = reach {
                let a_end = a.cleared_at_ms.unwrap_or(i64::MAX);
                if b.raised_at_ms < a_end {
                    out.push(Violation {
                        checker: "single_active_alarm",
                        detail: format!(
                            "({device}, {rule}): alarm {} active [{}, {}) overlaps alarm {} \
                             raised at {}",
                            a.id,
                            a.raised_at_ms,
                            a.cleared_at_ms.map_or("now".into(), |c| c.to_string()),
                            b.id,
                            b.raised_at_ms
                        ),
                    });
                    break;
                }
            }
            reach = match reach {
                Some(a)
                    if a.cleared_at_ms.unwrap_or(i64::MAX)
                        >= b.cleared_at_ms.unwrap_or(i64::MAX) =>
                {
                    Some(a)
                }
                _ => Some(b),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(id: &str, device: &str, raised: i64, cleared: Option<i64>) -> AlarmRecord {
        AlarmRecord {
            id: id.into(),
            device: device.into(),
            rule_id: "hot".into(),
            raised_at_ms: raised,
            cleared_at_ms: cleared,
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Vec<AlarmRecord>, usize)> = vec![
            ("none", vec![], 0),
            ("one active", vec![alarm("a", "d", 0, None)], 0),
            (
                "raise, clear, raise again",
                vec![alarm("a", "d", 0, Some(10)), alarm("b", "d", 10, None)],
                0,
            ),
            (
                "two devices active at once",
                vec![alarm("a", "d1", 0, None), alarm("b", "d2", 0, None)],
                0,
            ),
            (
                "two active at once",
                vec![alarm("a", "d", 0, None), alarm("b", "d", 5, None)],
                1,
            ),
            (
                "second raised before the first cleared",
                vec![alarm("a", "d", 0, Some(10)), alarm("b", "d", 9, Some(20))],
                1,
            ),
            (
                "a short alarm inside a long one",
                vec![
                    alarm("a", "d", 0, Some(100)),
                    alarm("b", "d", 20, Some(30)),
                    alarm("c", "d", 40, Some(50)),
                ],
                1,
            ),
        ];
        for (name, alarms, want) in cases {
            assert_eq!(check(&alarms).len(), want, "{name}");
        }
    }
}
