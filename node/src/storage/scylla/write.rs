//! The write path of the Scylla store: which statements one `write` needs ([`plan`], pure)
//! and running them with bounded concurrency ([`run`]).
//!
//! A batch becomes one `points` upsert per distinct point identity (the last one in the batch
//! wins, as a sequence of writes would), one `point_days` entry per (device, metric, day),
//! one `latest` upsert per (device, metric) for its newest point, and one `first_seen` and
//! one `last_seen` cell per device. All of them commute, so they run in any order, in
//! parallel; none reads first. Not here: logged batches (they would serialise the partitions
//! through a batchlog for an atomicity nothing downstream needs).

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{ScyllaStore, codec, engine};
use crate::model::{DeviceKey, Point, TimestampMs};
use crate::storage::StorageError;

/// One statement of a write, borrowing from the batch.
#[derive(Debug, PartialEq)]
pub(super) enum Op<'a> {
    /// Upsert a point into its day partition.
    Point(&'a Point),
    /// Record that `day` holds points of (device, metric).
    Day {
        device: &'a DeviceKey,
        metric: &'a str,
        day: i64,
    },
    /// Offer `point` as the newest of its metric.
    Latest(&'a Point),
    /// Offer `ts_ms` as the device's last seen time.
    LastSeen {
        device: &'a DeviceKey,
        ts_ms: TimestampMs,
    },
    /// Offer `ts_ms` as the device's first seen time.
    FirstSeen {
        device: &'a DeviceKey,
        ts_ms: TimestampMs,
    },
}

/// The statements a batch needs, deduplicated as the module docs say.
pub(super) fn plan(points: &[Point]) -> Vec<Op<'_>> {
    let mut unique: BTreeMap<(&DeviceKey, &str, TimestampMs), &Point> = BTreeMap::new();
    let mut newest: BTreeMap<(&DeviceKey, &str), &Point> = BTreeMap::new();
    let mut days: BTreeMap<(&DeviceKey, &str, i64), ()> = BTreeMap::new();
    let mut seen: BTreeMap<&DeviceKey, (TimestampMs, TimestampMs)> = BTreeMap::new();
    for point in points {
        let metric = point.metric.as_str();
        unique.insert((&point.device, metric, point.ts_ms), point);
        days.insert((&point.device, metric, codec::day_of(point.ts_ms)), ());
        newest
            .entry((&point.device, metric))
            .and_modify(|best| {
                // `>=`: on equal ts the later point of the batch wins.
                if point.ts_ms >= best.ts_ms {
                    *best = point;
                }
            })
            .or_insert(point);
        seen.entry(&point.device)
            .and_modify(|(first, last)| {
                *first = (*first).min(point.ts_ms);
                *last = (*last).max(point.ts_ms);
            })
            .or_insert((point.ts_ms, point.ts_ms));
    }
    let mut ops: Vec<Op<'_>> = unique.into_values().map(Op::Point).collect();
    ops.extend(days.into_keys().map(|(device, metric, day)| Op::Day {
        device,
        metric,
        day,
    }));
    ops.extend(newest.into_values().map(Op::Latest));
    for (device, (first, last)) in seen {
        ops.push(Op::FirstSeen {
            device,
            ts_ms: first,
        });
        ops.push(Op::LastSeen {
            device,
            ts_ms: last,
        });
    }
    ops
}

/// Runs the plan of `points`, at most `max_in_flight` statements at once (store-wide, through
/// the semaphore). `clock` is this write's tie-breaker for `latest` (see `codec`). Returns
/// the first failure; statements still running then are dropped (harmless: all idempotent).
pub(super) async fn run(
    store: &ScyllaStore,
    points: &[Point],
    clock: u64,
) -> Result<(), StorageError> {
    // A hand-rolled `buffer_unordered`: the combinator's closure trips the compiler's
    // higher-ranked lifetime check inside `async_trait`'s boxed future.
    let mut ops = plan(points).into_iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < store.max_in_flight {
            match ops.next() {
                Some(op) => running.push(execute(store, op, clock)),
                None => break,
            }
        }
        match running.next().await {
            Some(result) => result?,
            None => return Ok(()),
        }
    }
}

