//! Starling vs InfluxDB 1.6 on issue 4's workload, in one run (see BENCHMARKS.md).
//!
//! Load: `BENCH_DAYS` days (default 30) of one point every `BENCH_STEP_S` seconds (default 1)
//! for 3 devices (7,776,000 points by default), then time (a) the raw 1-day range of one
//! device and (b) the whole range's 1-minute average of one device. Both servers run on
//! loopback, each in its own temporary directory, one after the other (Starling first), and
//! are driven alike: 6 concurrent writers (two per device, each half of the device's time
//! range), 1,000 points per request, each request answered only once durable (Starling:
//! group commit with fsync; InfluxDB: WAL with `wal-fsync-delay = 0s`, its default).
//!
//! - Starling: `starling dev` (the binary under test, release build under `cargo bench`),
//!   embedded store, gRPC over TLS through the SDK: `publish`, columnar `query` pages of
//!   100,000 (`query_series_all`; also timed as rows, pages of 10,000, for reference),
//!   `aggregate` pages of 10,000 (answered from 1-minute rollups computed at ingest).
//! - InfluxDB 1.6: `influxd` with a generated config (HTTP on a free port, no reporting, no
//!   internal monitor store, no query log), line protocol over HTTP/1.0 (`precision=ms`),
//!   InfluxQL `SELECT value …` and `SELECT mean(value) … GROUP BY time(1m)`, JSON results.
//!
//! Query times are the best of 3 (warm caches) and include the transfer and the client's
//! decoding on both sides. Both answers are checked: the raw read must return every point of
//! the day, and the averages of both systems must agree. Disk: allocated blocks of Starling's
//! `telemetry.redb` and of InfluxDB's data + wal directories, right after the load.
//!
//! Without `--bench` on the command line (e.g. `cargo test --all-targets`) it runs a smoke
//! load (1 day at one point per minute). Without `influxd` on the PATH it measures Starling
//! alone and says so. `STARLING_BIN` and `INFLUXD_BIN` override the binaries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use starling_chaos::{NodeOptions, StarlingNode, env_count, free_port};
use starling_sdk::proto::{AggregateRequest, QueryRequest, Sample, Value, value::Kind};
use starling_sdk::{Client, Profile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEVICES: usize = 3;
const WRITERS_PER_DEVICE: usize = 2;
const PER_REQUEST: usize = 1_000;
const DAY_MS: i64 = 86_400_000;
/// Aggregate pages (intervals); the raw day is read in columnar pages of the server's
/// largest size, 100,000 points (one page for the day).
const PAGE: u32 = 10_000;
const COLUMNAR_PAGE: u32 = 100_000;
const REPEATS: usize = 3;
/// The device whose day and month are read.
const READ_DEVICE: usize = 1;

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let days = env_count("BENCH_DAYS", if full { 30 } else { 1 })? as i64;
    let step_ms = env_count("BENCH_STEP_S", if full { 1 } else { 60 })? as i64 * 1000;
    let starling = std::env::var_os("STARLING_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_starling")));
    let influxd = std::env::var_os("INFLUXD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/influxd"));
    // Day-aligned, ending two days ago (inside Starling's default ingest window).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let w = Workload {
        start: (now / DAY_MS - 2 - days) * DAY_MS,
        days,
        step_ms,
    };
    println!(
        "storage vs influx: {} devices x {} days, one point every {} ms = {} points; load average {}",
        DEVICES,
        days,
        step_ms,
        w.points_per_device() * DEVICES as i64,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let s = run_starling(&starling, &w).await?;
        print("starling", &s);
        if !influxd.exists() {
            println!(
                "SKIPPED InfluxDB: {} not found (apt-get install influxdb)",
                influxd.display()
            );
            return Ok(());
        }
        let i = run_influx(&influxd, &w).await?;
        print("influxdb 1.6", &i);
        for (k, (a, b)) in s.avg.iter().zip(&i.avg).enumerate() {
            ensure!(
                a.0 == b.0 && (a.1 - b.1).abs() < 1e-6,
                "1-minute averages differ at interval {k}: starling {a:?}, influxdb {b:?}"
            );
        }
        println!(
            "ratios starling/influx: ingest points/s {:.2}, raw day time {:.2} (as rows {:.2}), \
             1m avg time {:.2}, bytes/point {:.2}",
            s.ingest_rate / i.ingest_rate,
            s.raw_day.as_secs_f64() / i.raw_day.as_secs_f64(),
            s.raw_day_rows.unwrap_or_default().as_secs_f64() / i.raw_day.as_secs_f64(),
            s.avg_time.as_secs_f64() / i.avg_time.as_secs_f64(),
            s.bytes as f64 / i.bytes as f64,
        );
        anyhow::Ok(())
    })
}

struct Workload {
    start: i64,
    days: i64,
    step_ms: i64,
}

