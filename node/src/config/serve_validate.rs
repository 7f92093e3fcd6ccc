//! [`ServeConfig::validate`]: the rules the schema's types cannot express — ranges, address
//! syntax, and rules spanning fields (cluster membership, lease timing). Pure; every error
//! names the field path first.
//!
//! What it does not do: touch the file system or network (certificate files and the data dir
//! are checked when the node starts), or resolve host names.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::duration;
use super::serve::{ServeConfig, ServeConfigError};

/// Most virtual shards (`cluster.shards`).
pub(super) const MAX_SHARDS: u32 = 65_536;
/// Most MQTT connections per node (`mqtt.connections`).
pub(super) const MAX_CONNECTIONS: u8 = 16;
/// Largest MQTT packet the protocol can carry, bytes (`ingest.max_payload_bytes` bound).
pub(super) const MQTT_MAX_PACKET: usize = 268_435_455;

type Checked = Result<(), ServeConfigError>;

fn invalid(field: &'static str, message: String) -> Checked {
    Err(ServeConfigError::Invalid { field, message })
}

impl ServeConfig {
    /// Checks every rule; the first broken one is returned, its message naming the field.
    pub fn validate(&self) -> Checked {
        self.check_identity()?;
        self.check_addresses()?;
        self.check_tls()?;
        self.check_membership()?;
        self.check_timing()?;
        self.check_mqtt()?;
        self.check_ingest()?;
        self.check_log()?;
        self.notify
            .validate()
            .map_err(|e| ServeConfigError::Invalid {
                field: e.field,
                message: e.to_string(),
            })?;
        self.retention
            .validate()
            .map_err(|e| ServeConfigError::Invalid {
                field: e.field,
                message: e.to_string(),
            })?;
        self.storage
            .validate()
            .map_err(|e| ServeConfigError::Invalid {
                field: e.field,
                message: e.to_string(),
            })
    }

    fn check_identity(&self) -> Checked {
        if self.node_id == 0 {
            return invalid("node_id", "node_id must be at least 1".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "data_dir must not be empty".into());
        }
        Ok(())
    }

    fn check_addresses(&self) -> Checked {
        let l = &self.listen;
        let named = [
            ("listen.peer", l.peer),
            ("listen.client", l.client),
            ("listen.http", l.http),
        ];
        for (i, (field, addr)) in named.iter().enumerate() {
            if let Some((other, _)) = named[..i]
                .iter()
                .find(|(_, a)| a == addr && addr.port() != 0)
            {
                return invalid(field, format!("{field} ({addr}) is also {other}"));
            }
        }
        advertised(
            "advertise.peer",
            self.advertise.peer.as_deref(),
            ("listen.peer", l.peer),
            "other nodes",
        )?;
        advertised(
            "advertise.client",
            self.advertise.client.as_deref(),
            ("listen.client", l.client),
            "clients",
        )
    }

    fn check_tls(&self) -> Checked {
        let t = &self.tls;
        let paths = [
            ("tls.ca", Some(&t.ca)),
            ("tls.cert", Some(&t.cert)),
            ("tls.key", Some(&t.key)),
            ("tls.client_ca", t.client_ca.as_ref()),
        ];
        for (field, path) in paths {
            if path.is_some_and(|p| p.as_os_str().is_empty()) {
                return invalid(field, format!("{field} must name a PEM file"));
            }
        }
        Ok(())
    }

    fn check_membership(&self) -> Checked {
        let c = &self.cluster;
        match (c.bootstrap.is_empty(), c.join.is_empty()) {
            (false, false) => {
                return invalid(
                    "cluster.join",
                    "cluster.join and cluster.bootstrap are mutually exclusive: bootstrap a new \
                     cluster or join a running one"
                        .into(),
                );
            }
            (true, true) => {
                return invalid(
                    "cluster.bootstrap",
                    "cluster.bootstrap or cluster.join must be given: the initial voters of a \
                     new cluster, or peer addresses of running members"
                        .into(),
                );
            }
            _ => {}
        }
        if ![3, 5].contains(&c.max_voters) {
            let n = c.max_voters;
            return invalid(
                "cluster.max_voters",
                format!("cluster.max_voters ({n}) must be 3 or 5"),
            );
        }
        for (i, peer) in c.join.iter().enumerate() {
            host_port("cluster.join", &format!("cluster.join[{i}]"), peer)?;
        }
        if c.bootstrap.is_empty() {
            return Ok(());
        }
        let field = "cluster.bootstrap";
        let (mut ids, mut peers) = (BTreeSet::new(), BTreeSet::new());
        for (i, v) in c.bootstrap.iter().enumerate() {
            let at = format!("cluster.bootstrap[{i}]");
            if v.id == 0 {
                return invalid(field, format!("{at}.id must be at least 1"));
            }
            if !ids.insert(v.id) {
                return invalid(field, format!("{at}.id: node {} is listed twice", v.id));
            }
            host_port(field, &format!("{at}.peer"), &v.peer)?;
            if !peers.insert(v.peer.as_str()) {
                return invalid(field, format!("{at}.peer: {} is listed twice", v.peer));
            }
        }
        if !ids.contains(&self.node_id) {
            return invalid(
                field,
                format!(
                    "cluster.bootstrap must list this node (node_id {}) among the initial voters",
                    self.node_id
                ),
            );
        }
        if c.bootstrap.len() > usize::from(c.max_voters) {
            return invalid(
                field,
                format!(
                    "cluster.bootstrap lists {} voters, more than cluster.max_voters ({})",
                    c.bootstrap.len(),
                    c.max_voters
                ),
            );
        }
        Ok(())
    }

