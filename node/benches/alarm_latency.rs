//! Alarm latency benchmark (issue 5): publish → alarm event on the gRPC Watch stream, under
//! background load at half the node's measured ingest rate, next to the broker alone; and the
//! cost of evaluating rules per point.
//!
//! One run, one machine, loopback only:
//! 1. **Rule evaluation, in process.** `RuleState::on_point` of 1 and of 100 threshold rules
//!    matching one device, over `BENCH_EVAL_POINTS` points (default 200,000 for 1 rule; a
//!    hundredth as many points for 100 rules): nanoseconds per point.
//! 2. **Maximum ingest.** `starling dev --broker <Mosquitto>`; 20 devices publish 1,000
//!    messages each at QoS 1 as fast as they are acknowledged; rate = points stored / time.
//! 3. **Latency at 50 %.** Background devices publish at half that rate (paced, QoS 1). A
//!    probe device alternates a hot and a cold value, one at a time; each raises or clears
//!    an alarm of rule `bench-hot`, and the time from its PUBLISH to the matching event on a
//!    Watch stream is recorded (hdrhistogram). Interleaved with it, a second probe publishes
//!    to a topic only a plain MQTT subscriber listens to: PUBLISH → delivery through the same
//!    broker under the same load, the broker-only peer. `BENCH_PROBES` samples each (default
//!    400).
//!
//! Run with `cargo bench --workspace --bench alarm_latency` (`STARLING_BIN` overrides the node
//! binary). Without `--bench` — e.g. under `cargo test --workspace --all-targets` — a small
//! smoke run. Needs Mosquitto. Figures go to BENCHMARKS.md as ratios; nothing here asserts a
//! time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use starling_chaos::env_count;
use starling_chaos::load::{self, Workload};
use starling_chaos::{Mosquitto, MosquittoOptions, NodeOptions, StarlingNode};
use starling_node::metrics_names::POINTS_STORED;
use starling_node::model::{Rule, Value};
use starling_node::rules::RuleState;
use starling_sdk::proto::{Transition, WatchAlarmsRequest};
use starling_sdk::{Client, Profile};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let eval_points = env_count("BENCH_EVAL_POINTS", if full { 200_000 } else { 2_000 })?;
    let probes = env_count("BENCH_PROBES", if full { 400 } else { 10 })?;
    let calibrate = if full { (20, 1000) } else { (2, 100) };
    let bin = std::env::var_os("STARLING_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_starling")));

    let one = eval_ns_per_point(1, eval_points)?;
    let hundred = eval_ns_per_point(100, (eval_points / 100).max(100))?;
    println!("| rules matching the device | ns per point | ratio to 1 rule |");
    println!("|---:|---:|---:|");
    println!("| 1 | {one:.0} | 1.00 |");
    println!("| 100 | {hundred:.0} | {:.1} |", hundred / one);

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(latency(bin, probes, calibrate))
}

/// Threshold rule `i` on `temp` of device `probe`.
fn rule(i: usize) -> anyhow::Result<Rule> {
    let doc = format!(
        r#"{{"id": "r{i}", "selector": {{"devices": ["probe"]}},
            "condition": {{"threshold": {{"metric": "temp", "op": ">", "value": {v},
            "clear": {c}}}}}, "severity": "minor"}}"#,
        v = 50 + i % 7,
        c = 40 + i % 7,
    );
    let doc = starling_node::rules::validate::parse(&doc, "json").context("rule")?;
    Ok(Rule {
        doc,
        version: 1,
        updated_at_ms: 0,
    })
}

