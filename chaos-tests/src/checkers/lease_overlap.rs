//! Invariant: no shard is leased to two nodes at overlapping times.
//!
//! Source: DESIGN.md §3 "Sharding and ownership (fixed)": "a node that cannot renew stops
//! serving all its shards before the leader may reassign them"; ARCHITECTURE.md: "two leases
//! never cover one shard at once; every grant and release is logged to `DIR/leases.log`".
//!
//! Input: the text of each node's lease log (`leases.log.1` then `leases.log`), JSON lines
//! `{"node":1,"event":"grant","at_ms":…,"until_ms":…,"shards":"0-99"}`, `"renew"` (same
//! set as the previous grant) and `"release"` (`shards`). A grant or renewal covers its
//! shards from `at_ms` to `until_ms` unless released earlier; one logged after its own
//! `until_ms` (an answer that arrived late) covers nothing.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use super::Violation;

/// One lease interval of a node on a shard, wall-clock ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub node: u64,
    pub from: i64,
    pub to: i64,
}

/// `"0-3,7"` → `[0, 1, 2, 3, 7]` (the lease log's shard set format).
pub fn parse_ranges(text: &str) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.parse().with_context(|| format!("bad shard {a:?}"))?;
        let b: u32 = b.parse().with_context(|| format!("bad shard {b:?}"))?;
        out.extend(a..=b);
    }
    Ok(out)
}

/// Per shard, the intervals in which a node held an unexpired lease covering it. Each item
/// of `logs` is one node's whole log text; consecutive grants of one node merge.
pub fn intervals(logs: &[String]) -> anyhow::Result<BTreeMap<u32, Vec<Interval>>> {
    let mut out: BTreeMap<u32, Vec<Interval>> = BTreeMap::new();
    for text in logs {
        let mut open: BTreeMap<u32, usize> = BTreeMap::new();
        let mut granted: Vec<u32> = Vec::new();
        // A last line without its newline that does not parse was torn by a crash
        // mid-write: the grant it describes was not written, so it is skipped. A bad line
        // anywhere else is an error.
        let torn_tail = !text.ends_with('\n')
            && text.lines().count() > 1
            && text
                .lines()
                .last()
                .is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_err());
        let whole = text.lines().count() - usize::from(torn_tail);
        for line in text.lines().take(whole).filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("bad lease line {line}"))?;
            let node = v["node"].as_u64().context("lease line without node")?;
            let at = v["at_ms"].as_i64().context("lease line without at_ms")?;
            let event = v["event"].as_str().context("lease line without event")?;
            let shards = match event {
                "renew" => granted.clone(),
                _ => parse_ranges(v["shards"].as_str().context("lease line without shards")?)?,
            };
            match event {
                "grant" | "renew" => {
                    let until = v["until_ms"].as_i64().context("grant without until_ms")?;
                    // An answer that arrived after its lease had run out covers nothing.
                    let live = if until > at { &shards[..] } else { &[] };
                    for s in live {
                        let list = out.entry(*s).or_default();
                        match open.get(s).map(|i| &mut list[*i]) {
                            Some(iv) if iv.to >= at => iv.to = iv.to.max(until),
                            _ => {
                                list.push(Interval {
                                    node,
                                    from: at,
                                    to: until,
                                });
                                open.insert(*s, list.len() - 1);
                            }
                        }
                    }
                    granted = shards;
                }
                "release" => {
                    for s in &shards {
                        if let Some(i) = open.remove(s)
                            && let Some(iv) = out.get_mut(s).and_then(|l| l.get_mut(i))
                        {
                            iv.to = iv.to.min(at);
                        }
                    }
                    granted.retain(|s| !shards.contains(s));
                }
                other => bail!("unknown lease event {other:?}"),
            }
        }
    }
    Ok(out)
}

/// The first pair of intervals of different nodes that overlap on a shard, if any.
pub fn first_overlap(
    intervals: &BTreeMap<u32, Vec<Interval>>,
) -> Option<(u32, Interval, Interval)> {
    for (shard, list) in intervals {
        let mut sorted = list.clone();
        sorted.sort_by_key(|i| (i.from, i.to));
        // The interval reaching furthest so far: a later one of another node must start at or
        // after its end.
        let mut reach: Option<Interval> = None;
        for b in sorted {
            match reach {
                Some(a) if a.node != b.node && b.from < a.to => return Some((*shard, a, b)),
                Some(a) if b.to <= a.to => {}
                _ => reach = Some(b),
            }
        }
    }
    None
}

