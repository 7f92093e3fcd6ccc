//! Telemetry storage: the narrow trait every backend implements, and the backends.
//!
//! Only this module imports storage engines (redb, fjall, scylla). It knows nothing of MQTT,
//! actors, Raft or gRPC.
//!
//! - [`TelemetryStore`]: raw points (idempotent, optionally epoch-fenced writes), latest
//!   values, the device index, rollups maintained in the same write, retention sweeps.
//! - [`rollup`]: the pure bucket arithmetic; [`aggregate`]: `Aggregate` queries over any
//!   [`aggregate::Source`] (one store, or the cluster's routed reads).
//! - [`embedded`] (redb) and [`fjall`]: the two engines of the embedded store, picked by
//!   [`backend`]; [`scylla`]: the shared, replicated store.
//! - [`conformance`]: the one suite every backend passes.

pub mod aggregate;
pub mod backend;
mod batch;
mod codec;
pub mod conformance;
pub mod embedded;
pub mod fjall;
pub mod retention;
pub mod rollup;
pub mod scylla;
pub mod sweeper;
pub mod volatile;

pub use self::retention::{Retention, RetentionPolicy};
pub use self::rollup::{Bucket, Resolution, RollupPage, RollupQuery};

use async_trait::async_trait;

use crate::model::{DeviceInfo, DeviceKey, Point, TimestampMs};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed (I/O, corruption, full disk). Not retryable by the caller as-is.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The store is shutting down; the write was not stored and may be retried elsewhere.
    #[error("store is closed")]
    Closed,
    /// The request itself is invalid (bad page token, reversed range is NOT an error).
    #[error("invalid request: {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// The write carried an older epoch for its shard than the store has already seen: the
    /// writer lost ownership of the shard. Not retryable by that writer; nothing was stored.
    #[error(
        "stale shard epoch: shard {shard} write has epoch {epoch}, the store has seen {current}; \
         the shard moved to another owner"
    )]
    StaleEpoch {
        shard: u32,
        epoch: u64,
        current: u64,
    },
}

/// The ownership a write is made under: the store refuses it when it has seen a newer epoch
/// for the shard, and remembers the greatest epoch it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    pub shard: u32,
    pub epoch: u64,
}

/// A range read over one device.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RangeQuery {
    pub device: DeviceKey,
    /// `None`: every metric of the device.
    pub metric: Option<String>,
    /// Inclusive.
    pub from_ms: TimestampMs,
    /// Exclusive. A range with `to_ms <= from_ms` is empty, not an error.
    pub to_ms: TimestampMs,
    /// At most this many points in the page (callers pass >= 1).
    pub limit: usize,
    /// Opaque token from the previous page's `next`.
    pub page_token: Option<String>,
}

impl RangeQuery {
    /// Checks what every backend must refuse: a zero `limit` (it would page forever).
    pub fn check(&self) -> Result<(), StorageError> {
        if self.limit == 0 {
            return Err(StorageError::Invalid {
                field: "limit",
                problem: "must be at least 1".to_owned(),
            });
        }
        Ok(())
    }

    /// Whether the range holds no time at all (`to_ms <= from_ms`): an empty page, not an
    /// error.
    pub fn is_empty_range(&self) -> bool {
        self.to_ms <= self.from_ms
    }
}

/// One page of a range read, ordered by (metric, ts).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub points: Vec<Point>,
    /// Token for the next page; `None` when there is nothing more.
    pub next: Option<String>,
}

/// The telemetry store. Every method is cancel-safe to drop only in the sense that a dropped
/// `write` may or may not have been stored; a write that returned `Ok` is durable.
#[async_trait]
pub trait TelemetryStore: Send + Sync + 'static {
    /// Stores the points durably (fsync'd, group-committed with concurrent writers) and only
    /// then returns `Ok`. Idempotent: a point with the same (device, metric, ts_ms) replaces
    /// the stored one, so a redelivered point is stored once. Also maintains the latest
    /// value per (device, metric) (the one with the greatest ts) and the device index.
    ///
    /// Rollups: every *new* numeric point (one whose (device, metric, ts) was not stored
    /// yet) is folded into its 1-minute and 1-hour buckets in the same durable write; a
    /// redelivered identical point changes nothing, and a rewrite with a different value
    /// leaves the buckets as if only the new value had been written.
    async fn write(&self, points: Vec<Point>) -> Result<(), StorageError> {
        self.write_fenced(None, points).await
    }

    /// [`TelemetryStore::write`] under a shard epoch: refused with
    /// [`StorageError::StaleEpoch`] (nothing stored) when the store has seen a greater epoch
    /// for `fence.shard`; otherwise the epoch is remembered (kept at its maximum) with the
    /// points. `None` writes without fencing.
    async fn write_fenced(
        &self,
        fence: Option<Fence>,
        points: Vec<Point>,
    ) -> Result<(), StorageError>;

    /// A page of rollup buckets of one metric, in start order.
    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError>;

    /// Deletes raw points and rollup buckets older than the policy allows at `now_ms`
    /// (per tenant and tier); returns how many entries were removed. Reads do not filter by
    /// retention: data is gone after a sweep, not before. Latest values and the device index
    /// are kept.
    async fn sweep(
        &self,
        policy: &RetentionPolicy,
        now_ms: TimestampMs,
    ) -> Result<u64, StorageError>;

    /// A page of a range read.
    async fn query(&self, query: RangeQuery) -> Result<Page, StorageError>;

    /// The newest point of each metric of the device, ordered by metric.
    async fn latest(&self, device: &DeviceKey) -> Result<Vec<Point>, StorageError>;

    /// One device, if it has any stored point.
    async fn device(&self, device: &DeviceKey) -> Result<Option<DeviceInfo>, StorageError>;

    /// Devices of a tenant ordered by id, starting after `after`, at most `limit`.
    async fn devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceInfo>, StorageError>;

    /// Flushes and stops accepting writes. Pending writes complete or fail with `Closed`.
    async fn close(&self);
}
