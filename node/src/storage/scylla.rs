//! The Scylla telemetry store: the replicated backend for production clusters.
//!
//! Tables (keyspace from [`ScyllaOptions::keyspace`], created or migrated at connect, see
//! `schema.rs`; version recorded in `schema_version`):
//! - `points` ((tenant, device, day), metric, ts) → value. `day = ts_ms div 86 400 000`
//!   (floor, so pre-1970 points land in negative days). TimeWindowCompactionStrategy with one
//!   day windows and the `default_time_to_live` of [`ScyllaOptions::ttl`]. An INSERT is an
//!   upsert, so a redelivered point is stored once and a rewrite replaces the value.
//! - `point_days` ((tenant, device), metric, day): the day partitions that hold points, so a
//!   range read visits only days with data (a read of "all time" would otherwise walk
//!   trillions of empty days). Expires two days after the points it indexes.
//! - `latest` ((tenant, device), metric) → ts, value: the newest point per metric, and the
//!   list of a device's metrics. Written `USING TIMESTAMP <event time in µs>`, so Scylla's
//!   last-write-wins keeps the greatest *event* time whatever order writes arrive in, on any
//!   replica, without a read or a lightweight transaction. Equal event times (a rewrite of the
//!   newest point) tie on the write timestamp; Scylla then keeps the byte-wise greater cell,
//!   so the stored value starts with a big-endian write clock and the later write wins.
//!   No TTL: a tie must never be decided by expiry.
//! - `devices` ((tenant), device) → first_seen, last_seen: `last_seen` is written with the
//!   event time as write timestamp (the max wins), `first_seen` with the *negated* event time
//!   (the min wins). One cell each, no read-before-write, correct under any concurrency.
//!
//! Consequence of event-time write timestamps: rows of `latest` and `devices` cannot be
//! removed by a plain `DELETE` (its timestamp is "now", older than future events and far
//! from negated ones); delete them `USING TIMESTAMP 9223372036854775807`.
//!
//! Writes: every statement is prepared, marked idempotent (so the driver's default retry
//! policy may retry it on timeouts and unavailable replicas) and executed concurrently with
//! at most [`ScyllaOptions::max_in_flight`] in flight across the store. Token-aware routing
//! is the driver's default for prepared statements with a bound partition key. `write`
//! returns `Ok` only once every statement succeeded at the configured consistency.
//!
//! Errors: driver and server failures are [`StorageError::Engine`]. Many of them (timeouts,
//! unavailable replicas, a lost connection, after the driver's own retries) are transient;
//! as every write is idempotent, a caller may retry the same `write` later. Invalid options
//! are `Invalid` at connect. Fences, rollups and retention: see `rollups.rs`. Not here: TLS
//! and authentication to Scylla, and altering the TTL or replication of an existing keyspace.

mod codec;
mod rollups;
mod schema;
mod statements;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::Semaphore;

use self::codec::Cursor;
use self::schema::Schema;
use self::statements::{Statements, prepare_all};
use super::rollup::{RollupPage, RollupQuery};
use super::{Fence, Page, RangeQuery, RetentionPolicy, StorageError, TelemetryStore};
use crate::model::{DeviceInfo, DeviceKey, Point, TimestampMs};

/// Rows per page of the driver's paged reads when a read has no smaller limit.
const READ_PAGE_ROWS: usize = 5_000;

/// Consistency level of every read and write. A small mirror of the driver's type, so that
/// configuration never imports the driver (only `storage/` does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScyllaConsistency {
    /// One replica. For single-node development and tests only.
    One,
    /// One replica in the local datacenter.
    LocalOne,
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local datacenter's replicas: the default.
    #[default]
    LocalQuorum,
    /// A majority in every datacenter.
    EachQuorum,
    /// Every replica.
    All,
}

impl ScyllaConsistency {
    fn driver(self) -> scylla::statement::Consistency {
        use scylla::statement::Consistency;
        match self {
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::EachQuorum => Consistency::EachQuorum,
            ScyllaConsistency::All => Consistency::All,
        }
    }
}

