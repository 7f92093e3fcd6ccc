//! The retention worker: every `interval`, deletes from this node's store what the policy no
//! longer keeps ([`TelemetryStore::sweep`]), and counts it.
//!
//! Each node sweeps its own store (with the embedded store a device's history stays where it
//! was written). The first sweep runs one interval after start, so a restart loop does not
//! turn into a sweep loop. A failed sweep is logged and counted and tried again at the next
//! interval; nothing else depends on it.
//!
//! What it does not do: hide expired data from reads before a sweep removed it, or spread one
//! sweep over several transactions (the embedded store deletes in one; ingest waits for it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{RetentionPolicy, TelemetryStore};
use crate::metrics_names::{RETENTION_DELETED, RETENTION_SWEEPS};

/// Sweeps `store` every `interval` until `stop` turns true.
pub async fn run(
    store: Arc<dyn TelemetryStore>,
    policy: RetentionPolicy,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        sweep_once(store.as_ref(), &policy, crate::api::now_ms()).await;
    }
}

/// One sweep at `now_ms`; returns the entries deleted (0 when it failed).
pub async fn sweep_once(store: &dyn TelemetryStore, policy: &RetentionPolicy, now_ms: i64) -> u64 {
    let started = std::time::Instant::now();
    match store.sweep(policy, now_ms).await {
        Ok(removed) => {
            metrics::counter!(RETENTION_SWEEPS, "result" => "ok").increment(1);
            metrics::counter!(RETENTION_DELETED).increment(removed);
            tracing::info!(removed, took = ?started.elapsed(), "retention sweep");
            removed
        }
        Err(error) => {
            metrics::counter!(RETENTION_SWEEPS, "result" => "failed").increment(1);
            tracing::warn!(%error, "retention sweep failed; retrying at the next interval");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::model::{DeviceKey, Point, Value};
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
    use crate::storage::{RangeQuery, Retention};

    const DAY_MS: i64 = 86_400_000;

    fn point(ts: i64) -> Point {
        Point {
            device: DeviceKey::new("t", "d"),
            metric: "temp".into(),
            ts_ms: ts,
            value: Value::Number(1.0),
        }
    }

    async fn count(store: &EmbeddedStore) -> usize {
        let page = store
            .query(RangeQuery {
                device: DeviceKey::new("t", "d"),
                metric: None,
                from_ms: i64::MIN,
                to_ms: i64::MAX,
                limit: 10_000,
                page_token: None,
            })
            .await
            .expect("query");
        page.points.len()
    }

    /// The worker, on paused time, deletes what is past its keep time at each tick and
    /// nothing before the first interval has passed.
    #[tokio::test(start_paused = true)]
    async fn sweeps_every_interval_until_stopped() {
        let dir = TempDir::new().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let now = crate::api::now_ms();
        let old = (1..=3).map(|d| point(now - (10 + d) * DAY_MS));
        let young = (0..2).map(|d| point(now - d * DAY_MS - 1000));
        store.write(old.chain(young).collect()).await.unwrap();
        assert_eq!(count(&store).await, 5);
        let policy = RetentionPolicy {
            default: Retention {
                raw: Some(Duration::from_secs(7 * 86_400)),
                ..Retention::default()
            },
            ..RetentionPolicy::default()
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = tokio::spawn(run(
            store.clone(),
            policy,
            Duration::from_secs(3600),
            stop_rx,
        ));
        tokio::time::sleep(Duration::from_secs(3599)).await;
        assert_eq!(
            count(&store).await,
            5,
            "nothing is swept before the first interval"
        );
        // Past the first tick: the sweep runs on a blocking thread, so wait for its effect.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(&store).await != 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the sweep did not run"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(10));
        }
        stop_tx.send(true).unwrap();
        worker.await.unwrap();
        store.close().await;
    }
}
