//! # Starling SDK
//!
//! An async Rust client for the Starling public gRPC API (`starling.v1`), over TLS with a
//! client certificate.
//!
//! - [`Profile`]: where the server is and which certificates to use, from a TOML file
//!   (`starling dev` writes one to `DATA_DIR/client.toml`).
//! - [`Client`] / [`ClientBuilder`]: one method per API call, with failover across several
//!   endpoints when a call fails as UNAVAILABLE.
//! - Telemetry: [`Client::publish`], [`Client::publish_stream`] (acknowledged in order, each
//!   once durable), [`Client::query_all`], [`Client::query_series_all`] (columnar: one
//!   series per metric, 100,000 points per page), [`Client::latest`], [`Client::aggregate_all`],
//!   [`Client::subscribe`] (points as they are stored).
//! - Alerts: [`Client::list_alarms`], [`Client::ack_alarm`], [`Client::watch_alarms`].
//! - [`Error`]: what a caller can match on (not found, invalid argument, unavailable, …).
//! - [`proto`]: the generated protobuf types, re-exported so callers need no other crate.
//!
//! What it does not do: caching, client-side load balancing beyond failover, or conversion
//! into richer domain types; results are the protobuf messages. Open streams do not fail
//! over: they end with one `Err` item and the caller opens a new one.
//!
//! Runnable programs are in `client-sdk/examples/` (`publish_and_query`, `watch_alerts`,
//! `subscribe`), built by `cargo build --examples`.
//!
//! ## Quick start
//!
//! Start a node with `starling dev` (it writes `./starling-data/client.toml`), then:
//!
//! ```no_run
//! use starling_sdk::proto::{QueryRequest, Sample, Value, value::Kind};
//! use starling_sdk::{Client, Profile};
//!
//! # async fn demo() -> Result<(), starling_sdk::Error> {
//! // $STARLING_PROFILE, else ./starling-data/client.toml; or `Profile::load(path)`.
//! let profile = Profile::from_env_or(None)?;
//! let client = Client::connect(&profile)?;
//!
//! // Store a sample: the reply comes once its points are durable.
//! let value = Value { kind: Some(Kind::Number(21.5)) };
//! let sample = Sample { ts_ms: 1_700_000_000_000, seq: None, values: [("temp".into(), value)].into() };
//! let reply = client.publish("", "boiler-1", vec![sample]).await?;
//! assert_eq!(reply.accepted_points, 1);
//!
//! // Read it back (every page).
//! let points = client
//!     .query_all(QueryRequest { device: "boiler-1".into(), ..Default::default() })
//!     .await?;
//! println!("{} points; leader is node {}", points.len(), client.cluster_status().await?.leader_id);
//! # Ok(()) }
//! ```
//!
//! ## Errors
//!
//! Every call returns [`Error`]; match on its variants:
//!
//! ```no_run
//! # async fn demo(client: starling_sdk::Client) {
//! use starling_sdk::Error;
//!
//! match client.get_device("", "no-such-device").await {
//!     Ok(device) => println!("{device:?}"),
//!     Err(Error::NotFound(what)) => println!("not registered: {what}"),
//!     Err(Error::InvalidArgument { field, message }) => println!("bad {field:?}: {message}"),
//!     Err(e) if e.is_retryable() => println!("try again later: {e}"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # }
//! ```

mod api;
mod client;
mod error;
mod profile;
mod series;
mod streams;

pub use starling_proto::v1 as proto;

pub use api::AlarmStream;
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use profile::Profile;
pub use streams::{PUBLISH_WINDOW, PointStream, PublishAcks, PublishSender};

/// Installs rustls' aws-lc-rs crypto provider as the process default, once.
///
/// The same three lines as the node's `tls::install_crypto_provider` (the SDK cannot depend on
/// the node). [`ClientBuilder::build`] calls it, so callers rarely need to.
pub fn install_crypto_provider() {
    // `Err` only means "a provider is already installed", which is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
