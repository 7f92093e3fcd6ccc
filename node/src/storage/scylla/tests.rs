//! Server-backed tests of the Scylla store: the shared conformance suite, run against the
//! node named by `STARLING_TEST_SCYLLA` (`host:port`), each check in a fresh keyspace that
//! is dropped afterwards. Without the variable every check prints that it was skipped and
//! passes without asserting (see `docker/scylla/` to run them for real).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ScyllaConsistency, ScyllaOptions, ScyllaStore};

/// The variable naming the test node.
const NODE_VAR: &str = "STARLING_TEST_SCYLLA";

/// Drops its store's keyspace when the check ends (passed or panicked).
pub(crate) struct KeyspaceDropper {
    /// The store whose keyspace is dropped.
    store: Arc<ScyllaStore>,
}

impl Drop for KeyspaceDropper {
    fn drop(&mut self) {
        let cql = format!("DROP KEYSPACE IF EXISTS {}", self.store.keyspace);
        let session = &self.store.session;
        // The conformance macro runs on tokio's multi-thread runtime, where a worker may
        // block in place; the session's connections live on that runtime.
        let dropped = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(session.query_unpaged(cql.as_str(), ()))
                .map(drop)
                .map_err(|error| error.to_string())
        });
        if let Err(error) = dropped {
            eprintln!(
                "could not drop test keyspace {}: {error}",
                self.store.keyspace
            );
        }
    }
}

/// A unique keyspace name for one check.
fn keyspace_name() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(nanos);
    format!("starling_test_{:016x}", hasher.finish())
}

/// A fresh store in its own keyspace, or `None` (after saying so) when no node is named.
pub(crate) async fn fresh() -> Option<(Arc<ScyllaStore>, KeyspaceDropper)> {
    let Ok(node) = std::env::var(NODE_VAR) else {
        // Written to stderr directly, not with `println!`, so the test harness does not capture
        // it: the run must say plainly that this suite did not run. Once per test process.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {NODE_VAR} is not set; the Scylla conformance suite did not run \
                 (set {NODE_VAR}=host:port to run it against a real ScyllaDB)"
            );
        });
        return None;
    };
    let options = ScyllaOptions {
        nodes: vec![node],
        keyspace: keyspace_name(),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_owned(),
        consistency: ScyllaConsistency::One,
        ttl: None,
        max_in_flight: 64,
    };
    match ScyllaStore::connect(options).await {
        Ok(store) => Some((Arc::clone(&store), KeyspaceDropper { store })),
        Err(error) => panic!("{NODE_VAR} is set but connecting failed: {error}"),
    }
}

#[test]
fn default_options_match_the_design() {
    let options = ScyllaOptions::default();
    assert_eq!(options.keyspace, "starling");
    assert_eq!(options.consistency, ScyllaConsistency::LocalQuorum);
    assert_eq!(options.max_in_flight, 256);
    assert!(options.replication.contains("NetworkTopologyStrategy"));
    assert!(options.replication.contains("'replication_factor': 3"));
}

#[tokio::test]
async fn bad_options_are_refused_before_connecting() {
    let cases = [
        (
            ScyllaOptions {
                nodes: Vec::new(),
                ..ScyllaOptions::default()
            },
            "nodes",
        ),
        (
            ScyllaOptions {
                max_in_flight: 0,
                ..ScyllaOptions::default()
            },
            "max_in_flight",
        ),
        (
            ScyllaOptions {
                keyspace: "Bad".to_owned(),
                ..ScyllaOptions::default()
            },
            "keyspace",
        ),
    ];
    for (options, field) in cases {
        match ScyllaStore::connect(options).await {
            Err(crate::storage::StorageError::Invalid { field: got, .. }) => assert_eq!(got, field),
            Err(other) => panic!("{field}: expected Invalid, got {other}"),
            Ok(_) => panic!("{field}: connected with bad options"),
        }
    }
}

mod conformance {
    crate::telemetry_store_conformance!(optional: super::fresh);
}
