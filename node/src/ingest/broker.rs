//! The embedded MQTT broker of `starling dev` (rumqttd, feature `embedded-broker`).
//!
//! What it does: runs rumqttd in-process on its own threads with two plain-TCP listeners that
//! share one router, configured in code (no config file): MQTT 3.1.1 for devices (what most
//! device SDKs and `mosquitto_pub` speak by default) and MQTT 5 for devices that want it and
//! for the node's ingress, which connects to it exactly as it connects to Mosquitto. Payloads
//! up to [`MAX_PAYLOAD_BYTES`], generous connection limits, persistent sessions kept in memory
//! while the process runs.
//!
//! What it does not do (dev only): no TLS, no authentication or ACLs (any client may publish
//! as any device), no persistence across restarts (sessions and queued messages live in
//! memory), no clean stop (rumqttd has no shutdown API: its threads
//! end with the process). rumqttd 0.20 also ignores the client's Receive Maximum and keeps at
//! most 100 un-acked messages out per connection. Production uses Mosquitto or EMQX.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use super::IngestError;

/// Largest payload the embedded broker accepts: the default ingest limit (64 KiB) plus
/// headroom, so oversized payloads reach ingest and are rejected there, with a report.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Subscription filters for an ingress on the embedded broker: plain, not shared. rumqttd 0.20's
/// router thread panics (`group must exists`, routing.rs:512) when the last member of a shared
/// group disconnects with un-acked messages in a persistent session, killing the broker; `dev`
/// has one node, so a shared group buys nothing there. (With a shared filter we also saw one
/// message of twenty never delivered on a first-used `tenants/…` topic; plain filters lost none.)
pub const INGEST_FILTERS: &[&str] = &["devices/+/telemetry", "tenants/+/devices/+/telemetry"];

/// How long [`start_embedded_broker`] waits for the listener to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker. Dropping it does not stop the broker (see the module doc).
#[derive(Debug)]
pub struct EmbeddedBroker {
    v4: SocketAddr,
    v5: SocketAddr,
}

impl EmbeddedBroker {
    /// The MQTT 3.1.1 listener.
    pub fn v4_addr(&self) -> SocketAddr {
        self.v4
    }

    /// The MQTT 5 listener (the node's ingress connects here).
    pub fn v5_addr(&self) -> SocketAddr {
        self.v5
    }
}

/// rumqttd's configuration: an MQTT 3.1.1 listener on `v4` and an MQTT 5 one on `v5`.
fn config(v4: SocketAddr, v5: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = |name: &str, listen| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    let router = RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 1000,
        max_segment_size: 100 * 1024 * 1024,
        max_segment_count: 10,
        ..RouterConfig::default()
    };
    Config {
        id: 0,
        router,
        v4: Some(HashMap::from([(
            "1".to_owned(),
            server("starling-dev-v4", v4),
        )])),
        v5: Some(HashMap::from([(
            "2".to_owned(),
            server("starling-dev-v5", v5),
        )])),
        ..Config::default()
    }
}

/// Starts rumqttd listening on `v4` (MQTT 3.1.1) and `v5` (MQTT 5) and returns once both
/// ports accept TCP connections.
pub fn start_embedded_broker(
    v4: SocketAddr,
    v5: SocketAddr,
) -> Result<EmbeddedBroker, IngestError> {
    // rumqttd only logs a failed bind from its server thread; find out here instead.
    for addr in [v4, v5] {
        drop(
            TcpListener::bind(addr).map_err(|e| IngestError::BrokerStart {
                addr,
                reason: format!("cannot listen: {e}"),
            })?,
        );
    }
    let addr = v5;
    let fail = |reason: String| IngestError::BrokerStart { addr, reason };
    let mut broker = Broker::new(config(v4, v5));
    let runner = thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            // `start` blocks for as long as the broker runs.
            if let Err(e) = broker.start() {
                error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| fail(format!("cannot spawn broker thread: {e}")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let up = |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
        if up(&v4) && up(&v5) {
            info!(%v4, %v5, "embedded MQTT broker listening (3.1.1 and 5, no TLS, no auth: dev only)");
            return Ok(EmbeddedBroker { v4, v5 });
        }
        if runner.is_finished() {
            return Err(fail("broker thread ended during start".to_owned()));
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not accepting connections after {READY_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
