//! `Aggregate` queries: one function (min, max, avg, sum, count, last) of one metric over
//! intervals of any width, with no cap on the number of intervals: answers are paged by
//! interval, and each page reads its source in bounded chunks.
//!
//! Source picked automatically ([`pick`]): 1-hour rollups when the interval is a multiple of
//! an hour and the range's ends are hour-aligned (or open), else 1-minute rollups on the same
//! rule for minutes, else raw points. Intervals are aligned to multiples of the interval since
//! the Unix epoch; the first and last are clipped to the range. Only intervals holding at
//! least one numeric point are returned (no fill). Text and position values are ignored.
//!
//! Works over any [`Source`]: one store ([`StoreSource`]) or the cluster's routed reads.
//! Does not: fill gaps, compute percentiles, or aggregate across devices.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::rollup::{Bucket, Resolution, RollupPage, RollupQuery, rolled};
use super::{Page, RangeQuery, StorageError, TelemetryStore};
use crate::model::{DeviceKey, TimestampMs};

/// Points or buckets read from the source per call.
const CHUNK: usize = 10_000;

/// Prefix of aggregate page tokens (format version 1).
const TOKEN_PREFIX: &str = "a1:";

/// The aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Function {
    Min,
    Max,
    Avg,
    Sum,
    Count,
    Last,
}

impl Function {
    /// Parses `min|max|avg|sum|count|last` (the CLI and API spelling).
    pub fn parse(name: &str) -> Result<Function, StorageError> {
        Ok(match name {
            "min" => Function::Min,
            "max" => Function::Max,
            "avg" | "mean" => Function::Avg,
            "sum" => Function::Sum,
            "count" => Function::Count,
            "last" => Function::Last,
            other => {
                return Err(StorageError::Invalid {
                    field: "function",
                    problem: format!("`{other}` is not one of min, max, avg, sum, count, last"),
                });
            }
        })
    }

    /// This function's value of a bucket.
    pub fn of(self, b: &Bucket) -> f64 {
        match self {
            Function::Min => b.min,
            Function::Max => b.max,
            Function::Avg => b.sum / b.count as f64,
            Function::Sum => b.sum,
            Function::Count => b.count as f64,
            Function::Last => b.last,
        }
    }
}

/// An aggregate query over one metric of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateQuery {
    pub device: DeviceKey,
    pub metric: String,
    pub function: Function,
    /// Interval width, milliseconds (>= 1).
    pub interval_ms: i64,
    /// Inclusive.
    pub from_ms: TimestampMs,
    /// Exclusive; `i64::MAX` for "open".
    pub to_ms: TimestampMs,
    /// Most intervals per page (>= 1).
    pub limit: usize,
    /// From the previous page's `next`.
    pub page_token: Option<String>,
}

/// One interval's value.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateRow {
    pub start_ms: TimestampMs,
    pub value: f64,
    /// Points folded into this interval.
    pub count: u64,
}

/// One page of intervals, in start order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AggregatePage {
    pub rows: Vec<AggregateRow>,
    pub next: Option<String>,
    /// Where the values came from: `None` raw points, else that rollup resolution.
    pub source: Option<Resolution>,
}

/// What an aggregate reads.
#[async_trait]
pub trait Source: Send + Sync {
    /// A page of raw points (the store's range read).
    async fn raw(&self, query: RangeQuery) -> Result<Page, StorageError>;
    /// A page of rollup buckets.
    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError>;
}

/// One store as a [`Source`].
pub struct StoreSource<'a>(pub &'a dyn TelemetryStore);

#[async_trait]
impl Source for StoreSource<'_> {
    async fn raw(&self, query: RangeQuery) -> Result<Page, StorageError> {
        self.0.query(query).await
    }
    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError> {
        self.0.rollups(query).await
    }
}

/// The coarsest rollup that answers intervals of `interval_ms` over [from, to) exactly, or
/// `None` for raw points.
pub fn pick(interval_ms: i64, from_ms: TimestampMs, to_ms: TimestampMs) -> Option<Resolution> {
    Resolution::ALL.into_iter().rev().find(|res| {
        let w = res.width_ms();
        interval_ms % w == 0 && from_ms.rem_euclid(w) == 0 && (to_ms == i64::MAX || to_ms % w == 0)
    })
}

