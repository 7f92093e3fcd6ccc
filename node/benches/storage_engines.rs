//! Embedded engine benchmark (issue 4): redb vs fjall on Starling's telemetry workload.
//!
//! Both engines are measured in the same run, on the same machine, with the same key order
//! and the same value bytes, so what is reported is the ratio between them. Phases:
//!
//! 1. **Ingest with group commit and fsync.** `BENCH_WRITERS` tokio tasks (default 64, like
//!    device actors) each write `BENCH_WRITES` times (default 2,000) a batch of `BENCH_BATCH`
//!    points (default 1) of device `dev-{i}`, waiting for each write to be durable before the
//!    next. One writer thread per engine drains whatever is queued (up to 20,000 points, as the
//!    store does) and commits it durably: redb one write transaction with
//!    `Durability::Immediate`; fjall one write batch with `PersistMode::SyncData` (the batch
//!    writes its journal entry, then fdatasyncs it before returning). Reported: points/s and
//!    commits/s, from the first write to the last acknowledgement.
//! 2. **Bulk load and bytes on disk.** `BENCH_POINTS` points (default 1,000,000) across 10
//!    devices at 1 Hz, in time order (every device at t, then t+1 s, ...), 10,000 points per
//!    durable commit. The directory is measured as loaded, then after the engine's own
//!    maintenance (redb: `Database::compact`; fjall: flush the memtable, then a major
//!    compaction).
//! 3. **Raw range read.** One device, one day at 1 Hz (86,400 points; fewer in the smoke run),
//!    in key order, decoding each timestamp and value; best of 3, as loaded and again after
//!    compaction. Caches are warm: this measures the engine, not the disk.
//!
//! Only the points table is written (not the store's latest/devices indexes), for both engines.
//!
//! Keys: (tenant, device, metric, ts_ms). redb uses the store's tuple key; fjall a byte key
//! that sorts the same way: each string followed by a 0x00 byte (names never contain NUL here;
//! a real key would escape it), then ts as big-endian u64 with the sign bit flipped. Values:
//! the 9-byte Number encoding of `storage::codec` (tag 0x01, f64 bits little-endian), copied
//! here because `codec` is `pub(super)` and not reachable from a bench.
//!
//! Run with `cargo bench --workspace --bench storage_engines`. Without `--bench` on the command
//! line (e.g. `cargo test --workspace --all-targets`) it runs a small smoke workload instead;
//! the `BENCH_*` variables override either. Files live only in a temporary directory (under
//! `TMPDIR`, which must be a real disk for the fsync figures to mean anything).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fjall::{KeyspaceCreateOptions, PersistMode};
use redb::{Durability, ReadableDatabase, TableDefinition};
use starling_chaos::env_count;
use tokio::sync::{mpsc, oneshot};

const TENANT: &str = "default";
const METRIC: &str = "temp";
/// First timestamp of every series (2024-11-21), and the 1 Hz step.
const T0_MS: i64 = 1_732_200_000_000;
const STEP_MS: i64 = 1_000;
/// The store's default `max_batch_points`: a group commit stops draining at this many points.
const MAX_BATCH_POINTS: usize = 20_000;
/// The store's request queue bound.
const QUEUE_REQUESTS: usize = 1024;
/// Points per commit when loading for the size and read phases.
const LOAD_BATCH: usize = 10_000;
const LOAD_DEVICES: usize = 10;
/// The device whose day is read back.
const READ_DEVICE: usize = 3;
const DAY_POINTS: usize = 86_400;
const READ_REPEATS: usize = 3;
/// Bound on the ingest phase of one engine.
const INGEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The value tag of a Number in `storage::codec`.
const TAG_NUMBER: u8 = 0x01;

