//! Raft-replicated writes/s: Starling rule writes on 3 nodes next to etcd 3.4 puts on 3
//! members, with the same number of concurrent clients, in the same run.
//!
//! 1. **Starling.** A fresh 3-node `starling serve` cluster (`ServeCluster`, release binary,
//!    default settings; a Mosquitto too, since a node is ready only once subscribed).
//!    `BENCH_CLIENTS` tasks (default 64) each apply a small valid JSON threshold rule through
//!    the SDK, over and over (its own rule id, a new threshold each time), for
//!    `BENCH_SECONDS` (default 10) after a 1 s warm-up. Each apply is one `PutRule` command;
//!    concurrent commands share Raft entries (group commit, `raft/proposer.rs`), a follower
//!    forwards its batch to the leader in one call, and each is answered once its entry is
//!    committed and applied. The Raft log is a group-committed journal (fdatasync).
//! 2. **etcd.** Three members of Debian's `etcd-server` (3.4) on loopback, data in a temp
//!    dir, default settings (fsync on), mTLS on client and peer ports with the same
//!    certificates Starling used. The same number of tasks each put the same document bytes
//!    under its own key, through gRPC `etcdserverpb.KV/Put` with tonic — the same HTTP/2 and
//!    TLS stack the SDK uses (messages declared here with prost, no etcd client crate).
//!
//! Both sides: client `i` talks to node `i % 3` over one HTTP/2 connection per node, so
//! writes arriving at followers are forwarded to the leader on both. Rate = writes answered
//! OK inside the window / window; p50/p99 are the latencies of those writes. A check compares
//! the writes answered with the growth of Starling's commit index and etcd's revision.
//!
//! Not measured: reads, writes that grow the state (same ids are overwritten), larger values,
//! single-client latency, leader failure during writes, and etcd's own `benchmark` tool (a
//! different driver); Starling also validates each rule document, which etcd does not.
//!
//! `cargo bench --workspace --bench raft_writes`; without `--bench` (cargo test) a 1 s smoke
//! run with 8 clients. `STARLING_BIN` and `ETCD_BIN` (default `/usr/bin/etcd`) override the
//! binaries; without etcd its half is skipped with a message. Needs Mosquitto.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use starling_chaos::cluster::ServeCluster;
use starling_chaos::{Mosquitto, MosquittoOptions, env_count, free_port};
use starling_sdk::{Client, Profile};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Writes before the window are not counted (connections, leader caches).
const WARM_UP: Duration = Duration::from_secs(1);
/// Bound on the first write succeeding (a leader elected, nodes registered).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `etcdserverpb.PutRequest` (fields used here only).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.PutResponse` (the header only).
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let clients = env_count("BENCH_CLIENTS", if full { 64 } else { 8 })?;
    let window = Duration::from_secs(env_count("BENCH_SECONDS", if full { 10 } else { 1 })? as u64);
    let bin = std::env::var_os("STARLING_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_starling")));
    let etcd = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if !Mosquitto::available() {
        bail!("the raft writes benchmark needs Mosquitto: apt-get install mosquitto");
    }
    starling_sdk::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&bin, &etcd, clients, window))
}

async fn run(bin: &Path, etcd: &Path, clients: usize, window: Duration) -> anyhow::Result<()> {
    eprintln!(
        "raft writes: {clients} clients, {window:?} window, starling = {}",
        bin.display()
    );
    let base = tempfile::Builder::new()
        .prefix("starling-raft-writes-")
        .tempdir()?;
    let starling = starling_side(bin, base.path(), clients, window).await?;
    let certs = base.path().join("certs");
    let etcd_outcome = if etcd.is_file() {
        Some(etcd_side(etcd, &certs, clients, window).await?)
    } else {
        eprintln!(
            "etcd: SKIPPED, {} not found (apt-get install etcd-server, or set ETCD_BIN)",
            etcd.display()
        );
        None
    };
    println!();
    println!(
        "| system (3 nodes, {clients} clients, {window:?}) | writes/s | p50 ms | p99 ms | errors | check |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    starling.row("Starling rule writes");
    if let Some(e) = &etcd_outcome {
        e.row("etcd 3.4 puts");
        println!("\nratio Starling / etcd: {:.2}", starling.rate() / e.rate());
    }
    Ok(())
}

/// Writes answered OK inside the window, their latencies and what went wrong.
#[derive(Debug, Default)]
struct Outcome {
    window: Duration,
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    /// Writes answered OK in total (warm-up included) and what the system counted.
    check: String,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    fn row(&self, name: &str) {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {} | {} |",
            self.rate(),
            pct(0.50),
            pct(0.99),
            self.errors,
            self.check
        );
        if let Some(e) = &self.first_error {
            eprintln!("{name}: first error: {e}");
        }
    }
}

/// Runs `op(client, n)` in `clients` tasks until the window ends; `n` counts each task's
/// writes. Returns the outcome and the number of writes answered OK in total.
async fn drive<F, Fut>(clients: usize, window: Duration, op: F) -> anyhow::Result<(Outcome, u64)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now() + WARM_UP;
    let end = start + window;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok_total, mut errors, mut first_error) = (0, 0, None);
            let mut latencies = Vec::new();
            for n in 0.. {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = op(c, n).await;
                let t1 = Instant::now();
                match result {
                    Ok(()) => {
                        ok_total += 1;
                        if t1 >= start && t1 < end {
                            latencies.push(t1 - t0);
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, ok_total, errors, first_error)
        }));
    }
    let mut outcome = Outcome {
        window,
        ..Outcome::default()
    };
    let mut total = 0;
    for t in tasks {
        let (latencies, ok_total, errors, first_error) = t.await?;
        outcome.latencies.extend(latencies);
        total += ok_total;
        outcome.errors += errors;
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    Ok((outcome, total))
}