/// How to reach and lay out the Scylla store.
#[derive(Clone, Debug)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`; the driver discovers the rest of the cluster from them.
    pub nodes: Vec<String>,
    /// Keyspace holding every table; a lowercase CQL identifier.
    pub keyspace: String,
    /// CQL replication map used when the keyspace is created (ignored if it exists).
    pub replication: String,
    /// Consistency of every statement.
    pub consistency: ScyllaConsistency,
    /// Default TTL of points (table `default_time_to_live`); `None` keeps them forever.
    /// Applied when the table is created.
    pub ttl: Option<Duration>,
    /// Statements in flight at once, across all concurrent `write` calls: bounds memory and
    /// the load one node puts on the cluster.
    pub max_in_flight: usize,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "starling".to_owned(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".to_owned(),
            consistency: ScyllaConsistency::LocalQuorum,
            ttl: None,
            max_in_flight: 256,
        }
    }
}

/// The Scylla backend of [`TelemetryStore`].
pub struct ScyllaStore {
    /// The driver session: connection pools to every node, token-aware routing, retries.
    session: Session,
    /// Prepared statements, shared by every call.
    statements: Statements,
    /// Prepared statements of fences, rollups and retention (`rollups.rs`).
    rollup: rollups::RollupStatements,
    /// Serialise rollup recomputation per device in this process.
    locks: rollups::DeviceLocks,
    /// Permits for statements in flight. Closing it is how `close` stops writes: waiting
    /// statements fail with `Closed`, running ones finish.
    in_flight: Arc<Semaphore>,
    /// `ScyllaOptions::max_in_flight`, also the fan-out of one `write`.
    max_in_flight: usize,
    /// Last write clock handed out (µs since 1970), strictly increasing within the process:
    /// the tie-breaker of `latest` rows (see the module docs).
    write_clock: AtomicU64,
    /// The keyspace, for tests that drop it.
    #[cfg_attr(not(test), allow(dead_code))]
    keyspace: String,
}

impl ScyllaStore {
    /// Connects, creates or migrates the schema, and prepares every statement.
    ///
    /// Options are checked first (`Invalid { field: "keyspace" | "replication" | "ttl" |
    /// "nodes" | "max_in_flight" }`); an unreachable cluster or failing DDL is `Engine`.
    pub async fn connect(options: ScyllaOptions) -> Result<Arc<ScyllaStore>, StorageError> {
        let schema = Schema::new(&options.keyspace, &options.replication, options.ttl)?;
        if options.nodes.is_empty() {
            return Err(StorageError::Invalid {
                field: "nodes",
                problem: "at least one contact point is needed".to_owned(),
            });
        }
        if options.max_in_flight == 0 {
            return Err(StorageError::Invalid {
                field: "max_in_flight",
                problem: "must be at least 1".to_owned(),
            });
        }
        let profile = ExecutionProfile::builder()
            .consistency(options.consistency.driver())
            .build()
            .into_handle();
        let session = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .default_execution_profile_handle(profile)
            // Client-side, monotonic write timestamps: a rewrite of a point from this process
            // always wins over its earlier write, whichever coordinator handles either.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
            .build()
            .await
            .map_err(|error| engine("connecting to Scylla", error))?;
        migrate(&session, &schema).await?;
        let statements = prepare_all(&session, &schema.keyspace).await?;
        let rollup = rollups::prepare(&session, &schema.keyspace).await?;
        tracing::info!(keyspace = %schema.keyspace, nodes = ?options.nodes, "scylla store open");
        Ok(Arc::new(ScyllaStore {
            session,
            statements,
            rollup,
            locks: rollups::DeviceLocks::default(),
            in_flight: Arc::new(Semaphore::new(options.max_in_flight)),
            max_in_flight: options.max_in_flight,
            write_clock: AtomicU64::new(0),
            keyspace: schema.keyspace,
        }))
    }

    /// The next write clock: wall-clock µs, or one more than the last if the clock is behind.
    fn tick(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        let mut last = self.write_clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.write_clock.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Every row of a paged read, deserialized as `R`, stopping after `max` rows.
    async fn rows<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        max: usize,
    ) -> Result<Vec<R>, StorageError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let mut statement = statement.clone();
        let page = max.clamp(1, READ_PAGE_ROWS);
        statement.set_page_size(i32::try_from(page).unwrap_or(i32::MAX));
        let context = statement.get_statement().to_owned();
        let pager = self
            .session
            .execute_iter(statement, values)
            .await
            .map_err(|error| engine(&context, error))?;
        let mut stream = pager
            .rows_stream::<R>()
            .map_err(|error| engine(&context, error))?;
        let mut rows = Vec::new();
        while rows.len() < max {
            match stream.next().await {
                Some(row) => rows.push(row.map_err(|error| engine(&context, error))?),
                None => break,
            }
        }
        Ok(rows)
    }
}

