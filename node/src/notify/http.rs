//! HTTP POST of JSON, for webhook targets and the SMS provider's webhook.
//!
//! Client: hyper 1 through hyper-util's pooled client, with hyper-rustls for `https://` (the
//! tree's one rustls; Mozilla roots bundled). Every request carries `Idempotency-Key` and
//! `Content-Type: application/json`. Which answers are worth a retry is decided by
//! [`classify`]: connection errors, timeouts, 408, 429 and 5xx are; other statuses are not.
//!
//! What it does not do: follow redirects (a 3xx is a permanent failure naming the status).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::SendError;

/// Largest response body read (for the error message), bytes.
const MAX_ERROR_BODY: usize = 512;

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
#[derive(Clone)]
pub struct HttpSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpSender {
    /// A client whose every request (connect included) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, SendError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// POSTs `body` to `url` with `Idempotency-Key: key` (and a bearer token when given).
    pub async fn post_json(
        &self,
        url: &str,
        key: &str,
        body: &serde_json::Value,
        bearer: Option<&str>,
    ) -> Result<(), SendError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .header(hyper::header::USER_AGENT, "starling-notify");
        if let Some(token) = bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| SendError::permanent(format!("bad request for {url}: {e}")))?;
        let call = async {
            let resp =
                self.client.request(req).await.map_err(|e| {
                    SendError::retryable(format!("POST {url}: {}", error_chain(&e)))
                })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
            Err(classify(status, format!("POST {url}: {status} {text}")))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(SendError::retryable(format!(
                "POST {url}: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// A failed HTTP answer: retryable for 408, 429 and 5xx, permanent otherwise.
pub fn classify(status: StatusCode, message: String) -> SendError {
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        SendError::retryable(message)
    } else {
        SendError::permanent(message)
    }
}

/// The error and its sources, `a: b: c` (hyper's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification_table() {
        let cases = [
            (200, None),
            (400, Some(false)),
            (401, Some(false)),
            (404, Some(false)),
            (301, Some(false)),
            (408, Some(true)),
            (429, Some(true)),
            (500, Some(true)),
            (502, Some(true)),
            (503, Some(true)),
        ];
        for (code, expected) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            if status.is_success() {
                assert!(expected.is_none());
                continue;
            }
            let err = classify(status, String::new());
            assert_eq!(Some(err.retryable), expected, "{code}");
        }
    }
}
