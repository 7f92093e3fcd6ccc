//! The embedded MQTT broker of `starling dev` (rumqttd, feature `embedded-broker`).
//!
//! What it does: runs rumqttd in-process on its own threads with one plain-TCP MQTT 5 listener,
//! configured in code (no config file): payloads up to [`MAX_PAYLOAD_BYTES`], generous
//! connection limits, persistent sessions kept in memory while the process runs. The ingress
//! connects to it exactly as it connects to Mosquitto.
//!
//! What it does not do (dev only): no TLS, no authentication or ACLs (any client may publish
//! as any device), no persistence across restarts (sessions and queued messages live in
//! memory), no MQTT 3.1.1 listener, no clean stop (rumqttd has no shutdown API: its threads
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

/// How long [`start_embedded_broker`] waits for the listener to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker. Dropping it does not stop the broker (see the module doc).
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The address of the MQTT listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// rumqttd's configuration for one MQTT 5 TCP listener on `addr`.
fn config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "starling-dev-v5".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
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
        v5: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

/// Starts rumqttd listening on `addr` and returns once the port accepts TCP connections.
pub fn start_embedded_broker(addr: SocketAddr) -> Result<EmbeddedBroker, IngestError> {
    let fail = |reason: String| IngestError::BrokerStart { addr, reason };
    // rumqttd only logs a failed bind from its server thread; find out here instead.
    drop(TcpListener::bind(addr).map_err(|e| fail(format!("cannot listen: {e}")))?);
    let mut broker = Broker::new(config(addr));
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
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            info!(%addr, "embedded MQTT broker listening (MQTT 5, no TLS, no auth: dev only)");
            return Ok(EmbeddedBroker { addr });
        }
        if runner.is_finished() {
            return Err(fail("broker thread ended during start".to_owned()));
        }
        if Instant::now() >= deadline {
            return Err(fail(format!("not accepting connections after {READY_TIMEOUT:?}")));
        }
        thread::sleep(Duration::from_millis(20));
    }
}
