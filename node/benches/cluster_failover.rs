//! Failover benchmark: after a node is SIGKILLed, when are its devices' points stored again,
//! and when is every point published after the kill stored?
//!
//! Every run is fresh: a Mosquitto with the shipped settings, a 3-node `starling serve`
//! cluster (`ServeCluster`, embedded store) and six devices, two owned by each node (found
//! with [`shard_of`] and the SDK's shard map), each publishing a QoS 1 point every 20 ms
//! (`ts` = wall-clock ms at publish) before and for `BENCH_POST_S` (6 s) after the kill of a
//! follower or of the Raft leader. A poller queries every device through a survivor (SDK
//! `query`) every 50 ms and notes when each point first became queryable. From the SIGKILL:
//! - **first stored**: the first point of a victim-owned device published after the kill
//!   becomes queryable;
//! - **caught up**: the last *late* point (queryable more than [`LATE`] after its publish)
//!   becomes queryable: the backlog is gone, including what Mosquitto queued in the dead
//!   node's session until a survivor rescued it;
//! - the budget from the survivors' logs: election ("leading: heartbeat view reset", leader
//!   kills), detection ("marking down"), commit ("shards moved"), activation (the new owner's
//!   first lease grant covering the device's shard, in its `leases.log`);
//! - points lost (published after the kill, never queryable): a bug if ever non-zero.
//!
//! A device's PUBACK comes from Mosquitto and says nothing about storage, so queryability is
//! the measure; times have the poll's resolution (50 ms plus a query), log milestones that of
//! the supervisor tick (one heartbeat). Not measured: graceful stops, partitions, paused
//! nodes, several failures, the killed node's return, more than 3 nodes, more than 300 msgs/s.
//!
//! `cargo bench --workspace --bench cluster_failover`: `BENCH_RUNS` (10) follower kills and as
//! many leader kills per timing set in `BENCH_TIMINGS` (`default,tight`, see [`TIMINGS`]).
//! Without `--bench` (cargo test): one follower kill. `STARLING_BIN` overrides the binary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use starling_chaos::cluster::ServeCluster;
use starling_chaos::{Mosquitto, MosquittoOptions, env_count};
use starling_node::cluster::lease::parse_ranges;
use starling_node::model::{DEFAULT_TENANT, DeviceKey};
use starling_node::shard::shard_of;
use starling_sdk::proto::{ClusterShardsResponse, QueryRequest};
use starling_sdk::{Client, Profile};
use tokio::sync::watch;
use tokio::time::Instant;

/// One point per device this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// How often every device is queried.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// A point stored later than this after its publish was held up by the failover.
const LATE: Duration = Duration::from_millis(500);
/// Steady publishing (every device already stored) before the kill.
const STEADY: Duration = Duration::from_secs(1);
/// Bound on a cluster placing its shards and on the devices' first stored points.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on storing every point published after the kill, from the end of publishing.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(40);

/// A set of `[cluster]` timings: (name, heartbeat, lease, failure_timeout, drift_margin) in ms.
type Timings = (&'static str, u64, u64, u64, u64);
/// `default`: the shipped defaults. `tight`: a tighter set within the config's rules
/// (lease ≥ 3 × heartbeat, failure_timeout > lease + drift) with some margin.
const TIMINGS: &[Timings] = &[
    ("default", 200, 1000, 1500, 200),
    ("old-default", 250, 1500, 2500, 250),
    ("tight", 100, 500, 800, 100),
];

/// Milestones after the SIGKILL, in table order: indexes of [`RunResult::at`].
const MILESTONES: &str =
    "election | marked down | shards moved | lease granted | first stored | caught up";
const ELECTION: usize = 0;
const DOWN: usize = 1;
const MOVED: usize = 2;
const GRANTED: usize = 3;
const FIRST: usize = 4;
const CAUGHT_UP: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Follower,
    Leader,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = env_count("BENCH_RUNS", if full { 10 } else { 1 })?;
    let post = Duration::from_secs(env_count("BENCH_POST_S", if full { 6 } else { 4 })? as u64);
    let names = std::env::var("BENCH_TIMINGS").unwrap_or_else(|_| "default,tight".into());
    let mut timings = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let t = TIMINGS.iter().find(|t| t.0 == name);
        timings.push(*t.with_context(|| format!("BENCH_TIMINGS: unknown set {name:?}"))?);
    }
    timings.truncate(if full { timings.len() } else { 1 });
    let victims = &[Victim::Follower, Victim::Leader][..if full { 2 } else { 1 }];
    let default_bin = env!("CARGO_BIN_EXE_starling");
    let bin = PathBuf::from(std::env::var_os("STARLING_BIN").unwrap_or(default_bin.into()));
    ensure!(Mosquitto::available(), "needs apt-get install mosquitto");
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    println!("| timings | victim | run | {MILESTONES} | max delay | points after kill | lost |");
    println!("|---|---|---:|{}---:|---:|---:|", "---:|".repeat(6));
    for t in &timings {
        for victim in victims {
            for run in 1..=runs {
                let what = format!("{} {victim:?} run {run}", t.0);
                let attempt = || runtime.block_on(one_run(&bin, t, *victim, post));
                // Fixture hiccups (one free port given twice, a leader change) get a retry.
                let r = attempt()
                    .or_else(|e| {
                        eprintln!("{what}: {e:#}; retrying");
                        attempt()
                    })
                    .context(what)?;
                let cells: Vec<String> = r.at.iter().map(|d| ms(*d)).collect();
                println!(
                    "| {} | {victim:?} {} | {run} | {} | {} | {} | {} |",
                    t.0,
                    r.victim_id,
                    cells.join(" | "),
                    ms(Some(r.max_delay)),
                    r.points,
                    r.lost
                );
                results.push((t.0, *victim, r));
            }
        }
    }
    summary(&timings, &results);
    let lost: usize = results.iter().map(|r| r.2.lost).sum();
    ensure!(lost == 0, "LOSS: {lost} points never stored");
    Ok(())
}

