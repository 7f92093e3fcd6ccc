//! Rollups: per-(device, metric) summaries of numeric points over fixed, epoch-aligned time
//! buckets of one minute and one hour. Pure: bucket arithmetic, folding and merging, and the
//! byte encoding the embedded store keeps. No I/O.
//!
//! A bucket holds min, max, sum, count and last (the value with the greatest ts, its ts kept
//! so that merging two partial buckets keeps the right one). Only values with a numeric view
//! ([`Value::as_f64`]: numbers, booleans as 0/1) are rolled up; text and positions are not.
//!
//! What it does not do: decide when a point is new (the store does, in the same transaction
//! as the raw insert, which is what makes rollups idempotent), or answer queries (see
//! `aggregate`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{DeviceKey, Point, TimestampMs, Value};

use super::StorageError;

/// A rollup resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// One-minute buckets.
    Minute,
    /// One-hour buckets.
    Hour,
}

impl Resolution {
    /// Both resolutions, finest first.
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    /// The bucket width in milliseconds.
    pub const fn width_ms(self) -> i64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    /// A short stable name, used as a metric label and in stored keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    /// The resolution's code in the embedded backends' keys.
    pub const fn code(self) -> u8 {
        match self {
            Resolution::Minute => 1,
            Resolution::Hour => 2,
        }
    }

    /// The resolution of a key code (anything but 1 is an hour, as [`Resolution::code`]
    /// makes only 1 and 2).
    pub const fn from_code(code: u8) -> Resolution {
        match code {
            1 => Resolution::Minute,
            _ => Resolution::Hour,
        }
    }

    /// The start of the bucket holding `ts_ms` (floor, so negative times work too).
    pub fn bucket_start(self, ts_ms: TimestampMs) -> TimestampMs {
        ts_ms.div_euclid(self.width_ms()) * self.width_ms()
    }
}

/// One rollup bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket (inclusive); it ends at start + the resolution's width.
    pub start_ms: TimestampMs,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    /// Time of the newest point folded in.
    pub last_ts_ms: TimestampMs,
    /// Value of the newest point (on equal ts, the one folded last).
    pub last: f64,
}

impl Bucket {
    /// A bucket holding one value.
    pub fn of(start_ms: TimestampMs, ts_ms: TimestampMs, value: f64) -> Bucket {
        Bucket {
            start_ms,
            min: value,
            max: value,
            sum: value,
            count: 1,
            last_ts_ms: ts_ms,
            last: value,
        }
    }

    /// Folds one more value in.
    pub fn add(&mut self, ts_ms: TimestampMs, value: f64) {
        self.merge(&Bucket::of(self.start_ms, ts_ms, value));
    }

    /// Folds another partial bucket (of the same or a finer resolution) in.
    pub fn merge(&mut self, other: &Bucket) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_ts_ms >= self.last_ts_ms {
            self.last_ts_ms = other.last_ts_ms;
            self.last = other.last;
        }
    }

    /// The bucket of `values` (ts, value) in any order, or `None` if there is none.
    pub fn of_all(
        start_ms: TimestampMs,
        values: impl IntoIterator<Item = (TimestampMs, f64)>,
    ) -> Option<Bucket> {
        let mut bucket: Option<Bucket> = None;
        for (ts, v) in values {
            match &mut bucket {
                Some(b) => b.add(ts, v),
                None => bucket = Some(Bucket::of(start_ms, ts, v)),
            }
        }
        bucket
    }

    /// Bytes of the embedded store's encoding: version byte, then min, max, sum (f64), count
    /// (u64), last_ts (i64), last (f64), all big-endian.
    pub fn encode(&self) -> [u8; 49] {
        let mut out = [0u8; 49];
        out[0] = 1;
        out[1..9].copy_from_slice(&self.min.to_be_bytes());
        out[9..17].copy_from_slice(&self.max.to_be_bytes());
        out[17..25].copy_from_slice(&self.sum.to_be_bytes());
        out[25..33].copy_from_slice(&self.count.to_be_bytes());
        out[33..41].copy_from_slice(&self.last_ts_ms.to_be_bytes());
        out[41..49].copy_from_slice(&self.last.to_be_bytes());
        out
    }

    /// Decodes [`Bucket::encode`]'s bytes; anything else is a corrupt store.
    pub fn decode(start_ms: TimestampMs, bytes: &[u8]) -> Result<Bucket, StorageError> {
        if bytes.len() != 49 || bytes[0] != 1 {
            return Err(StorageError::Engine(format!(
                "corrupt rollup bucket at {start_ms}: {} bytes, version {:?}",
                bytes.len(),
                bytes.first()
            )));
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            w
        };
        Ok(Bucket {
            start_ms,
            min: f64::from_be_bytes(word(1)),
            max: f64::from_be_bytes(word(9)),
            sum: f64::from_be_bytes(word(17)),
            count: u64::from_be_bytes(word(25)),
            last_ts_ms: i64::from_be_bytes(word(33)),
            last: f64::from_be_bytes(word(41)),
        })
    }
}

