//! Placement of shards on nodes, pure: given the current map and the live nodes, which
//! shards move where (DESIGN.md §3).
//!
//! Rules, in order:
//! 1. A shard that is unassigned, or owned by a node that is not live, moves to the live node
//!    with the fewest shards (ties: lowest id).
//! 2. Then the map is balanced: every live node ends with ⌊S/n⌋ or ⌈S/n⌉ shards, and only
//!    shards of nodes above their target move — the fewest moves that reach balance, so a
//!    join moves about S/(n+1) shards and a leave moves only the leaver's.
//! 3. Among a node's shards the highest numbers move first, so the result is deterministic.
//!
//! What it does not do: decide liveness, write Raft entries or wait for handoffs; the leader's
//! supervisor (`cluster/supervisor.rs`) does that with the moves computed here.

use std::collections::{BTreeMap, BTreeSet};

use super::ShardId;

/// One shard changing owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub shard: ShardId,
    /// The current owner (`None`: unassigned).
    pub from: Option<u64>,
    pub to: u64,
}

/// The moves that take `owners` (shard → node, for the shards `0..shards`) to a balanced map
/// over `live` nodes. Empty when `live` is empty or the map is already balanced.
pub fn plan(owners: &BTreeMap<ShardId, u64>, shards: u32, live: &BTreeSet<u64>) -> Vec<Move> {
    if live.is_empty() {
        return Vec::new();
    }
    let mut held: BTreeMap<u64, Vec<ShardId>> = live.iter().map(|n| (*n, Vec::new())).collect();
    let mut orphans = Vec::new();
    for shard in 0..shards {
        match owners.get(&shard) {
            Some(node) if live.contains(node) => held.entry(*node).or_default().push(shard),
            other => orphans.push((shard, other.copied())),
        }
    }
    let mut moves = Vec::new();
    // Rule 1: orphans go to the least-loaded live node.
    for (shard, from) in orphans {
        let to = least_loaded(&held);
        held.entry(to).or_default().push(shard);
        moves.push(Move { shard, from, to });
    }
    // Rule 2: targets ⌊S/n⌋, with the remainder going to the nodes that hold most already
    // (fewest moves), ties to the lowest id.
    let n = live.len() as u32;
    let (base, extra) = (shards / n, (shards % n) as usize);
    let mut by_load: Vec<u64> = held.keys().copied().collect();
    by_load.sort_by_key(|node| (std::cmp::Reverse(held[node].len()), *node));
    let target: BTreeMap<u64, usize> = by_load
        .iter()
        .enumerate()
        .map(|(i, node)| (*node, base as usize + usize::from(i < extra)))
        .collect();
    let mut surplus = Vec::new();
    for (node, list) in &mut held {
        list.sort_unstable();
        while list.len() > target[node] {
            if let Some(shard) = list.pop() {
                surplus.push((shard, *node));
            }
        }
    }
    surplus.sort_unstable();
    for (shard, from) in surplus {
        let to = held
            .iter()
            .filter(|(node, list)| list.len() < target[node])
            .map(|(node, list)| (list.len(), *node))
            .min()
            .map(|(_, node)| node)
            .unwrap_or(from);
        held.entry(to).or_default().push(shard);
        if let Some(m) = moves.iter_mut().find(|m| m.shard == shard) {
            // An orphan placed above and moved again: one move straight to its final node.
            m.to = to;
        } else if to != from {
            moves.push(Move {
                shard,
                from: Some(from),
                to,
            });
        }
    }
    moves.sort_by_key(|m| m.shard);
    moves
}

fn least_loaded(held: &BTreeMap<u64, Vec<ShardId>>) -> u64 {
    held.iter()
        .map(|(node, list)| (list.len(), *node))
        .min()
        .map(|(_, node)| node)
        .unwrap_or_default()
}

