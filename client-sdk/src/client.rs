//! [`Client`] construction and the failover loop every call goes through.
//!
//! Each endpoint gets one lazily connected tonic `Channel` (HTTP/2, multiplexed, reconnects
//! by itself). A call tries the endpoint that last worked; if it fails as UNAVAILABLE (which
//! is also how tonic reports connection and TLS failures) or gets no answer within the
//! request timeout (a frozen or cut-off node), it moves to the next one, round robin, sleeping
//! a little after each full round, for a bounded number of rounds. A timed-out call may have
//! been applied by the node that did not answer; Starling's writes are safe to repeat (points
//! are idempotent by (device, ts); a repeated rule write adds a version).
//!
//! Not done here: health checking, leader discovery, hedging, or retrying a server's
//! DEADLINE_EXCEEDED or any other answer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Error, Profile};

/// Default time to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for one attempt of one unary call, until its response arrives.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of passes over the endpoint list before giving up.
pub const DEFAULT_ROUNDS: u32 = 3;
/// Pause after the first failed round; doubles after each further round.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Settings for a [`Client`]. Start from [`ClientBuilder::new`] or
/// [`ClientBuilder::from_profile`].
///
/// ```no_run
/// # fn demo() -> Result<(), starling_sdk::Error> {
/// use std::time::Duration;
/// use starling_sdk::{ClientBuilder, Profile};
///
/// let profile = Profile::load("./starling-data/client.toml".as_ref())?;
/// let client = ClientBuilder::from_profile(&profile)?
///     .request_timeout(Duration::from_secs(5))
///     .rounds(2)
///     .build()?;
/// println!("endpoints in failover order: {:?}", client.endpoints());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    /// Endpoint URLs in failover order (`https://host:port`; `http://` means no TLS).
    endpoints: Vec<String>,
    /// PEM of the CA the server certificates must chain to.
    ca_pem: Vec<u8>,
    /// PEM of the client certificate and its key; `None` connects without one (the node
    /// refuses such clients; useful for tests and for servers that allow it).
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify server certificates against instead of each endpoint's host.
    server_name: Option<String>,
    /// Limit on establishing a connection.
    connect_timeout: Duration,
    /// Limit on one attempt of a call until response headers arrive (streams then run on).
    request_timeout: Duration,
    /// Passes over `endpoints` before a call fails as UNAVAILABLE.
    rounds: u32,
}

impl ClientBuilder {
    /// A builder for `endpoints`, trusting `ca_pem`, with no client certificate yet.
    pub fn new(endpoints: Vec<String>, ca_pem: Vec<u8>) -> Self {
        ClientBuilder {
            endpoints,
            ca_pem,
            identity: None,
            server_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            rounds: DEFAULT_ROUNDS,
        }
    }

    /// A builder with the profile's endpoints, server name and PEM files (read now).
    pub fn from_profile(profile: &Profile) -> Result<Self, Error> {
        let ca = read_pem(&profile.ca, "ca")?;
        let cert = read_pem(&profile.cert, "cert")?;
        let key = read_pem(&profile.key, "key")?;
        let mut builder = ClientBuilder::new(profile.endpoints(), ca).identity(cert, key);
        builder.server_name = profile.server_name.clone();
        Ok(builder)
    }

    /// Presents this client certificate (PEM) and key (PEM).
    pub fn identity(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.identity = Some((cert_pem, key_pem));
        self
    }

    /// Verifies server certificates against `name` rather than each endpoint's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets the connection timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-attempt request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how many passes over the endpoint list a call makes (at least 1).
    pub fn rounds(mut self, rounds: u32) -> Self {
        self.rounds = rounds.max(1);
        self
    }

    /// Builds the client. Checks URLs and PEM now; connects lazily, on the first call.
    pub fn build(self) -> Result<Client, Error> {
        crate::install_crypto_provider();
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".to_owned()));
        }
        let mut channels = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            let bad = |e: &dyn std::fmt::Display| Error::Config(format!("endpoint {url}: {e}"));
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(&e))?
                .connect_timeout(self.connect_timeout)
                .timeout(self.request_timeout);
            if !url.starts_with("http://") {
                let mut tls =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
                if let Some((cert, key)) = &self.identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                if let Some(name) = &self.server_name {
                    tls = tls.domain_name(name.clone());
                }
                endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
            }
            channels.push(Named {
                url: url.clone(),
                channel: endpoint.connect_lazy(),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                channels,
                current: AtomicUsize::new(0),
                rounds: self.rounds,
            }),
        })
    }
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} file {}: {e}", path.display())))
}

/// A Starling API client. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// One lazily connected channel per endpoint, in failover order.
    channels: Vec<Named>,
    /// Index of the endpoint that last answered; calls start there.
    current: AtomicUsize,
    /// Passes over `channels` before giving up.
    rounds: u32,
}

