//! What one simulated run records, shared by every host and kept outside them so it survives
//! host crashes: applied entries per node, leaders seen per term, acknowledged client writes,
//! and the event trace whose hash proves determinism.
//!
//! Recording only: the invariants are checked afterwards by [`super::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use starling_node::raft::types::Vote;
use starling_node::raft::{ControlCommand, ControlResponse};
use starling_node::shard::ShardId;

/// One entry as a node applied it.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedEntry {
    /// Term of the entry's log id.
    pub term: u64,
    /// [`fnv`] of the serde_json of the entry's payload (blank, membership or command).
    pub hash: u64,
    /// The command, for application entries.
    pub command: Option<ControlCommand>,
    /// What `apply` answered (`Unchanged` for blank and membership entries).
    pub response: ControlResponse,
    /// The shard epochs of the node's state right after this entry.
    pub epochs: BTreeMap<ShardId, u64>,
    /// The most alarms with status Active for one (device, rule) right after this entry.
    pub max_active: usize,
}

/// A write the client saw acknowledged (committed and applied on the leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Log index of the write.
    pub index: u64,
    /// Term of its leader id.
    pub term: u64,
    /// [`fnv`] of the serde_json of the payload, as [`AppliedEntry::hash`].
    pub hash: u64,
}

/// Everything a run records.
#[derive(Default, Debug)]
pub struct Observations {
    /// node → index → what it applied there (first application; later ones are compared).
    pub applied: BTreeMap<u64, BTreeMap<u64, AppliedEntry>>,
    /// A node that applied a different entry or answer at an index it had applied before
    /// (after a restart, the state machine is rebuilt from the log).
    pub reapplied_differently: Vec<String>,
    /// term → nodes whose metrics reported them leader in that term.
    pub leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// node → the last vote it saved.
    pub last_votes: BTreeMap<u64, Vote>,
    /// A node that saved a vote smaller than (or not comparable to) its previous one.
    pub vote_regressions: Vec<String>,
    /// term → leaders of the committed votes the nodes saved in that term.
    pub voted_leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// The latest leader any node's metrics reported (faults aimed at "the leader" use it).
    pub last_leader: Option<u64>,
    /// Writes the client saw acknowledged.
    pub acked: Vec<Acked>,
    /// Voters the client knows of: the initial ones, then the joined node once its membership
    /// change was acknowledged (convergence is required of these).
    pub voters: u64,
    /// Index of the client's final write, once acknowledged.
    pub barrier: Option<u64>,
    /// Nodes that failed to start (openraft refused the stored state, for example).
    pub start_errors: Vec<String>,
    /// Running hash of (virtual ms, node, event) in the order they happened.
    pub trace: u64,
    /// Number of events folded into `trace`.
    pub events: u64,
}

impl Observations {
    /// Folds one event into the trace hash.
    pub fn trace(&mut self, ms: u128, node: u64, event: &str) {
        let line = format!("{ms} {node} {event};");
        self.trace = fnv_from(self.trace, line.as_bytes());
        self.events += 1;
    }

    /// Records that `node` applied `entry` at `index`.
    pub fn applied(&mut self, node: u64, index: u64, entry: AppliedEntry) {
        let mine = self.applied.entry(node).or_default();
        match mine.get(&index) {
            Some(before) if *before != entry => self.reapplied_differently.push(format!(
                "node {node} re-applied index {index} as term {} hash {:x} answering {:?}, \
                 first as term {} hash {:x} answering {:?}",
                entry.term, entry.hash, entry.response, before.term, before.hash, before.response
            )),
            Some(_) => {}
            None => {
                mine.insert(index, entry);
            }
        }
    }

    /// The highest index `node` applied.
    pub fn last_applied(&self, node: u64) -> u64 {
        self.applied
            .get(&node)
            .and_then(|m| m.keys().next_back().copied())
            .unwrap_or(0)
    }
}

/// Observations shared by the hosts (a std Mutex: never held across an await).
#[derive(Clone, Default, Debug)]
pub struct Shared(Arc<Mutex<Observations>>);

impl Shared {
    /// Locks the observations.
    pub fn lock(&self) -> MutexGuard<'_, Observations> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `bytes`: stable across runs, builds and platforms (unlike `DefaultHasher`).
pub fn fnv(bytes: &[u8]) -> u64 {
    fnv_from(FNV_OFFSET, bytes)
}

fn fnv_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// [`fnv`] of the serde_json of `value`.
pub fn hash_of<T: Serialize>(value: &T) -> u64 {
    fnv(&serde_json::to_vec(value).expect("raft payloads serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_different_reapplication_is_recorded() {
        let e = AppliedEntry {
            term: 1,
            hash: 7,
            command: None,
            response: ControlResponse::Unchanged,
            epochs: BTreeMap::new(),
            max_active: 0,
        };
        let mut o = Observations::default();
        o.applied(1, 3, e.clone());
        o.applied(1, 3, e.clone());
        assert!(o.reapplied_differently.is_empty());
        o.applied(1, 3, AppliedEntry { hash: 8, ..e });
        assert_eq!(o.reapplied_differently.len(), 1);
        assert_eq!(o.last_applied(1), 3);
    }
}