/// A small valid rule: client `c`'s id, a threshold that changes with every write.
fn rule_document(c: usize, n: u64) -> String {
    format!(
        r#"{{"id":"bench-w{c}","condition":{{"threshold":{{"metric":"temp","op":">","value":{n}}}}},"severity":"minor"}}"#
    )
}

async fn starling_side(
    bin: &Path,
    base: &Path,
    clients: usize,
    window: Duration,
) -> anyhow::Result<Outcome> {
    let broker = Mosquitto::start(MosquittoOptions::default()).await?;
    let cluster = ServeCluster::start(
        bin,
        base,
        3,
        &broker.addr(),
        "\n[ingest]\nauto_provision = true",
    )
    .await?;
    let mut sdks = Vec::new();
    for node in &cluster.nodes {
        sdks.push(Client::connect(&Profile::load(
            &cluster.profile_for(node.id)?,
        )?)?);
    }
    // The first write waits for a leader and registration; it is not counted.
    let deadline = Instant::now() + START_TIMEOUT;
    while let Err(e) = sdks[0].apply_rule(&rule_document(0, 0), "json").await {
        if Instant::now() > deadline {
            bail!(
                "no rule write succeeded: {e}\n{}",
                cluster.nodes[0].log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = sdks[0].cluster_status().await?.commit_index;
    let sdks = Arc::new(sdks);
    let (mut outcome, total) = drive(clients, window, move |c, n| {
        let sdks = sdks.clone();
        async move {
            let doc = rule_document(c, n);
            let sdk = &sdks[c % sdks.len()];
            sdk.apply_rule(&doc, "json")
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    let admin = Client::connect(&Profile::load(&cluster.profile())?)?;
    let after = admin.cluster_status().await?.commit_index;
    outcome.check = format!(
        "{total} writes answered, commit index +{}",
        after.saturating_sub(before)
    );
    drop(cluster);
    Ok(outcome)
}

/// Three etcd members on loopback with the Starling cluster's certificates.
struct EtcdCluster {
    members: Vec<Child>,
    client_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    async fn start(bin: &Path, certs: &Path) -> anyhow::Result<EtcdCluster> {
        let dir = tempfile::Builder::new()
            .prefix("starling-etcd-")
            .tempdir()?;
        let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{}=https://127.0.0.1:{p}", i + 1))
            .collect();
        let ca = certs.join("ca.pem");
        let mut members = Vec::new();
        for i in 0..3 {
            let cert = certs.join(format!("node-{}.pem", i + 1));
            let key = certs.join(format!("node-{}.key", i + 1));
            let client_url = format!("https://127.0.0.1:{}", client_ports[i]);
            let peer_url = format!("https://127.0.0.1:{}", peer_ports[i]);
            let log = std::fs::File::create(dir.path().join(format!("m{}.log", i + 1)))?;
            let child = Command::new(bin)
                .arg(format!("--name=m{}", i + 1))
                .arg(format!(
                    "--data-dir={}",
                    dir.path().join(format!("m{}", i + 1)).display()
                ))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .args([
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=starling-bench",
                ])
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth")
                .arg(format!("--peer-cert-file={}", cert.display()))
                .arg(format!("--peer-key-file={}", key.display()))
                .arg(format!("--peer-trusted-ca-file={}", ca.display()))
                .arg("--peer-client-cert-auth")
                .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawning {}", bin.display()))?;
            members.push(child);
        }
        Ok(EtcdCluster {
            members,
            client_ports,
            dir,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("m1.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

async fn put(channel: Channel, key: Vec<u8>, value: Vec<u8>) -> Result<PutResponse, String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
    grpc.unary(tonic::Request::new(PutRequest { key, value }), path, codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn revision(r: &PutResponse) -> i64 {
    r.header.as_ref().map_or(0, |h| h.revision)
}

async fn etcd_side(
    bin: &Path,
    certs: &Path,
    clients: usize,
    window: Duration,
) -> anyhow::Result<Outcome> {
    let mut etcd = EtcdCluster::start(bin, certs).await?;
    let ca = std::fs::read(certs.join("ca.pem"))?;
    let cert = std::fs::read(certs.join("client-admin.pem"))?;
    let key = std::fs::read(certs.join("client-admin.key"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(&cert, &key));
    let channel = |port: u16| -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
            .tls_config(tls.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy())
    };
    let channels: Vec<Channel> = etcd
        .client_ports
        .iter()
        .map(|p| channel(*p))
        .collect::<anyhow::Result<_>>()?;
    // Every member answers a put before the window (the cluster has a leader).
    let deadline = Instant::now() + START_TIMEOUT;
    let mut first_revision = 0;
    for ch in &channels {
        loop {
            match put(ch.clone(), b"bench-ready".to_vec(), b"1".to_vec()).await {
                Ok(r) => {
                    first_revision = revision(&r);
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    bail!("etcd not writable: {e}\n{}", etcd.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let channels = Arc::new(channels);
    let (mut outcome, total) = drive(clients, window, move |c, n| {
        let channels = channels.clone();
        async move {
            let key = format!("/bench/w{c}").into_bytes();
            let value = rule_document(c, n).into_bytes();
            let ch = channels[c % channels.len()].clone();
            put(ch, key, value).await.map(drop)
        }
    })
    .await?;
    let last = put(
        channel(etcd.client_ports[0])?,
        b"bench-done".to_vec(),
        b"1".to_vec(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    outcome.check = format!(
        "{total} writes answered, revision +{}",
        revision(&last) - first_revision - 1
    );
    for m in &mut etcd.members {
        m.kill().await.ok();
    }
    Ok(outcome)
}
