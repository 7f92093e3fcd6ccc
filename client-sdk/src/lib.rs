//! # Starling SDK
//!
//! An async Rust client for the Starling public gRPC API (`starling.v1`), over TLS with a
//! client certificate.
//!
//! - [`Profile`]: where the server is and which certificates to use, from a TOML file
//!   (`starling dev` writes one to `DATA_DIR/client.toml`).
//! - [`Client`] / [`ClientBuilder`]: one method per API call, with failover across several
//!   endpoints when a call fails as UNAVAILABLE.
//! - [`Error`]: what a caller can match on (not found, invalid argument, unavailable, …).
//! - [`proto`]: the generated protobuf types, re-exported so callers need no other crate.
//!
//! What it does not do: caching, client-side load balancing beyond failover, or conversion
//! into richer domain types; results are the protobuf messages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), starling_sdk::Error> {
//! let profile = starling_sdk::Profile::from_env_or(None)?;
//! let client = starling_sdk::Client::connect(&profile)?;
//! let status = client.cluster_status().await?;
//! println!("leader: {}", status.leader_id);
//! # Ok(()) }
//! ```

mod api;
mod client;
mod error;
mod profile;

pub use starling_proto::v1 as proto;

pub use api::AlarmStream;
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use profile::Profile;

/// Installs rustls' aws-lc-rs crypto provider as the process default, once.
///
/// The same three lines as the node's `tls::install_crypto_provider` (the SDK cannot depend on
/// the node). [`ClientBuilder::build`] calls it, so callers rarely need to.
pub fn install_crypto_provider() {
    // `Err` only means "a provider is already installed", which is the state we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
