//! Checkers: one invariant per file, each a pure function from recorded histories
//! ([`crate::history`]) to the violations it finds. Each file says where its invariant comes
//! from (a section of DESIGN.md or a promise in README/ARCHITECTURE) and is unit-tested with
//! tables that include histories which MUST produce a violation.
//!
//! - [`acked_stored`]: every PUBACKed (device, seq) is stored after healing.
//! - [`lease_overlap`]: no shard leased to two nodes at overlapping times.
//! - [`rules_converge`]: rules converge to the same versions; acknowledged writes survive.
//! - [`single_active_alarm`]: never two active alarms for one (device, rule).
//! - [`recovery`]: writes succeed again within a stated bound after healing.

pub mod acked_stored;
pub mod lease_overlap;
pub mod recovery;
pub mod rules_converge;
pub mod single_active_alarm;

/// One broken invariant, with enough detail to start a post-mortem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker's name (its file name).
    pub checker: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.checker, self.detail)
    }
}
