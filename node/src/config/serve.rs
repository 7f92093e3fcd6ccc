//! The production node's configuration file: `starling serve --config starling.toml`.
//!
//! One TOML file (every key documented, with units and default, here and in
//! `examples/starling.toml`), layered with environment overrides:
//!
//! - `STARLING_<KEY>` for top-level keys (`STARLING_NODE_ID=3`) and `STARLING_<SECTION>__<KEY>`
//!   for keys in a section (`STARLING_MQTT__BROKER=10.0.0.5:1883`), case-insensitive. Lists of
//!   strings are comma-separated (`STARLING_CLUSTER__JOIN=10.0.0.1:7700,10.0.0.2:7700`);
//!   `STARLING_CLUSTER__BOOTSTRAP` takes `id=peer` pairs (`1=10.0.0.1:7700,2=10.0.0.2:7700`).
//!   A variable overrides the file. A variable naming a section but no known key
//!   (`STARLING_MQTT__BROKR`) is an error; other `STARLING_*` variables (`STARLING_PROFILE` of
//!   the client commands, test settings) are not configuration and are ignored.
//! - Unknown keys in the file are errors (`deny_unknown_fields` everywhere), so a typo never
//!   silently leaves a default in place. Syntax and type errors name the file, line and key.
//! - [`ServeConfig::validate`] checks the rules types cannot express (ranges, rules spanning
//!   fields such as lease vs heartbeat); every message starts with the field path.
//!
//! Durations are humantime strings: `"250ms"`, `"2s"`, `"5m"`, `"1d"`. Relative paths are
//! relative to the node's working directory.
//!
//! What it does not do: read certificates, create the data directory or bind sockets
//! (`node::run_serve` does), or decide anything at run time; derived defaults (advertised
//! addresses, client id, client CA) are answered by accessors such as
//! [`ServeConfig::advertise_peer`]. The environment layering is in `config/serve_env.rs`, the
//! rules in `config/serve_validate.rs`, duration strings in `config/duration.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NodeConfig;
use super::{duration, serve_env};

/// Why a configuration cannot be used. Every variant is fatal: fix the file or environment.
#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or does not fit the schema (wrong type, unknown or missing key).
    /// `message` is the TOML parser's: with line and column when the file alone is at fault,
    /// with the key path (`in `mqtt.connections``) once environment overrides are merged.
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    /// A `STARLING_*` variable addresses a configuration key but cannot be used.
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
    /// The values parse but break a rule. `message` starts with the field path.
    #[error("{message}")]
    Invalid {
        /// Path of the offending key, e.g. `cluster.lease`.
        field: &'static str,
        message: String,
    },
}

/// A production node's configuration (`starling serve`). Load it with [`ServeConfig::load`],
/// check it with [`ServeConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Raft node id: unique in the cluster, never reused, at least 1. Required.
    pub node_id: u64,
    /// Root of the node's durable state (store, Raft log and state machine). Required.
    pub data_dir: PathBuf,
    /// Addresses this node binds.
    #[serde(default)]
    pub listen: Listen,
    /// Addresses other nodes and clients dial to reach this node.
    #[serde(default)]
    pub advertise: Advertise,
    /// Certificates of the peer and client ports. Required.
    pub tls: Tls,
    /// Membership, shards and the liveness timing.
    #[serde(default)]
    pub cluster: Cluster,
    /// The MQTT broker the ingress subscribes to.
    #[serde(default)]
    pub mqtt: Mqtt,
    /// Limits of what ingest accepts, and device actor lifetime.
    #[serde(default)]
    pub ingest: Ingest,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// Delivery of alarm transitions to rule targets (see `config/notify.rs`).
    #[serde(default)]
    pub notify: super::notify::NotifyConfig,
    /// How long telemetry is kept, per tier and tenant (see `config/retention.rs`).
    #[serde(default)]
    pub retention: super::retention::RetentionConfig,
    /// The telemetry store: embedded (default) or ScyllaDB (see `config/storage.rs`).
    #[serde(default)]
    pub storage: super::storage::StorageConfig,
}

