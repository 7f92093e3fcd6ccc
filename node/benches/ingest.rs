//! Ingest benchmark: how close does Starling's durable ingest come to the broker's raw rate?
//!
//! One run, one machine, loopback only:
//! 1. **Raw Mosquitto.** `BENCH_DEVICES` devices (default 20) each publish `BENCH_MESSAGES`
//!    messages (default 2000) at QoS 1 to `devices/{id}/telemetry`; a plain subscriber on
//!    `devices/+/telemetry` counts them. Rate = messages / (first PUBLISH → last received).
//! 2. **Starling.** `starling dev --broker <that Mosquitto>` ingests the same workload. Rate =
//!    points / (first PUBLISH → `starling_points_stored_total` reaching the count), polled on
//!    `/metrics` every 50 ms. Then the count is checked: fewer points than messages is a loss
//!    and fails the run.
//!
//! Run with `cargo bench --workspace --bench ingest` (the node binary is built with the bench
//! profile; `STARLING_BIN` overrides it). `BENCH_STORE_BACKEND=redb|fjall` picks the engine of
//! the node's embedded store (`starling dev --store-backend`; default: the node's default). Without `--bench` on the command line — e.g. under
//! `cargo test --workspace --all-targets` — it runs a small smoke workload instead, unless
//! `BENCH_DEVICES`/`BENCH_MESSAGES` are set. Needs Mosquitto (`apt-get install mosquitto`).

use std::path::PathBuf;
use std::time::Duration;

use starling_chaos::env_count;

use anyhow::{Context, bail};
use starling_chaos::load::{self, CountingSubscriber, Workload};
use starling_chaos::{Mosquitto, MosquittoOptions, NodeOptions, StarlingNode};
use starling_node::metrics_names::POINTS_STORED;
use tokio::time::Instant;

/// How often the stored-points counter is read.
const METRICS_POLL: Duration = Duration::from_millis(50);
/// A run that makes no progress for this long is reported as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for the node's subscription to deliver a first point.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let config = BenchConfig::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

#[derive(Debug)]
struct BenchConfig {
    devices: usize,
    messages: usize,
    /// The `starling` binary under test.
    bin: PathBuf,
    /// `--store-backend` of the node, if `BENCH_STORE_BACKEND` is set.
    store_backend: Option<String>,
}

impl BenchConfig {
    fn from_env() -> anyhow::Result<Self> {
        // `cargo bench` passes `--bench`; anything else (cargo test) gets a smoke run.
        let full = std::env::args().any(|a| a == "--bench");
        let (default_devices, default_messages) = if full { (20, 2000) } else { (2, 50) };
        let bin = std::env::var_os("STARLING_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_starling")));
        Ok(BenchConfig {
            devices: env_count("BENCH_DEVICES", default_devices)?,
            messages: env_count("BENCH_MESSAGES", default_messages)?,
            bin,
            store_backend: std::env::var("BENCH_STORE_BACKEND").ok(),
        })
    }
}

async fn run(config: BenchConfig) -> anyhow::Result<()> {
    if !Mosquitto::available() {
        bail!("the ingest benchmark needs Mosquitto: apt-get install mosquitto");
    }
    let total = (config.devices * config.messages) as u64;
    // Generous bound for one phase: a minute plus 1 ms per message.
    let phase_timeout = Duration::from_secs(60) + Duration::from_millis(total);
    eprintln!(
        "ingest bench: {} devices x {} messages (QoS 1), starling = {}, store backend = {}",
        config.devices,
        config.messages,
        config.bin.display(),
        config.store_backend.as_deref().unwrap_or("default")
    );

    let broker = Mosquitto::start(MosquittoOptions::default()).await?;

    let raw = raw_mosquitto(&broker, &config, phase_timeout)
        .await
        .with_context(|| format!("raw Mosquitto phase\n{}", broker.log_tail(20)))?;
    eprintln!(
        "raw Mosquitto: {total} messages in {:.3} s",
        raw.as_secs_f64()
    );

    let data_dir = tempfile::Builder::new()
        .prefix("starling-bench-")
        .tempdir()?;
    let mut node = StarlingNode::start(
        &config.bin,
        NodeOptions {
            broker: Some(broker.addr()),
            extra_args: config
                .store_backend
                .iter()
                .flat_map(|backend| ["--store-backend".to_owned(), backend.clone()])
                .collect(),
            ..NodeOptions::new(data_dir.path())
        },
    )
    .await?;
    let stored = match starling_ingest(&node, &config, phase_timeout).await {
        Ok(stored) => stored,
        Err(e) => bail!(
            "Starling phase: {e:#}\n--- node log ---\n{}",
            node.log_tail(40)
        ),
    };
    let status = node.terminate().await?;
    eprintln!(
        "starling: {} points stored in {:.3} s; exit after SIGTERM: {status}",
        stored.points,
        stored.elapsed.as_secs_f64()
    );

    let raw_rate = total as f64 / raw.as_secs_f64();
    let stored_rate = total as f64 / stored.elapsed.as_secs_f64();
    println!();
    println!("| workload | raw Mosquitto msgs/s | Starling stored points/s | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {} devices x {} msgs, QoS 1 ({total}) | {raw_rate:.0} | {stored_rate:.0} | {:.2} |",
        config.devices,
        config.messages,
        stored_rate / raw_rate
    );
    if stored.points > total {
        println!(
            "\n{} points above the workload: redeliveries counted twice by the metric.",
            stored.points - total
        );
    }
    Ok(())
}

