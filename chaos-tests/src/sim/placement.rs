//! The placement rules the simulated leader applies (pure): give a down node's shards to the
//! least-loaded live nodes, and rebalance toward equal shares with minimal movement. Modelled
//! on DESIGN.md §3 ("balanced, minimal movement on join/leave"); this is the model's own code,
//! not `node/src/shard/placement.rs`.

use std::collections::BTreeMap;

/// shard → owner.
pub type Map = Vec<u64>;

fn counts(map: &Map, live: &[u64]) -> BTreeMap<u64, usize> {
    let mut c: BTreeMap<u64, usize> = live.iter().map(|n| (*n, 0)).collect();
    for owner in map {
        if let Some(n) = c.get_mut(owner) {
            *n += 1;
        }
    }
    c
}

fn least_loaded(c: &BTreeMap<u64, usize>) -> Option<u64> {
    c.iter().min_by_key(|(n, k)| (**k, **n)).map(|(n, _)| *n)
}

/// The shards that move (shard, new owner) so that no shard stays on a node outside `live`
/// and the shares differ by at most one. Shards of dead nodes move first; then shards of the
/// most-loaded node move to the least-loaded one until balanced.
pub fn moves(map: &Map, live: &[u64]) -> Vec<(usize, u64)> {
    if live.is_empty() {
        return Vec::new();
    }
    let mut map = map.clone();
    let mut c = counts(&map, live);
    let mut out = Vec::new();
    for (shard, owner) in map.iter_mut().enumerate() {
        if !live.contains(owner) {
            let to = least_loaded(&c).expect("live is not empty");
            *c.get_mut(&to).expect("live node") += 1;
            *owner = to;
            out.push((shard, to));
        }
    }
    loop {
        let (max_node, max) = c
            .iter()
            .max_by_key(|(n, k)| (**k, std::cmp::Reverse(**n)))
            .map(|(n, k)| (*n, *k))
            .expect("live");
        let min_node = least_loaded(&c).expect("live");
        if max - c[&min_node] <= 1 {
            return out;
        }
        let shard = map
            .iter()
            .rposition(|o| *o == max_node)
            .expect("max node owns a shard");
        map[shard] = min_node;
        *c.get_mut(&max_node).expect("live") -= 1;
        *c.get_mut(&min_node).expect("live") += 1;
        out.push((shard, min_node));
    }
}

/// Whether every shard is on a live node and the shares differ by at most one.
pub fn balanced(map: &Map, live: &[u64]) -> bool {
    let c = counts(map, live);
    let (lo, hi) = (c.values().min().copied(), c.values().max().copied());
    map.iter().all(|o| live.contains(o)) && matches!((lo, hi), (Some(lo), Some(hi)) if hi - lo <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(map: &Map, moves: &[(usize, u64)]) -> Map {
        let mut m = map.clone();
        for (s, o) in moves {
            m[*s] = *o;
        }
        m
    }

    #[test]
    fn table() {
        // (name, map, live, moves expected)
        let cases: Vec<(&str, Map, Vec<u64>, usize)> = vec![
            ("already balanced", vec![1, 2, 3, 1, 2, 3], vec![1, 2, 3], 0),
            (
                "dead node's shards move",
                vec![1, 2, 3, 1, 2, 3],
                vec![1, 2],
                2,
            ),
            (
                "a joiner takes its share",
                vec![1, 2, 1, 2, 1, 2],
                vec![1, 2, 3],
                2,
            ),
            ("everything on one node", vec![1; 8], vec![1, 2], 4),
            ("nobody alive", vec![1, 2], vec![], 0),
        ];
        for (name, map, live, want) in cases {
            let m = moves(&map, &live);
            assert_eq!(m.len(), want, "{name}: {m:?}");
            if !live.is_empty() {
                assert!(balanced(&apply(&map, &m), &live), "{name}");
            }
        }
        assert!(!balanced(&vec![1, 1, 1, 2], &[1, 2]));
        assert!(!balanced(&vec![1, 3], &[1, 2]));
    }
}
