//! Byte keys and small fixed values of the fjall store. Pure: no I/O, no engine types.
//!
//! fjall orders keys by their bytes, so every key is built to sort exactly like the redb
//! store's tuple keys (strings by bytes, then timestamps numerically):
//! - A string is its bytes with every `0x00` escaped as `0x00 0xFF`, then the terminator
//!   `0x00 0x01`. The terminator sorts below any continuation (a byte `>= 0x01`, or an escaped
//!   `0x00 0xFF`), so "a" < "a\0" < "ab", as for `&str`; and a string's encoding is never a
//!   prefix of another's, so a (tenant, device) prefix selects exactly that device.
//! - A timestamp (i64) is 8 bytes big-endian with the sign bit flipped, so negative times sort
//!   before positive ones.
//!
//! Keys (per keyspace): points `tenant device metric ts`, latest `tenant device metric`,
//! devices `tenant device`, rollups `tenant device metric code start`, fences `shard` (u32
//! big-endian).

use crate::model::TimestampMs;
use crate::storage::StorageError;

/// Escape byte after `0x00` for a literal NUL inside a string.
const ESCAPED_NUL: u8 = 0xFF;
/// Byte after `0x00` that ends a string.
const END: u8 = 0x01;

/// Appends the order-preserving encoding of a string.
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    for &byte in s.as_bytes() {
        out.push(byte);
        if byte == 0 {
            out.push(ESCAPED_NUL);
        }
    }
    out.extend_from_slice(&[0, END]);
}

/// Appends the order-preserving encoding of a timestamp.
pub(super) fn push_ts(out: &mut Vec<u8>, ts_ms: TimestampMs) {
    out.extend_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
}

/// The key of a device in the devices keyspace, and the prefix of all its other keys.
pub(super) fn device(tenant: &str, device: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(tenant.len() + device.len() + 4);
    push_str(&mut out, tenant);
    push_str(&mut out, device);
    out
}

/// The key of a series (tenant, device, metric): its key in the latest keyspace, and the
/// prefix of its points and rollups.
pub(super) fn series(tenant: &str, device: &str, metric: &str) -> Vec<u8> {
    let mut out = self::device(tenant, device);
    push_str(&mut out, metric);
    out
}

/// The key of a point.
pub(super) fn point(tenant: &str, device: &str, metric: &str, ts_ms: TimestampMs) -> Vec<u8> {
    let mut out = series(tenant, device, metric);
    push_ts(&mut out, ts_ms);
    out
}

/// The key of a rollup bucket.
pub(super) fn rollup(
    tenant: &str,
    device: &str,
    metric: &str,
    code: u8,
    start_ms: TimestampMs,
) -> Vec<u8> {
    let mut out = series(tenant, device, metric);
    out.push(code);
    push_ts(&mut out, start_ms);
    out
}

/// The key of a shard's fence.
pub(super) fn fence(shard: u32) -> [u8; 4] {
    shard.to_be_bytes()
}

/// Decodes the leading `N` strings of a key; returns them and the bytes after them.
pub(super) fn strings<const N: usize>(
    mut key: &[u8],
) -> Result<([String; N], &[u8]), StorageError> {
    let mut found: [String; N] = std::array::from_fn(|_| String::new());
    for slot in &mut found {
        let mut bytes = Vec::new();
        loop {
            match key {
                [0, END, rest @ ..] => {
                    key = rest;
                    break;
                }
                [0, ESCAPED_NUL, rest @ ..] => {
                    bytes.push(0);
                    key = rest;
                }
                [0, ..] | [] => return Err(corrupt("unterminated or badly escaped string")),
                [byte, rest @ ..] => {
                    bytes.push(*byte);
                    key = rest;
                }
            }
        }
        *slot = String::from_utf8(bytes).map_err(|_| corrupt("string is not UTF-8"))?;
    }
    Ok((found, key))
}

/// The timestamp in the last 8 bytes of a key (points, rollups).
pub(super) fn ts_suffix(key: &[u8]) -> Result<TimestampMs, StorageError> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| corrupt("key too short for a timestamp"))?;
    Ok(ts_at(key, start)? as TimestampMs)
}

/// Encodes a latest value: ts (i64 big-endian), then the value's bytes.
pub(super) fn latest_value(ts_ms: TimestampMs, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Splits [`latest_value`]'s bytes into the ts and the value's bytes.
pub(super) fn split_latest(bytes: &[u8]) -> Result<(TimestampMs, &[u8]), StorageError> {
    if bytes.len() < 9 {
        return Err(corrupt("latest value too short"));
    }
    Ok((word(bytes, 0) as TimestampMs, &bytes[8..]))
}

/// Encodes a device's (first seen, last seen).
pub(super) fn seen_value(first: TimestampMs, last: TimestampMs) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&first.to_be_bytes());
    out[8..].copy_from_slice(&last.to_be_bytes());
    out
}

