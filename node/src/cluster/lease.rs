//! This node's liveness lease and the shards it covers: what the node may serve right now.
//!
//! [`ServeState`] is pure (times are passed in): the heartbeat loop feeds it grants, the
//! Raft event follower feeds it shard moves, and the ingest path asks [`ServeState::serves`].
//! A shard is served only while all of these hold (DESIGN.md §3):
//! - the applied shard map names this node as owner (checked by the caller, with the epoch);
//! - the shard was covered by the last lease grant: a grant covers the shards this node
//!   owned and had activated when the grant arrived;
//! - that lease has not expired (`until` = send time of the granted heartbeat + lease).
//!
//! A shard gained from a node that may still be serving it is activated only after
//! `activate_after_ms` (lease + drift margin): by then the old owner has either applied the
//! move or its lease has run out. Safety never rests on this timing: control records are
//! fenced by epoch in the state machine. The timing gives the lease log its promise: no two
//! nodes hold an unexpired lease on the same shard.
//!
//! [`LeaseLog`] writes every grant and release as a JSON line, which tests and chaos checkers
//! read to verify that no two nodes' lease intervals on a shard overlap.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::shard::ShardId;

/// What this node may serve, as of the last grant and the applied shard moves.
#[derive(Debug, Default)]
pub struct ServeState {
    /// End of the current lease (`None`: never granted, or lost).
    until: Option<Instant>,
    /// Shards covered by the current lease.
    covered: BTreeSet<ShardId>,
    /// Shards gained from a live owner, with the instant they may be served.
    pending: HashMap<ShardId, Instant>,
}

impl ServeState {
    /// Whether `shard` (owned by this node in the applied map) is covered by a live lease.
    pub fn serves(&self, shard: ShardId, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u) && self.covered.contains(&shard)
    }

    /// Whether the lease is live.
    pub fn has_lease(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// A granted heartbeat: `owned` is the set this node owns in the applied map now; the
    /// lease runs until `until`. Returns the covered set.
    pub fn grant(
        &mut self,
        owned: BTreeSet<ShardId>,
        until: Instant,
        now: Instant,
    ) -> &BTreeSet<ShardId> {
        self.pending.retain(|_, at| *at > now);
        self.covered = owned
            .into_iter()
            .filter(|s| !self.pending.contains_key(s))
            .collect();
        self.until = Some(until);
        &self.covered
    }

    /// Shards assigned to this node; served from `now + delay` (after the next grant).
    pub fn gained(&mut self, shards: &[ShardId], delay: std::time::Duration, now: Instant) {
        if delay.is_zero() {
            for s in shards {
                self.pending.remove(s);
            }
            return;
        }
        for s in shards {
            self.pending.insert(*s, now + delay);
        }
    }

    /// Shards assigned to another node: no longer served, at once. Returns those that were
    /// covered (to log their release and stop their actors).
    pub fn lost(&mut self, shards: &[ShardId]) -> Vec<ShardId> {
        let mut released = Vec::new();
        for s in shards {
            self.pending.remove(s);
            if self.covered.remove(s) {
                released.push(*s);
            }
        }
        released
    }

    /// Drops every shard not in `owned` (after a snapshot replaced the map).
    pub fn retain_owned(&mut self, owned: &BTreeSet<ShardId>) -> Vec<ShardId> {
        let gone: Vec<ShardId> = self.covered.difference(owned).copied().collect();
        self.lost(&gone)
    }
}

/// Compact text of a shard set: "0-1364,2000,2002-2005".
pub fn ranges(shards: impl IntoIterator<Item = ShardId>) -> String {
    let mut out = String::new();
    let mut run: Option<(ShardId, ShardId)> = None;
    let flush = |out: &mut String, (a, b): (ShardId, ShardId)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}-{b}"));
        }
    };
    for s in shards {
        run = match run {
            Some((a, b)) if s == b + 1 => Some((a, s)),
            Some(r) => {
                flush(&mut out, r);
                Some((s, s))
            }
            None => Some((s, s)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    out
}

/// Parses [`ranges`] text back into shards.
pub fn parse_ranges(text: &str) -> Result<Vec<ShardId>, String> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: ShardId = a.parse().map_err(|_| format!("bad shard {a:?}"))?;
        let b: ShardId = b.parse().map_err(|_| format!("bad shard {b:?}"))?;
        out.extend(a..=b);
    }
    Ok(out)
}

/// Append-only JSON-lines log of lease grants and releases (`DIR/leases.log`).
///
/// Lines: `{"node":1,"event":"grant","at_ms":…,"until_ms":…,"shards":"0-99"}` when the covered
/// set changes, `{"node":1,"event":"renew","at_ms":…,"until_ms":…}` for a renewal of the same
/// set as the previous line, and `{"node":1,"event":"release","at_ms":…,"shards":"5,7"}`.
/// Times are wall-clock Unix ms; a grant or renewal covers its shards from `at_ms` to
/// `until_ms` unless released earlier. The file is rotated to `leases.log.1` past
/// [`ROTATE_BYTES`], so it stays bounded (a renewal line is ~90 bytes, 4 a second).
pub struct LeaseLog {
    node: u64,
    path: Option<std::path::PathBuf>,
    file: Option<std::fs::File>,
    written: u64,
    /// Shards of the last grant line since the last release or rotation.
    last: Option<String>,
}

