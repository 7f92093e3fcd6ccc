//! When this node last acknowledged a Raft leader, per term: what a new leader needs to know
//! how long leases granted by its predecessors can still be in force.
//!
//! A lease is granted only after the granting leader confirmed its leadership with a quorum,
//! by a round that started after the renewing heartbeat was sent (see
//! `cluster::supervisor`). Any two quorums intersect, so for every lease granted in a term
//! below `T`, some node of any quorum acknowledged an AppendEntries of that term *after* the
//! lease's heartbeat was sent. Once a node has voted or followed in term `T` it refuses every
//! lower-term AppendEntries, so its last acknowledgement of a lower term is final. A leader of
//! `T` that hears, from a quorum of voters already in `T`, an upper bound on that last
//! acknowledgement therefore knows every earlier lease expired `lease + drift` after the
//! largest bound, usually long before a failure timeout counted from its own election.
//!
//! The bound must never be early: an acknowledgement is recorded when the answer is ready
//! (after the fact), calls still in flight count as "now", and a process that restarted
//! reports its start (it may have acknowledged anything before it).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Terms kept; older ones can only lower a bound that a newer term already raises.
const KEPT_TERMS: usize = 8;

#[derive(Debug)]
pub struct LeaderContact {
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Term → when an AppendEntries of that term was last acknowledged.
    acks: BTreeMap<u64, Instant>,
    /// Term → AppendEntries calls of that term being processed.
    in_flight: BTreeMap<u64, u32>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl LeaderContact {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An AppendEntries of `term` starts being processed; it counts as in flight until the
    /// returned call ends or is dropped (a dropped call's answer never reached its sender).
    pub fn begin(&self, term: u64) -> Call<'_> {
        *self.state().in_flight.entry(term).or_default() += 1;
        Call {
            contact: self,
            term,
            open: true,
        }
    }

    fn finish(&self, term: u64, acknowledged_at: Option<Instant>) {
        let mut s = self.state();
        if let Some(n) = s.in_flight.get_mut(&term) {
            *n -= 1;
            if *n == 0 {
                s.in_flight.remove(&term);
            }
        }
        if let Some(now) = acknowledged_at {
            let at = s.acks.entry(term).or_insert(now);
            *at = (*at).max(now);
            while s.acks.len() > KEPT_TERMS {
                s.acks.pop_first();
            }
        }
    }

    /// This node, leading `term`, granted a lease at `now`: its own leadership counts as
    /// acknowledged then (a deposed leader's report must cover the leases it granted itself).
    pub fn led(&self, term: u64, now: Instant) {
        let mut s = self.state();
        let at = s.acks.entry(term).or_insert(now);
        *at = (*at).max(now);
        while s.acks.len() > KEPT_TERMS {
            s.acks.pop_first();
        }
    }

    /// A time at or after this node's last acknowledgement of any leader of a term below
    /// `term`, read at `now`.
    pub fn last_before(&self, term: u64, now: Instant) -> Instant {
        let s = self.state();
        if s.in_flight.range(..term).next().is_some() {
            return now;
        }
        s.acks
            .range(..term)
            .map(|(_, at)| *at)
            .max()
            .unwrap_or(self.started)
            .max(self.started)
    }
}

/// One AppendEntries being processed (see [`LeaderContact::begin`]).
pub struct Call<'a> {
    contact: &'a LeaderContact,
    term: u64,
    open: bool,
}

impl Call<'_> {
    /// The call ended at `now`, acknowledging the sender's leadership or not.
    pub fn end(mut self, acknowledged: bool, now: Instant) {
        self.open = false;
        self.contact.finish(self.term, acknowledged.then_some(now));
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.open {
            self.contact.finish(self.term, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bounds_table() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (case, calls: (term, acknowledged, end ms or None while still running),
        //  asked term, expected bound in ms after t0 when read at 1000 ms)
        type Call = (u64, bool, Option<u64>);
        let cases: &[(&str, &[Call], u64, u64)] = &[
            ("nothing acknowledged: the process start", &[], 5, 0),
            (
                "last ack of a lower term",
                &[(3, true, Some(110)), (3, true, Some(210))],
                4,
                210,
            ),
            (
                "highest of several lower terms",
                &[(2, true, Some(310)), (3, true, Some(220))],
                4,
                310,
            ),
            (
                "acks of the asked term do not count",
                &[(3, true, Some(110)), (4, true, Some(510))],
                4,
                110,
            ),
            (
                "refused calls do not count",
                &[(3, true, Some(110)), (3, false, Some(510))],
                4,
                110,
            ),
            (
                "a lower-term call in flight: now",
                &[(3, true, Some(110)), (3, true, None)],
                4,
                1000,
            ),
            (
                "a same-term call in flight is fine",
                &[(3, true, Some(110)), (4, true, None)],
                4,
                110,
            ),
        ];
        for (case, calls, term, want) in cases {
            let c = LeaderContact::new(t0);
            let mut running = Vec::new();
            for (t, ok, end) in calls.iter() {
                let call = c.begin(*t);
                match end {
                    Some(end) => call.end(*ok, at(*end)),
                    None => running.push(call),
                }
            }
            assert_eq!(c.last_before(*term, at(1000)), at(*want), "{case}");
        }
    }

    #[test]
    fn a_deposed_leader_reports_its_last_grant() {
        let t0 = Instant::now();
        let c = LeaderContact::new(t0);
        c.led(2, t0 + Duration::from_millis(700));
        assert_eq!(
            c.last_before(3, t0 + Duration::from_secs(1)),
            t0 + Duration::from_millis(700)
        );
    }

    #[test]
    fn a_dropped_call_is_no_longer_in_flight() {
        let t0 = Instant::now();
        let c = LeaderContact::new(t0);
        c.begin(3).end(true, t0 + Duration::from_millis(50));
        drop(c.begin(3));
        assert_eq!(
            c.last_before(4, t0 + Duration::from_secs(1)),
            t0 + Duration::from_millis(50)
        );
    }

    #[test]
    fn old_terms_are_dropped_but_the_bound_stays() {
        let t0 = Instant::now();
        let c = LeaderContact::new(t0);
        for term in 1..=20u64 {
            c.begin(term)
                .end(true, t0 + Duration::from_millis(term * 10));
        }
        assert_eq!(
            c.last_before(21, t0 + Duration::from_secs(1)),
            t0 + Duration::from_millis(200)
        );
    }
}
