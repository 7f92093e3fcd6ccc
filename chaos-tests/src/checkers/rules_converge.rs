//! Invariant: rules converge to the same versions on all nodes, and acknowledged rule writes
//! are not lost.
//!
//! Source: DESIGN.md §2 "Control plane: one Raft group" (rules with versions live in the
//! replicated state machine) and §7 "Create/update/delete are Raft entries; each gets a
//! version": once healed, every node's applied state machine holds the same rules at the same
//! versions, and a write the cluster acknowledged with version v is in the log — so the rule's
//! version is at least v everywhere, and if v is the last acknowledged write of that rule and
//! nothing later was even attempted, the document at v is the one written.

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;
use crate::history::{RuleState, RuleWriteOp};

/// Violations of convergence (nodes disagree) and of durability (an acked write missing).
pub fn check(
    writes: &[RuleWriteOp],
    by_node: &BTreeMap<u64, BTreeMap<String, RuleState>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let v = |detail: String| Violation {
        checker: "rules_converge",
        detail,
    };
    // Convergence: every node shows the same (rule → version).
    let mut views = by_node.iter();
    if let Some((first_node, first)) = views.next() {
        for (node, view) in views {
            let ids: BTreeSet<&String> = first.keys().chain(view.keys()).collect();
            for id in ids {
                let (a, b) = (first.get(id), view.get(id));
                if a.map(|r| r.version) != b.map(|r| r.version) {
                    out.push(v(format!(
                        "rule {id}: node {first_node} has version {:?}, node {node} has {:?}",
                        a.map(|r| r.version),
                        b.map(|r| r.version)
                    )));
                }
            }
        }
    }
    // Durability: judged against each node's view.
    let mut last_attempt: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, w) in writes.iter().enumerate() {
        last_attempt.insert(&w.rule_id, i);
    }
    for (i, w) in writes.iter().enumerate() {
        let Some(version) = w.acked_version else {
            continue;
        };
        for (node, view) in by_node {
            match view.get(&w.rule_id) {
                None => out.push(v(format!(
                    "rule {} acknowledged at version {version} is missing on node {node}",
                    w.rule_id
                ))),
                Some(state) if state.version < version => out.push(v(format!(
                    "rule {} acknowledged at version {version}, node {node} has version {}",
                    w.rule_id, state.version
                ))),
                Some(state)
                    if last_attempt.get(w.rule_id.as_str()) == Some(&i)
                        && state.marker != Some(w.marker) =>
                {
                    out.push(v(format!(
                        "rule {}: the last write (marker {}) was acknowledged and nothing was \
                         written after it, but node {node} holds marker {:?}",
                        w.rule_id, w.marker, state.marker
                    )))
                }
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: &str, marker: i64, acked: Option<u64>) -> RuleWriteOp {
        RuleWriteOp {
            rule_id: id.into(),
            marker,
            acked_version: acked,
        }
    }
    fn view(rules: &[(&str, u64, i64)]) -> BTreeMap<String, RuleState> {
        rules
            .iter()
            .map(|(id, version, marker)| {
                (
                    (*id).to_owned(),
                    RuleState {
                        version: *version,
                        marker: Some(*marker),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn table() {
        // (name, writes, node views, violations expected)
        type Case = (
            &'static str,
            Vec<RuleWriteOp>,
            Vec<BTreeMap<String, RuleState>>,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "converged and durable",
                vec![write("r", 1, Some(5)), write("r", 2, Some(7))],
                vec![view(&[("r", 7, 2)]), view(&[("r", 7, 2)])],
                0,
            ),
            (
                "unacked write later applied is fine",
                vec![write("r", 1, Some(5)), write("r", 2, None)],
                vec![view(&[("r", 9, 2)]), view(&[("r", 9, 2)])],
                0,
            ),
            (
                "nodes disagree on the version",
                vec![write("r", 1, Some(5))],
                vec![view(&[("r", 5, 1)]), view(&[("r", 4, 0)])],
                // divergence + node 2 older than the acked version
                2,
            ),
            (
                "acked rule missing everywhere",
                vec![write("r", 1, Some(5))],
                vec![view(&[]), view(&[])],
                2,
            ),
            (
                "last acked document replaced by an older one",
                vec![write("r", 1, Some(5)), write("r", 2, Some(6))],
                vec![view(&[("r", 6, 1)]), view(&[("r", 6, 1)])],
                2,
            ),
        ];
        for (name, writes, views, want) in cases {
            let by_node: BTreeMap<u64, _> = views
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as u64 + 1, v))
                .collect();
            assert_eq!(
                check(&writes, &by_node).len(),
                want,
                "{name}: {:?}",
                check(&writes, &by_node)
            );
        }
    }
}
