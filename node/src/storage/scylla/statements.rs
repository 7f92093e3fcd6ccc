//! The CQL statements of the Scylla store, prepared once at connect.
//!
//! Every statement names its keyspace, so the session needs no `USE`. All of them are
//! idempotent (upserts, cell writes with explicit timestamps, and reads) and are marked so,
//! which lets the driver's default retry policy retry them, and lets speculative execution
//! be enabled later. Not here: executing them (`scylla.rs`, `write.rs`).

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::engine;
use crate::storage::StorageError;

/// The statements the store runs, prepared once at connect.
pub(super) struct Statements {
    /// Upsert of one point.
    pub(super) insert_point: PreparedStatement,
    /// Upsert of one `point_days` entry.
    pub(super) insert_day: PreparedStatement,
    /// Upsert of one `latest` row, `USING TIMESTAMP` the event time.
    pub(super) upsert_latest: PreparedStatement,
    /// `devices.last_seen`, `USING TIMESTAMP` the event time.
    pub(super) touch_last_seen: PreparedStatement,
    /// `devices.first_seen`, `USING TIMESTAMP` the negated event time.
    pub(super) touch_first_seen: PreparedStatement,
    /// Points of one (device, day, metric) in a ts range.
    pub(super) select_points: PreparedStatement,
    /// Days of one (device, metric) in a day range.
    pub(super) select_days: PreparedStatement,
    /// Metrics of a device from a given one on.
    pub(super) select_metrics: PreparedStatement,
    /// Every `latest` row of a device.
    pub(super) select_latest: PreparedStatement,
    /// One `devices` row.
    pub(super) select_device: PreparedStatement,
    /// A tenant's devices from the first, at most `LIMIT ?`.
    pub(super) select_devices: PreparedStatement,
    /// A tenant's devices after a given id, at most `LIMIT ?`.
    pub(super) select_devices_after: PreparedStatement,
}

/// Prepares every statement against `ks`, writes marked idempotent.
pub(super) async fn prepare_all(session: &Session, ks: &str) -> Result<Statements, StorageError> {
    let prepare = |cql: String, idempotent: bool| async move {
        let mut statement = session
            .prepare(cql.as_str())
            .await
            .map_err(|error| engine(&cql, error))?;
        statement.set_is_idempotent(idempotent);
        Ok::<_, StorageError>(statement)
    };
    Ok(Statements {
        insert_point: prepare(
            format!(
                "INSERT INTO {ks}.points (tenant, device, day, metric, ts, value) \
                 VALUES (?, ?, ?, ?, ?, ?)"
            ),
            true,
        )
        .await?,
        insert_day: prepare(
            format!(
                "INSERT INTO {ks}.point_days (tenant, device, metric, day) VALUES (?, ?, ?, ?)"
            ),
            true,
        )
        .await?,
        upsert_latest: prepare(
            format!(
                "INSERT INTO {ks}.latest (tenant, device, metric, ts, value) \
                 VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ),
            true,
        )
        .await?,
        touch_last_seen: prepare(
            format!(
                "UPDATE {ks}.devices USING TIMESTAMP ? SET last_seen = ? \
                 WHERE tenant = ? AND device = ?"
            ),
            true,
        )
        .await?,
        touch_first_seen: prepare(
            format!(
                "UPDATE {ks}.devices USING TIMESTAMP ? SET first_seen = ? \
                 WHERE tenant = ? AND device = ?"
            ),
            true,
        )
        .await?,
        select_points: prepare(
            format!(
                "SELECT ts, value FROM {ks}.points WHERE tenant = ? AND device = ? AND day = ? \
                 AND metric = ? AND ts >= ? AND ts < ?"
            ),
            true,
        )
        .await?,
        select_days: prepare(
            format!(
                "SELECT day FROM {ks}.point_days WHERE tenant = ? AND device = ? AND metric = ? \
                 AND day >= ? AND day <= ?"
            ),
            true,
        )
        .await?,
        select_metrics: prepare(
            format!(
                "SELECT metric FROM {ks}.latest WHERE tenant = ? AND device = ? AND metric >= ?"
            ),
            true,
        )
        .await?,
        select_latest: prepare(
            format!("SELECT metric, ts, value FROM {ks}.latest WHERE tenant = ? AND device = ?"),
            true,
        )
        .await?,
        select_device: prepare(
            format!(
                "SELECT first_seen, last_seen FROM {ks}.devices WHERE tenant = ? AND device = ?"
            ),
            true,
        )
        .await?,
        select_devices: prepare(
            format!(
                "SELECT device, first_seen, last_seen FROM {ks}.devices WHERE tenant = ? LIMIT ?"
            ),
            true,
        )
        .await?,
        select_devices_after: prepare(
            format!(
                "SELECT device, first_seen, last_seen FROM {ks}.devices \
                 WHERE tenant = ? AND device > ? LIMIT ?"
            ),
            true,
        )
        .await?,
    })
}