#[derive(Debug)]
struct Named {
    /// The endpoint URL, for error messages.
    url: String,
    channel: Channel,
}

impl Client {
    /// A client for the profile's endpoints and certificates.
    pub fn connect(profile: &Profile) -> Result<Client, Error> {
        ClientBuilder::from_profile(profile)?.build()
    }

    /// Runs `call` on an endpoint's channel, failing over on UNAVAILABLE or timeout as the module doc
    /// describes. `call` is invoked once per attempt.
    pub(crate) async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.inner.channels.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let attempts = n * self.inner.rounds as usize;
        let mut backoff = FIRST_BACKOFF;
        let mut failures = Vec::new();
        for attempt in 0..attempts {
            let index = (start + attempt) % n;
            let named = &self.inner.channels[index];
            match call(named.channel.clone()).await {
                Ok(value) => {
                    self.inner.current.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(status) if fails_over(&status) => {
                    failures.push(format!(
                        "{}: {}",
                        named.url,
                        crate::error::status_text(&status)
                    ));
                    let last = attempt + 1 == attempts;
                    if (attempt + 1) % n == 0 && !last {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
                Err(status) => return Err(status.into()),
            }
        }
        // Report each endpoint's latest failure once.
        failures.reverse();
        failures.truncate(n);
        failures.reverse();
        Err(Error::Unavailable(failures.join("; ")))
    }

    /// The endpoint URLs, in failover order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.channels.iter().map(|c| c.url.clone()).collect()
    }
}

/// Whether a failed attempt moves on to the next endpoint: the node said UNAVAILABLE, or it did
/// not answer within the request timeout (a frozen or partitioned node accepts connections and
/// never answers). Retrying is safe: points are idempotent by (device, ts), and a repeated rule
/// write only adds a version.
fn fails_over(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        // tower's client-side timeout, as tonic reports it.
        tonic::Code::Cancelled => status.message().contains("Timeout expired"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn client(n: usize, rounds: u32) -> Client {
        let endpoints = (1..=n).map(|i| format!("http://127.0.0.1:{i}")).collect();
        ClientBuilder::new(endpoints, Vec::new())
            .rounds(rounds)
            .build()
            .expect("build")
    }

    /// Runs one call whose attempts fail with `codes[i]` (then succeed); returns the result
    /// and the number of attempts made.
    async fn run(client: &Client, codes: &[tonic::Code]) -> (Result<u32, Error>, u32) {
        let attempts = AtomicU32::new(0);
        let result = client
            .call(|_channel| {
                let i = attempts.fetch_add(1, Ordering::SeqCst);
                let code = codes.get(i as usize).copied();
                async move {
                    match code {
                        Some(code) => Err(tonic::Status::new(code, "boom")),
                        None => Ok(i),
                    }
                }
            })
            .await;
        (result, attempts.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn fails_over_and_remembers_the_endpoint_that_answered() {
        let c = client(3, 2);
        let (result, attempts) = run(&c, &[tonic::Code::Unavailable]).await;
        assert_eq!((result.expect("ok"), attempts), (1, 2));
        assert_eq!(c.inner.current.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_rounds_naming_each_endpoint() {
        let c = client(2, 2);
        let (result, attempts) = run(&c, &[tonic::Code::Unavailable; 10]).await;
        assert_eq!(attempts, 4);
        let Err(Error::Unavailable(message)) = result else {
            panic!("expected unavailable, got {result:?}");
        };
        assert_eq!(
            message,
            "http://127.0.0.1:1: boom; http://127.0.0.1:2: boom"
        );
    }

    #[tokio::test]
    async fn a_client_side_timeout_fails_over() {
        let c = client(2, 1);
        let attempts = AtomicU32::new(0);
        let result = c
            .call(|_channel| {
                let i = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    match i {
                        0 => Err(tonic::Status::cancelled("Timeout expired")),
                        _ => Ok(i),
                    }
                }
            })
            .await;
        assert_eq!(result.expect("second endpoint"), 1);
        assert!(!fails_over(&tonic::Status::cancelled(
            "the caller went away"
        )));
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let c = client(2, 3);
        for code in [
            tonic::Code::NotFound,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Internal,
        ] {
            let (result, attempts) = run(&c, &[code]).await;
            assert_eq!(attempts, 1, "{code:?}");
            assert!(result.is_err());
        }
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let none = ClientBuilder::new(Vec::new(), Vec::new()).build();
        assert!(matches!(none, Err(Error::Config(_))));
        let bad_url = ClientBuilder::new(vec!["not a url".into()], Vec::new()).build();
        assert!(matches!(bad_url, Err(Error::Config(_))), "{bad_url:?}");
    }
}
