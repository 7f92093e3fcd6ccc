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
    /// The request was refused as malformed; the message names the offending field.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client certificate is valid but not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The server did not accept the caller's identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
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

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        if let Some(alert) = refused_certificate(&status) {
            return Error::Unauthenticated(format!(
                "the server refused the client certificate (TLS alert {alert:?})"
            ));
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable => Error::Unavailable(message),
            Code::NotFound => Error::NotFound(message),
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
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
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

/// The TLS alert, if the server ended the handshake because of our client certificate.
///
/// With TLS 1.3 the server checks the client certificate after the client considers the
/// handshake done, so the refusal arrives as an alert on the first read: tonic reports it as
/// UNKNOWN "transport error" with the rustls error deep in the source chain.
fn refused_certificate(status: &tonic::Status) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let rustls_err = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| err.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::AlertReceived(alert)) = rustls_err {
            return match alert {
                A::CertificateRequired
                | A::UnknownCA
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::AccessDenied => Some(*alert),
                _ => None,
            };
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let cases: &[(Code, fn(&Error) -> bool)] = &[
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
                |e| matches!(e, Error::InvalidArgument(m) if m == "msg"),
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

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(Error::Unavailable(String::new()).is_retryable());
        assert!(!Error::NotFound(String::new()).is_retryable());
        assert!(!Error::Other(tonic::Status::internal("x")).is_retryable());
    }
}
