//! Reads of a device's history across the nodes that hold it (DESIGN.md §6).
//!
//! With the embedded store, history stays on the node that wrote it: a device whose shard
//! moved has points on every node that ever owned the shard. A read asks each of them (this
//! node's store directly, others over `Data.LocalRead`), merges by (metric, ts) with
//! duplicates removed (a redelivered point may be stored by two owners), and says `partial`
//! when a holder could not be reached.
//!
//! Holders are every node in the shard's ownership history, not only those whose ownership
//! interval overlaps the range: a point's time is the device's event time, which may lie
//! outside the wall-clock interval in which its owner stored it (late or skewed devices).
//!
//! Paging stays exact: every holder reads the same range after the same cursor, the merge
//! keeps the first `limit` points, and the next token is the embedded store's token after the
//! last point returned, which every holder understands.
//!
//! What it does not do: reads of a replicated store (Scylla) need no routing and go local.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Cluster;
use super::service::LocalRead;
use crate::model::{DeviceKey, Point};
use crate::shard;
use crate::storage::aggregate::{self, AggregatePage, AggregateQuery, Source, StoreSource};
use crate::storage::embedded::page_token_after;
use crate::storage::{Page, RangeQuery, RollupPage, RollupQuery, StorageError, TelemetryStore};
use starling_proto::peer as pb;

/// A routed read's answer: the data, and whether a holder was missing.
#[derive(Debug, Default)]
pub struct Routed<T> {
    pub value: T,
    pub partial: bool,
}

/// Reads routed by ownership history.
#[derive(Clone)]
pub struct Reads {
    pub cluster: Cluster,
    pub store: Arc<dyn TelemetryStore>,
    /// False for a replicated store: every read is local.
    pub routed: bool,
}

impl Reads {
    /// Nodes other than this one that have owned `device`'s shard.
    fn other_holders(&self, device: &DeviceKey) -> BTreeSet<u64> {
        if !self.routed {
            return BTreeSet::new();
        }
        let s = shard::shard_of(device, self.cluster.settings().shards);
        let me = self.cluster.me();
        match self.cluster.control().history(s) {
            Ok(h) => h.into_iter().map(|o| o.node).filter(|n| *n != me).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "ownership history unreadable; reading locally");
                BTreeSet::new()
            }
        }
    }

    async fn remote<T: serde::de::DeserializeOwned>(
        &self,
        node: u64,
        read: &LocalRead,
    ) -> Result<T, String> {
        let addr = self
            .cluster
            .control()
            .node_info(node)
            .map(|i| i.peer_addr)
            .ok_or_else(|| format!("node {node} has no address"))?;
        let query = serde_json::to_vec(read).map_err(|e| e.to_string())?;
        let mut client = self
            .cluster
            .peers()
            .data(&addr)
            .map_err(|e| e.to_string())?;
        let reply = client
            .local_read(pb::LocalReadRequest { query })
            .await
            .map_err(|s| format!("node {node}: {}", s.message()))?;
        serde_json::from_slice(&reply.into_inner().result).map_err(|e| e.to_string())
    }

    /// One page of a range read over every holder.
    pub async fn query(&self, q: RangeQuery) -> Result<Routed<Page>, StorageError> {
        let others = self.other_holders(&q.device);
        if others.is_empty() {
            return Ok(Routed {
                value: self.store.query(q).await?,
                partial: false,
            });
        }
        let read = LocalRead::Range(q.clone());
        let remote = futures::future::join_all(
            others
                .iter()
                .map(|n| async { (*n, self.remote::<Page>(*n, &read).await) }),
        );
        let (local, remote) = tokio::join!(self.store.query(q.clone()), remote);
        let mut pages = vec![local?];
        let mut partial = false;
        for (node, page) in remote {
            match page {
                Ok(p) => pages.push(p),
                Err(e) => {
                    tracing::warn!(node, error = %e, "history holder unreachable: partial read");
                    partial = true;
                }
            }
        }
        Ok(Routed {
            value: merge_pages(pages, q.limit),
            partial,
        })
    }

    /// The newest point of each metric over every holder.
    pub async fn latest(&self, device: &DeviceKey) -> Result<Routed<Vec<Point>>, StorageError> {
        let others = self.other_holders(device);
        let local = self.store.latest(device).await?;
        if others.is_empty() {
            return Ok(Routed {
                value: local,
                partial: false,
            });
        }
        let read = LocalRead::Latest(device.clone());
        let mut all = local;
        let mut partial = false;
        for n in others {
            match self.remote::<Vec<Point>>(n, &read).await {
                Ok(points) => all.extend(points),
                Err(e) => {
                    tracing::warn!(node = n, error = %e, "history holder unreachable: partial read");
                    partial = true;
                }
            }
        }
        Ok(Routed {
            value: newest_per_metric(all),
            partial,
        })
    }
}