#[async_trait]
impl TelemetryStore for ScyllaStore {
    async fn write_fenced(
        &self,
        fence: Option<Fence>,
        points: Vec<Point>,
    ) -> Result<(), StorageError> {
        if self.in_flight.is_closed() {
            return Err(StorageError::Closed);
        }
        if points.is_empty() {
            return Ok(());
        }
        if let Some(fence) = fence {
            rollups::check_fence(self, fence).await?;
        }
        let clock = self.tick();
        write::run(self, &points, clock).await?;
        rollups::recompute(self, &points).await
    }

    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError> {
        if query.limit == 0 {
            return Err(StorageError::Invalid {
                field: "limit",
                problem: "must be at least 1".to_owned(),
            });
        }
        if query.to_ms <= query.from_ms {
            return Ok(RollupPage::default());
        }
        rollups::read(self, &query).await
    }

    async fn sweep(
        &self,
        policy: &RetentionPolicy,
        now_ms: TimestampMs,
    ) -> Result<u64, StorageError> {
        rollups::sweep(self, policy, now_ms).await
    }

    async fn query(&self, query: RangeQuery) -> Result<Page, StorageError> {
        query.check()?;
        let after = query
            .page_token
            .as_deref()
            .map(codec::decode_token)
            .transpose()?;
        if query.is_empty_range() {
            return Ok(Page::default());
        }
        self.read_range(&query, after).await
    }

    async fn latest(&self, device: &DeviceKey) -> Result<Vec<Point>, StorageError> {
        let rows: Vec<(String, i64, Vec<u8>)> = self
            .rows(
                &self.statements.select_latest,
                (&device.tenant, &device.device),
                usize::MAX,
            )
            .await?;
        rows.into_iter()
            .map(|(metric, ts_ms, value)| {
                Ok(Point {
                    device: device.clone(),
                    metric,
                    ts_ms,
                    value: codec::decode_latest(&value)?,
                })
            })
            .collect()
    }

    async fn device(&self, device: &DeviceKey) -> Result<Option<DeviceInfo>, StorageError> {
        let rows: Vec<(Option<i64>, Option<i64>)> = self
            .rows(
                &self.statements.select_device,
                (&device.tenant, &device.device),
                1,
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(first, last)| seen(device.clone(), first, last)))
    }

    async fn devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceInfo>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cql_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(String, Option<i64>, Option<i64>)> = match after {
            Some(after) => {
                let statement = &self.statements.select_devices_after;
                self.rows(statement, (tenant, after, cql_limit), limit)
                    .await?
            }
            None => {
                let statement = &self.statements.select_devices;
                self.rows(statement, (tenant, cql_limit), limit).await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(id, first, last)| seen(DeviceKey::new(tenant, id), first, last))
            .collect())
    }

    async fn close(&self) {
        if !self.in_flight.is_closed() {
            self.in_flight.close();
            tracing::info!(keyspace = %self.keyspace, "scylla store closed to writes");
        }
    }
}

impl ScyllaStore {
    /// The device's (first, last) seen event times, if it has any point.
    async fn seen_span(
        &self,
        device: &DeviceKey,
    ) -> Result<Option<(TimestampMs, TimestampMs)>, StorageError> {
        Ok(self
            .device(device)
            .await?
            .map(|i| (i.first_seen_ms, i.last_seen_ms)))
    }

