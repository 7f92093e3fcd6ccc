//! The openraft type configuration of the control plane, and small shared helpers.
//!
//! Application data is [`Entry`] (a [`ControlCommand`](super::command::ControlCommand) with its
//! format version); the answer is [`ControlResponse`]. Node ids are `u64`, nodes are
//! [`BasicNode`]s whose `addr` is the peer gRPC address. Snapshots are whole byte buffers
//! (`Cursor<Vec<u8>>`; the `generic-snapshot-data` feature is off).
//!
//! This module holds no logic beyond turning storage errors into openraft's error type.

use std::io::Cursor;

use openraft::{AnyError, BasicNode, StorageError, StorageIOError};

use super::command::{ControlResponse, Entry};

openraft::declare_raft_types!(
    /// Types of the control-plane Raft group.
    pub TypeConfig:
        D = Entry,
        R = ControlResponse,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Id of a node in the control-plane group.
pub type NodeId = u64;

/// A Raft log entry of this group (openraft's envelope around [`Entry`]).
pub type RaftEntry = openraft::Entry<TypeConfig>;
/// Log id (leader term + index) of this group.
pub type LogId = openraft::LogId<NodeId>;
/// A vote of this group.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored with the log id that wrote it.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// Snapshot metadata of this group.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
/// A snapshot of this group.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The Raft handle of this group.
pub type Raft = openraft::Raft<TypeConfig>;
/// Storage errors as openraft wants them.
pub type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// A failure of the redb-backed stores: the database itself, or undecodable stored bytes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redb: {0}")]
    Db(#[from] redb::Error),
    #[error("stored value does not decode: {0}")]
    Codec(#[from] serde_json::Error),
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Which storage operation failed, so the openraft error names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    WriteLogs,
    WriteVote,
    ReadStateMachine,
    WriteStateMachine,
    ReadSnapshot,
    WriteSnapshot,
}

/// Turns any error into openraft's [`StorageError`]. Openraft treats every storage error as
/// fatal and stops the node, which is what we want for a failed fsync or corrupt data.
pub(crate) fn storage_err(op: Op, e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    let e = AnyError::new(&e);
    let io = match op {
        Op::WriteLogs => StorageIOError::write_logs(e),
        Op::WriteVote => StorageIOError::write_vote(e),
        Op::ReadStateMachine => StorageIOError::read_state_machine(e),
        Op::WriteStateMachine => StorageIOError::write_state_machine(e),
        Op::ReadSnapshot => StorageIOError::read_snapshot(None, e),
        Op::WriteSnapshot => StorageIOError::write_snapshot(None, e),
    };
    io.into()
}

/// Runs blocking storage work (redb commits fsync) off the async worker threads; a failure
/// is reported to openraft as a failure of `op`.
pub(crate) async fn blocking<T, F>(op: Op, f: F) -> StorageResult<T>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res.map_err(|e| storage_err(op, e)),
        Err(join) => Err(storage_err(op, join)),
    }
}