/// Mean nanoseconds to evaluate one point against `rules` matching rules; the values swing
/// across the thresholds every 50 points, so raises and clears are part of the cost.
fn eval_ns_per_point(rules: usize, points: usize) -> anyhow::Result<f64> {
    let rules: Vec<Rule> = (0..rules).map(rule).collect::<Result<_, _>>()?;
    let mut states: Vec<RuleState> = rules.iter().map(|r| RuleState::new(r, false)).collect();
    let mut transitions = 0u64;
    let started = std::time::Instant::now();
    for p in 0..points {
        let temp = if (p / 50) % 2 == 0 { 30.0 } else { 70.0 };
        let values = [("temp".to_owned(), Value::Number(temp + (p % 5) as f64))];
        let ts = 1_700_000_000_000 + p as i64 * 1000;
        for (rule, state) in rules.iter().zip(states.iter_mut()) {
            if let Some(t) = state.on_point(rule, ts, &values, ts) {
                state.set_active(matches!(t, starling_node::rules::Transition::Raise { .. }));
                transitions += 1;
            }
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / points as f64;
    eprintln!(
        "eval: {} rules, {points} points, {transitions} transitions",
        rules.len()
    );
    Ok(ns)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn latency(bin: PathBuf, probes: usize, calibrate: (usize, usize)) -> anyhow::Result<()> {
    if !Mosquitto::available() {
        bail!("the alarm latency benchmark needs Mosquitto: apt-get install mosquitto");
    }
    let broker = Mosquitto::start(MosquittoOptions::default()).await?;
    let dir = tempfile::Builder::new()
        .prefix("starling-alarm-")
        .tempdir()?;
    let mut node = StarlingNode::start(
        &bin,
        NodeOptions {
            broker: Some(broker.addr()),
            ..NodeOptions::new(dir.path())
        },
    )
    .await?;
    let result = measure(&node, &broker, probes, calibrate).await;
    if let Err(e) = &result {
        eprintln!("--- node log ---\n{}", node.log_tail(40));
        eprintln!("error: {e:#}");
    }
    node.terminate().await?;
    result
}

async fn measure(
    node: &StarlingNode,
    broker: &Mosquitto,
    probes: usize,
    (devices, messages): (usize, usize),
) -> anyhow::Result<()> {
    let client = Client::connect(&Profile::load(&node.profile_path())?)?;
    let hot = r#"{"id": "bench-hot", "selector": {"devices": ["probe"]},
        "condition": {"threshold": {"metric": "temp", "op": ">", "value": 50, "clear": 40}},
        "severity": "major"}"#;
    client.apply_rule(hot, "json").await?;

    // Maximum ingest: as fast as PUBACKs come back, until every point is stored.
    let before = stored(node).await?;
    let workload = Workload::new(devices, messages, "max-");
    let report = load::publish(node.mqtt_port(), &workload, Duration::from_secs(300)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored(node).await? < before + workload.total() {
        if Instant::now() > deadline {
            bail!("the calibration points were not all stored");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let max_rate = workload.total() as f64 / report.started.elapsed().as_secs_f64();
    let target = max_rate / 2.0;
    eprintln!("max ingest {max_rate:.0} points/s; background at {target:.0}/s");

    // Background load at half of it.
    let stop = Arc::new(AtomicBool::new(false));
    let background = background_load(broker.port(), 10, target, stop.clone()).await?;

    let mut watch = client
        .watch_alarms(WatchAlarmsRequest {
            device: "probe".into(),
            ..Default::default()
        })
        .await?;
    let (probe, mut probe_loop) = mqtt_client("probe-dev", broker.port());
    let (raw_sub, mut raw_loop) = mqtt_client("raw-sub", broker.port());
    raw_sub.subscribe("bench/raw", QoS::AtLeastOnce).await?;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = raw_loop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                let _ = raw_tx.send(Instant::now());
            }
        }
    });
    tokio::spawn(async move { while probe_loop.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut starling = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut raw = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut warm = true;
    let (mut i, mut k) = (0, 0u64);
    while i < probes {
        let hot = k % 2 == 0;
        k += 1;
        let temp = if hot { 70 } else { 30 };
        let sent = Instant::now();
        probe
            .publish(
                "devices/probe/telemetry",
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"ts": {}, "temp": {temp}}}"#, now_ms()),
            )
            .await?;
        let want = if hot {
            Transition::Raised
        } else {
            Transition::Cleared
        };
        let got = tokio::time::timeout(PROBE_TIMEOUT, async {
            while let Some(e) = watch.next().await {
                if e?.transition() == want {
                    return Ok(Instant::now());
                }
            }
            bail!("the Watch stream ended")
        })
        .await
        .context("no alarm event in time")??;
        // Broker-only peer, same moment, same load.
        let raw_sent = Instant::now();
        probe
            .publish("bench/raw", QoS::AtLeastOnce, false, "x")
            .await?;
        let raw_got = tokio::time::timeout(PROBE_TIMEOUT, raw_rx.recv())
            .await
            .context("no raw delivery in time")?
            .context("raw subscriber gone")?;
        // The first raise also creates the device actor: not a steady-state sample.
        if warm {
            warm = false;
            continue;
        }
        starling.record((got - sent).as_micros().max(1) as u64)?;
        raw.record((raw_got - raw_sent).as_micros().max(1) as u64)?;
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = background.await?;
    eprintln!("background published {sent} messages");

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!(
        "| path ({} samples, background {target:.0} msgs/s = 50 % of {max_rate:.0}) | p50 ms | p99 ms | max ms |",
        starling.len()
    );
    println!("|---|---:|---:|---:|");
    for (name, h) in [
        ("Starling: PUBLISH → Watch event", &starling),
        ("Mosquitto alone: PUBLISH → subscriber", &raw),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "| ratio Starling / broker | {:.1} | {:.1} | |",
        ms(&starling, 0.5) / ms(&raw, 0.5),
        ms(&starling, 0.99) / ms(&raw, 0.99)
    );
    Ok(())
}

fn mqtt_client(id: &str, port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(opts, 1000)
}

/// `devices` clients publishing QoS 1 telemetry at `rate` messages/s in total until `stop`;
/// returns how many they published.
async fn background_load(
    port: u16,
    devices: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<u64>> {
    let per_device = (rate / devices as f64).max(1.0);
    let period = Duration::from_secs_f64(1.0 / per_device);
    let mut tasks = Vec::new();
    for d in 0..devices {
        let (client, mut event_loop) = mqtt_client(&format!("bg-{d}"), port);
        tokio::spawn(async move { while event_loop.poll().await.is_ok() {} });
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let body = format!(r#"{{"ts": {}, "temp": 20}}"#, now_ms() + n as i64);
                if client
                    .publish(
                        format!("devices/bg-{d}/telemetry"),
                        QoS::AtLeastOnce,
                        false,
                        body,
                    )
                    .await
                    .is_err()
                {
                    break;
                }
                n += 1;
            }
            n
        }));
    }
    Ok(tokio::spawn(async move {
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or(0);
        }
        total
    }))
}

async fn stored(node: &StarlingNode) -> anyhow::Result<u64> {
    Ok(node.metric(POINTS_STORED).await?.unwrap_or(0.0) as u64)
}
