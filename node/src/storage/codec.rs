//! Byte encodings shared by the storage backends: telemetry values and page tokens.
//!
//! Pure functions, no I/O and no engine types. Keys are not encoded here: each backend keys
//! its tables its own way (redb tuples, CQL primary keys). One value encoding for every
//! backend means a value moves between backends byte for byte.
//!
//! Value encoding (version 1, one tag byte then the payload, numbers little-endian):
//! - `0x01` Number: 8 bytes, the f64 bit pattern.
//! - `0x02` Bool: 1 byte, 0 or 1.
//! - `0x03` Text: the UTF-8 bytes (any length, possibly none).
//! - `0x04` Position: 16 bytes, lat then lon as f64 bit patterns.
//!
//! A stored value that does not decode is corruption and surfaces as
//! [`StorageError::Engine`]: nothing the caller could fix by changing the request.

use crate::model::{TimestampMs, Value};
use crate::storage::StorageError;

const TAG_NUMBER: u8 = 0x01;
const TAG_BOOL: u8 = 0x02;
const TAG_TEXT: u8 = 0x03;
const TAG_POSITION: u8 = 0x04;

/// Appends the encoding of `value` to `out`.
pub(super) fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.push(TAG_NUMBER);
            out.extend_from_slice(&n.to_bits().to_le_bytes());
        }
        Value::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*b));
        }
        Value::Text(text) => {
            out.push(TAG_TEXT);
            out.extend_from_slice(text.as_bytes());
        }
        Value::Position { lat, lon } => {
            out.push(TAG_POSITION);
            out.extend_from_slice(&lat.to_bits().to_le_bytes());
            out.extend_from_slice(&lon.to_bits().to_le_bytes());
        }
    }
}

/// Decodes a stored value; any malformed input is reported as corruption.
pub(super) fn decode_value(bytes: &[u8]) -> Result<Value, StorageError> {
    let Some((&tag, payload)) = bytes.split_first() else {
        return Err(corrupt("empty value"));
    };
    match tag {
        TAG_NUMBER => Ok(Value::Number(f64_at(payload, 0, 8)?)),
        TAG_BOOL => match payload {
            [0] => Ok(Value::Bool(false)),
            [1] => Ok(Value::Bool(true)),
            _ => Err(corrupt("bool payload is not a single 0 or 1 byte")),
        },
        TAG_TEXT => std::str::from_utf8(payload)
            .map(|text| Value::Text(text.to_owned()))
            .map_err(|_| corrupt("text payload is not UTF-8")),
        TAG_POSITION => Ok(Value::Position {
            lat: f64_at(payload, 0, 16)?,
            lon: f64_at(payload, 8, 16)?,
        }),
        other => Err(corrupt(&format!("unknown value tag {other:#04x}"))),
    }
}

/// Reads the f64 at `offset` of a payload that must be exactly `expected_len` bytes long.
fn f64_at(payload: &[u8], offset: usize, expected_len: usize) -> Result<f64, StorageError> {
    if payload.len() != expected_len {
        return Err(corrupt(&format!(
            "payload of {} bytes, expected {expected_len}",
            payload.len()
        )));
    }
    let mut bits = [0u8; 8];
    bits.copy_from_slice(&payload[offset..offset + 8]);
    Ok(f64::from_bits(u64::from_le_bytes(bits)))
}

fn corrupt(problem: &str) -> StorageError {
    StorageError::Engine(format!("corrupt stored value: {problem}"))
}

/// Where a range read resumes: strictly after this (metric, ts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) metric: String,
    pub(super) ts_ms: TimestampMs,
}

/// Where a read of `metric` starts in a range beginning at `from_ms`, given the cursor of the
/// previous page (reads are ordered by metric, then ts): `None` when the cursor is already
/// past the whole metric, which is then skipped.
pub(super) fn resume_from(
    after: Option<&Cursor>,
    metric: &str,
    from_ms: TimestampMs,
) -> Option<TimestampMs> {
    match after {
        Some(cursor) if cursor.metric.as_str() > metric => None,
        Some(cursor) if cursor.metric == metric => {
            cursor.ts_ms.checked_add(1).map(|next| next.max(from_ms))
        }
        _ => Some(from_ms),
    }
}

