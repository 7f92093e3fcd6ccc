//! nftables rule sets that realise network faults inside one node's namespace (pure text).
//!
//! Every fault is one table, `inet starling_chaos`, loaded into the namespace of each node it
//! touches and deleted at heal; nothing is ever loaded outside the harness's own namespaces.
//! Partitions cut node ↔ node traffic only: the broker (on the bridge) stays reachable, so a
//! cut-off node still receives MQTT messages it must not acknowledge without a lease.

use std::collections::BTreeSet;

use crate::schedule::Fault;

/// The table every fault rule set lives in.
pub const TABLE: &str = "starling_chaos";

/// What node `me` must drop under `fault`: `(no_receive_from, no_send_to, loss_percent)`.
pub fn blocked(fault: &Fault, me: u64, all: &[u64]) -> (BTreeSet<u64>, BTreeSet<u64>, Option<u8>) {
    let others = |keep: &dyn Fn(u64) -> bool| -> BTreeSet<u64> {
        all.iter()
            .copied()
            .filter(|n| *n != me && keep(*n))
            .collect()
    };
    let both = |set: BTreeSet<u64>| (set.clone(), set, None);
    match fault {
        Fault::Isolate { node } if *node == me => both(others(&|_| true)),
        Fault::Isolate { node } => both(others(&|n| n == *node)),
        Fault::Split { minority } => {
            let mine = minority.contains(&me);
            both(others(&|n| minority.contains(&n) != mine))
        }
        Fault::Bridge {
            left,
            bridge,
            right,
        } => {
            if me == *bridge {
                both(BTreeSet::new())
            } else if left.contains(&me) {
                both(others(&|n| right.contains(&n)))
            } else {
                both(others(&|n| left.contains(&n)))
            }
        }
        Fault::OneWay { from, to } if *from == me => {
            (BTreeSet::new(), others(&|n| to.contains(&n)), None)
        }
        Fault::OneWay { from, to } if to.contains(&me) => {
            (others(&|n| n == *from), BTreeSet::new(), None)
        }
        Fault::Loss { nodes, percent } if nodes.contains(&me) => {
            (BTreeSet::new(), BTreeSet::new(), Some(*percent))
        }
        _ => (BTreeSet::new(), BTreeSet::new(), None),
    }
}

/// The `nft -f -` input for node `me`, or `None` when the fault leaves it untouched.
pub fn ruleset(
    fault: &Fault,
    me: u64,
    all: &[u64],
    addr: &dyn Fn(u64) -> String,
) -> Option<String> {
    let (from, to, loss) = blocked(fault, me, all);
    if from.is_empty() && to.is_empty() && loss.is_none() {
        return None;
    }
    let set = |ids: &BTreeSet<u64>| ids.iter().map(|n| addr(*n)).collect::<Vec<_>>().join(", ");
    let mut input = String::new();
    let mut output = String::new();
    if !from.is_empty() {
        input.push_str(&format!(" ip saddr {{ {} }} drop;", set(&from)));
    }
    if !to.is_empty() {
        output.push_str(&format!(" ip daddr {{ {} }} drop;", set(&to)));
    }
    if let Some(p) = loss {
        input.push_str(&format!(" numgen random mod 100 < {p} drop;"));
        output.push_str(&format!(" numgen random mod 100 < {p} drop;"));
    }
    Some(format!(
        "table inet {TABLE} {{\n  chain input {{ type filter hook input priority 0; policy accept;{input} }}\n  \
         chain output {{ type filter hook output priority 0; policy accept;{output} }}\n}}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn blocked_table() {
        let all = [1, 2, 3, 4, 5];
        // (fault, me, no receive from, no send to, loss)
        type Case = (Fault, u64, Vec<u64>, Vec<u64>, Option<u8>);
        let cases: Vec<Case> = vec![
            (
                Fault::Isolate { node: 2 },
                2,
                vec![1, 3, 4, 5],
                vec![1, 3, 4, 5],
                None,
            ),
            (Fault::Isolate { node: 2 }, 1, vec![2], vec![2], None),
            (
                Fault::Split {
                    minority: vec![1, 2],
                },
                1,
                vec![3, 4, 5],
                vec![3, 4, 5],
                None,
            ),
            (
                Fault::Split {
                    minority: vec![1, 2],
                },
                4,
                vec![1, 2],
                vec![1, 2],
                None,
            ),
            (
                Fault::Bridge {
                    left: vec![1, 2],
                    bridge: 3,
                    right: vec![4, 5],
                },
                3,
                vec![],
                vec![],
                None,
            ),
            (
                Fault::Bridge {
                    left: vec![1, 2],
                    bridge: 3,
                    right: vec![4, 5],
                },
                1,
                vec![4, 5],
                vec![4, 5],
                None,
            ),
            (
                Fault::Bridge {
                    left: vec![1, 2],
                    bridge: 3,
                    right: vec![4, 5],
                },
                5,
                vec![1, 2],
                vec![1, 2],
                None,
            ),
            (
                Fault::OneWay {
                    from: 1,
                    to: vec![2, 3, 4, 5],
                },
                1,
                vec![],
                vec![2, 3, 4, 5],
                None,
            ),
            (
                Fault::OneWay {
                    from: 1,
                    to: vec![2, 3, 4, 5],
                },
                3,
                vec![1],
                vec![],
                None,
            ),
            (
                Fault::Loss {
                    nodes: vec![2],
                    percent: 20,
                },
                2,
                vec![],
                vec![],
                Some(20),
            ),
            (
                Fault::Loss {
                    nodes: vec![2],
                    percent: 20,
                },
                1,
                vec![],
                vec![],
                None,
            ),
            (Fault::Kill { node: 1 }, 1, vec![], vec![], None),
        ];
        for (fault, me, from, to, loss) in cases {
            assert_eq!(
                blocked(&fault, me, &all),
                (ids(&from), ids(&to), loss),
                "{fault} at {me}"
            );
        }
    }

    #[test]
    fn ruleset_text() {
        let addr = |n: u64| format!("10.0.0.{n}");
        let all = [1, 2, 3];
        assert_eq!(ruleset(&Fault::Pause { node: 1 }, 1, &all, &addr), None);
        let text = ruleset(&Fault::Isolate { node: 1 }, 1, &all, &addr).unwrap();
        assert!(
            text.contains("ip saddr { 10.0.0.2, 10.0.0.3 } drop;"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr { 10.0.0.2, 10.0.0.3 } drop;"),
            "{text}"
        );
        let loss = ruleset(
            &Fault::Loss {
                nodes: vec![3],
                percent: 15,
            },
            3,
            &all,
            &addr,
        )
        .unwrap();
        assert_eq!(
            loss.matches("numgen random mod 100 < 15 drop;").count(),
            2,
            "{loss}"
        );
    }
}
