//! `[storage]`: which telemetry store a node uses.
//!
//! Read by `starling serve` (a section of its TOML file, env overrides for the flat keys);
//! `starling dev` always uses the embedded store (its engine from `--store-backend`).
//!
//! ```toml
//! [storage]
//! engine = "scylla"            # or "embedded" (the default)
//! [storage.embedded]
//! backend = "redb"             # or "fjall": the engine of the embedded store
//! [storage.scylla]
//! nodes = ["10.0.0.5:9042", "10.0.0.6:9042"]
//! keyspace = "starling"
//! replication = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
//! consistency = "local_quorum" # one | local_one | quorum | local_quorum | each_quorum | all
//! ttl = "365d"                 # default TTL of raw points (unset: kept until retention)
//! max_in_flight = 256          # statements in flight per node
//! ```
//!
//! What it does not do: connect. Keyspace and replication are checked again by the backend
//! when it connects (`storage::scylla::ScyllaStore::connect`), which creates or migrates the
//! schema.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, duration};
use crate::storage::backend::EmbeddedBackend;
use crate::storage::scylla::{ScyllaConsistency, ScyllaOptions};

/// The telemetry store of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The node's own files under `data_dir/store` (redb or fjall): one copy, history stays where it
    /// was written (DESIGN.md §6).
    #[default]
    Embedded,
    /// A ScyllaDB cluster shared by every node: replicated, every node reads everything.
    Scylla,
}

/// `[storage]`. Default: the embedded store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub engine: Engine,
    /// Used when `engine = "embedded"`.
    pub embedded: EmbeddedConfig,
    /// Used when `engine = "scylla"`.
    pub scylla: ScyllaConfig,
}

/// `[storage.embedded]`: the engine of the embedded store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// `redb` (default) or `fjall`. Each keeps its own files under `data_dir/store`; a node
    /// refuses to start on the other one's files.
    pub backend: EmbeddedBackend,
}

/// `[storage.scylla]`: how to reach and lay out the Scylla store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`. Default `["127.0.0.1:9042"]`.
    pub nodes: Vec<String>,
    /// Keyspace of every table (lowercase CQL identifier). Default `starling`.
    pub keyspace: String,
    /// CQL replication map used when the keyspace is created (an existing keyspace keeps its
    /// own). Default NetworkTopologyStrategy, replication factor 3.
    pub replication: String,
    /// Consistency of every read and write. Default `local_quorum`.
    pub consistency: ScyllaConsistency,
    /// Default TTL of raw points, applied when the table is created. Default: none.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Statements in flight at once on this node. Default 256.
    pub max_in_flight: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        let o = ScyllaOptions::default();
        Self {
            nodes: o.nodes,
            keyspace: o.keyspace,
            replication: o.replication,
            consistency: o.consistency,
            ttl: o.ttl,
            max_in_flight: o.max_in_flight,
        }
    }
}

impl ScyllaConfig {
    /// The backend's options.
    pub fn options(&self) -> ScyllaOptions {
        ScyllaOptions {
            nodes: self.nodes.clone(),
            keyspace: self.keyspace.clone(),
            replication: self.replication.clone(),
            consistency: self.consistency,
            ttl: self.ttl,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl StorageConfig {
    /// Checks what can be checked without connecting (only when Scylla is selected).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.engine != Engine::Scylla {
            return Ok(());
        }
        let bad = |field, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.to_owned(),
            })
        };
        let s = &self.scylla;
        if s.nodes.is_empty() {
            return bad(
                "storage.scylla.nodes",
                "at least one contact point is needed",
            );
        }
        if let Some(n) = s
            .nodes
            .iter()
            .find(|n| !n.rsplit_once(':').is_some_and(port))
        {
            return Err(ConfigError {
                field: "storage.scylla.nodes",
                problem: format!("{n:?} is not host:port"),
            });
        }
        let ident = |k: &str| {
            k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && k.len() <= 48
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident(&s.keyspace) {
            return bad(
                "storage.scylla.keyspace",
                "must be a lowercase CQL identifier (a-z, 0-9, _; at most 48, starting with a letter)",
            );
        }
        if !(s.replication.trim_start().starts_with('{') && s.replication.trim_end().ends_with('}'))
        {
            return bad(
                "storage.scylla.replication",
                "must be a CQL map, e.g. {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
            );
        }
        if s.ttl.is_some_and(|t| t.as_secs() == 0) {
            return bad("storage.scylla.ttl", "must be at least 1s");
        }
        if s.max_in_flight == 0 {
            return bad("storage.scylla.max_in_flight", "must be at least 1");
        }
        Ok(())
    }
}

