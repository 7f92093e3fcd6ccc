//! The leader's per-term view of the cluster's heartbeats, and when it may take over from
//! earlier leaders (see [`super::supervisor`] and [`crate::raft::contact`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The leader's heartbeat bookkeeping, reset at every new term.
#[derive(Debug, Default)]
pub(super) struct View {
    pub(super) term: u64,
    /// When this node started leading in `term`.
    pub(super) since: Option<Instant>,
    pub(super) last_heard: HashMap<u64, Instant>,
    /// A node must have applied at least this index before its lease is renewed.
    pub(super) min_applied: HashMap<u64, u64>,
    /// Nodes with a move away from them being proposed: refused until it is committed.
    pub(super) moving_from: HashSet<u64>,
    /// When every lease granted under earlier terms has certainly expired.
    pub(super) takeover: Option<Instant>,
    /// Per node reporting in this term: a bound on its last acknowledgement of an earlier
    /// leader (the leader's clock).
    pub(super) prior_acks: HashMap<u64, Instant>,
}

impl View {
    /// When `id` counts as last heard: its last heartbeat in this term or, for a node not
    /// heard yet, `failure_timeout` before the takeover instant (so it is declared dead only
    /// once no earlier lease can be in force).
    pub(super) fn heard(&self, id: u64, failure_timeout: Duration) -> Option<Instant> {
        self.last_heard.get(&id).copied().or_else(|| {
            let takeover = self.takeover?;
            takeover.checked_sub(failure_timeout).or(self.since)
        })
    }

    /// Moves the takeover instant earlier once a majority of `voters` (this node, `me`, with
    /// bound `mine`, included) reported: `grace` after the latest of their bounds.
    pub(super) fn tighten(
        &mut self,
        voters: &BTreeSet<u64>,
        me: u64,
        mine: Instant,
        grace: Duration,
    ) {
        let reports: Vec<Instant> = voters
            .iter()
            .filter_map(|id| match *id == me {
                true => Some(mine),
                false => self.prior_acks.get(id).copied(),
            })
            .collect();
        if reports.len() * 2 <= voters.len() {
            return;
        }
        let Some(bound) = reports.into_iter().max().map(|b| b + grace) else {
            return;
        };
        if self.takeover.is_some_and(|t| bound < t) {
            let earlier = self.takeover.map(|t| t.saturating_duration_since(bound));
            tracing::info!(
                term = self.term,
                ?earlier,
                "takeover instant moved earlier by a quorum's reports"
            );
            self.takeover = Some(bound);
        }
    }
}

/// A lease renewal as the leader receives it.
#[derive(Clone, Copy, Debug)]
pub struct Renewal {
    pub node: u64,
    /// Highest log index the node has applied.
    pub applied: u64,
    /// The Raft term the node is in.
    pub term: u64,
    /// At or after the node's last acknowledgement of a leader of a lower term (this clock).
    pub prior_ack: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_table() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let grace = Duration::from_millis(1200);
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        // (case, reports from other nodes (node, ms), my bound ms, expected takeover ms)
        type Case<'a> = (&'a str, &'a [(u64, u64)], u64, u64);
        let cases: &[Case] = &[
            ("no report: the election bound stays", &[], 100, 2000),
            (
                "one other voter makes a majority of 3",
                &[(2, 150)],
                100,
                1350,
            ),
            (
                "the latest bound of the majority counts",
                &[(2, 50)],
                100,
                1300,
            ),
            ("all three: the latest", &[(2, 150), (3, 400)], 100, 1600),
            ("a learner's report does not count", &[(4, 10)], 100, 2000),
            (
                "never later than the election bound",
                &[(2, 1500)],
                100,
                2000,
            ),
        ];
        for (case, reports, mine, want) in cases {
            let mut v = View {
                takeover: Some(ms(2000)),
                ..View::default()
            };
            for (node, at) in reports.iter() {
                v.prior_acks.insert(*node, ms(*at));
            }
            v.tighten(&voters, 1, ms(*mine), grace);
            assert_eq!(v.takeover, Some(ms(*want)), "{case}");
        }
    }

    #[test]
    fn a_node_not_heard_counts_as_heard_failure_timeout_before_takeover() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let failure = Duration::from_millis(1500);
        let mut v = View {
            since: Some(t0),
            takeover: Some(t0 + Duration::from_millis(1200)),
            ..View::default()
        };
        assert_eq!(v.heard(7, failure), Some(t0 - Duration::from_millis(300)));
        v.last_heard.insert(7, t0 + Duration::from_millis(50));
        assert_eq!(v.heard(7, failure), Some(t0 + Duration::from_millis(50)));
    }
}