    fn check_timing(&self) -> Checked {
        let c = &self.cluster;
        if !c.shards.is_power_of_two() || c.shards > MAX_SHARDS {
            return invalid(
                "cluster.shards",
                format!(
                    "cluster.shards ({}) must be a power of two, at most {MAX_SHARDS}",
                    c.shards
                ),
            );
        }
        if c.heartbeat.is_zero() {
            return invalid(
                "cluster.heartbeat",
                "cluster.heartbeat must be greater than 0".into(),
            );
        }
        let f = duration::format;
        let three = c.heartbeat.saturating_mul(3);
        if c.lease < three {
            return invalid(
                "cluster.lease",
                format!(
                    "cluster.lease ({}) must be at least 3 × cluster.heartbeat (3 × {} = {}), so \
                     one lost heartbeat does not end the lease",
                    f(c.lease),
                    f(c.heartbeat),
                    f(three)
                ),
            );
        }
        let guarded = c.lease.saturating_add(c.drift_margin);
        if c.failure_timeout <= guarded {
            return invalid(
                "cluster.failure_timeout",
                format!(
                    "cluster.failure_timeout ({}) must exceed cluster.lease + cluster.drift_margin \
                     ({} + {} = {}), so a node stops serving before its shards are reassigned",
                    f(c.failure_timeout),
                    f(c.lease),
                    f(c.drift_margin),
                    f(guarded)
                ),
            );
        }
        Ok(())
    }

    fn check_mqtt(&self) -> Checked {
        let m = &self.mqtt;
        host_port("mqtt.broker", "mqtt.broker", &m.broker)?;
        if m.client_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return invalid("mqtt.client_id", "mqtt.client_id must not be empty".into());
        }
        if m.receive_maximum == 0 {
            return invalid(
                "mqtt.receive_maximum",
                "mqtt.receive_maximum must be between 1 and 65535".into(),
            );
        }
        if !(1..=MAX_CONNECTIONS).contains(&m.connections) {
            return invalid(
                "mqtt.connections",
                format!(
                    "mqtt.connections ({}) must be between 1 and {MAX_CONNECTIONS}",
                    m.connections
                ),
            );
        }
        Ok(())
    }

    fn check_ingest(&self) -> Checked {
        let i = &self.ingest;
        if !(1..=MQTT_MAX_PACKET).contains(&i.max_payload_bytes) {
            return invalid(
                "ingest.max_payload_bytes",
                format!(
                    "ingest.max_payload_bytes ({}) must be between 1 and {MQTT_MAX_PACKET}",
                    i.max_payload_bytes
                ),
            );
        }
        let positive = [
            ("ingest.max_ts_future", Some(i.max_ts_future)),
            ("ingest.max_ts_age", i.max_ts_age),
            ("ingest.idle_timeout", Some(i.idle_timeout)),
        ];
        for (field, d) in positive {
            if d.is_some_and(|d| d == Duration::ZERO) {
                return invalid(field, format!("{field} must be greater than 0"));
            }
        }
        Ok(())
    }

    fn check_log(&self) -> Checked {
        match &self.log.filter {
            Some(filter) => tracing_subscriber::EnvFilter::try_new(filter)
                .map(|_| ())
                .or_else(|e| invalid("log.filter", format!("log.filter ({filter:?}): {e}"))),
            None => Ok(()),
        }
    }
}

/// An advertised address (explicit, or the listen address by default) others can dial.
fn advertised(
    field: &'static str,
    explicit: Option<&str>,
    (listen_field, listen): (&str, SocketAddr),
    who: &str,
) -> Checked {
    match explicit {
        Some(addr) => {
            let host = host_port(field, field, addr)?;
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            if ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
                return invalid(
                    field,
                    format!("{field} ({addr}) is an unspecified address {who} cannot dial"),
                );
            }
            Ok(())
        }
        None if listen.ip().is_unspecified() => invalid(
            field,
            format!(
                "{field} is required when {listen_field} ({listen}) is an unspecified address: \
                 set {field} to the host:port {who} dial"
            ),
        ),
        None => Ok(()),
    }
}

/// Checks `host:port` (`[v6]:port` for IPv6), naming `at`; returns the host.
fn host_port<'a>(
    field: &'static str,
    at: &str,
    addr: &'a str,
) -> Result<&'a str, ServeConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            Ok(host)
        }
        _ => Err(ServeConfigError::Invalid {
            field,
            message: format!("{at} ({addr:?}) must be host:port with a port from 1 to 65535"),
        }),
    }
}
