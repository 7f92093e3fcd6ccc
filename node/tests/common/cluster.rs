//! Helpers of the multi-node tests: a 3-node `starling serve` cluster behind a real
//! Mosquitto, waits on placement, shard owners, and the lease-log checker.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use starling_chaos::cluster::ServeCluster;
use starling_chaos::{Mosquitto, MosquittoOptions};
use starling_sdk::proto::QueryRequest;
use starling_sdk::{Client, Profile};
use tempfile::TempDir;

use super::bin;

/// Shard count of the test clusters (the default; the map has 4096 entries).
pub const SHARDS: u32 = 4096;

/// Config lines switching auto-provisioning on (closing the `[cluster]` section).
pub const AUTO_PROVISION: &str = "\n[ingest]\nauto_provision = true\n";

pub struct TestCluster {
    pub broker: Mosquitto,
    pub cluster: ServeCluster,
    pub dir: TempDir,
}

impl TestCluster {
    /// A broker with the shipped settings and `n` nodes bootstrapped together, provisioning
    /// unknown devices on their first telemetry (`ingest.auto_provision = true`).
    pub async fn start(n: usize) -> anyhow::Result<TestCluster> {
        Self::start_with(n, AUTO_PROVISION).await
    }

    /// As [`TestCluster::start`], with `extra` appended to every node's `[cluster]` section
    /// (it may open further sections); `""` keeps `serve`'s defaults (no auto-provisioning).
    pub async fn start_with(n: usize, extra: &str) -> anyhow::Result<TestCluster> {
        assert!(
            Mosquitto::available(),
            "these tests run a real Mosquitto: install it (apt-get install -y mosquitto)"
        );
        let broker = Mosquitto::start(MosquittoOptions::default()).await?;
        let mut dir = tempfile::tempdir()?;
        // STARLING_KEEP_TEST_DIRS=1 keeps the nodes' logs and data for a post-mortem.
        if std::env::var_os("STARLING_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("cluster test dir kept: {}", dir.path().display());
        }
        let cluster = ServeCluster::start(bin(), dir.path(), n, &broker.addr(), extra).await?;
        Ok(TestCluster {
            broker,
            cluster,
            dir,
        })
    }

    /// A client failing over across every node.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&Profile::load(&self.cluster.profile())?)?)
    }

    /// A client of one node only.
    pub fn client_of(&self, id: u64) -> anyhow::Result<Client> {
        let path = self.cluster.profile_for(id)?;
        Ok(Client::connect(&Profile::load(&path)?)?)
    }

    /// Panics with the first pair of overlapping lease intervals in the nodes' lease logs.
    pub fn assert_no_lease_overlap(&self) {
        let intervals = lease_intervals(&self.lease_logs()).expect("lease logs");
        assert!(!intervals.is_empty(), "no lease was ever granted");
        if let Some((shard, x, y)) = first_overlap(&intervals) {
            panic!(
                "shard {shard}: node {} held {x:?} and node {} held {y:?}",
                x.node, y.node
            );
        }
    }

    /// Every node's lease log.
    pub fn lease_logs(&self) -> Vec<std::path::PathBuf> {
        self.cluster.nodes.iter().map(|n| n.lease_log()).collect()
    }
}

/// shard → owner, from the answering node's applied map.
pub async fn owners(client: &Client) -> anyhow::Result<BTreeMap<u32, u64>> {
    let r = client.cluster_shards().await?;
    let mut out = BTreeMap::new();
    for range in r.ranges {
        for s in range.first..=range.last {
            out.insert(s, range.owner);
        }
    }
    Ok(out)
}

