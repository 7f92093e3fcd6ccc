//! Pure encodings of the Scylla store: day buckets, write timestamps, stored values and page
//! tokens. No I/O and no driver types, so everything here is unit-tested without a server.
//!
//! Values and page tokens use the encodings shared by every backend (`storage::codec`); page
//! tokens of this store carry the prefix `s1`.

use crate::model::{TimestampMs, Value};
use crate::storage::StorageError;
use crate::storage::codec as shared;
pub(super) use crate::storage::codec::{Cursor, decode_value, encode_value, resume_from};

/// Milliseconds in a UTC day: the width of one `points` partition.
pub(super) const DAY_MS: i64 = 86_400_000;

/// Prefix of every page token of this store. Differs from the embedded store's `p1` so a
/// token cannot silently be replayed against the other backend.
const TOKEN_VERSION: &str = "s1";

/// Event times are clamped to ±2^62 µs (about ±146 000 years) before they become write
/// timestamps, so that negating them can never overflow and never reach `i64::MIN`, which
/// Scylla reserves as "no timestamp".
const MAX_MICROS: i64 = 1 << 62;

/// The day bucket of a timestamp: `floor(ts / 1 day)`, so a negative ts (before 1970) falls
/// in the day that contains it (−1 ms is day −1, not day 0).
pub(super) fn day_of(ts_ms: TimestampMs) -> i64 {
    ts_ms.div_euclid(DAY_MS)
}

/// The inclusive day buckets `[first, last]` that can hold points of `[from_ms, to_ms)`, or
/// `None` for an empty range.
pub(super) fn day_span(from_ms: TimestampMs, to_ms: TimestampMs) -> Option<(i64, i64)> {
    if to_ms <= from_ms {
        return None;
    }
    Some((day_of(from_ms), day_of(to_ms - 1)))
}

/// The event time in microseconds, clamped (see [`MAX_MICROS`]).
fn event_micros(ts_ms: TimestampMs) -> i64 {
    ts_ms.saturating_mul(1000).clamp(-MAX_MICROS, MAX_MICROS)
}

/// Write timestamp (`USING TIMESTAMP`) of `latest` rows and of `devices.last_seen`: the event
/// time, so Scylla's last-write-wins keeps the newest *event*, whatever the arrival order.
pub(super) fn newest_wins_timestamp(ts_ms: TimestampMs) -> i64 {
    event_micros(ts_ms)
}

/// Write timestamp of `devices.first_seen`: the negated event time, so the *oldest* event has
/// the greatest write timestamp and wins.
pub(super) fn oldest_wins_timestamp(ts_ms: TimestampMs) -> i64 {
    -event_micros(ts_ms)
}

/// The `latest.value` cell: an 8-byte big-endian write clock, then the value encoding.
///
/// Two writes of the same (device, metric, ts) carry the same write timestamp (the event
/// time), and Scylla then keeps the cell with the byte-wise greater value. Leading with the
/// write clock makes that the later write, so a rewrite of the newest point replaces it.
pub(super) fn encode_latest(write_clock_us: u64, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 17);
    out.extend_from_slice(&write_clock_us.to_be_bytes());
    encode_value(value, &mut out);
    out
}

/// Decodes a `latest.value` cell made by [`encode_latest`].
pub(super) fn decode_latest(bytes: &[u8]) -> Result<Value, StorageError> {
    match bytes.get(8..) {
        Some(value) => decode_value(value),
        None => Err(corrupt("latest value shorter than its write clock")),
    }
}

fn corrupt(problem: &str) -> StorageError {
    StorageError::Engine(format!("corrupt stored value: {problem}"))
}

/// Encodes a cursor as a page token of this store.
pub(super) fn encode_token(cursor: &Cursor) -> String {
    shared::encode_token(TOKEN_VERSION, cursor)
}