/// Phase 1: the broker alone. Returns first PUBLISH → last message received.
async fn raw_mosquitto(
    broker: &Mosquitto,
    config: &BenchConfig,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let mut subscriber = CountingSubscriber::start(broker.port(), "devices/+/telemetry").await?;
    let workload = Workload::new(config.devices, config.messages, "bench-raw-");
    let report = load::publish(broker.port(), &workload, timeout).await?;
    let last = subscriber.wait_for(workload.total(), timeout).await?;
    if subscriber.received() != workload.total() {
        bail!(
            "subscriber received {} of {} messages",
            subscriber.received(),
            workload.total()
        );
    }
    Ok(last - report.started)
}

struct Stored {
    /// First PUBLISH → counter reached the workload.
    elapsed: Duration,
    /// Points the counter gained over the workload (settled after the run).
    points: u64,
}

/// Phase 2: the same workload through a Starling node.
async fn starling_ingest(
    node: &StarlingNode,
    config: &BenchConfig,
    timeout: Duration,
) -> anyhow::Result<Stored> {
    let baseline = warm_up(node).await?;
    let workload = Workload::new(config.devices, config.messages, "bench-");
    let target = baseline + workload.total();
    let (published, reached) = tokio::join!(
        load::publish(node.mqtt_port(), &workload, timeout),
        wait_for_stored(node, target, timeout),
    );
    let report = published?;
    let reached = reached?;
    // Let late redeliveries land so duplicates show, then settle the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let points = stored_points(node).await?.saturating_sub(baseline);
    if points < workload.total() {
        bail!("LOSS: {points} of {} points stored", workload.total());
    }
    Ok(Stored {
        elapsed: reached - report.started,
        points,
    })
}

/// Publishes single probe messages until the node has stored one, so the measured run does
/// not start before the node's subscription is live (the broker drops messages nobody is
/// subscribed to). Returns the counter afterwards.
async fn warm_up(node: &StarlingNode) -> anyhow::Result<u64> {
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    let mut probes = 0;
    while Instant::now() < deadline {
        if stored_points(node).await? > 0 {
            // Wait for every probe: stragglers would count towards the measured run.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return stored_points(node).await;
        }
        let probe = Workload::new(1, 1, &format!("bench-probe-{probes}-"));
        load::publish(node.mqtt_port(), &probe, Duration::from_secs(10)).await?;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no point stored within {WARM_UP_TIMEOUT:?} after {probes} probe messages")
}

/// Polls the counter until it reaches `target`; returns the first instant it was seen there.
async fn wait_for_stored(
    node: &StarlingNode,
    target: u64,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let (mut last, mut last_progress) = (0, Instant::now());
    loop {
        let now = stored_points(node).await?;
        let seen = Instant::now();
        if now >= target {
            return Ok(seen);
        }
        if now > last {
            (last, last_progress) = (now, seen);
        }
        if seen > deadline {
            bail!("{now} of {target} points (counter) after {timeout:?}");
        }
        if seen - last_progress > STALL_TIMEOUT {
            bail!("stalled at {now} of {target} points (counter) for {STALL_TIMEOUT:?}");
        }
        tokio::time::sleep(METRICS_POLL).await;
    }
}

async fn stored_points(node: &StarlingNode) -> anyhow::Result<u64> {
    let value = node.metric(POINTS_STORED).await?.unwrap_or(0.0);
    Ok(value as u64)
}
