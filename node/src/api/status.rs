//! Every error that leaves the public API becomes a `tonic::Status` here, in one place.
//!
//! UNAVAILABLE: retry (no leader, store busy or closing, actor restarting).
//! INVALID_ARGUMENT: the request is wrong; the message names the field.
//! NOT_FOUND, FAILED_PRECONDITION: as their names say. INTERNAL: a bug or corruption.

use tonic::Status;

use super::convert::FieldError;
use crate::device::DeviceError;
use crate::metrics_names;
use crate::raft::ControlError;
use crate::rules::validate::RuleError;
use crate::storage::StorageError;

/// The API's error: anything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{0} not found")]
    NotFound(String),
    /// The points could not be stored (here or at their owner).
    #[error(transparent)]
    Sink(#[from] crate::ingest::SinkError),
    /// A live subscription ended (the subscriber lagged, or the node is stopping).
    #[error(transparent)]
    Live(#[from] crate::cluster::live::LiveError),
    /// A layer below answered something the handler does not expect (a bug).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Response metadata naming the request field of an INVALID_ARGUMENT (the SDK's
/// `FIELD_METADATA`).
pub const FIELD_METADATA: &str = "starling-field";

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let status = match &e {
            ApiError::Field(f) => {
                let mut status = Status::invalid_argument(f.to_string());
                // The SDK reads the field from here (`starling_sdk::Error::InvalidArgument`).
                if let Ok(v) = tonic::metadata::MetadataValue::try_from(f.field.as_str()) {
                    status.metadata_mut().insert(FIELD_METADATA, v);
                }
                status
            }
            ApiError::Rule(r) => Status::invalid_argument(format!("invalid rule: {r}")),
            ApiError::Storage(s) => storage_status(s),
            ApiError::Device(DeviceError::Store(s)) => storage_status(s),
            ApiError::Device(DeviceError::Unavailable(m) | DeviceError::Alarm(m)) => {
                Status::unavailable(m.clone())
            }
            ApiError::Control(c) if c.is_retryable() => Status::unavailable(c.to_string()),
            ApiError::Control(c) => Status::internal(c.to_string()),
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::Sink(e) if e.retryable => Status::unavailable(e.message.clone()),
            // An unknown device while auto-provisioning is off: register it first.
            ApiError::Sink(e) if e.reason == crate::ingest::UNKNOWN_DEVICE => {
                Status::failed_precondition(e.message.clone())
            }
            ApiError::Sink(e) => Status::internal(e.message.clone()),
            ApiError::Live(crate::cluster::live::LiveError::Lagged(m)) => {
                Status::data_loss(m.clone())
            }
            ApiError::Live(e @ crate::cluster::live::LiveError::Unavailable(_)) => {
                Status::unavailable(e.to_string())
            }
            ApiError::Unexpected(m) => Status::internal(format!("unexpected answer: {m}")),
        };
        metrics::counter!(metrics_names::API_ERRORS, "code" => code_label(status.code()))
            .increment(1);
        status
    }
}

fn storage_status(s: &StorageError) -> Status {
    match s {
        StorageError::Invalid { .. } => Status::invalid_argument(s.to_string()),
        StorageError::Closed => Status::unavailable(s.to_string()),
        StorageError::StaleEpoch { .. } => Status::failed_precondition(s.to_string()),
        StorageError::Engine(_) => Status::unavailable(s.to_string()),
    }
}

fn code_label(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::NotFound => "not_found",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Internal => "internal",
        tonic::Code::DataLoss => "data_loss",
        _ => "other",
    }
}
