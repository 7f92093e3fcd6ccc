//! The CQL schema of the Scylla store, as text: validation of the operator-supplied parts
//! (keyspace name, replication map, TTL) and the numbered migrations applied at connect.
//!
//! Pure: it builds strings and never talks to a server (`scylla.rs` executes them), so the
//! text is unit-tested here. Every statement is idempotent (`IF NOT EXISTS`), so two nodes
//! migrating at once, or a node that crashed half-way, simply run it again.
//!
//! Not here: altering a TTL or replication of an existing keyspace. Both are applied when the
//! keyspace and tables are created; changing them later is an operator's `ALTER`.

use std::time::Duration;

use crate::storage::StorageError;

/// The `schema_version` component this store records its migrations under.
pub(super) const COMPONENT: &str = "telemetry";

/// Scylla's largest TTL (20 years), in seconds.
const MAX_TTL_SECS: u64 = 630_720_000;

/// Extra life of a `point_days` entry beyond the points' TTL, so the index never forgets a
/// day while that day's partition still holds live points (they are up to a day younger).
const DAY_INDEX_TTL_MARGIN_SECS: u64 = 2 * 86_400;

/// One schema step: after its statements ran, `schema_version` holds `version`.
pub(super) struct Migration {
    /// Strictly increasing from 1; never renumber a released step.
    pub(super) version: i32,
    /// Idempotent DDL statements, run in order.
    pub(super) statements: Vec<String>,
}

/// Validated schema parameters, ready to be substituted into CQL.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Schema {
    /// The keyspace, a plain lowercase CQL identifier (so no quoting is needed).
    pub(super) keyspace: String,
    /// The replication map literal, e.g. `{'class': 'SimpleStrategy', 'replication_factor': 1}`.
    replication: String,
    /// `default_time_to_live` of `points` in seconds; 0 means no expiry.
    ttl_secs: u64,
}

impl Schema {
    /// Checks the parts an operator supplies; they are substituted into DDL text, so anything
    /// that could break out of its place is refused as `Invalid`.
    pub(super) fn new(
        keyspace: &str,
        replication: &str,
        ttl: Option<Duration>,
    ) -> Result<Schema, StorageError> {
        let mut chars = keyspace.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok || keyspace.len() > 48 {
            return Err(invalid(
                "keyspace",
                "must be 1-48 characters of a-z, 0-9 and _, starting with a letter",
            ));
        }
        let replication = replication.trim();
        let quotes = replication.matches('\'').count();
        if !replication.starts_with('{')
            || !replication.ends_with('}')
            || replication.contains(';')
            || !quotes.is_multiple_of(2)
        {
            return Err(invalid(
                "replication",
                "must be one CQL map literal such as {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
            ));
        }
        let ttl_secs = match ttl {
            None => 0,
            Some(ttl) => {
                // Round up: a TTL of 1.5 s keeps points at least 1.5 s.
                let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                if secs == 0 || secs > MAX_TTL_SECS {
                    return Err(invalid(
                        "ttl",
                        &format!("must be between 1 s and {MAX_TTL_SECS} s (20 years)"),
                    ));
                }
                secs
            }
        };
        Ok(Schema {
            keyspace: keyspace.to_owned(),
            replication: replication.to_owned(),
            ttl_secs,
        })
    }

    /// `CREATE KEYSPACE`, the first statement run at connect.
    pub(super) fn keyspace_cql(&self) -> String {
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {} AND durable_writes = true",
            self.keyspace, self.replication
        )
    }

    /// The table recording applied migrations, created before any migration runs.
    pub(super) fn version_table_cql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.schema_version (\
             component text, version int, applied_at_ms bigint, \
             PRIMARY KEY ((component), version)) \
             WITH CLUSTERING ORDER BY (version DESC)",
            self.keyspace
        )
    }

    /// Every migration this binary knows, in order. Add new steps at the end.
    pub(super) fn migrations(&self) -> Vec<Migration> {
        let ks = &self.keyspace;
        let day_index_ttl = if self.ttl_secs == 0 {
            0
        } else {
            (self.ttl_secs + DAY_INDEX_TTL_MARGIN_SECS).min(MAX_TTL_SECS)
        };
        let mut all = vec![Migration {
            version: 1,
            statements: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.points (\
                     tenant text, device text, day bigint, metric text, ts bigint, value blob, \
                     PRIMARY KEY ((tenant, device, day), metric, ts)) \
                     WITH CLUSTERING ORDER BY (metric ASC, ts ASC) \
                     AND compaction = {{'class': 'TimeWindowCompactionStrategy', \
                     'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}} \
                     AND default_time_to_live = {}",
                    self.ttl_secs
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.point_days (\
                     tenant text, device text, metric text, day bigint, \
                     PRIMARY KEY ((tenant, device), metric, day)) \
                     WITH default_time_to_live = {day_index_ttl}"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.latest (\
                     tenant text, device text, metric text, ts bigint, value blob, \
                     PRIMARY KEY ((tenant, device), metric))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {ks}.devices (\
                     tenant text, device text, first_seen bigint, last_seen bigint, \
                     PRIMARY KEY ((tenant), device))"
                ),
            ],
        }];
        all.push(Migration {
            version: 2,
            statements: super::rollups::migration_cql(ks),
        });
        all
    }
}

