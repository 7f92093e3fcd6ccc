//! A minimal HTTP/1.0 GET over a loopback TCP socket, for `/healthz` and `/metrics`.
//!
//! HTTP/1.0 keeps it small: the server closes the connection after the response and never uses
//! chunked encoding, so the body is everything after the header block. Not a general client:
//! no redirects, no TLS, no keep-alive.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on one request, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Responses larger than this are refused (a `/metrics` page is a few hundred KiB at most).
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Status and body of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET http://127.0.0.1:{port}{path}`, bounded by [`REQUEST_TIMEOUT`].
pub async fn get(port: u16, path: &str) -> anyhow::Result<HttpResponse> {
    get_from("127.0.0.1", port, path).await
}

/// `GET http://{host}:{port}{path}`, bounded by [`REQUEST_TIMEOUT`]. `host` is 127.0.0.1 or
/// the address of a node in one of the chaos harness's own network namespaces.
pub async fn get_from(host: &str, port: u16, path: &str) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {host}:{port}{path} timed out"))?
        .with_context(|| format!("GET {host}:{port}{path}"))?;
    parse_response(&raw).with_context(|| format!("GET {host}:{port}{path}"))
}

/// Parses a complete HTTP/1.x response: status line, headers (ignored), body.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let Some(header_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let head = std::str::from_utf8(&raw[..header_end]).context("headers are not UTF-8")?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed status line {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status = code
        .parse()
        .with_context(|| format!("bad status code in {status_line:?}"))?;
    let body = String::from_utf8_lossy(&raw[header_end + 4..]).into_owned();
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "ok\n");
    }

    #[test]
    fn parses_empty_body() {
        let response = parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "");
    }

    #[test]
    fn rejects_truncated_and_foreign_responses() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
        ] {
            assert!(parse_response(raw).is_err(), "{raw:?} should not parse");
        }
    }
}