/// `[listen]`: the sockets the node binds (IP:port; `0.0.0.0` or `[::]` for every interface).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Peer gRPC port (Raft, forwarding, handoff; mTLS with node certificates only).
    /// Default `0.0.0.0:7700`.
    pub peer: SocketAddr,
    /// Client gRPC port (public API; TLS, client certificates required). Default `0.0.0.0:7600`.
    pub client: SocketAddr,
    /// Admin HTTP port (`/metrics`, `/healthz`, `/readyz`; plain HTTP). Default `0.0.0.0:8080`.
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            peer: SocketAddr::from(([0, 0, 0, 0], 7700)),
            client: SocketAddr::from(([0, 0, 0, 0], 7600)),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

/// `[advertise]`: `host:port` addresses others dial (a DNS name or an IP). Each defaults to the
/// matching listen address, which must then not be an unspecified IP (`0.0.0.0`, `::`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Advertise {
    /// What other nodes dial for the peer port. Default: `listen.peer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// What clients dial for the client port. Default: `listen.client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// `[tls]`: PEM files. The node certificate (`starling certs node`) serves both gRPC ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The cluster CA: verifies peer nodes' certificates. Required.
    pub ca: PathBuf,
    /// This node's certificate chain. Required.
    pub cert: PathBuf,
    /// This node's private key. Required.
    pub key: PathBuf,
    /// CA that verifies client certificates on the client port. Default: `ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// `[cluster]`: how the node finds the cluster, and the liveness timing of shard leases.
/// Rules: exactly one of `bootstrap` and `join`; `3 × heartbeat ≤ lease`;
/// `lease + drift_margin < failure_timeout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// The initial voters of a new cluster, `{ id, peer }` each, including this node. Used only
    /// on the first start of a node with an empty data dir; ignored afterwards. Give the same
    /// list to every initial voter. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<Voter>,
    /// Peer addresses (`host:port`) of running members to ask for admission; one answering is
    /// enough. Used only on the first start. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
    /// Number of virtual shards: a power of two, at most 65536, fixed when the cluster is
    /// created (a joining node takes the cluster's). Default 4096.
    pub shards: u32,
    /// Interval of lease renewals to the leader. Default 200ms.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// How long a renewed lease lets a node serve its shards; a node that cannot renew stops
    /// serving when it runs out. At least 3 × heartbeat. Default 1000ms.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Silence after which the leader declares a node failed and reassigns its shards; greater
    /// than lease + drift_margin. Default 1500ms.
    #[serde(with = "duration")]
    pub failure_timeout: Duration,
    /// Allowance for clock-rate differences between nodes. Default 200ms.
    #[serde(with = "duration")]
    pub drift_margin: Duration,
    /// Raft voters (3 or 5); other nodes are learners, promoted to replace a dead voter.
    /// Default 3.
    pub max_voters: u8,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            join: Vec::new(),
            shards: crate::shard::DEFAULT_SHARDS,
            heartbeat: Duration::from_millis(200),
            lease: Duration::from_millis(1000),
            failure_timeout: Duration::from_millis(1500),
            drift_margin: Duration::from_millis(200),
            max_voters: 3,
        }
    }
}

/// One initial voter of `cluster.bootstrap`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voter {
    /// The voter's `node_id`.
    pub id: u64,
    /// Its peer address, `host:port` (its `advertise.peer`).
    pub peer: String,
}