/// Aggregates (DESIGN.md §6): with other holders, raw reads are the routed, deduplicated
/// range reads, and rollups are every holder's buckets merged by
/// `storage::aggregate::merge` (a bucket held by two holders is recomputed from the
/// deduplicated raw points, so a point redelivered after an ownership change counts once).
impl Reads {
    /// One page of an aggregate over every holder of the device's history.
    pub async fn aggregate(
        &self,
        q: AggregateQuery,
    ) -> Result<Routed<AggregatePage>, StorageError> {
        let others = self.other_holders(&q.device);
        if others.is_empty() {
            let value = aggregate::run(&StoreSource(self.store.as_ref()), &q).await?;
            return Ok(Routed {
                value,
                partial: false,
            });
        }
        let source = RoutedSource {
            reads: self,
            others,
            partial: AtomicBool::new(false),
        };
        let value = aggregate::run(&source, &q).await?;
        Ok(Routed {
            value,
            partial: source.partial.load(Ordering::Relaxed),
        })
    }
}

/// Every holder of one device, as an aggregate's [`Source`].
struct RoutedSource<'a> {
    reads: &'a Reads,
    others: BTreeSet<u64>,
    /// Set when any read missed a holder.
    partial: AtomicBool,
}

#[async_trait::async_trait]
impl Source for RoutedSource<'_> {
    async fn raw(&self, query: RangeQuery) -> Result<Page, StorageError> {
        let routed = self.reads.query(query).await?;
        if routed.partial {
            self.partial.store(true, Ordering::Relaxed);
        }
        Ok(routed.value)
    }

    async fn rollups(&self, query: RollupQuery) -> Result<RollupPage, StorageError> {
        let read = LocalRead::Rollups(query.clone());
        let remote = futures::future::join_all(self.others.iter().map(|n| {
            let read = &read;
            async move { (*n, self.reads.remote::<RollupPage>(*n, read).await) }
        }));
        let (local, remote) = tokio::join!(self.reads.store.rollups(query.clone()), remote);
        let mut pages = vec![local?];
        for (node, page) in remote {
            match page {
                Ok(p) => pages.push(p),
                Err(e) => {
                    tracing::warn!(node, error = %e, "history holder unreachable: partial read");
                    self.partial.store(true, Ordering::Relaxed);
                }
            }
        }
        aggregate::merge::rollups(pages, &query, self).await
    }
}

/// Merges pages of the same query from several holders: ordered by (metric, ts), one point
/// per (metric, ts), at most `limit`; a next token when any holder had more or the merge was
/// cut.
pub fn merge_pages(pages: Vec<Page>, limit: usize) -> Page {
    let more = pages.iter().any(|p| p.next.is_some());
    let mut points: Vec<Point> = pages.into_iter().flat_map(|p| p.points).collect();
    points.sort_by(|a, b| (&a.metric, a.ts_ms).cmp(&(&b.metric, b.ts_ms)));
    points.dedup_by(|b, a| a.metric == b.metric && a.ts_ms == b.ts_ms);
    let cut = points.len() > limit;
    points.truncate(limit);
    let next = if cut || more {
        points.last().map(|p| page_token_after(&p.metric, p.ts_ms))
    } else {
        None
    };
    Page { points, next }
}

/// The point with the greatest ts of each metric, ordered by metric.
pub fn newest_per_metric(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| (&a.metric, b.ts_ms).cmp(&(&b.metric, a.ts_ms)));
    points.dedup_by(|b, a| a.metric == b.metric);
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn p(metric: &str, ts: i64, v: f64) -> Point {
        Point {
            device: DeviceKey::default_tenant("d"),
            metric: metric.into(),
            ts_ms: ts,
            value: Value::Number(v),
        }
    }

    fn keys(page: &Page) -> Vec<(String, i64)> {
        page.points
            .iter()
            .map(|p| (p.metric.clone(), p.ts_ms))
            .collect()
    }

    #[test]
    fn merged_pages_are_ordered_deduplicated_and_cut() {
        let a = Page {
            points: vec![p("t", 1, 1.0), p("t", 3, 3.0), p("v", 1, 9.0)],
            next: None,
        };
        let b = Page {
            points: vec![p("t", 2, 2.0), p("t", 3, 3.0)],
            next: None,
        };
        let all = merge_pages(vec![a.clone(), b.clone()], 10);
        assert_eq!(
            keys(&all),
            vec![
                ("t".into(), 1),
                ("t".into(), 2),
                ("t".into(), 3),
                ("v".into(), 1)
            ]
        );
        assert_eq!(all.next, None);
        let cut = merge_pages(vec![a, b], 2);
        assert_eq!(keys(&cut), vec![("t".into(), 1), ("t".into(), 2)]);
        assert_eq!(cut.next, Some(page_token_after("t", 2)));
    }

    #[test]
    fn a_holder_with_more_keeps_the_merge_paging() {
        let a = Page {
            points: vec![p("t", 1, 1.0)],
            next: Some(page_token_after("t", 1)),
        };
        let merged = merge_pages(vec![a, Page::default()], 5);
        assert_eq!(merged.next, Some(page_token_after("t", 1)));
        assert_eq!(merge_pages(vec![Page::default()], 5).next, None);
    }

    #[test]
    fn newest_point_of_each_metric_wins() {
        let got = newest_per_metric(vec![p("t", 1, 1.0), p("v", 5, 5.0), p("t", 4, 4.0)]);
        let keys: Vec<_> = got.iter().map(|p| (p.metric.as_str(), p.ts_ms)).collect();
        assert_eq!(keys, vec![("t", 4), ("v", 5)]);
    }
}