impl Workload {
    fn points_per_device(&self) -> i64 {
        self.days * DAY_MS / self.step_ms
    }
    fn end(&self) -> i64 {
        self.start + self.days * DAY_MS
    }
    /// A smooth, noisy series (like a temperature), deterministic per (device, i).
    fn value(device: usize, i: i64) -> f64 {
        let t = i as f64 / 3600.0;
        20.0 + device as f64
            + 5.0 * (t * std::f64::consts::TAU / 24.0).sin()
            + ((i * 7919 + device as i64 * 104_729) % 1000) as f64 / 1000.0
    }
    /// The ts range of the day read back (the middle day).
    fn day(&self) -> (i64, i64) {
        let from = self.start + (self.days / 2) * DAY_MS;
        (from, from + DAY_MS)
    }
    /// Writer `k`'s share of `device`'s point indexes.
    fn share(&self, k: usize) -> std::ops::Range<i64> {
        let n = self.points_per_device();
        let half = n / WRITERS_PER_DEVICE as i64;
        let from = half * k as i64;
        let to = if k + 1 == WRITERS_PER_DEVICE {
            n
        } else {
            from + half
        };
        from..to
    }
}

struct Figures {
    ingest_rate: f64,
    raw_day: Duration,
    /// Starling only: the raw day read as rows instead of columns.
    raw_day_rows: Option<Duration>,
    raw_points: usize,
    avg_time: Duration,
    /// (interval start, mean) of the 1-minute average.
    avg: Vec<(i64, f64)>,
    bytes: u64,
    points: i64,
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name}: ingest {:.0} points/s; raw day {:.1} ms ({} points); 1m avg {:.1} ms ({} \
         intervals); {:.1} bytes/point ({} bytes)",
        f.ingest_rate,
        f.raw_day.as_secs_f64() * 1000.0,
        f.raw_points,
        f.avg_time.as_secs_f64() * 1000.0,
        f.avg.len(),
        f.bytes as f64 / f.points as f64,
        f.bytes
    );
    if let Some(rows) = f.raw_day_rows {
        println!(
            "{name}: raw day as rows (pages of {PAGE}) {:.1} ms",
            rows.as_secs_f64() * 1000.0
        );
    }
}