/// `[mqtt]`: the broker connection of the ingress (MQTT 5, QoS 1, persistent session).
/// `Debug` shows the password as `<redacted>`, so logging a configuration is safe.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mqtt {
    /// The broker, `host:port`. Default `127.0.0.1:1883`.
    pub broker: String,
    /// MQTT client id of the first connection; connection `i > 0` appends `-{i}` (see
    /// [`ServeConfig::mqtt_client_ids`]). Must stay the same across restarts so the broker
    /// keeps the node's session. Default `starling-node-{node_id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// MQTT 5 Receive Maximum: messages in flight (unacknowledged) per connection, 1..=65535.
    /// Keep it well above the store's group-commit batch. Default 1000.
    pub receive_maximum: u16,
    /// Connections to the broker, each in the shared subscription, 1..=16. Default 1.
    pub connections: u8,
    /// Broker user name. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Broker password (prefer `STARLING_MQTT__PASSWORD`). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Rescue the broker session of a node whose lease expired: connect with its client id,
    /// store what the broker queued for it, end the session. Default true.
    pub rescue: bool,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("broker", &self.broker)
            .field("client_id", &self.client_id)
            .field("receive_maximum", &self.receive_maximum)
            .field("connections", &self.connections)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("rescue", &self.rescue)
            .finish()
    }
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            broker: "127.0.0.1:1883".to_owned(),
            client_id: None,
            receive_maximum: node_defaults().mqtt_in_flight,
            connections: 1,
            username: None,
            password: None,
            rescue: true,
        }
    }
}

/// `[ingest]`: what the ingress accepts, and how long idle device actors live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ingest {
    /// Largest accepted MQTT payload, bytes; larger ones are rejected (and acknowledged).
    /// Default 65536.
    pub max_payload_bytes: usize,
    /// Reject points whose `ts` is more than this after the receive time. Default 1d.
    #[serde(with = "duration")]
    pub max_ts_future: Duration,
    /// Reject points whose `ts` is more than this before the receive time. Default: no limit.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_ts_age: Option<Duration>,
    /// A device actor with no message for this long is stopped (its state stays stored).
    /// Default 5m, as in `starling dev`.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Accept telemetry from devices nobody registered, registering them on their first
    /// message. Default false: their messages are refused (acknowledged, counted with reason
    /// `unknown_device`, explained on `devices/{id}/errors`). `starling dev` provisions.
    pub auto_provision: bool,
}

impl Default for Ingest {
    fn default() -> Self {
        let node = node_defaults();
        Self {
            max_payload_bytes: node.max_payload_bytes,
            max_ts_future: node.max_ts_future.unwrap_or(Duration::from_secs(86_400)),
            max_ts_age: node.max_ts_age,
            idle_timeout: node.idle_timeout,
            auto_provision: false,
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// Log filter in `RUST_LOG` syntax (`info,starling_node=debug`). `RUST_LOG`, when set,
    /// wins. Default: none (the binary's default, `info`-level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// `NodeConfig`'s defaults: the single source of the limits `dev` and `serve` share.
fn node_defaults() -> NodeConfig {
    NodeConfig::new(1, PathBuf::new(), String::new())
}

impl ServeConfig {
    /// Reads `path` and layers the process environment's `STARLING_*` variables over it. Does
    /// not validate: call [`ServeConfig::validate`].
    pub fn load(path: &Path) -> Result<Self, ServeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // `vars_os`: `vars` panics on a variable that is not UTF-8; those are not ours.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::parse(&path.display().to_string(), &text, env)
    }

    /// [`ServeConfig::load`] from text and an explicit environment (tests, embedding).
    pub fn load_from(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ServeConfigError> {
        Self::parse("config", toml_text, env)
    }

    fn parse(
        source_name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ServeConfigError> {
        let parse_error = |source_name: String, e: toml::de::Error| ServeConfigError::Parse {
            source_name,
            message: e.to_string().trim_end().to_owned(),
        };
        let overrides = serve_env::overrides(env)?;
        if overrides.is_empty() {
            // Straight from the text, so errors carry line and column.
            return toml::from_str(text).map_err(|e| parse_error(source_name.to_owned(), e));
        }
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(source_name.to_owned(), e))?;
        serve_env::apply(&mut table, &overrides);
        Self::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(format!("{source_name} with STARLING_* overrides"), e))
    }

    /// What other nodes dial for the peer port: `advertise.peer`, else `listen.peer`.
    pub fn advertise_peer(&self) -> String {
        self.advertise
            .peer
            .clone()
            .unwrap_or_else(|| self.listen.peer.to_string())
    }

    /// What clients dial for the client port: `advertise.client`, else `listen.client`.
    pub fn advertise_client(&self) -> String {
        self.advertise
            .client
            .clone()
            .unwrap_or_else(|| self.listen.client.to_string())
    }

    /// CA verifying client certificates: `tls.client_ca`, else `tls.ca`.
    pub fn client_ca(&self) -> &Path {
        self.tls.client_ca.as_deref().unwrap_or(&self.tls.ca)
    }

    /// MQTT client id of the first connection: `mqtt.client_id`, else
    /// `starling-node-{node_id}`.
    pub fn mqtt_client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id(self.node_id))
    }