const REDB_POINTS: TableDefinition<(&str, &str, &str, i64), &[u8]> =
    TableDefinition::new("points_v1");

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "storage engines bench: {} writers x {} writes x {} point(s); load {} points over {} \
         devices; read {} points; tmp = {}; load average at start: {}",
        config.writers,
        config.writes,
        config.batch,
        config.points,
        LOAD_DEVICES,
        config.read_points(),
        std::env::temp_dir().display(),
        load_average(),
    );

    // Phase by phase, redb then fjall, so a drift in machine load hits both engines alike.
    let redb_ingest = ingest::<RedbEngine>(&runtime, &config)?;
    let fjall_ingest = ingest::<FjallEngine>(&runtime, &config)?;
    let redb_storage = storage::<RedbEngine>(&config)?;
    let fjall_storage = storage::<FjallEngine>(&config)?;
    println!("load average at end: {}\n", load_average());

    let per_point = |bytes: u64| bytes as f64 / config.points as f64;
    let rows: [(&str, f64, f64, usize); 12] = [
        (
            "ingest: durable points/s (higher is better)",
            redb_ingest.points_per_s,
            fjall_ingest.points_per_s,
            0,
        ),
        (
            "ingest: commits/s",
            redb_ingest.commits_per_s,
            fjall_ingest.commits_per_s,
            0,
        ),
        (
            "ingest: points per commit",
            redb_ingest.points_per_commit,
            fjall_ingest.points_per_commit,
            1,
        ),
        (
            "bulk load: points/s, 10k per commit",
            redb_storage.load_points_per_s,
            fjall_storage.load_points_per_s,
            0,
        ),
        (
            "bytes/point as loaded (allocated)",
            per_point(redb_storage.loaded.allocated),
            per_point(fjall_storage.loaded.allocated),
            1,
        ),
        (
            "bytes/point compacted (allocated) (lower is better)",
            per_point(redb_storage.compacted.allocated),
            per_point(fjall_storage.compacted.allocated),
            1,
        ),
        (
            "bytes/point compacted, journal excluded (allocated)",
            per_point(redb_storage.compacted.allocated - redb_storage.compacted.journal),
            per_point(fjall_storage.compacted.allocated - fjall_storage.compacted.journal),
            1,
        ),
        (
            "bytes/point compacted (file sizes)",
            per_point(redb_storage.compacted.len),
            per_point(fjall_storage.compacted.len),
            1,
        ),
        (
            "compaction: seconds",
            redb_storage.compact_secs,
            fjall_storage.compact_secs,
            2,
        ),
        (
            "range read as loaded: points/s, best of 3",
            redb_storage.read_loaded,
            fjall_storage.read_loaded,
            0,
        ),
        (
            "range read compacted: points/s, best of 3 (higher is better)",
            redb_storage.read_compacted,
            fjall_storage.read_compacted,
            0,
        ),
        (
            "files in the directory, compacted",
            redb_storage.compacted.files as f64,
            fjall_storage.compacted.files as f64,
            0,
        ),
    ];
    println!("| metric | redb | fjall | fjall/redb |");
    println!("|---|---:|---:|---:|");
    for (metric, redb, fjall, decimals) in rows {
        println!(
            "| {metric} | {redb:.decimals$} | {fjall:.decimals$} | {:.2} |",
            fjall / redb
        );
    }
    Ok(())
}

#[derive(Debug)]
struct Config {
    writers: usize,
    writes: usize,
    batch: usize,
    points: usize,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        // `cargo bench` passes `--bench`; anything else (cargo test) gets a smoke run.
        let full = std::env::args().any(|a| a == "--bench");
        let (writers, writes, points) = if full {
            (64, 2_000, 1_000_000)
        } else {
            (4, 10, 20_000)
        };
        Ok(Config {
            writers: env_count("BENCH_WRITERS", writers)?,
            writes: env_count("BENCH_WRITES", writes)?,
            batch: env_count("BENCH_BATCH", 1)?,
            points: env_count("BENCH_POINTS", points)?,
        })
    }

    /// Points of the read device that fall in the day that is read back.
    fn read_points(&self) -> usize {
        let device = READ_DEVICE % LOAD_DEVICES;
        // Points are dealt to devices round-robin: device d gets indexes d, d + 10, ...
        let per_device = (self.points + LOAD_DEVICES - 1 - device) / LOAD_DEVICES;
        per_device.min(DAY_POINTS)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// One telemetry point of tenant `default`, metric `temp`.
struct Sample {
    device: Arc<str>,
    ts_ms: i64,
    value: f64,
}

/// The `storage::codec` encoding of `Value::Number` (copied: the codec is not public).
fn encode_number(value: f64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = TAG_NUMBER;
    out[1..].copy_from_slice(&value.to_bits().to_le_bytes());
    out
}

fn decode_number(bytes: &[u8]) -> anyhow::Result<f64> {
    match bytes {
        [TAG_NUMBER, payload @ ..] if payload.len() == 8 => {
            let mut bits = [0u8; 8];
            bits.copy_from_slice(payload);
            Ok(f64::from_bits(u64::from_le_bytes(bits)))
        }
        _ => bail!("corrupt value of {} bytes", bytes.len()),
    }
}

/// What a range read saw: how many points, and a checksum of them so nothing is optimised
/// away.
struct ReadOutcome {
    points: usize,
    sum: f64,
}

/// The few operations the bench needs from an engine.
trait Engine: Sized + Send + 'static {
    const NAME: &'static str;
    fn open(dir: &Path) -> anyhow::Result<Self>;
    /// Stores the samples in one durable (fsync'd) commit.
    fn commit<'a>(&mut self, samples: impl Iterator<Item = &'a Sample>) -> anyhow::Result<()>;
    /// Reads one device's points with `from_ms <= ts < to_ms`, in key order.
    fn read_range(&self, device: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<ReadOutcome>;
    /// The engine's own space maintenance, run to completion.
    fn compact(&mut self) -> anyhow::Result<()>;
}