/// What one run measured; milestones are after the SIGKILL.
#[derive(Debug, Default)]
struct RunResult {
    victim_id: u64,
    /// Per [`MILESTONES`].
    at: [Option<Duration>; 6],
    max_delay: Duration,
    points: usize,
    lost: usize,
}

/// One device's points: publish instant and first-queryable instant by `ts`.
#[derive(Default)]
struct Track {
    published: BTreeMap<i64, Instant>,
    stored: HashMap<i64, Instant>,
}

type Shared = Arc<Mutex<Track>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Track> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

async fn one_run(
    bin: &Path,
    t: &Timings,
    victim: Victim,
    post: Duration,
) -> anyhow::Result<RunResult> {
    let (name, hb, lease, failure, drift) = *t;
    let extra = format!(
        "heartbeat = \"{hb}ms\"\nlease = \"{lease}ms\"\nfailure_timeout = \"{failure}ms\"\n\
         drift_margin = \"{drift}ms\"\n\n[ingest]\nauto_provision = true"
    );
    let broker = Mosquitto::start(MosquittoOptions::default()).await?;
    let base = tempfile::tempdir()?;
    let mut cluster = ServeCluster::start(bin, base.path(), 3, &broker.addr(), &extra).await?;
    let admin = Client::connect(&Profile::load(&cluster.profile())?)?;
    let map = settled_map(&admin).await?;
    let leader = admin.cluster_status().await?.leader_id;
    let victim_id = match victim {
        Victim::Leader => leader,
        Victim::Follower => (1..=3).rev().find(|id| *id != leader).unwrap_or(0),
    };
    let survivor = (1..=3).find(|id| *id != victim_id).context("no survivor")?;
    let reader = Client::connect(&Profile::load(&cluster.profile_for(survivor)?)?)?;

    // Devices, two per node, named after this run so no history is shared.
    let tag = format!("{name}-{victim:?}-{}", now_ms()).to_lowercase();
    let mut devices: Vec<(String, u64, Shared)> = Vec::new();
    for id in (0..).map(|i| format!("fo-{tag}-{i}")) {
        let owner = owner_of(&map, &id).1;
        if devices.iter().filter(|d| d.1 == owner).count() < 2 {
            devices.push((id, owner, Shared::default()));
        }
        if devices.len() == 6 {
            break;
        }
    }
    let (stop_pub, stop_rx) = watch::channel(false);
    let mut publishers = Vec::new();
    for (id, _, track) in &devices {
        let (id, track, stop) = (id.clone(), track.clone(), stop_rx.clone());
        publishers.push(tokio::spawn(publish(broker.port(), id, track, stop)));
    }
    let (stop_poll, poll_rx) = watch::channel(false);
    let tracked: Vec<(String, Shared)> =
        devices.iter().map(|d| (d.0.clone(), d.2.clone())).collect();
    let poller = tokio::spawn(poll_stored(reader.clone(), tracked, poll_rx));

    // Warm up: every device has a stored point, then steady publishing.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while devices.iter().any(|d| lock(&d.2).stored.is_empty()) {
        ensure!(Instant::now() < deadline, "devices not stored in time");
        tokio::time::sleep(POLL_EVERY).await;
    }
    tokio::time::sleep(STEADY).await;
    let now_leading = admin.cluster_status().await?.leader_id;
    ensure!(now_leading == leader, "the leader changed before the kill");

    let kill_ms = now_ms();
    let kill_at = Instant::now();
    cluster.node_mut(victim_id)?.kill9().await?;
    tokio::time::sleep_until(kill_at + post).await;
    let _ = stop_pub.send(true);
    for p in publishers {
        p.await??;
    }
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let outstanding = |d: &(String, u64, Shared)| {
        let t = lock(&d.2);
        t.published
            .range(kill_ms + 1..)
            .filter(|(ts, _)| !t.stored.contains_key(*ts))
            .count()
    };
    while devices.iter().map(outstanding).sum::<usize>() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL_EVERY).await;
    }
    let _ = stop_poll.send(true);
    poller.await?;

    let mut r = RunResult {
        victim_id,
        ..RunResult::default()
    };
    let since = |at: Instant| at.saturating_duration_since(kill_at);
    let mut first: Option<(Instant, &str)> = None;
    for (id, owner, track) in &devices {
        let t = lock(track);
        for (ts, published) in t.published.range(kill_ms + 1..) {
            r.points += 1;
            let Some(stored) = t.stored.get(ts).copied() else {
                eprintln!("LOST: {id} ts {ts} (kill + {} ms)", ts - kill_ms);
                r.lost += 1;
                continue;
            };
            let delay = stored.saturating_duration_since(*published);
            r.max_delay = r.max_delay.max(delay);
            if delay > LATE {
                r.at[CAUGHT_UP] = r.at[CAUGHT_UP].max(Some(since(stored)));
            }
            if *owner == victim_id && first.is_none_or(|f| stored < f.0) {
                first = Some((stored, id.as_str()));
            }
        }
    }
    r.at[FIRST] = first.map(|f| since(f.0));
    if r.lost > 0 {
        eprintln!("LOSS: logs kept in {}", base.keep().display());
    }

    // Budget milestones from the survivors' logs and the new owner's lease log.
    let logs: Vec<Vec<(i64, String)>> = [survivor, 6 - victim_id - survivor]
        .iter()
        .map(|id| read_log(&cluster.node(*id)?.log_path()))
        .collect::<anyhow::Result<_>>()?;
    let find = |needle: &str, from: i64| {
        logs.iter()
            .flatten()
            .filter(|l| l.0 > from && l.1.contains(needle))
            .map(|l| l.0)
            .min()
    };
    let at = |ms: Option<i64>| ms.map(|m| Duration::from_millis((m - kill_ms).max(0) as u64));
    if victim == Victim::Leader {
        r.at[ELECTION] = at(find("leading: heartbeat view reset", kill_ms));
    }
    let down = find(&format!("marking down node={victim_id}"), kill_ms);
    r.at[DOWN] = at(down);
    r.at[MOVED] = at(down.and_then(|d| find("shards moved", d)));
    if let Some((_, device)) = first {
        let (shard, owner) = owner_of(&reader.cluster_shards().await?, device);
        let log = cluster.node(owner)?.lease_log();
        r.at[GRANTED] = at(first_grant(&log, shard, kill_ms)?);
    }
    drop(cluster);
    Ok(r)
}