/// Polls until every shard is assigned and the owners are exactly `nodes`, each holding
/// about its share (within 1).
pub async fn wait_placed(client: &Client, nodes: &[u64]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let map = owners(client).await.unwrap_or_default();
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for owner in map.values() {
            *counts.entry(*owner).or_default() += 1;
        }
        let share = SHARDS as usize / nodes.len();
        let balanced = map.len() == SHARDS as usize
            && counts.keys().copied().collect::<Vec<_>>() == nodes
            && counts.values().all(|c| c.abs_diff(share) <= 1);
        if balanced {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("shards not placed on {nodes:?} in time: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node owning `device` (default tenant) in the answering node's map.
pub async fn owner_of(client: &Client, device: &str) -> anyhow::Result<u64> {
    let key = starling_node::model::DeviceKey::default_tenant(device);
    let shard = starling_node::shard::shard_of(&key, SHARDS);
    owners(client)
        .await?
        .get(&shard)
        .copied()
        .context("shard not assigned")
}

/// The current leader, as the answering node sees it (polls until one is known).
pub async fn leader(client: &Client) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = client.cluster_status().await
            && s.leader_id != 0
        {
            return Ok(s.leader_id);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no leader known");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Points of one device and whether the read was partial (all pages).
pub async fn query_full(client: &Client, device: &str) -> anyhow::Result<(usize, bool)> {
    let (mut n, mut partial, mut token) = (0, false, String::new());
    loop {
        let r = client
            .query(QueryRequest {
                device: device.to_owned(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?;
        n += r.points.len();
        partial |= r.partial;
        if r.next_page_token.is_empty() {
            return Ok((n, partial));
        }
        token = r.next_page_token;
    }
}

/// One lease interval of a node on a shard, wall-clock ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub node: u64,
    pub from: i64,
    pub to: i64,
}

/// Reads the lease logs and returns, per shard, the intervals in which a node held an
/// unexpired lease covering it: a grant covers its shards from `at_ms` to `until_ms`;
/// consecutive grants of one node merge; a release ends the interval at its `at_ms`.
pub fn lease_intervals(logs: &[impl AsRef<Path>]) -> anyhow::Result<BTreeMap<u32, Vec<Interval>>> {
    let mut out: BTreeMap<u32, Vec<Interval>> = BTreeMap::new();
    for log in logs {
        let text = match std::fs::read_to_string(log.as_ref()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        // Open interval per shard for this node (index into `out[shard]`), and the shards of
        // the last grant, which a "renew" line covers again.
        let mut open: BTreeMap<u32, usize> = BTreeMap::new();
        let mut granted: Vec<u32> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}: bad line {line}", log.as_ref().display()))?;
            let node = v["node"].as_u64().context("node")?;
            let at = v["at_ms"].as_i64().context("at_ms")?;
            let event = v["event"].as_str().context("event")?;
            let shards = match event {
                "renew" => granted.clone(),
                _ => starling_node::cluster::lease::parse_ranges(
                    v["shards"].as_str().context("shards")?,
                )
                .map_err(anyhow::Error::msg)?,
            };
            match event {
                "grant" | "renew" => {
                    let until = v["until_ms"].as_i64().context("until_ms")?;
                    for s in &shards {
                        let list = out.entry(*s).or_default();
                        match open.get(s).map(|i| &mut list[*i]) {
                            Some(iv) if iv.to >= at => iv.to = iv.to.max(until),
                            _ => {
                                list.push(Interval {
                                    node,
                                    from: at,
                                    to: until,
                                });
                                open.insert(*s, list.len() - 1);
                            }
                        }
                    }
                    granted = shards;
                }
                "release" => {
                    for s in &shards {
                        if let Some(i) = open.remove(s)
                            && let Some(iv) = out.get_mut(s).and_then(|l| l.get_mut(i))
                        {
                            iv.to = iv.to.min(at);
                        }
                    }
                    granted.retain(|s| !shards.contains(s));
                }
                other => bail!("unknown lease event {other:?}"),
            }
        }
    }
    Ok(out)
}

/// The first pair of intervals of different nodes that overlap on a shard, if any.
pub fn first_overlap(
    intervals: &BTreeMap<u32, Vec<Interval>>,
) -> Option<(u32, Interval, Interval)> {
    for (shard, list) in intervals {
        let mut sorted = list.clone();
        sorted.sort_by_key(|i| (i.from, i.to));
        // The interval reaching furthest so far: any later one of another node must start
        // at or after its end.
        let mut reach: Option<Interval> = None;
        for b in sorted {
            if let Some(a) = reach {
                if a.node != b.node && b.from < a.to {
                    return Some((*shard, a, b));
                }
                if b.to > a.to {
                    reach = Some(b);
                }
            } else {
                reach = Some(b);
            }
        }
    }
    None
}
