//! MQTT in: from broker messages to durably stored samples, with PUBACKs released in order.
//!
//! - [`payload`]: topic and JSON payload → [`Sample`]s, with per-sample rejection reasons. Pure.
//! - [`mqtt`]: the MQTT client loop (rumqttc): shared subscription, persistent session, manual
//!   acks released in arrival order once the [`PointSink`] says the points are durable,
//!   bounded in-flight window, reconnects, graceful shutdown.
//! - `broker` (feature `embedded-broker`): an in-process rumqttd for `starling dev`.
//!
//! What this module does not do: decide where a device's points go (shard routing, forwarding,
//! the device actor and the store live behind [`PointSink`], implemented by the node), check
//! that a device exists, or authenticate devices (the broker's job, DESIGN §5).

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::model::{DeviceKey, Sample};

#[cfg(feature = "embedded-broker")]
pub mod broker;
mod connection;
mod log_limit;
pub mod mqtt;
pub mod payload;

pub use mqtt::{MqttIngestConfig, run};

/// Where ingest hands accepted samples. Implemented by the node (router → device actor → store).
#[async_trait]
pub trait PointSink: Send + Sync + 'static {
    /// Resolves `Ok` once every point of `samples` is durably stored. `Err` means not stored
    /// (some may have been: writes are idempotent, so a retry is safe).
    ///
    /// Samples with `ts_ms: None` take `received_at_ms` (Unix ms, when ingest received the
    /// message). Calls are started in arrival order but may run concurrently and complete in
    /// any order; ingest orders the acknowledgements itself.
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: i64,
    ) -> Result<(), SinkError>;
}

/// A sink's refusal to store samples.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message} (retryable: {retryable})")]
pub struct SinkError {
    /// `true`: a transient failure (store busy, no owner yet, timeout); ingest retries with
    /// capped backoff until it succeeds, the connection is lost or shutdown starts, and never
    /// acknowledges meanwhile. `false`: these samples will never be stored (for example an
    /// unknown device while auto-provisioning is off); ingest acknowledges the message and
    /// reports it as rejected with reason [`SINK_REFUSED`], like an invalid payload.
    pub retryable: bool,
    pub message: String,
    /// Rejection label of a refusal for good (metric `reason`, error report `reason`):
    /// [`SINK_REFUSED`] unless the sink names a more precise one ([`UNKNOWN_DEVICE`]).
    pub reason: &'static str,
}

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
            reason: SINK_REFUSED,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            reason: SINK_REFUSED,
        }
    }

    /// Refused for good because the device is not registered and auto-provisioning is off.
    pub fn unknown_device(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
            reason: UNKNOWN_DEVICE,
        }
    }
}

/// Rejection label (metric `reason`, error report `reason`) of samples a sink refused for good.
pub const SINK_REFUSED: &str = "refused";
/// Rejection label of telemetry from a device the registry does not know, while
/// auto-provisioning is off.
pub const UNKNOWN_DEVICE: &str = "unknown_device";

/// Errors of the ingest layer. Transient broker trouble is not an error: the loop reconnects.
#[derive(Debug, Error)]
pub enum IngestError {
    /// A configuration value is unusable; names the field.
    #[error("invalid ingest config `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// The embedded broker could not be started.
    #[error("embedded MQTT broker on {addr}: {reason}")]
    BrokerStart {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// An internal ingest task ended abnormally (a bug): fatal, the node should stop.
    #[error("ingest task `{task}` failed: {reason}")]
    TaskFailed { task: &'static str, reason: String },
}

/// Whether the ingress is subscribed on a live broker connection: set when the broker's
/// SUBACK grants every filter, cleared when the connection drops. Readiness (`/readyz`) uses
/// it, because a broker drops messages published before any subscriber exists.
#[derive(Clone, Debug, Default)]
pub struct IngestHealth(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl IngestHealth {
    pub fn is_subscribed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_subscribed(&self, subscribed: bool) {
        self.0
            .store(subscribed, std::sync::atomic::Ordering::Release);
    }
}