/// Decodes [`seen_value`]'s bytes.
pub(super) fn split_seen(bytes: &[u8]) -> Result<(TimestampMs, TimestampMs), StorageError> {
    if bytes.len() != 16 {
        return Err(corrupt("device entry is not 16 bytes"));
    }
    Ok((word(bytes, 0) as TimestampMs, word(bytes, 8) as TimestampMs))
}

/// Decodes a fence's epoch (u64 big-endian).
pub(super) fn epoch(bytes: &[u8]) -> Result<u64, StorageError> {
    if bytes.len() != 8 {
        return Err(corrupt("fence epoch is not 8 bytes"));
    }
    Ok(word(bytes, 0))
}

/// The sign-flipped timestamp at `start` (which the caller bounds-checked).
fn ts_at(key: &[u8], start: usize) -> Result<u64, StorageError> {
    Ok(word(key, start) ^ (1 << 63))
}

/// The big-endian u64 at `start`; the caller checked that 8 bytes are there.
fn word(bytes: &[u8], start: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[start..start + 8]);
    u64::from_be_bytes(w)
}

fn corrupt(problem: &str) -> StorageError {
    StorageError::Engine(format!("corrupt fjall key or entry: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys sort exactly as the redb store's (tenant, device, metric, ts) tuples do.
    #[test]
    fn point_keys_sort_like_tuples() {
        let strings = [
            "", "a", "a\0", "a\0b", "a\u{1}", "ab", "b", "é", "\0", "\0\0",
        ];
        let times = [i64::MIN, -61_000, -1, 0, 1, 59_999, i64::MAX];
        let mut tuples = Vec::new();
        for t in ["t", "t\0", "u"] {
            for d in strings {
                for m in ["m", "", "m\0"] {
                    for ts in times {
                        tuples.push((t, d, m, ts));
                    }
                }
            }
        }
        let mut by_key = tuples.clone();
        by_key.sort_by_key(|&(t, d, m, ts)| point(t, d, m, ts));
        tuples.sort();
        assert_eq!(by_key, tuples);
    }

    #[test]
    fn keys_decode_back() {
        let cases = [
            ("t", "d", "m", 0),
            ("", "\0x\0", "é☃", -5),
            ("a", "", "", i64::MAX),
        ];
        for (t, d, m, ts) in cases {
            let key = point(t, d, m, ts);
            let ([dt, dd, dm], rest) = strings::<3>(&key).expect("strings");
            assert_eq!((dt.as_str(), dd.as_str(), dm.as_str()), (t, d, m));
            assert_eq!(rest.len(), 8);
            assert_eq!(ts_suffix(&key).expect("ts"), ts);
            let bucket = rollup(t, d, m, 2, ts);
            assert_eq!(ts_suffix(&bucket).expect("start"), ts);
            assert!(bucket.starts_with(&series(t, d, m)));
            assert!(key.starts_with(&device(t, d)));
        }
    }

    /// A device's prefix never selects another device whose id extends it.
    #[test]
    fn device_prefix_is_exact() {
        let prefix = device("t", "d");
        for other in ["d1", "d\0", "d\0\u{1}", "e"] {
            assert!(!point("t", other, "m", 0).starts_with(&prefix), "{other:?}");
        }
    }

    #[test]
    fn corrupt_keys_and_entries_are_engine_errors() {
        let bad_keys: [&[u8]; 4] = [b"", b"abc", &[b'a', 0], &[b'a', 0, 7, 0, 1]];
        for key in bad_keys {
            assert!(
                matches!(strings::<1>(key), Err(StorageError::Engine(_))),
                "{key:?}"
            );
        }
        assert!(strings::<1>(&[0xFF, 0xFE, 0, 1]).is_err(), "not UTF-8");
        assert!(ts_suffix(&[1, 2, 3]).is_err());
        assert!(split_latest(&[0; 8]).is_err());
        assert!(split_seen(&[0; 15]).is_err());
        assert!(epoch(&[0; 4]).is_err());
    }

    #[test]
    fn fixed_values_round_trip() {
        let latest = latest_value(-7, &[1, 2]);
        let (ts, value) = split_latest(&latest).expect("latest");
        assert_eq!((ts, value), (-7, &[1u8, 2][..]));
        assert_eq!(
            split_seen(&seen_value(i64::MIN, 3)).expect("seen"),
            (i64::MIN, 3)
        );
        assert_eq!(epoch(&9u64.to_be_bytes()).expect("epoch"), 9);
        assert!(fence(1) < fence(256));
    }
}