/// Encodes a cursor as an opaque, URL- and JSON-safe token: `<prefix>.<ts>.<hex of the
/// metric>`. The metric is hex-encoded so that any metric name (dots, unicode) survives. Each
/// backend has its own prefix (with a format version in it), so a token of one backend or of
/// an older format is refused cleanly by another.
pub(super) fn encode_token(prefix: &str, cursor: &Cursor) -> String {
    let mut token = format!("{prefix}.{}.", cursor.ts_ms);
    for byte in cursor.metric.as_bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

/// Decodes a token made by [`encode_token`] with the same prefix; anything else is an invalid
/// request.
pub(super) fn decode_token(prefix: &str, token: &str) -> Result<Cursor, StorageError> {
    let mut parts = token.splitn(3, '.');
    let (Some(version), Some(ts), Some(metric_hex)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_token("not a page token of this store"));
    };
    if version != prefix {
        return Err(bad_token("unknown token version"));
    }
    let ts_ms = ts
        .parse::<TimestampMs>()
        .map_err(|_| bad_token("timestamp is not an integer"))?;
    if metric_hex.len() % 2 != 0 {
        return Err(bad_token("metric has an odd number of hex digits"));
    }
    let bytes = (0..metric_hex.len())
        .step_by(2)
        .map(|i| {
            metric_hex
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| bad_token("metric is not hex"))
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let metric = String::from_utf8(bytes).map_err(|_| bad_token("metric is not UTF-8"))?;
    Ok(Cursor { metric, ts_ms })
}

fn bad_token(problem: &str) -> StorageError {
    StorageError::Invalid {
        field: "page_token",
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_bytes(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(value, &mut out);
        out
    }

    #[test]
    fn every_value_kind_round_trips() {
        let values = [
            Value::Number(-12.5),
            Value::Number(f64::INFINITY),
            Value::Bool(true),
            Value::Bool(false),
            Value::Text(String::new()),
            Value::Text("héllo ☃".to_owned()),
            Value::Position {
                lat: 52.52,
                lon: -13.4,
            },
        ];
        for value in values {
            assert_eq!(decode_value(&value_bytes(&value)).ok(), Some(value));
        }
    }

    #[test]
    fn nan_keeps_its_bits() {
        let nan = f64::from_bits(0x7ff8_0000_0000_0abc);
        match decode_value(&value_bytes(&Value::Number(nan))) {
            Ok(Value::Number(n)) => assert_eq!(n.to_bits(), nan.to_bits()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn corrupt_values_are_engine_errors() {
        let cases: [&[u8]; 7] = [
            &[],
            &[0x09],
            &[TAG_NUMBER, 1, 2, 3],
            &[TAG_BOOL, 2],
            &[TAG_BOOL],
            &[TAG_TEXT, 0xff, 0xfe],
            &[TAG_POSITION, 0, 0, 0, 0, 0, 0, 0, 0],
        ];
        for bytes in cases {
            assert!(
                matches!(decode_value(bytes), Err(StorageError::Engine(_))),
                "{bytes:?} decoded"
            );
        }
    }

    #[test]
    fn resume_from_table() {
        let c = |metric: &str, ts_ms| Cursor {
            metric: metric.to_owned(),
            ts_ms,
        };
        // (cursor, metric, from, expected start)
        let cases = [
            (None, "b", 5, Some(5)),
            (Some(c("a", 9)), "b", 5, Some(5)), // cursor on an earlier metric
            (Some(c("c", 9)), "b", 5, None),    // cursor past this metric
            (Some(c("b", 9)), "b", 5, Some(10)), // strictly after the cursor
            (Some(c("b", 2)), "b", 5, Some(5)), // never before the range
            (Some(c("b", i64::MAX)), "b", 5, None),
        ];
        for (cursor, metric, from, want) in cases {
            assert_eq!(
                resume_from(cursor.as_ref(), metric, from),
                want,
                "{cursor:?}"
            );
        }
    }

    #[test]
    fn tokens_round_trip_any_metric() {
        for metric in ["", "temp", "a.b.c", "ünï☃", "x y/z"] {
            for ts_ms in [i64::MIN, -1, 0, 1_732_200_000_000, i64::MAX] {
                let cursor = Cursor {
                    metric: metric.to_owned(),
                    ts_ms,
                };
                assert_eq!(
                    decode_token("p1", &encode_token("p1", &cursor)).ok(),
                    Some(cursor)
                );
            }
        }
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        for token in [
            "", "garbage", "p1.12", "p2.1.74", "p1.x.74", "p1.1.7", "p1.1.zz", "p1.1.ff",
        ] {
            assert!(
                matches!(
                    decode_token("p1", token),
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