/// Groups moves by destination: (to, shards) in node order.
pub fn by_destination(moves: &[Move]) -> BTreeMap<u64, Vec<ShardId>> {
    let mut out: BTreeMap<u64, Vec<ShardId>> = BTreeMap::new();
    for m in moves {
        out.entry(m.to).or_default().push(m.shard);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(owners: &mut BTreeMap<ShardId, u64>, moves: &[Move]) {
        for m in moves {
            owners.insert(m.shard, m.to);
        }
    }

    fn counts(owners: &BTreeMap<ShardId, u64>) -> BTreeMap<u64, usize> {
        let mut c = BTreeMap::new();
        for node in owners.values() {
            *c.entry(*node).or_default() += 1;
        }
        c
    }

    fn set(nodes: &[u64]) -> BTreeSet<u64> {
        nodes.iter().copied().collect()
    }

    #[test]
    fn table_of_placements() {
        // (name, shards, initial owners as (node, count) runs, live, expected counts, moves)
        struct Case {
            name: &'static str,
            shards: u32,
            initial: Vec<(u64, u32)>,
            live: Vec<u64>,
            counts: Vec<(u64, usize)>,
            moves: usize,
        }
        let cases = vec![
            Case {
                name: "empty map on three nodes",
                shards: 12,
                initial: vec![],
                live: vec![1, 2, 3],
                counts: vec![(1, 4), (2, 4), (3, 4)],
                moves: 12,
            },
            Case {
                name: "uneven split",
                shards: 16,
                initial: vec![],
                live: vec![1, 2, 3],
                counts: vec![(1, 6), (2, 5), (3, 5)],
                moves: 16,
            },
            Case {
                name: "balanced stays put",
                shards: 12,
                initial: vec![(1, 4), (2, 4), (3, 4)],
                live: vec![1, 2, 3],
                counts: vec![(1, 4), (2, 4), (3, 4)],
                moves: 0,
            },
            Case {
                name: "a join moves a quarter",
                shards: 12,
                initial: vec![(1, 4), (2, 4), (3, 4)],
                live: vec![1, 2, 3, 4],
                counts: vec![(1, 3), (2, 3), (3, 3), (4, 3)],
                moves: 3,
            },
            Case {
                name: "a leave moves only the leaver's",
                shards: 12,
                initial: vec![(1, 4), (2, 4), (3, 4)],
                live: vec![1, 2],
                counts: vec![(1, 6), (2, 6)],
                moves: 4,
            },
            Case {
                name: "single node takes all",
                shards: 8,
                initial: vec![(1, 4), (2, 4)],
                live: vec![1],
                counts: vec![(1, 8)],
                moves: 4,
            },
            Case {
                name: "no live node: nothing",
                shards: 8,
                initial: vec![(1, 8)],
                live: vec![],
                counts: vec![(1, 8)],
                moves: 0,
            },
            Case {
                name: "remainder kept where it is",
                shards: 13,
                initial: vec![(1, 5), (2, 4), (3, 4)],
                live: vec![1, 2, 3],
                counts: vec![(1, 5), (2, 4), (3, 4)],
                moves: 0,
            },
        ];
        for c in cases {
            let mut owners = BTreeMap::new();
            let mut shard = 0;
            for (node, count) in &c.initial {
                for _ in 0..*count {
                    owners.insert(shard, *node);
                    shard += 1;
                }
            }
            let moves = plan(&owners, c.shards, &set(&c.live));
            assert_eq!(moves.len(), c.moves, "{}: {moves:?}", c.name);
            for m in &moves {
                assert_eq!(m.from, owners.get(&m.shard).copied(), "{}", c.name);
                assert_ne!(Some(m.to), m.from, "{}: a move that does not move", c.name);
                assert!(c.live.contains(&m.to), "{}", c.name);
            }
            apply(&mut owners, &moves);
            let expected: BTreeMap<u64, usize> = c.counts.into_iter().collect();
            assert_eq!(counts(&owners), expected, "{}", c.name);
            // Planning again on the result is a fixed point.
            assert!(
                plan(&owners, c.shards, &set(&c.live)).is_empty(),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn default_shard_count_join_and_leave_move_a_bounded_number() {
        let shards = crate::shard::DEFAULT_SHARDS;
        let mut owners = BTreeMap::new();
        let first = plan(&owners, shards, &set(&[1, 2, 3]));
        apply(&mut owners, &first);
        let joined = plan(&owners, shards, &set(&[1, 2, 3, 4]));
        // ⌈4096/4⌉ = 1024 shards reach the new node, and nothing else moves.
        assert_eq!(joined.len(), 1024);
        assert!(joined.iter().all(|m| m.to == 4));
        apply(&mut owners, &joined);
        let left = plan(&owners, shards, &set(&[1, 2, 4]));
        // Only node 3's shards move.
        assert_eq!(left.len(), 1024);
        assert!(left.iter().all(|m| m.from == Some(3)));
    }

    #[test]
    fn moves_group_by_destination() {
        let moves = [
            Move {
                shard: 3,
                from: Some(1),
                to: 2,
            },
            Move {
                shard: 1,
                from: None,
                to: 3,
            },
            Move {
                shard: 2,
                from: Some(1),
                to: 2,
            },
        ];
        let grouped: Vec<_> = by_destination(&moves).into_iter().collect();
        assert_eq!(grouped, vec![(2, vec![3, 2]), (3, vec![1])]);
    }
}