fn invalid(field: &'static str, problem: &str) -> StorageError {
    StorageError::Invalid {
        field,
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NTS: &str = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}";

    fn field_of(result: Result<Schema, StorageError>) -> Option<&'static str> {
        match result {
            Err(StorageError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn replication_and_ttl_are_substituted() {
        let schema = Schema::new("starling", NTS, Some(Duration::from_secs(86_400 * 30)));
        let Ok(schema) = schema else {
            panic!("valid options refused: {schema:?}");
        };
        assert_eq!(
            schema.keyspace_cql(),
            format!(
                "CREATE KEYSPACE IF NOT EXISTS starling WITH replication = {NTS} AND durable_writes = true"
            )
        );
        let migrations = schema.migrations();
        assert_eq!(
            migrations.iter().map(|m| m.version).collect::<Vec<_>>(),
            [1, 2]
        );
        let ddl = migrations[0].statements.join("\n");
        assert!(ddl.contains("starling.points ("), "{ddl}");
        assert!(ddl.contains("PRIMARY KEY ((tenant, device, day), metric, ts))"));
        assert!(ddl.contains("'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}"));
        assert!(ddl.contains("default_time_to_live = 2592000\n"), "{ddl}");
        assert!(
            ddl.contains("default_time_to_live = 2764800\n"),
            "day index: ttl + 2 days"
        );
        assert!(ddl.contains("PRIMARY KEY ((tenant), device))"));
        assert!(
            migrations[0]
                .statements
                .iter()
                .all(|s| s.contains("IF NOT EXISTS")),
            "every step must be idempotent"
        );
        assert!(
            schema
                .version_table_cql()
                .contains("starling.schema_version")
        );
    }

    #[test]
    fn no_ttl_is_zero_and_fractions_round_up() {
        let none = Schema::new(
            "ks",
            "{'class': 'SimpleStrategy', 'replication_factor': 1}",
            None,
        );
        let Ok(none) = none else { panic!("{none:?}") };
        assert!(
            none.migrations()[0]
                .statements
                .iter()
                .all(|s| !s.contains("_live = ") || s.contains("_live = 0"))
        );
        let half = Schema::new("ks", NTS, Some(Duration::from_millis(1500)));
        assert_eq!(half.map(|s| s.ttl_secs).ok(), Some(2));
    }

    #[test]
    fn unsafe_parts_are_refused() {
        let ok = Some(Duration::from_secs(60));
        let cases = [
            ("Starling", NTS, ok, "keyspace"),
            ("", NTS, ok, "keyspace"),
            ("1ks", NTS, ok, "keyspace"),
            ("ks; DROP KEYSPACE x", NTS, ok, "keyspace"),
            (&"k".repeat(49), NTS, ok, "keyspace"),
            ("ks", "SimpleStrategy", ok, "replication"),
            ("ks", "{'class': 'x'}; DROP TABLE t; {", ok, "replication"),
            ("ks", "{'class: 'x'}", ok, "replication"),
            ("ks", NTS, Some(Duration::ZERO), "ttl"),
            (
                "ks",
                NTS,
                Some(Duration::from_secs(MAX_TTL_SECS + 1)),
                "ttl",
            ),
        ];
        for (keyspace, replication, ttl, field) in cases {
            assert_eq!(
                field_of(Schema::new(keyspace, replication, ttl)),
                Some(field),
                "{keyspace:?} {replication:?} {ttl:?}"
            );
        }
        assert_eq!(field_of(Schema::new("starling_2", NTS, None)), None);
    }
}