    /// One client id per connection (`mqtt.connections`): the first is
    /// [`ServeConfig::mqtt_client_id`], connection `i > 0` appends `-{i}`. A broker
    /// disconnects a session when another connection takes its id, so they must differ; and
    /// they must be derivable from the node for a survivor to rescue its sessions.
    pub fn mqtt_client_ids(&self) -> Vec<String> {
        let first = self.mqtt_client_id();
        (0..self.mqtt.connections.max(1))
            .map(|i| match i {
                0 => first.clone(),
                i => format!("{first}-{i}"),
            })
            .collect()
    }

    /// The [`NodeConfig`] of this node's store, ingest and client API. The MQTT filters are
    /// the shared subscriptions of `ingest::mqtt::DEFAULT_FILTERS`
    /// (`$share/starling/devices/+/telemetry` and its tenant form); the client port's CA is
    /// [`ServeConfig::client_ca`].
    pub fn to_node_config(&self) -> NodeConfig {
        let mut node = NodeConfig::new(
            self.node_id,
            self.data_dir.clone(),
            self.mqtt.broker.clone(),
        );
        node.mqtt_client_id = self.mqtt_client_id();
        node.mqtt_in_flight = self.mqtt.receive_maximum;
        node.mqtt_credentials = self.mqtt.username.clone().map(|user| {
            let password = self.mqtt.password.clone().unwrap_or_default();
            (user, password)
        });
        node.max_payload_bytes = self.ingest.max_payload_bytes;
        node.max_ts_future = Some(self.ingest.max_ts_future);
        node.max_ts_age = self.ingest.max_ts_age;
        node.idle_timeout = self.ingest.idle_timeout;
        node.shards = self.cluster.shards;
        node.tls_ca = self.client_ca().to_owned();
        node.tls_cert = self.tls.cert.clone();
        node.tls_key = self.tls.key.clone();
        node.notify = self.notify.clone();
        node.auto_provision = self.ingest.auto_provision;
        node.retention = self.retention.clone();
        node.storage = self.storage.clone();
        node
    }

    /// The effective configuration as TOML (for `serve --check`): derived defaults written
    /// out, `mqtt.password` shown as `<redacted>`. Loading it gives the same configuration
    /// (but for the password).
    pub fn to_toml(&self) -> String {
        let mut effective = self.clone();
        effective.advertise.peer = Some(self.advertise_peer());
        effective.advertise.client = Some(self.advertise_client());
        effective.tls.client_ca = Some(self.client_ca().to_owned());
        effective.mqtt.client_id = Some(self.mqtt_client_id());
        if effective.mqtt.password.is_some() {
            effective.mqtt.password = Some(REDACTED.to_owned());
        }
        for secret in [
            &mut effective.notify.smtp_password,
            &mut effective.notify.sms_token,
        ] {
            if secret.is_some() {
                *secret = Some(REDACTED.to_owned());
            }
        }
        // Strings (paths too: they were read from UTF-8 text), numbers, booleans, arrays and
        // tables with string keys, values before sections: nothing TOML cannot express.
        toml::to_string(&effective).expect("a ServeConfig always serializes to TOML")
    }
}

/// What `to_toml` prints instead of the MQTT password.
pub const REDACTED: &str = "<redacted>";

fn default_client_id(node_id: u64) -> String {
    format!("starling-node-{node_id}")
}