/// The numeric view a rollup takes of a value, if any.
pub fn rolled(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// A bucket's identity in a batch: (tenant, device, metric, resolution code, bucket start).
pub(crate) type ChangeKey<'a> = (&'a str, &'a str, &'a str, u8, TimestampMs);

/// What a batch of writes changes in the rollup buckets, computed by an embedded backend's
/// writer as it inserts raw points: partial buckets of new points (to merge into the stored
/// ones) and buckets to recompute from raw points (a point rewritten with another value).
#[derive(Default)]
pub(crate) struct Changes<'a> {
    /// Partial buckets of new points, to merge into the stored ones.
    pub(crate) deltas: BTreeMap<ChangeKey<'a>, Bucket>,
    /// Buckets to recompute from raw points; a dirty bucket's delta is ignored.
    pub(crate) dirty: BTreeSet<ChangeKey<'a>>,
}

impl<'a> Changes<'a> {
    /// A new point: folded into its buckets (if it has a numeric view).
    pub(crate) fn add(&mut self, p: &'a Point) {
        let Some(v) = rolled(&p.value) else {
            return;
        };
        for res in Resolution::ALL {
            let start = res.bucket_start(p.ts_ms);
            self.deltas
                .entry(change_key(p, res, start))
                .and_modify(|b| b.add(p.ts_ms, v))
                .or_insert_with(|| Bucket::of(start, p.ts_ms, v));
        }
    }

    /// A point rewritten with another value: its buckets are recomputed.
    pub(crate) fn dirty(&mut self, p: &'a Point) {
        for res in Resolution::ALL {
            self.dirty
                .insert(change_key(p, res, res.bucket_start(p.ts_ms)));
        }
    }

    /// Whether the batch changes no bucket.
    pub(crate) fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.dirty.is_empty()
    }
}

fn change_key(p: &Point, res: Resolution, start: TimestampMs) -> ChangeKey<'_> {
    (
        p.device.tenant.as_str(),
        p.device.device.as_str(),
        p.metric.as_str(),
        res.code(),
        start,
    )
}

/// A read of one metric's rollup buckets, in start order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollupQuery {
    pub device: DeviceKey,
    pub metric: String,
    pub resolution: Resolution,
    /// Buckets starting at or after this (inclusive).
    pub from_ms: TimestampMs,
    /// Buckets starting before this (exclusive); `to_ms <= from_ms` is empty.
    pub to_ms: TimestampMs,
    /// At most this many buckets (callers pass >= 1).
    pub limit: usize,
}

/// One page of buckets; `more` when buckets after the last one exist in the range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupPage {
    pub buckets: Vec<Bucket>,
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_floor_at_both_resolutions() {
        let cases = [
            (Resolution::Minute, 0, 0),
            (Resolution::Minute, 59_999, 0),
            (Resolution::Minute, 60_000, 60_000),
            (Resolution::Minute, -1, -60_000),
            (Resolution::Hour, 3_599_999, 0),
            (Resolution::Hour, 3_600_000, 3_600_000),
            (Resolution::Hour, -3_600_001, -7_200_000),
        ];
        for (res, ts, start) in cases {
            assert_eq!(res.bucket_start(ts), start, "{res:?} {ts}");
        }
    }

    #[test]
    fn folding_and_merging_agree() {
        let values = [(10, 3.0), (5, -1.0), (30, 7.5), (20, 2.0)];
        let whole = Bucket::of_all(0, values).expect("values");
        assert_eq!(
            (whole.min, whole.max, whole.sum, whole.count),
            (-1.0, 7.5, 11.5, 4)
        );
        assert_eq!((whole.last_ts_ms, whole.last), (30, 7.5));
        let mut left = Bucket::of_all(0, values[..2].iter().copied()).expect("left");
        let right = Bucket::of_all(0, values[2..].iter().copied()).expect("right");
        left.merge(&right);
        assert_eq!(left, whole);
        // Merging in the other order keeps the newest `last` too.
        let mut right_first = right.clone();
        right_first.merge(&Bucket::of_all(0, values[..2].iter().copied()).expect("l"));
        assert_eq!((right_first.last_ts_ms, right_first.last), (30, 7.5));
        assert_eq!(Bucket::of_all(0, []), None);
    }

    #[test]
    fn encoding_round_trips_and_refuses_junk() {
        let b = Bucket::of_all(60_000, [(60_001, 1.5), (60_002, f64::MIN_POSITIVE)]).expect("b");
        assert_eq!(Bucket::decode(60_000, &b.encode()).expect("decode"), b);
        assert!(matches!(
            Bucket::decode(0, &[1, 2, 3]),
            Err(StorageError::Engine(_))
        ));
        let mut wrong_version = b.encode();
        wrong_version[0] = 9;
        assert!(Bucket::decode(0, &wrong_version).is_err());
    }
}
