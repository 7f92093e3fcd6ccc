//! The error of the control plane's API, [`ControlError`].
//!
//! Variants say whether a caller may retry: `Unavailable`, `NotLeader` and `Stopped` are
//! transient (no leader yet, no quorum, timeout, another node leads, this node is going
//! away); everything else is fatal. The API
//! layer maps them to gRPC codes in its one mapping function (UNAVAILABLE for the retryable
//! ones). Refusals of the state machine (stale epoch, unknown alarm …) are not errors: they
//! are committed answers, `ControlResponse::Rejected`.

use std::path::PathBuf;

use super::types::{NodeId, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Retryable: no leader, no quorum, or the operation did not finish in time. A timed-out
    /// write may still be committed later; commands are designed to be safe to repeat.
    #[error("control plane unavailable: {reason}")]
    Unavailable { reason: String },

    /// Retryable on the leader: this node is not the leader (writes are forwarded there once
    /// the peer transport exists).
    #[error("not the control-plane leader; leader is node {leader} at {addr}")]
    NotLeader { leader: NodeId, addr: String },

    /// Retryable on another node: this node's control plane was shut down.
    #[error("control plane stopped")]
    Stopped,

    /// Fatal: invalid arguments or configuration given to the control plane.
    #[error("invalid control-plane configuration: {reason}")]
    Config { reason: String },

    /// Fatal: the data directory holds a shard map of another size than configured. The shard
    /// count is fixed for the life of a cluster (DESIGN.md §3).
    #[error("the control plane holds {stored} shards but {configured} are configured")]
    ShardCountMismatch { stored: usize, configured: u32 },

    /// Fatal: the data directory could not be prepared.
    #[error("control-plane directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Fatal: reading or opening the on-disk stores failed.
    #[error("control-plane storage: {0}")]
    Storage(#[from] StoreError),

    /// Fatal: openraft stopped with an error (storage failure, panic) or broke an invariant.
    #[error("control plane failed: {reason}")]
    Fatal { reason: String },
}

impl ControlError {
    /// Whether repeating the call (here, on the leader or on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ControlError::Unavailable { .. }
                | ControlError::NotLeader { .. }
                | ControlError::Stopped
        )
    }

    pub fn fatal(reason: impl std::fmt::Display) -> Self {
        ControlError::Fatal {
            reason: reason.to_string(),
        }
    }

    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        ControlError::Unavailable {
            reason: reason.to_string(),
        }
    }
}

impl From<openraft::error::Fatal<NodeId>> for ControlError {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        match e {
            openraft::error::Fatal::Stopped => ControlError::Stopped,
            other => ControlError::fatal(other),
        }
    }
}

impl From<redb::DatabaseError> for ControlError {
    fn from(e: redb::DatabaseError) -> Self {
        ControlError::Storage(e.into())
    }
}