struct RedbEngine {
    db: redb::Database,
}

impl Engine for RedbEngine {
    const NAME: &'static str = "redb";

    fn open(dir: &Path) -> anyhow::Result<Self> {
        let db = redb::Database::create(dir.join("telemetry.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_POINTS)?;
        txn.commit()?;
        Ok(RedbEngine { db })
    }

    fn commit<'a>(&mut self, samples: impl Iterator<Item = &'a Sample>) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(REDB_POINTS)?;
            for sample in samples {
                let value = encode_number(sample.value);
                table.insert(
                    (TENANT, &*sample.device, METRIC, sample.ts_ms),
                    value.as_slice(),
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read_range(&self, device: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<ReadOutcome> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_POINTS)?;
        let mut outcome = ReadOutcome {
            points: 0,
            sum: 0.0,
        };
        let mut previous = i64::MIN;
        for entry in
            table.range((TENANT, device, METRIC, from_ms)..(TENANT, device, METRIC, to_ms))?
        {
            let (key, value) = entry?;
            let ts_ms = key.value().3;
            if ts_ms <= previous {
                bail!("redb returned ts {ts_ms} after {previous}");
            }
            previous = ts_ms;
            outcome.sum += decode_number(value.value())?;
            outcome.points += 1;
        }
        Ok(outcome)
    }

    fn compact(&mut self) -> anyhow::Result<()> {
        // `compact` reports whether it moved anything; a few passes reach the fixed point.
        for _ in 0..4 {
            if !self.db.compact()? {
                break;
            }
        }
        Ok(())
    }
}

struct FjallEngine {
    db: fjall::Database,
    points: fjall::Keyspace,
}

/// The fjall key of a point: the strings NUL-terminated, then the timestamp big-endian with
/// the sign bit flipped, so byte order equals redb's tuple order.
fn fjall_key(out: &mut Vec<u8>, device: &str, ts_ms: i64) {
    out.clear();
    for part in [TENANT, device, METRIC] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
}

fn fjall_ts(key: &[u8]) -> anyhow::Result<i64> {
    let Some(tail) = key.len().checked_sub(8).and_then(|start| key.get(start..)) else {
        bail!("fjall key of {} bytes", key.len());
    };
    let mut bits = [0u8; 8];
    bits.copy_from_slice(tail);
    Ok((u64::from_be_bytes(bits) ^ (1 << 63)) as i64)
}

impl Engine for FjallEngine {
    const NAME: &'static str = "fjall";

    fn open(dir: &Path) -> anyhow::Result<Self> {
        let db = fjall::Database::builder(dir.join("fjall")).open()?;
        let points = db.keyspace("points_v1", KeyspaceCreateOptions::default)?;
        Ok(FjallEngine { db, points })
    }

    fn commit<'a>(&mut self, samples: impl Iterator<Item = &'a Sample>) -> anyhow::Result<()> {
        // The batch writes one journal entry, then fdatasyncs the journal before returning.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut key = Vec::with_capacity(48);
        for sample in samples {
            fjall_key(&mut key, &sample.device, sample.ts_ms);
            batch.insert(
                &self.points,
                key.as_slice(),
                encode_number(sample.value).as_slice(),
            );
        }
        batch.commit()?;
        Ok(())
    }

    fn read_range(&self, device: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<ReadOutcome> {
        let (mut from, mut to) = (Vec::new(), Vec::new());
        fjall_key(&mut from, device, from_ms);
        fjall_key(&mut to, device, to_ms);
        let mut outcome = ReadOutcome {
            points: 0,
            sum: 0.0,
        };
        let mut previous = i64::MIN;
        for guard in self.points.range(from.as_slice()..to.as_slice()) {
            let (key, value) = guard.into_inner()?;
            let ts_ms = fjall_ts(&key)?;
            if ts_ms <= previous {
                bail!("fjall returned ts {ts_ms} after {previous}");
            }
            previous = ts_ms;
            outcome.sum += decode_number(&value)?;
            outcome.points += 1;
        }
        Ok(outcome)
    }

    fn compact(&mut self) -> anyhow::Result<()> {
        // Move the memtable (still only in the journal) into a table, then merge every table
        // into the last level, where the default policy compresses with lz4.
        self.points.rotate_memtable_and_wait()?;
        self.points.major_compact()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

struct IngestReport {
    points_per_s: f64,
    commits_per_s: f64,
    points_per_commit: f64,
}

struct WriteRequest {
    samples: Vec<Sample>,
    reply: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct WriterStats {
    commits: usize,
    points: usize,
}

/// The store's group-commit loop: block for one request, drain what is already queued (never
/// wait for more), commit it all durably, answer every waiter. Stops when all senders are gone.
fn writer_loop<E: Engine>(
    mut engine: E,
    mut requests: mpsc::Receiver<WriteRequest>,
) -> (E, WriterStats) {
    let mut stats = WriterStats::default();
    while let Some(first) = requests.blocking_recv() {
        let mut queued = first.samples.len();
        let mut batch = vec![first];
        while queued < MAX_BATCH_POINTS {
            match requests.try_recv() {
                Ok(request) => {
                    queued += request.samples.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let result = engine
            .commit(batch.iter().flat_map(|request| &request.samples))
            .map_err(|error| format!("{error:#}"));
        stats.commits += 1;
        stats.points += queued;
        for request in batch {
            let _ = request.reply.send(result.clone());
        }
    }
    (engine, stats)
}

fn ingest<E: Engine>(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
) -> anyhow::Result<IngestReport> {
    let dir = tempfile::Builder::new()
        .prefix("starling-engines-")
        .tempdir()?;
    let engine = E::open(dir.path())?;
    let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
    let writer = std::thread::Builder::new()
        .name(format!("{}-writer", E::NAME))
        .spawn(move || writer_loop(engine, receiver))?;

    let started = Instant::now();
    let (writers, writes, batch) = (config.writers, config.writes, config.batch);
    let outcome = runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..writers {
            let sender = sender.clone();
            tasks.spawn(async move {
                let device: Arc<str> = Arc::from(format!("dev-{i}"));
                for w in 0..writes {
                    let samples = (0..batch)
                        .map(|j| {
                            let n = (w * batch + j) as i64;
                            Sample {
                                device: Arc::clone(&device),
                                ts_ms: T0_MS + n * STEP_MS,
                                value: 20.0 + (n % 100) as f64 / 10.0,
                            }
                        })
                        .collect();
                    let (reply, answer) = oneshot::channel();
                    sender
                        .send(WriteRequest { samples, reply })
                        .await
                        .map_err(|_| "writer thread gone".to_owned())?;
                    answer
                        .await
                        .map_err(|_| "writer thread gone".to_owned())??;
                }
                Ok::<(), String>(())
            });
        }
        drop(sender);
        tokio::time::timeout(INGEST_TIMEOUT, async {
            while let Some(joined) = tasks.join_next().await {
                joined.map_err(|error| error.to_string())??;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|_| format!("ingest did not finish within {INGEST_TIMEOUT:?}"))?
    });
    let elapsed = started.elapsed().as_secs_f64();
    outcome.map_err(|error| anyhow::anyhow!("{} ingest: {error}", E::NAME))?;
    let (engine, stats) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("{} writer thread panicked", E::NAME))?;
    drop(engine);
    let expected = config.writers * config.writes * config.batch;
    if stats.points != expected {
        bail!(
            "{}: committed {} of {expected} points",
            E::NAME,
            stats.points
        );
    }
    let report = IngestReport {
        points_per_s: stats.points as f64 / elapsed,
        commits_per_s: stats.commits as f64 / elapsed,
        points_per_commit: stats.points as f64 / stats.commits as f64,
    };
    println!(
        "{}: ingest {} points in {elapsed:.2} s, {} commits",
        E::NAME,
        stats.points,
        stats.commits
    );
    Ok(report)
}

#[derive(Clone, Copy)]
struct DirSize {
    /// Sum of file lengths.
    len: u64,
    /// Sum of allocated blocks (what `du` reports).
    allocated: u64,
    /// Allocated bytes of write-ahead journal files (fjall's `*.jnl`; redb has none). fjall
    /// preallocates each journal at 64 MiB and keeps up to 512 MiB of them by default: a
    /// bounded cost per store, not per point.
    journal: u64,
    files: usize,
}

/// Sizes every file under `dir` (recursively; the engines nest at most a few levels).
fn dir_size(dir: &Path) -> anyhow::Result<DirSize> {
    let mut size = DirSize {
        len: 0,
        allocated: 0,
        journal: 0,
        files: 0,
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| next.display().to_string())? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                size.len += meta.len();
                size.allocated += meta.blocks() * 512;
                if entry.path().extension().is_some_and(|ext| ext == "jnl") {
                    size.journal += meta.blocks() * 512;
                }
                size.files += 1;
            }
        }
    }
    Ok(size)
}

/// Prints every file under `dir` with its length and allocated bytes (`BENCH_LIST=1`).
fn list_files(dir: &Path) -> anyhow::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                let path = entry.path();
                let name = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                println!(
                    "  {name}: {} bytes, {} allocated",
                    meta.len(),
                    meta.blocks() * 512
                );
            }
        }
    }
    Ok(())
}