/// Waits until the shard map covers every shard with three owners.
async fn settled_map(admin: &Client) -> anyhow::Result<ClusterShardsResponse> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Ok(map) = admin.cluster_shards().await {
            let covered: u32 = map.ranges.iter().map(|r| r.last - r.first + 1).sum();
            let owners: BTreeSet<u64> = map.ranges.iter().map(|r| r.owner).collect();
            if covered == map.shard_count && owners.len() == 3 {
                return Ok(map);
            }
        }
        ensure!(Instant::now() < deadline, "shards not placed in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `device`'s shard and its owner in `map` (0: none).
fn owner_of(map: &ClusterShardsResponse, device: &str) -> (u32, u64) {
    let shard = shard_of(&DeviceKey::default_tenant(device), map.shard_count);
    let run = map
        .ranges
        .iter()
        .find(|r| (r.first..=r.last).contains(&shard));
    (shard, run.map_or(0, |r| r.owner))
}

/// One device: a point every [`PUBLISH_EVERY`] at QoS 1 until `stop`.
async fn publish(
    port: u16,
    device: String,
    track: Shared,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(format!("bench-{device}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // PUBACKs come from Mosquitto: they only say the broker has the point. A failed
    // connection ends the run (points recorded as published might not have been sent).
    let acked = Arc::new(AtomicUsize::new(0));
    let count = acked.clone();
    let driver = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let topic = format!("devices/{device}/telemetry");
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    let mut last_ts = 0;
    let result = loop {
        tokio::select! {
            // Time for the next point.
            _ = tick.tick() => {}
            // End of the run.
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
        if driver.is_finished() {
            break Err(anyhow::anyhow!("{device}: the MQTT connection failed"));
        }
        let ts = now_ms().max(last_ts + 1);
        last_ts = ts;
        lock(&track).published.insert(ts, Instant::now());
        let payload = format!(r#"{{"ts":{ts},"temp":{}}}"#, ts % 1000);
        if let Err(e) = client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await
        {
            break Err(anyhow::anyhow!("{device}: {e}"));
        }
    };
    // Until Mosquitto has every point: the last ones may still be queued in the client.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) < lock(&track).published.len() && result.is_ok() {
        let waiting = Instant::now() < deadline && !driver.is_finished();
        ensure!(waiting, "{device}: points not acknowledged by Mosquitto");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    driver.abort();
    result
}

/// Queries every device every [`POLL_EVERY`] from its oldest point not yet seen, noting when
/// each published point first appears. Errors (a survivor busy with failover) are retried.
async fn poll_stored(
    client: Client,
    devices: Vec<(String, Shared)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let queries = devices.iter().map(|(device, track)| {
            let from = {
                let t = lock(track);
                t.published
                    .keys()
                    .find(|ts| !t.stored.contains_key(*ts))
                    .copied()
            };
            let client = client.clone();
            async move {
                let from_ms = from?;
                let request = QueryRequest {
                    tenant: DEFAULT_TENANT.to_owned(),
                    device: device.clone(),
                    metric: "temp".to_owned(),
                    from_ms,
                    page_size: 10_000,
                    ..QueryRequest::default()
                };
                let points = client.query_all(request).await.ok()?;
                let seen = Instant::now();
                let mut t = lock(track);
                for p in points {
                    if t.published.contains_key(&p.ts_ms) {
                        t.stored.entry(p.ts_ms).or_insert(seen);
                    }
                }
                Some(())
            }
        });
        futures::future::join_all(queries).await;
        tokio::select! {
            // Next round.
            _ = tokio::time::sleep(POLL_EVERY) => {}
            // The run is over.
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `node.log` lines that start with an RFC 3339 timestamp (tracing's fmt layer), as (Unix
/// ms, the rest).
fn read_log(path: &Path) -> anyhow::Result<Vec<(i64, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (stamp, rest) = line.split_once(' ')?;
            let at = humantime::parse_rfc3339(stamp).ok()?;
            Some((unix_ms(at), rest.to_owned()))
        })
        .collect())
}

/// The first grant after `after_ms` in a `leases.log` that covers `shard`.
fn first_grant(path: &Path, shard: u32, after_ms: i64) -> anyhow::Result<Option<i64>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let grants = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok());
    Ok(grants
        .filter(|v| v["event"] == "grant" && v["at_ms"].as_i64() > Some(after_ms))
        .find(|v| {
            parse_ranges(v["shards"].as_str().unwrap_or("")).is_ok_and(|s| s.contains(&shard))
        })
        .and_then(|v| v["at_ms"].as_i64()))
}

/// Per (timings, victim): the median of each milestone, and the max of the last two.
fn summary(timings: &[Timings], results: &[(&str, Victim, RunResult)]) {
    println!(
        "\n| timings (hb/lease/failure/drift ms) | victim | runs | {MILESTONES} | first stored max | caught up max |"
    );
    println!("|---|---|---:|{}", "---:|".repeat(8));
    for (name, hb, lease, failure, drift) in timings {
        for victim in [Victim::Follower, Victim::Leader] {
            let rs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.0 == *name && r.1 == victim)
                .map(|r| &r.2)
                .collect();
            let sorted = |i: usize| {
                let mut v: Vec<Duration> = rs.iter().filter_map(|r| r.at[i]).collect();
                v.sort();
                v
            };
            let median = |v: Vec<Duration>| v.get(v.len() / 2).copied();
            let mut cells: Vec<String> = (0..6).map(|i| ms(median(sorted(i)))).collect();
            cells.extend([FIRST, CAUGHT_UP].map(|i| ms(sorted(i).last().copied())));
            if !rs.is_empty() {
                println!(
                    "| {name} ({hb}/{lease}/{failure}/{drift}) | {victim:?} | {} | {} |",
                    rs.len(),
                    cells.join(" | ")
                );
            }
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
