//! Telemetry storage: the narrow trait every backend implements, and the backends.
//!
//! Only this module imports storage engines (redb now, scylla with the storage issue).
//! It knows nothing of MQTT, actors, Raft or gRPC.

mod codec;
pub mod conformance;
pub mod embedded;
pub mod scylla;

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
    async fn write(&self, points: Vec<Point>) -> Result<(), StorageError>;

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
