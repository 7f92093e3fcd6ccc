//! Node configuration: what a node needs to run, with defaults in one place and `validate()`
//! for rules that span fields.
//!
//! - [`NodeConfig`]: what [`crate::node::run`] needs for one node's store, ingest and API.
//!   `starling dev` builds it from flags.
//! - [`serve::ServeConfig`]: the production node's TOML file (`starling serve --config FILE`)
//!   with `STARLING_…` environment overrides; it adds the cluster, listen and TLS settings and
//!   converts to a [`NodeConfig`] with [`serve::ServeConfig::to_node_config`].
//!
//! What it does not do: open files other than the config file itself, bind sockets or check
//! that certificates exist — that happens when the node starts.

use std::path::PathBuf;
use std::time::Duration;

mod duration;
pub mod notify;
pub mod retention;
pub mod serve;
mod serve_env;
#[cfg(test)]
mod serve_tests;
mod serve_validate;
#[cfg(test)]
mod serve_validate_tests;
pub mod storage;

/// A configuration that cannot run; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("config field `{field}`: {problem}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

/// Everything one node needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, never reused.
    pub node_id: u64,
    /// Root of the node's durable state: store, Raft log and state machine, certificates.
    pub data_dir: PathBuf,
    /// The MQTT broker ingest subscribes to, `host:port`.
    pub broker: String,
    /// MQTT client id; stable per node so the broker keeps its session across restarts.
    pub mqtt_client_id: String,
    /// Subscription filters of the ingress (QoS 1). Default: the shared subscriptions
    /// `$share/starling/devices/+/telemetry` and its tenant form.
    pub mqtt_filters: Vec<String>,
    /// Most MQTT messages received and not yet acknowledged (the ordered ack window).
    pub mqtt_in_flight: u16,
    /// Username and password for the broker (`None`: connect without).
    pub mqtt_credentials: Option<(String, String)>,
    /// Largest accepted MQTT payload, bytes.
    pub max_payload_bytes: usize,
    /// Latest accepted point time after the receive time (`None`: no limit). Default 1 day.
    pub max_ts_future: Option<Duration>,
    /// Oldest accepted point time before the receive time (`None`: no limit, the default).
    pub max_ts_age: Option<Duration>,
    /// A device actor with no message for this long is passivated.
    pub idle_timeout: Duration,
    /// Number of virtual shards (a power of two); fixed at cluster creation.
    pub shards: u32,
    /// PEM files of the client gRPC port: CA that signs client certificates, server cert, key.
    pub tls_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Delivery of alarm transitions to rule targets (`[notify]`).
    pub notify: notify::NotifyConfig,
    /// Register unknown devices on their first telemetry (one Raft write); when off, their
    /// messages are refused, counted and explained on `devices/{id}/errors`. On in `dev`
    /// (the default here), off by default in `serve` (`ingest.auto_provision`).
    pub auto_provision: bool,
    /// How long each tier of telemetry is kept and how often it is swept (`[retention]`;
    /// `dev` keeps everything).
    pub retention: retention::RetentionConfig,
    /// The telemetry store (`[storage]`; `dev` uses the embedded one).
    pub storage: storage::StorageConfig,
}

impl NodeConfig {
    /// Defaults for everything but identity, paths and the broker address.
    pub fn new(node_id: u64, data_dir: PathBuf, broker: String) -> Self {
        let certs = data_dir.join("certs");
        Self {
            node_id,
            broker,
            mqtt_client_id: format!("starling-node-{node_id}"),
            mqtt_filters: crate::ingest::mqtt::DEFAULT_FILTERS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            mqtt_in_flight: 1000,
            mqtt_credentials: None,
            max_payload_bytes: 64 * 1024,
            max_ts_future: Some(Duration::from_secs(86_400)),
            max_ts_age: None,
            idle_timeout: Duration::from_secs(300),
            shards: crate::shard::DEFAULT_SHARDS,
            tls_ca: certs.join("ca.pem"),
            tls_cert: certs.join("server.pem"),
            tls_key: certs.join("server.key"),
            notify: notify::NotifyConfig::default(),
            auto_provision: true,
            retention: retention::RetentionConfig::default(),
            storage: storage::StorageConfig::default(),
            data_dir,
        }
    }

    /// Checks rules that span fields or that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.to_owned(),
            })
        };
        if self.node_id == 0 {
            return bad("node_id", "must be at least 1");
        }
        if !self.shards.is_power_of_two() {
            return bad("shards", "must be a power of two");
        }
        if self.mqtt_in_flight == 0 {
            return bad("mqtt_in_flight", "must be at least 1");
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout", "must be greater than zero");
        }
        match self.broker.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return bad("broker", "must be host:port"),
        }
        if self.mqtt_client_id.is_empty() {
            return bad("mqtt_client_id", "must not be empty");
        }
        if self.mqtt_filters.is_empty() {
            return bad("mqtt_filters", "must name at least one filter");
        }
        self.notify.validate().map_err(|e| ConfigError {
            field: e.field,
            problem: e.problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = NodeConfig::new(1, "/tmp/x".into(), "127.0.0.1:1883".into());
        ok.validate().unwrap();
        type Mutation = fn(&mut NodeConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.node_id = 0, "node_id"),
            (|c| c.shards = 1000, "shards"),
            (|c| c.mqtt_in_flight = 0, "mqtt_in_flight"),
            (|c| c.idle_timeout = Duration::ZERO, "idle_timeout"),
            (|c| c.broker = "nohost".into(), "broker"),
            (|c| c.broker = ":1883".into(), "broker"),
            (|c| c.broker = "h:99999".into(), "broker"),
        ];
        for (mutate, field) in cases {
            let mut c = ok.clone();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }
}