struct StorageReport {
    load_points_per_s: f64,
    loaded: DirSize,
    compacted: DirSize,
    compact_secs: f64,
    read_loaded: f64,
    read_compacted: f64,
}

fn storage<E: Engine>(config: &Config) -> anyhow::Result<StorageReport> {
    let dir = tempfile::Builder::new()
        .prefix("starling-engines-")
        .tempdir()?;
    let mut engine = E::open(dir.path())?;
    let devices: Vec<Arc<str>> = (0..LOAD_DEVICES)
        .map(|d| Arc::from(format!("dev-{d}")))
        .collect();

    // Time order, as devices report: every device at t, then every device at t + 1 s.
    let started = Instant::now();
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    for i in 0..config.points {
        let n = (i / LOAD_DEVICES) as i64;
        batch.push(Sample {
            device: Arc::clone(&devices[i % LOAD_DEVICES]),
            ts_ms: T0_MS + n * STEP_MS,
            value: 20.0 + (n % 100) as f64 / 10.0,
        });
        if batch.len() == LOAD_BATCH || i + 1 == config.points {
            engine.commit(batch.iter())?;
            batch.clear();
        }
    }
    let load_points_per_s = config.points as f64 / started.elapsed().as_secs_f64();
    let loaded = dir_size(dir.path())?;

    let read_loaded = best_read(&engine, config)?;
    let started = Instant::now();
    engine.compact()?;
    let compact_secs = started.elapsed().as_secs_f64();
    let compacted = dir_size(dir.path())?;
    if std::env::var_os("BENCH_LIST").is_some() {
        list_files(dir.path())?;
    }
    let read_compacted = best_read(&engine, config)?;
    drop(engine);
    println!(
        "{}: loaded {} points; {} -> {} bytes allocated; compaction {compact_secs:.2} s",
        E::NAME,
        config.points,
        loaded.allocated,
        compacted.allocated
    );
    Ok(StorageReport {
        load_points_per_s,
        loaded,
        compacted,
        compact_secs,
        read_loaded,
        read_compacted,
    })
}

/// Reads the day of the read device `READ_REPEATS` times; the best rate in points/s.
fn best_read<E: Engine>(engine: &E, config: &Config) -> anyhow::Result<f64> {
    let expected = config.read_points();
    let device = format!("dev-{}", READ_DEVICE % LOAD_DEVICES);
    let to_ms = T0_MS + DAY_POINTS as i64 * STEP_MS;
    let mut best = f64::INFINITY;
    for _ in 0..READ_REPEATS {
        let started = Instant::now();
        let outcome = engine.read_range(&device, T0_MS, to_ms)?;
        let secs = started.elapsed().as_secs_f64();
        if outcome.points != expected || !outcome.sum.is_finite() {
            bail!(
                "{}: read {} points, expected {expected}",
                E::NAME,
                outcome.points
            );
        }
        best = best.min(secs);
    }
    Ok(expected as f64 / best)
}