/// Executes one statement once a permit is free; a closed store answers `Closed`.
async fn execute(store: &ScyllaStore, op: Op<'_>, clock: u64) -> Result<(), StorageError> {
    let _permit = store
        .in_flight
        .acquire()
        .await
        .map_err(|_| StorageError::Closed)?;
    let s = &store.statements;
    let session = &store.session;
    let (statement, result) = match op {
        Op::Point(p) => {
            let mut value = Vec::with_capacity(17);
            codec::encode_value(&p.value, &mut value);
            let day = codec::day_of(p.ts_ms);
            let values = (
                &p.device.tenant,
                &p.device.device,
                day,
                &p.metric,
                p.ts_ms,
                value,
            );
            (
                &s.insert_point,
                session.execute_unpaged(&s.insert_point, values).await,
            )
        }
        Op::Day {
            device,
            metric,
            day,
        } => {
            let values = (&device.tenant, &device.device, metric, day);
            (
                &s.insert_day,
                session.execute_unpaged(&s.insert_day, values).await,
            )
        }
        Op::Latest(p) => {
            let value = codec::encode_latest(clock, &p.value);
            let stamp = codec::newest_wins_timestamp(p.ts_ms);
            let values = (
                &p.device.tenant,
                &p.device.device,
                &p.metric,
                p.ts_ms,
                value,
                stamp,
            );
            let result = session.execute_unpaged(&s.upsert_latest, values).await;
            (&s.upsert_latest, result)
        }
        Op::LastSeen { device, ts_ms } => {
            let stamp = codec::newest_wins_timestamp(ts_ms);
            let values = (stamp, ts_ms, &device.tenant, &device.device);
            let result = session.execute_unpaged(&s.touch_last_seen, values).await;
            (&s.touch_last_seen, result)
        }
        Op::FirstSeen { device, ts_ms } => {
            let stamp = codec::oldest_wins_timestamp(ts_ms);
            let values = (stamp, ts_ms, &device.tenant, &device.device);
            let result = session.execute_unpaged(&s.touch_first_seen, values).await;
            (&s.touch_first_seen, result)
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(error) => Err(engine(statement.get_statement(), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn point(device: &str, metric: &str, ts_ms: TimestampMs, value: f64) -> Point {
        Point {
            device: DeviceKey::new("t", device),
            metric: metric.to_owned(),
            ts_ms,
            value: Value::Number(value),
        }
    }

    #[test]
    fn plan_dedups_and_keeps_newest_and_bounds() {
        let points = vec![
            point("a", "m", 10, 1.0),
            point("a", "m", 10, 2.0),
            point("a", "m", 5, 3.0),
            point("a", "m", codec::DAY_MS + 1, 4.0),
            point("a", "m", codec::DAY_MS + 1, 5.0),
            point("b", "n", -1, 6.0),
        ];
        let ops = plan(&points);
        let stored: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Point(p) => Some((p.device.device.as_str(), p.ts_ms, p.value.clone())),
                _ => None,
            })
            .collect();
        let n = |v| Value::Number(v);
        assert_eq!(
            stored,
            [
                ("a", 5, n(3.0)),
                ("a", 10, n(2.0)),
                ("a", codec::DAY_MS + 1, n(5.0)),
                ("b", -1, n(6.0)),
            ],
            "one upsert per identity, the batch's last value"
        );
        let days: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Day { device, day, .. } => Some((device.device.as_str(), *day)),
                _ => None,
            })
            .collect();
        assert_eq!(days, [("a", 0), ("a", 1), ("b", -1)]);
        let latest: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Latest(p) => Some((p.device.device.as_str(), p.ts_ms, p.value.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            latest,
            [("a", codec::DAY_MS + 1, n(5.0)), ("b", -1, n(6.0))]
        );
        let a = DeviceKey::new("t", "a");
        assert!(ops.contains(&Op::FirstSeen {
            device: &a,
            ts_ms: 5
        }));
        assert!(ops.contains(&Op::LastSeen {
            device: &a,
            ts_ms: codec::DAY_MS + 1
        }));
        assert_eq!(ops.len(), 4 + 3 + 2 + 4);
    }
}