/// Allocated bytes of every file under `path`.
fn allocated(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| allocated(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

/// Runs `f` `REPEATS` times and keeps the best time and the last answer.
async fn best_of<T, F, Fut>(mut f: F) -> anyhow::Result<(Duration, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let answer = f().await?;
        best = best.min(started.elapsed());
        last = Some(answer);
    }
    Ok((best, last.context("at least one repeat")?))
}

async fn run_starling(bin: &Path, w: &Workload) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let mut node = StarlingNode::start(bin, NodeOptions::new(dir.path())).await?;
    let client = Arc::new(Client::connect(&Profile::load(&node.profile_path())?)?);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for device in 0..DEVICES {
        for k in 0..WRITERS_PER_DEVICE {
            let (client, range, start, step) = (client.clone(), w.share(k), w.start, w.step_ms);
            tasks.spawn(async move {
                let ids: Vec<i64> = range.collect();
                for chunk in ids.chunks(PER_REQUEST) {
                    let samples = chunk
                        .iter()
                        .map(|i| Sample {
                            ts_ms: start + i * step,
                            seq: None,
                            values: [(
                                "temp".to_owned(),
                                Value {
                                    kind: Some(Kind::Number(Workload::value(device, *i))),
                                },
                            )]
                            .into(),
                        })
                        .collect();
                    let r = client.publish("", &format!("d{device}"), samples).await?;
                    ensure!(r.rejections.is_empty(), "rejected: {:?}", r.rejections);
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let points = w.points_per_device() * DEVICES as i64;
    let ingest_rate = points as f64 / started.elapsed().as_secs_f64();
    let bytes = allocated(&dir.path().join("store"));
    let bytes = if bytes == 0 {
        allocated(dir.path())
    } else {
        bytes
    };

    let (day_from, day_to) = w.day();
    let device = format!("d{READ_DEVICE}");
    let (raw_day, raw_points) = best_of(|| async {
        let request = QueryRequest {
            tenant: String::new(),
            device: device.clone(),
            metric: "temp".into(),
            from_ms: day_from,
            to_ms: day_to,
            page_size: COLUMNAR_PAGE,
            ..Default::default()
        };
        let series = client.query_series_all(request).await?;
        ensure!(
            series.len() == 1,
            "starling raw day returned {} series",
            series.len()
        );
        let (ts, numbers) = (&series[0].ts_ms, &series[0].numbers);
        ensure!(
            ts.windows(2).all(|w| w[0] < w[1])
                && ts.first().is_some_and(|t| *t >= day_from)
                && ts.last().is_some_and(|t| *t < day_to)
                && numbers.len() == ts.len()
                && numbers.iter().all(|n| n.is_finite()),
            "starling raw day: points out of order, out of range or not numbers"
        );
        Ok(ts.len())
    })
    .await?;
    ensure!(
        raw_points as i64 == DAY_MS / w.step_ms,
        "starling raw day returned {raw_points} points"
    );
    // The same day as rows (pages of 10,000 points, one message per point): what the
    // columnar answer is measured against.
    let (raw_day_rows, rows) = best_of(|| async {
        let request = QueryRequest {
            device: device.clone(),
            metric: "temp".into(),
            from_ms: day_from,
            to_ms: day_to,
            page_size: PAGE,
            ..Default::default()
        };
        Ok(client.query_all(request).await?.len())
    })
    .await?;
    ensure!(
        rows == raw_points,
        "starling raw day as rows returned {rows} points"
    );
    let (avg_time, avg) = best_of(|| async {
        let request = AggregateRequest {
            tenant: String::new(),
            device: device.clone(),
            metric: "temp".into(),
            function: "avg".into(),
            interval_ms: 60_000,
            from_ms: w.start,
            to_ms: w.end(),
            page_size: PAGE,
            page_token: String::new(),
        };
        let rows = client.aggregate_all(request).await?;
        Ok(rows
            .iter()
            .map(|r| (r.start_ms, r.value))
            .collect::<Vec<_>>())
    })
    .await?;
    node.terminate().await?;
    Ok(Figures {
        ingest_rate,
        raw_day,
        raw_day_rows: Some(raw_day_rows),
        raw_points,
        avg_time,
        avg,
        bytes,
        points,
    })
}

/// `influxd` with its own directories and ports, killed on drop.
struct Influx {
    /// Held so the process lives as long as this value (`kill_on_drop`).
    _child: tokio::process::Child,
    http: u16,
    dir: tempfile::TempDir,
}

impl Influx {
    async fn start(bin: &Path) -> anyhow::Result<Influx> {
        let dir = tempfile::tempdir()?;
        let (rpc, http) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  wal-fsync-delay = \"0s\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n  max-row-limit = 0\n  max-body-size = 0\n"
        );
        let path = dir.path().join("influxdb.conf");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("influxd.log"))?;
        let child = tokio::process::Command::new(bin)
            .arg("-config")
            .arg(&path)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let influx = Influx {
            _child: child,
            http,
            dir,
        };
        for _ in 0..200 {
            if let Ok((204, _)) = influx.request("GET", "/ping", "").await {
                return Ok(influx);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "influxd did not answer /ping within 10 s; see {}",
            influx.dir.path().join("influxd.log").display()
        )
    }

    /// One HTTP/1.0 exchange (no keep-alive, no chunking): (status, body).
    async fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http)).await?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8(raw)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        Ok((status, body.to_owned()))
    }

    /// The rows of an InfluxQL query's first series.
    async fn query(&self, q: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = format!("/query?db=bench&epoch=ms&q={}", encode(q));
        let (status, body) = self.request("GET", &path, "").await?;
        ensure!(status == 200, "influx query {q}: {status} {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        let values = &json["results"][0]["series"][0]["values"];
        Ok(values.as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encoding of a query string value (everything but unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn run_influx(bin: &Path, w: &Workload) -> anyhow::Result<Figures> {
    let influx = Arc::new(Influx::start(bin).await?);
    let (status, body) = influx
        .request(
            "POST",
            &format!("/query?q={}", encode("CREATE DATABASE bench")),
            "",
        )
        .await?;
    ensure!(status == 200, "create database: {status} {body}");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for device in 0..DEVICES {
        for k in 0..WRITERS_PER_DEVICE {
            let (influx, range, start, step) = (influx.clone(), w.share(k), w.start, w.step_ms);
            tasks.spawn(async move {
                let ids: Vec<i64> = range.collect();
                for chunk in ids.chunks(PER_REQUEST) {
                    let mut lines = String::with_capacity(chunk.len() * 48);
                    for i in chunk {
                        let v = Workload::value(device, *i);
                        lines.push_str(&format!(
                            "temp,device=d{device} value={v:?} {}\n",
                            start + i * step
                        ));
                    }
                    let (status, body) = influx
                        .request("POST", "/write?db=bench&precision=ms", &lines)
                        .await?;
                    ensure!(status == 204, "influx write: {status} {body}");
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let points = w.points_per_device() * DEVICES as i64;
    let ingest_rate = points as f64 / started.elapsed().as_secs_f64();
    let bytes =
        allocated(&influx.dir.path().join("data")) + allocated(&influx.dir.path().join("wal"));

    let (day_from, day_to) = w.day();
    let (raw_day, raw_points) = best_of(|| async {
        let q = format!(
            "SELECT value FROM temp WHERE device = 'd{READ_DEVICE}' AND time >= {day_from}ms AND time < {day_to}ms"
        );
        Ok(influx.query(&q).await?.len())
    })
    .await?;
    ensure!(
        raw_points as i64 == DAY_MS / w.step_ms,
        "influx raw day returned {raw_points} points"
    );
    let (avg_time, avg) = best_of(|| async {
        let q = format!(
            "SELECT mean(value) FROM temp WHERE device = 'd{READ_DEVICE}' AND time >= {}ms AND time < {}ms GROUP BY time(1m) fill(none)",
            w.start,
            w.end()
        );
        let rows = influx.query(&q).await?;
        rows.iter()
            .map(|r| {
                let t = r[0].as_i64().context("time")?;
                let v = r[1].as_f64().context("mean")?;
                Ok((t, v))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await?;
    Ok(Figures {
        ingest_rate,
        raw_day,
        raw_day_rows: None,
        raw_points,
        avg_time,
        avg,
        bytes,
        points,
    })
}