    /// One page of a range read in (metric, ts) order, resuming strictly after `after`.
    /// The caller has ruled out empty ranges and a zero limit.
    async fn read_range(
        &self,
        query: &RangeQuery,
        after: Option<Cursor>,
    ) -> Result<Page, StorageError> {
        let (tenant, device) = (&query.device.tenant, &query.device.device);
        let metrics: Vec<String> = match &query.metric {
            Some(metric) => vec![metric.clone()],
            None => {
                let first = after.as_ref().map_or("", |cursor| cursor.metric.as_str());
                let rows: Vec<(String,)> = self
                    .rows(
                        &self.statements.select_metrics,
                        (tenant, device, first),
                        usize::MAX,
                    )
                    .await?;
                rows.into_iter().map(|(metric,)| metric).collect()
            }
        };
        // One more than the limit tells whether a next page exists.
        let wanted = query.limit.saturating_add(1);
        let mut points: Vec<Point> = Vec::with_capacity(wanted.min(1024));
        'metrics: for metric in metrics {
            let Some(from_ms) = codec::resume_from(after.as_ref(), &metric, query.from_ms) else {
                continue;
            };
            let Some((first_day, last_day)) = codec::day_span(from_ms, query.to_ms) else {
                continue;
            };
            let days: Vec<(i64,)> = self
                .rows(
                    &self.statements.select_days,
                    (tenant, device, &metric, first_day, last_day),
                    usize::MAX,
                )
                .await?;
            for (day,) in days {
                let remaining = wanted - points.len();
                let rows: Vec<(i64, Vec<u8>)> = self
                    .rows(
                        &self.statements.select_points,
                        (tenant, device, day, &metric, from_ms, query.to_ms),
                        remaining,
                    )
                    .await?;
                for (ts_ms, value) in rows {
                    points.push(Point {
                        device: query.device.clone(),
                        metric: metric.clone(),
                        ts_ms,
                        value: codec::decode_value(&value)?,
                    });
                }
                if points.len() >= wanted {
                    break 'metrics;
                }
            }
        }
        let next = if points.len() > query.limit {
            points.truncate(query.limit);
            points.last().map(|last| {
                codec::encode_token(&Cursor {
                    metric: last.metric.clone(),
                    ts_ms: last.ts_ms,
                })
            })
        } else {
            None
        };
        Ok(Page { points, next })
    }
}

/// A `devices` row as [`DeviceInfo`]. Each bound is its own cell; if a failed write left only
/// one of them, the other is taken to be the same (the write was an error, and its retry
/// fills it in).
fn seen(key: DeviceKey, first: Option<i64>, last: Option<i64>) -> Option<DeviceInfo> {
    let (first_seen_ms, last_seen_ms) = match (first, last) {
        (Some(first), Some(last)) => (first, last),
        (Some(one), None) | (None, Some(one)) => (one, one),
        (None, None) => return None,
    };
    Some(DeviceInfo {
        key,
        first_seen_ms,
        last_seen_ms,
    })
}

/// Creates the keyspace and the version table, then runs every migration newer than the
/// recorded version and records it. Refuses a schema newer than this binary knows.
async fn migrate(session: &Session, schema: &Schema) -> Result<(), StorageError> {
    run_ddl(session, schema.keyspace_cql()).await?;
    run_ddl(session, schema.version_table_cql()).await?;
    let ks = &schema.keyspace;
    let current = session
        .query_unpaged(
            format!("SELECT version FROM {ks}.schema_version WHERE component = ? LIMIT 1"),
            (schema::COMPONENT,),
        )
        .await
        .map_err(|error| engine("reading schema_version", error))?
        .into_rows_result()
        .map_err(|error| engine("reading schema_version", error))?
        .maybe_first_row::<(i32,)>()
        .map_err(|error| engine("reading schema_version", error))?
        .map_or(0, |(version,)| version);
    let migrations = schema.migrations();
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(StorageError::Engine(format!(
            "keyspace {ks} has schema version {current}, newer than this binary's {known}; \
             upgrade the node"
        )));
    }
    for migration in migrations.into_iter().filter(|m| m.version > current) {
        for statement in migration.statements {
            run_ddl(session, statement).await?;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_version (component, version, applied_at_ms) \
                     VALUES (?, ?, ?)"
                ),
                (schema::COMPONENT, migration.version, now_ms),
            )
            .await
            .map_err(|error| engine("recording schema_version", error))?;
        tracing::info!(keyspace = %ks, version = migration.version, "scylla schema migrated");
    }
    Ok(())
}

/// Runs one DDL statement (the driver waits for schema agreement after it).
async fn run_ddl(session: &Session, cql: String) -> Result<(), StorageError> {
    match session.query_unpaged(cql.as_str(), ()).await {
        Ok(_) => Ok(()),
        Err(error) => Err(engine(&cql, error)),
    }
}

/// A driver or server failure, as the storage layer reports it, naming what was being done.
fn engine(context: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(format!("scylla: {context}: {error}"))
}

#[cfg(test)]
mod tests;