/// Size at which the lease log is rotated.
pub const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

impl LeaseLog {
    pub fn open(node: u64, path: Option<&Path>) -> std::io::Result<Self> {
        let (file, written) = match path {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                let len = f.metadata()?.len();
                (Some(f), len)
            }
            None => (None, 0),
        };
        Ok(Self {
            node,
            path: path.map(Path::to_owned),
            file,
            written,
            last: None,
        })
    }

    pub fn grant(&mut self, at_ms: i64, until_ms: i64, shards: &BTreeSet<ShardId>) {
        let text = ranges(shards.iter().copied());
        let line = if self.last.as_deref() == Some(text.as_str()) {
            serde_json::json!({
                "node": self.node, "event": "renew", "at_ms": at_ms, "until_ms": until_ms,
            })
        } else {
            let line = serde_json::json!({
                "node": self.node, "event": "grant", "at_ms": at_ms, "until_ms": until_ms,
                "shards": text,
            });
            self.last = Some(text);
            line
        };
        self.write(&line);
    }

    pub fn release(&mut self, at_ms: i64, shards: &[ShardId]) {
        if shards.is_empty() {
            return;
        }
        let line = serde_json::json!({
            "node": self.node, "event": "release", "at_ms": at_ms,
            "shards": ranges(shards.iter().copied()),
        });
        self.write(&line);
        self.last = None;
    }

    fn write(&mut self, line: &serde_json::Value) {
        if self.written >= ROTATE_BYTES {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            let text = format!("{line}\n");
            match f.write_all(text.as_bytes()) {
                Ok(()) => self.written += text.len() as u64,
                Err(e) => {
                    // A short write (a full disk) must not leave half a line that the next
                    // line would be glued to: cut the file back to its last whole line.
                    let cut = f.set_len(self.written);
                    tracing::warn!(error = %e, cut_back = cut.is_ok(), "cannot write the lease log");
                }
            }
        }
    }

    /// Moves the log to `<path>.1` and starts a new one (whose first line is a full grant).
    fn rotate(&mut self) {
        let Some(path) = &self.path else {
            return;
        };
        let old = path.with_extension("log.1");
        let reopened = std::fs::rename(path, &old).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        });
        match reopened {
            Ok(f) => {
                self.file = Some(f);
                self.written = 0;
                self.last = None;
            }
            Err(e) => tracing::warn!(error = %e, "cannot rotate the lease log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set(s: &[ShardId]) -> BTreeSet<ShardId> {
        s.iter().copied().collect()
    }

    #[test]
    fn a_shard_is_served_only_under_a_live_lease_that_covers_it() {
        let t0 = Instant::now();
        let lease = Duration::from_millis(1500);
        let mut s = ServeState::default();
        assert!(!s.serves(1, t0), "no grant yet");
        s.grant(set(&[1, 2]), t0 + lease, t0);
        assert!(s.serves(1, t0));
        assert!(!s.serves(3, t0), "not owned when granted");
        assert!(!s.serves(1, t0 + lease), "expired");
        // Moved away: not served at once, even with the lease still live.
        assert_eq!(s.lost(&[2, 3]), vec![2]);
        assert!(!s.serves(2, t0));
        // Gained from a live owner: not covered before the delay has passed.
        let t1 = t0 + Duration::from_millis(100);
        s.gained(&[4], Duration::from_millis(1750), t1);
        s.grant(set(&[1, 4]), t1 + lease, t1);
        assert!(!s.serves(4, t1));
        let t2 = t1 + Duration::from_millis(1750);
        s.grant(set(&[1, 4]), t2 + lease, t2 + Duration::from_millis(1));
        assert!(s.serves(4, t2 + Duration::from_millis(1)));
        // Gained from a dead owner: covered at the next grant.
        s.gained(&[5], Duration::ZERO, t2);
        s.grant(set(&[1, 4, 5]), t2 + lease, t2);
        assert!(s.serves(5, t2));
        assert_eq!(s.retain_owned(&set(&[1])), vec![4, 5]);
    }

    #[test]
    fn renewals_of_the_same_set_are_short_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("leases.log");
        let mut log = LeaseLog::open(7, Some(&path)).expect("open");
        log.grant(1, 10, &set(&[1, 2]));
        log.grant(2, 11, &set(&[1, 2]));
        log.release(3, &[2]);
        log.grant(4, 12, &set(&[1]));
        log.grant(5, 13, &set(&[1]));
        let text = std::fs::read_to_string(&path).expect("read");
        let events: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                format!(
                    "{} {}",
                    v["event"].as_str().unwrap_or(""),
                    v["shards"].as_str().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            events,
            ["grant 1-2", "renew -", "release 2", "grant 1", "renew -"]
        );
    }

    #[test]
    fn ranges_round_trip() {
        let cases: &[(&[ShardId], &str)] = &[
            (&[], ""),
            (&[7], "7"),
            (&[0, 1, 2, 3], "0-3"),
            (&[0, 1, 3, 5, 6, 7, 10], "0-1,3,5-7,10"),
        ];
        for (shards, text) in cases {
            assert_eq!(ranges(shards.iter().copied()), *text);
            assert_eq!(parse_ranges(text).expect("parse"), shards.to_vec());
        }
        assert!(parse_ranges("1-x").is_err());
    }
}
