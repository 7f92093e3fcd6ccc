//! Helpers of the multi-node tests: a 3-node `starling serve` cluster behind a real
//! Mosquitto, waits on placement, shard owners, and the lease-log checker.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use starling_chaos::checkers::lease_overlap;
use starling_chaos::cluster::ServeCluster;
use starling_chaos::workload::observe;
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
        let intervals = lease_overlap::intervals(&self.lease_logs()).expect("lease logs");
        assert!(!intervals.is_empty(), "no lease was ever granted");
        if let Some((shard, x, y)) = lease_overlap::first_overlap(&intervals) {
            panic!(
                "shard {shard}: node {} held {x:?} and node {} held {y:?}",
                x.node, y.node
            );
        }
    }

    /// Every node's lease log text (rotated part first), as the chaos checker reads it.
    pub fn lease_logs(&self) -> Vec<String> {
        self.cluster
            .nodes
            .iter()
            .map(|n| observe::lease_log(n.lease_log().parent().expect("data dir")))
            .collect()
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

/// A device name (prefix + number) whose shard `node` owns.
pub async fn device_owned_by(client: &Client, node: u64, prefix: &str) -> String {
    for i in 0..10_000 {
        let name = format!("{prefix}{i}");
        if owner_of(client, &name).await.expect("owner") == node {
            return name;
        }
    }
    panic!("no device of node {node}");
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