/// A violation for the first overlap, and one when no lease was granted at all (a log that
/// shows nothing cannot vouch for anything).
pub fn check(logs: &[String]) -> Vec<Violation> {
    let found = match intervals(logs) {
        Ok(found) => found,
        Err(e) => {
            return vec![Violation {
                checker: "lease_overlap",
                detail: format!("unreadable lease log: {e:#}"),
            }];
        }
    };
    if found.is_empty() {
        return vec![Violation {
            checker: "lease_overlap",
            detail: "no lease was ever granted: the lease logs are empty".into(),
        }];
    }
    first_overlap(&found)
        .map(|(shard, a, b)| Violation {
            checker: "lease_overlap",
            detail: format!(
                "shard {shard}: node {} held [{}, {}) and node {} held [{}, {})",
                a.node, a.from, a.to, b.node, b.from, b.to
            ),
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(node: u64, at: i64, until: i64, shards: &str) -> String {
        format!(
            r#"{{"node":{node},"event":"grant","at_ms":{at},"until_ms":{until},"shards":"{shards}"}}"#
        )
    }
    fn renew(node: u64, at: i64, until: i64) -> String {
        format!(r#"{{"node":{node},"event":"renew","at_ms":{at},"until_ms":{until}}}"#)
    }
    fn release(node: u64, at: i64, shards: &str) -> String {
        format!(r#"{{"node":{node},"event":"release","at_ms":{at},"shards":"{shards}"}}"#)
    }

    #[test]
    fn parse_ranges_table() {
        for (text, want) in [("", vec![]), ("3", vec![3]), ("0-2,5", vec![0, 1, 2, 5])] {
            assert_eq!(parse_ranges(text).unwrap(), want, "{text}");
        }
        assert!(parse_ranges("1-x").is_err());
    }

    #[test]
    fn table() {
        // (name, log of node 1, log of node 2, violation expected)
        let cases: Vec<(&str, Vec<String>, Vec<String>, bool)> = vec![
            (
                "disjoint shards",
                vec![grant(1, 0, 100, "0-9")],
                vec![grant(2, 0, 100, "10-19")],
                false,
            ),
            (
                "handover after expiry",
                vec![grant(1, 0, 100, "0-9")],
                vec![grant(2, 100, 200, "0-9")],
                false,
            ),
            (
                "overlap in time",
                vec![grant(1, 0, 100, "0-9")],
                vec![grant(2, 99, 200, "5")],
                true,
            ),
            (
                "renewal extends into the new owner's lease",
                vec![grant(1, 0, 100, "0-9"), renew(1, 90, 190)],
                vec![grant(2, 150, 250, "3")],
                true,
            ),
            (
                "release ends the lease early",
                vec![grant(1, 0, 100, "0-9"), release(1, 40, "0-9")],
                vec![grant(2, 50, 150, "0-9")],
                false,
            ),
            (
                "released shards are not renewed",
                vec![
                    grant(1, 0, 100, "0-1"),
                    release(1, 40, "1"),
                    renew(1, 90, 190),
                ],
                vec![grant(2, 50, 150, "1")],
                false,
            ),
            (
                // Seen in `membership` seed 2: a renewal answered 6 s late.
                "a renewal logged after its own expiry covers nothing",
                vec![grant(1, 0, 100, "0-9"), renew(1, 300, 110)],
                vec![grant(2, 120, 400, "0-9")],
                false,
            ),
            (
                "a late renewal does not hide a live one that follows",
                vec![
                    grant(1, 0, 100, "0-9"),
                    renew(1, 300, 110),
                    renew(1, 310, 500),
                ],
                vec![grant(2, 120, 400, "0-9")],
                true,
            ),
        ];
        for (name, a, b, bad) in cases {
            let logs = vec![a.join("\n"), b.join("\n")];
            assert_eq!(!check(&logs).is_empty(), bad, "{name}");
        }
    }

    #[test]
    fn empty_or_broken_logs_are_violations() {
        assert_eq!(check(&[String::new()]).len(), 1);
        assert_eq!(check(&["{not json".to_owned()]).len(), 1);
        // A bad line followed by more lines is not a torn tail.
        let g = grant(1, 0, 1_000, "0-3");
        assert_eq!(check(&[format!("{{not json\n{g}\n")]).len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let g = grant(1, 0, 1_000, "0-3");
        let iv = intervals(&[format!("{g}\n{{\"node\":1,\"ev")]).unwrap();
        assert_eq!(iv.len(), 4);
        assert!(check(&[format!("{g}\n{{\"node\":1,\"ev")]).is_empty());
    }
}
