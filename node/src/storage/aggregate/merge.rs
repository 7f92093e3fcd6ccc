//! Rollups of one device held by several stores (the embedded store in a cluster keeps
//! history where it was written, DESIGN.md §6), merged without double counting.
//!
//! A point redelivered after an ownership change may be stored by two owners, and then
//! counted in both owners' buckets. Buckets cannot be deduplicated, points can: so a bucket
//! start held by exactly one holder is taken as is, and a bucket start held by two or more is
//! recomputed from the raw points of its time span, read through a source that merges
//! holders' points with duplicates removed. Holders whose page was cut (`more`) bound the
//! merge: nothing after the earliest cut is returned in this page, since a cut holder may
//! still hold more of it.

use std::collections::BTreeMap;

use super::Source;
use crate::storage::rollup::{Bucket, RollupPage, RollupQuery, rolled};
use crate::storage::{RangeQuery, StorageError};

/// Points read per call when recomputing a bucket from raw points.
const RAW_CHUNK: usize = 10_000;

/// What merging holders' pages found: buckets held once, starts held more than once, and
/// the last start this page may cover.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub single: Vec<Bucket>,
    pub shared: Vec<i64>,
    /// `Some(start)`: only buckets up to this start belong to the page, and more follow.
    pub cut: Option<i64>,
}

/// Sorts holders' pages into buckets to keep and bucket starts to recompute. Pure.
pub fn plan(pages: Vec<RollupPage>) -> Plan {
    let cut = pages
        .iter()
        .filter(|p| p.more)
        .filter_map(|p| p.buckets.last().map(|b| b.start_ms))
        .min();
    let mut by_start: BTreeMap<i64, Vec<Bucket>> = BTreeMap::new();
    for page in pages {
        for b in page.buckets {
            if cut.is_none_or(|cut| b.start_ms <= cut) {
                by_start.entry(b.start_ms).or_default().push(b);
            }
        }
    }
    let mut plan = Plan {
        cut,
        ..Plan::default()
    };
    for (start, mut held) in by_start {
        if held.len() == 1 {
            plan.single.extend(held.pop());
        } else {
            plan.shared.push(start);
        }
    }
    plan
}

/// One merged page of rollups over several holders' pages of the same query; shared buckets
/// are recomputed from `raw` (a source whose raw reads are merged and deduplicated).
pub async fn rollups(
    pages: Vec<RollupPage>,
    q: &RollupQuery,
    raw: &dyn Source,
) -> Result<RollupPage, StorageError> {
    let plan = plan(pages);
    let mut buckets = plan.single;
    for start in plan.shared {
        if let Some(b) = recompute(q, start, raw).await? {
            buckets.push(b);
        }
    }
    buckets.sort_by_key(|b| b.start_ms);
    let more = plan.cut.is_some() || buckets.len() > q.limit;
    buckets.truncate(q.limit);
    Ok(RollupPage { buckets, more })
}

async fn recompute(
    q: &RollupQuery,
    start: i64,
    raw: &dyn Source,
) -> Result<Option<Bucket>, StorageError> {
    let mut values = Vec::new();
    let mut token = None;
    loop {
        let page = raw
            .raw(RangeQuery {
                device: q.device.clone(),
                metric: Some(q.metric.clone()),
                from_ms: start,
                to_ms: start + q.resolution.width_ms(),
                limit: RAW_CHUNK,
                page_token: token,
            })
            .await?;
        values.extend(
            page.points
                .iter()
                .filter_map(|p| rolled(&p.value).map(|v| (p.ts_ms, v))),
        );
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(Bucket::of_all(start, values)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(start: i64, count: u64) -> Bucket {
        Bucket {
            count,
            ..Bucket::of(start, start, 1.0)
        }
    }

    fn page(buckets: Vec<Bucket>, more: bool) -> RollupPage {
        RollupPage { buckets, more }
    }

    /// (pages, kept starts, shared starts, cut)
    type Case = (Vec<RollupPage>, Vec<i64>, Vec<i64>, Option<i64>);

    #[test]
    fn plans() {
        let cases: Vec<Case> = vec![
            (vec![], vec![], vec![], None),
            (
                vec![page(vec![b(0, 1), b(60, 2)], false)],
                vec![0, 60],
                vec![],
                None,
            ),
            (
                vec![
                    page(vec![b(0, 1), b(60, 2)], false),
                    page(vec![b(60, 1), b(120, 1)], false),
                ],
                vec![0, 120],
                vec![60],
                None,
            ),
            (
                // The first holder was cut at 60: its 120 may be elsewhere, so stop at 60.
                vec![
                    page(vec![b(0, 1), b(60, 2)], true),
                    page(vec![b(120, 1)], false),
                ],
                vec![0, 60],
                vec![],
                Some(60),
            ),
        ];
        for (pages, kept, shared, cut) in cases {
            let p = plan(pages);
            let starts: Vec<i64> = p.single.iter().map(|b| b.start_ms).collect();
            assert_eq!((starts, p.shared, p.cut), (kept, shared, cut));
        }
    }
}