/// Whether `host:port`'s port part is a port number.
fn port((host, port): (&str, &str)) -> bool {
    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StorageConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn defaults_and_a_full_scylla_section() {
        let empty = parse("");
        assert_eq!(empty.engine, Engine::Embedded);
        assert!(empty.validate().is_ok());
        let c = parse(
            r#"
            engine = "scylla"
            [scylla]
            nodes = ["10.0.0.5:9042", "db-2:9042"]
            keyspace = "fleet_1"
            replication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
            consistency = "one"
            ttl = "30d"
            max_in_flight = 64
            "#,
        );
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let o = c.scylla.options();
        assert_eq!(o.nodes, ["10.0.0.5:9042", "db-2:9042"]);
        assert_eq!(o.keyspace, "fleet_1");
        assert_eq!(o.consistency, ScyllaConsistency::One);
        assert_eq!(o.ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.max_in_flight, 64);
        let again: StorageConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c, "serializes to what it parses");
        // The defaults are the backend's.
        let d = parse("engine = \"scylla\"").scylla.options();
        assert_eq!(d.consistency, ScyllaConsistency::LocalQuorum);
        assert_eq!(d.keyspace, ScyllaOptions::default().keyspace);
    }

    #[test]
    fn embedded_backend_is_selected_by_name() {
        assert_eq!(parse("").embedded.backend, EmbeddedBackend::Redb);
        let c = parse("[embedded]\nbackend = \"fjall\"");
        assert_eq!(c.embedded.backend, EmbeddedBackend::Fjall);
        assert!(c.validate().is_ok());
        let again: StorageConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c, "serializes to what it parses");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            ("[scylla]\nnodes = []", "storage.scylla.nodes"),
            ("[scylla]\nnodes = [\"db\"]", "storage.scylla.nodes"),
            ("[scylla]\nnodes = [\":9042\"]", "storage.scylla.nodes"),
            ("[scylla]\nkeyspace = \"Fleet\"", "storage.scylla.keyspace"),
            ("[scylla]\nkeyspace = \"a-b\"", "storage.scylla.keyspace"),
            (
                "[scylla]\nreplication = \"3\"",
                "storage.scylla.replication",
            ),
            ("[scylla]\nttl = \"0s\"", "storage.scylla.ttl"),
            (
                "[scylla]\nmax_in_flight = 0",
                "storage.scylla.max_in_flight",
            ),
        ];
        for (text, field) in cases {
            let c = parse(&format!("engine = \"scylla\"\n{text}"));
            let err = c.validate().expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
            // Not checked while the embedded store is selected.
            assert!(parse(text).validate().is_ok(), "{text}");
        }
    }

    #[test]
    fn unknown_engines_keys_and_levels_are_refused() {
        for text in [
            "engine = \"rocks\"",
            "engin = \"scylla\"",
            "[scylla]\nconsistency = \"two\"",
            "[scylla]\nhosts = []",
            "[embedded]\nbackend = \"rocksdb\"",
            "[embedded]\nengine = \"fjall\"",
        ] {
            assert!(toml::from_str::<StorageConfig>(text).is_err(), "{text}");
        }
    }
}
