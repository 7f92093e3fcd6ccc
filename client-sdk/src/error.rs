//! The SDK's error type and the one mapping from gRPC status codes to it.

use tonic::Code;

/// Why an SDK call failed.
///
/// Variants carry the server's message; match on the variant, print with `Display`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint could serve the call (connection refused, TLS failure, no leader, …) after
    /// failover and retries. Safe to retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The device, rule or alarm does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was refused as malformed. `field` names the offending request field
    /// (`labels.site`, `id`) when the server says which; the message names it too.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        field: Option<String>,
        message: String,
    },
    /// The client certificate is valid but not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The server did not accept the caller's identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A stream fell behind and the server ended it rather than skip items silently (a
    /// subscription or alarm watch that was not read fast enough); the message says how
    /// much was missed. Query the gap and open the stream again.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The profile, a certificate or a key could not be loaded, or an endpoint is not a URL.
    #[error("configuration: {0}")]
    Config(String),
    /// Any other status (FAILED_PRECONDITION, UNIMPLEMENTED, DEADLINE_EXCEEDED, INTERNAL, …).
    #[error("{:?}: {}", .0.code(), status_text(.0))]
    Other(tonic::Status),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

/// Response metadata key naming the request field an INVALID_ARGUMENT refers to.
pub const FIELD_METADATA: &str = "starling-field";

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        if let Some(alert) = refused_certificate(&status) {
            return Error::Unauthenticated(format!(
                "the server refused the client certificate (TLS alert {alert})"
            ));
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable => Error::Unavailable(message),
            Code::NotFound => Error::NotFound(message),
            Code::InvalidArgument => Error::InvalidArgument {
                field: status
                    .metadata()
                    .get(FIELD_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                message,
            },
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::DataLoss => Error::DataLoss(message),
            _ => Error::Other(status),
        }
    }
}

/// A status's message followed by its error sources, `: `-separated, skipping a source whose
/// text the message already holds. Tonic's transport errors say little without their sources
/// ("transport error").
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let part = err.to_string();
        // "transport error" wraps the cause without adding to it.
        if part != "transport error" && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

/// The TLS alert (its rustls name), if the server ended the handshake because of our client
/// certificate.
///
/// With TLS 1.3 the server checks the client certificate after the client considers the
/// handshake done, so the refusal arrives as an alert on the first read. tonic reports it as
/// UNKNOWN "transport error"; on the way h2 has turned the typed rustls error into an
/// `io::Error` of kind `InvalidData` holding only its text, "received fatal alert: UnknownCA".
/// So the text is matched; `t01_tls` pins this behaviour.
fn refused_certificate(status: &tonic::Status) -> Option<String> {
    const PREFIX: &str = "received fatal alert: ";
    const CERTIFICATE_ALERTS: &[&str] = &[
        "CertificateRequired",
        "UnknownCA",
        // The chain names our CA but its signature does not verify (an impostor CA).
        "DecryptError",
        "BadCertificate",
        "UnsupportedCertificate",
        "CertificateRevoked",
        "CertificateExpired",
        "CertificateUnknown",
        "AccessDenied",
    ];
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            let text = io.to_string();
            let alert = text.strip_prefix(PREFIX)?;
            return CERTIFICATE_ALERTS
                .contains(&alert)
                .then(|| alert.to_owned());
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status code and a check of the error it must become.
    type Case = (Code, fn(&Error) -> bool);

    #[test]
    fn status_mapping() {
        let cases: &[Case] = &[
            (
                Code::Unavailable,
                |e| matches!(e, Error::Unavailable(m) if m == "msg"),
            ),
            (
                Code::NotFound,
                |e| matches!(e, Error::NotFound(m) if m == "msg"),
            ),
            (
                Code::InvalidArgument,
                |e| matches!(e, Error::InvalidArgument { field: None, message } if message == "msg"),
            ),
            (
                Code::PermissionDenied,
                |e| matches!(e, Error::PermissionDenied(m) if m == "msg"),
            ),
            (
                Code::Unauthenticated,
                |e| matches!(e, Error::Unauthenticated(m) if m == "msg"),
            ),
            (
                Code::DataLoss,
                |e| matches!(e, Error::DataLoss(m) if m == "msg"),
            ),
            (
                Code::FailedPrecondition,
                |e| matches!(e, Error::Other(s) if s.code() == Code::FailedPrecondition),
            ),
            (Code::Internal, |e| matches!(e, Error::Other(_))),
        ];
        for (code, check) in cases {
            let err = Error::from(tonic::Status::new(*code, "msg"));
            assert!(check(&err), "{code:?} -> {err:?}");
        }
    }

    fn with_source(code: Code, message: &str, source: std::io::Error) -> tonic::Status {
        let mut status = tonic::Status::new(code, message);
        status.set_source(std::sync::Arc::new(source));
        status
    }

    #[test]
    fn refused_client_certificates_are_unauthenticated() {
        use std::io::{Error as IoError, ErrorKind};
        let cases = [
            (
                "received fatal alert: UnknownCA",
                ErrorKind::InvalidData,
                true,
            ),
            (
                "received fatal alert: CertificateRequired",
                ErrorKind::InvalidData,
                true,
            ),
            (
                "received fatal alert: HandshakeFailure",
                ErrorKind::InvalidData,
                false,
            ),
            ("received fatal alert: UnknownCA", ErrorKind::Other, false),
            ("connection reset", ErrorKind::InvalidData, false),
        ];
        for (text, kind, refused) in cases {
            let status = with_source(Code::Unknown, "transport error", IoError::new(kind, text));
            let err = Error::from(status);
            assert_eq!(
                matches!(err, Error::Unauthenticated(_)),
                refused,
                "{text} {kind:?}: {err}"
            );
        }
    }

    #[test]
    fn messages_include_sources() {
        let status = with_source(
            Code::Unknown,
            "transport error",
            std::io::Error::other("connection reset"),
        );
        assert_eq!(status_text(&status), "transport error: connection reset");
        assert_eq!(
            Error::from(status).to_string(),
            "Unknown: transport error: connection reset"
        );
    }

    #[test]
    fn invalid_argument_carries_the_field() {
        let mut status = tonic::Status::invalid_argument("labels.site: must not be empty");
        status
            .metadata_mut()
            .insert(FIELD_METADATA, "labels.site".parse().expect("ascii"));
        match Error::from(status) {
            Error::InvalidArgument { field, message } => {
                assert_eq!(field.as_deref(), Some("labels.site"));
                assert_eq!(message, "labels.site: must not be empty");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(Error::Unavailable(String::new()).is_retryable());
        assert!(!Error::NotFound(String::new()).is_retryable());
        assert!(!Error::Other(tonic::Status::internal("x")).is_retryable());
    }
}