/// Runs one page of an aggregate query.
pub async fn run(source: &dyn Source, q: &AggregateQuery) -> Result<AggregatePage, StorageError> {
    check(q)?;
    let from = match &q.page_token {
        Some(token) => decode_token(token)?.max(q.from_ms),
        None => q.from_ms,
    };
    let res = pick(q.interval_ms, from, q.to_ms);
    let mut folder = Folder::new(q.interval_ms, q.limit);
    if from < q.to_ms {
        match res {
            Some(res) => fold_rollups(source, q, res, from, &mut folder).await?,
            None => fold_raw(source, q, from, &mut folder).await?,
        }
    }
    Ok(folder.finish(q.function, res))
}

fn check(q: &AggregateQuery) -> Result<(), StorageError> {
    let invalid = |field, problem: &str| {
        Err(StorageError::Invalid {
            field,
            problem: problem.to_owned(),
        })
    };
    if q.interval_ms < 1 {
        return invalid("interval", "must be at least 1 ms");
    }
    if q.limit == 0 {
        return invalid("limit", "must be at least 1");
    }
    if q.metric.is_empty() {
        return invalid("metric", "name the metric to aggregate");
    }
    Ok(())
}

async fn fold_raw(
    source: &dyn Source,
    q: &AggregateQuery,
    from: TimestampMs,
    folder: &mut Folder,
) -> Result<(), StorageError> {
    let mut token = None;
    loop {
        let page = source
            .raw(RangeQuery {
                device: q.device.clone(),
                metric: Some(q.metric.clone()),
                from_ms: from,
                to_ms: q.to_ms,
                limit: CHUNK,
                page_token: token,
            })
            .await?;
        for p in &page.points {
            if let Some(v) = rolled(&p.value)
                && !folder.add(&Bucket::of(p.ts_ms, p.ts_ms, v))
            {
                return Ok(());
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(()),
        }
    }
}

async fn fold_rollups(
    source: &dyn Source,
    q: &AggregateQuery,
    res: Resolution,
    from: TimestampMs,
    folder: &mut Folder,
) -> Result<(), StorageError> {
    let mut cursor = from;
    loop {
        let page = source
            .rollups(RollupQuery {
                device: q.device.clone(),
                metric: q.metric.clone(),
                resolution: res,
                from_ms: cursor,
                to_ms: q.to_ms,
                limit: CHUNK,
            })
            .await?;
        for b in &page.buckets {
            if !folder.add(b) {
                return Ok(());
            }
        }
        match page.buckets.last() {
            Some(last) if page.more => cursor = last.start_ms + res.width_ms(),
            _ => return Ok(()),
        }
    }
}

/// Folds buckets (or single points as one-value buckets), in time order, into intervals.
struct Folder {
    interval_ms: i64,
    limit: usize,
    done: Vec<Bucket>,
    current: Option<Bucket>,
    next: Option<TimestampMs>,
}

impl Folder {
    fn new(interval_ms: i64, limit: usize) -> Folder {
        Folder {
            interval_ms,
            limit,
            done: Vec::new(),
            current: None,
            next: None,
        }
    }

    /// Adds a bucket starting at `b.start_ms`; `false` once the page is full (the bucket then
    /// starts the next page).
    fn add(&mut self, b: &Bucket) -> bool {
        let start = b.start_ms.div_euclid(self.interval_ms) * self.interval_ms;
        match &mut self.current {
            Some(cur) if cur.start_ms == start => cur.merge(b),
            _ => {
                if let Some(cur) = self.current.take() {
                    self.done.push(cur);
                }
                if self.done.len() == self.limit {
                    self.next = Some(start);
                    return false;
                }
                let mut fresh = b.clone();
                fresh.start_ms = start;
                self.current = Some(fresh);
            }
        }
        true
    }

    fn finish(mut self, f: Function, source: Option<Resolution>) -> AggregatePage {
        if let Some(cur) = self.current.take() {
            self.done.push(cur);
        }
        AggregatePage {
            rows: self
                .done
                .iter()
                .map(|b| AggregateRow {
                    start_ms: b.start_ms,
                    value: f.of(b),
                    count: b.count,
                })
                .collect(),
            next: self.next.map(|start| format!("{TOKEN_PREFIX}{start}")),
            source,
        }
    }
}

fn decode_token(token: &str) -> Result<TimestampMs, StorageError> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.parse().ok())
        .ok_or_else(|| StorageError::Invalid {
            field: "page_token",
            problem: "not a token of this aggregate query; pass the previous page's token as is"
                .to_owned(),
        })
}

pub mod merge;

#[cfg(test)]
mod tests;