/// Decodes a page token of this store; anything else is `Invalid { field: "page_token" }`.
pub(super) fn decode_token(token: &str) -> Result<Cursor, StorageError> {
    shared::decode_token(TOKEN_VERSION, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_buckets_split_at_midnight_utc() {
        let cases = [
            (0, 0),
            (DAY_MS - 1, 0),
            (DAY_MS, 1),
            (-1, -1),
            (-DAY_MS, -1),
            (-DAY_MS - 1, -2),
            // 2024-11-21T00:00:00Z and the millisecond before it.
            (1_732_147_200_000, 20_048),
            (1_732_147_199_999, 20_047),
            (i64::MIN, i64::MIN.div_euclid(DAY_MS)),
            (i64::MAX, i64::MAX / DAY_MS),
        ];
        for (ts, day) in cases {
            assert_eq!(day_of(ts), day, "day of {ts}");
        }
    }

    #[test]
    fn day_spans_of_queries() {
        let cases = [
            ((0, 1), Some((0, 0))),
            ((0, DAY_MS), Some((0, 0))),
            ((0, DAY_MS + 1), Some((0, 1))),
            ((-1, 1), Some((-1, 0))),
            ((DAY_MS - 1, DAY_MS), Some((0, 0))),
            ((5, 5), None),
            ((6, 5), None),
            (
                (i64::MIN, i64::MAX),
                Some((day_of(i64::MIN), day_of(i64::MAX - 1))),
            ),
        ];
        for ((from, to), span) in cases {
            assert_eq!(day_span(from, to), span, "[{from}, {to})");
        }
    }

    #[test]
    fn write_timestamps_order_by_event_time() {
        let stamps = [i64::MIN, -DAY_MS, -1, 0, 1, 1_732_200_000_000, i64::MAX];
        for pair in stamps.windows(2) {
            let (older, newer) = (pair[0], pair[1]);
            assert!(newest_wins_timestamp(older) < newest_wins_timestamp(newer));
            assert!(oldest_wins_timestamp(older) > oldest_wins_timestamp(newer));
        }
        for ts in stamps {
            assert_ne!(newest_wins_timestamp(ts), i64::MIN);
            assert_ne!(oldest_wins_timestamp(ts), i64::MIN);
        }
        assert_eq!(
            newest_wins_timestamp(1_732_200_000_123),
            1_732_200_000_123_000
        );
    }

    #[test]
    fn values_round_trip_and_latest_cells_order_by_write_clock() {
        let values = [
            Value::Number(-12.5),
            Value::Bool(true),
            Value::Text("héllo ☃".to_owned()),
            Value::Text(String::new()),
            Value::Position {
                lat: 52.52,
                lon: -13.4,
            },
        ];
        for value in values {
            let mut bytes = Vec::new();
            encode_value(&value, &mut bytes);
            assert_eq!(decode_value(&bytes).ok(), Some(value.clone()));
            assert_eq!(decode_latest(&encode_latest(7, &value)).ok(), Some(value));
        }
        // A later write clock is byte-wise greater whatever the values are.
        let early = encode_latest(255, &Value::Number(f64::MAX));
        let late = encode_latest(256, &Value::Number(0.0));
        assert!(late > early);
        for bytes in [
            &[][..],
            &[0x09],
            &[0x02, 2], /* a bool that is neither 0 nor 1 */
            &[0; 7],
        ] {
            assert!(matches!(decode_latest(bytes), Err(StorageError::Engine(_))));
        }
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        for metric in ["", "temp", "a.b.c", "ünï☃"] {
            for ts_ms in [i64::MIN, -1, 0, i64::MAX] {
                let cursor = Cursor {
                    metric: metric.to_owned(),
                    ts_ms,
                };
                assert_eq!(decode_token(&encode_token(&cursor)).ok(), Some(cursor));
            }
        }
        for token in [
            "", "garbage", "p1.1.74", "s1.12", "s1.x.74", "s1.1.7", "s1.1.ff",
        ] {
            assert!(
                matches!(
                    decode_token(token),
                    Err(StorageError::Invalid {
                        field: "page_token",
                        ..
                    })
                ),
                "{token:?} accepted"
            );
        }
    }
}
