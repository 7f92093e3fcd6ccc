//! Runs one scenario end to end: lab → broker → cluster → workloads → seeded faults (each
//! healed, then probed for recovery) → stop → observe → checkers → [`Outcome`].
//!
//! Drop order tears down on any exit, panic included: the cluster (SIGKILL to every node)
//! before the broker before the lab (nft tables, namespaces, bridge, tmpfs mounts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use starling_sdk::{Client, ClientBuilder, Profile};
use tokio::sync::watch;

use super::Scenario;
use super::report::Outcome;
use crate::checkers::{self, Violation};
use crate::cluster::{Placement, ServeCluster};
use crate::history::{FaultWindow, History, Recovery};
use crate::lab::{self, BRIDGE_ADDR, Lab};
use crate::schedule::{self, Fault, Membership, Step};
use crate::workload::{mqtt, now_ms, observe, probe, rules};
use crate::{Mosquitto, MosquittoOptions, free_port};

/// Devices publishing in every run.
pub const DEVICES: usize = 6;
/// Shards of the cluster (the default map).
const SHARDS: usize = 4096;
/// Size of each node's data tmpfs in scenarios with the disk-full fault.
const TMPFS_MIB: u64 = 256;

/// The running pieces, in drop order.
struct Running {
    cluster: ServeCluster,
    broker: Option<Mosquitto>,
    broker_opts: MosquittoOptions,
    /// Nodes an operator removed: never restarted by the runner.
    removed: Vec<u64>,
    _lab: Lab,
}

/// Runs `scenario` with `seed` using the `starling` binary `bin`; work files go under `base`.
pub async fn run(
    scenario: &Scenario,
    seed: u64,
    bin: &Path,
    base: &Path,
) -> anyhow::Result<Outcome> {
    let nodes: Vec<u64> = (1..=scenario.nodes as u64).collect();
    let steps = schedule::generate(
        scenario.kinds,
        &nodes,
        seed,
        scenario.steps,
        scenario.membership,
    );
    println!("scenario {} seed {seed}: {}", scenario.name, scenario.about);
    for (i, step) in steps.iter().enumerate() {
        println!("  step {}: {step}", i + 1);
    }
    let mut lab_nodes = nodes.clone();
    lab_nodes.push(scenario.nodes as u64 + 1);
    let mut lab = Lab::setup(&lab_nodes)?;
    if scenario.tmpfs {
        for id in &lab_nodes {
            lab.mount_tmpfs(&base.join(format!("node{id}")).join("data"), TMPFS_MIB)?;
        }
    }
    let port = free_port();
    let broker_opts = MosquittoOptions {
        port,
        extra_config: vec![format!("listener {port} {BRIDGE_ADDR}")],
    };
    let broker = Mosquitto::start(broker_opts.clone()).await?;
    let placements: Vec<Placement> = nodes.iter().map(|id| placed(*id)).collect();
    // Five bootstrapped nodes are five voters (DESIGN.md §2: 3 or 5).
    // The workload's devices are not registered: they are provisioned on first telemetry.
    let extra = format!(
        "max_voters = {}\n\n[ingest]\nauto_provision = true",
        if scenario.nodes >= 5 { 5 } else { 3 }
    );
    let broker_addr = format!("{BRIDGE_ADDR}:{port}");
    let env = match scenario.power_loss {
        true => vec![("STARLING_FAULT_POWER_LOSS".to_owned(), "1".to_owned())],
        false => Vec::new(),
    };
    let cluster =
        ServeCluster::start_placed(bin, base, &placements, &broker_addr, &extra, &env).await?;
    let mut running = Running {
        cluster,
        broker: Some(broker),
        broker_opts,
        removed: Vec::new(),
        _lab: lab,
    };
    let client = client_for(&running.cluster.profile())?;
    wait_placed(&client).await?;
    apply_with_retry(&client, rules::ALARM_RULE).await?;

    let mut history = History::default();
    let base_ts = now_ms() - 3_600_000;
    let (stop_tx, stop_rx) = watch::channel(false);
    let devices: Vec<mqtt::Device> = (0..DEVICES)
        .map(|d| {
            mqtt::Device::start(
                format!("chaos-d{d}"),
                "127.0.0.1".into(),
                port,
                base_ts,
                stop_rx.clone(),
            )
        })
        .collect();
    let writer = rules::RuleWriter::start(client_for(&running.cluster.profile())?, stop_rx.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    for step in &steps {
        let window = apply_step(&mut running, step, bin).await?;
        println!(
            "  healed: {} ({} ms)",
            window.description,
            window.healed_ms - window.started_ms
        );
        let after = probe::recovery_after(&client, window.healed_ms).await;
        history.recoveries.push(Recovery {
            fault: window.description.clone(),
            after_heal_ms: after,
        });
        history.faults.push(window);
        tokio::time::sleep(Duration::from_millis(step.gap_ms)).await;
    }

    stop_tx.send(true).ok();
    for device in devices {
        let id = device.id.clone();
        history.publishes.insert(id, device.finish().await);
    }
    history.rule_writes = writer.finish().await;
    observe_healed(&running, &client, base_ts, &mut history).await?;
    let outcome = judge(scenario.name, seed, &steps, &history, &running);
    drop(running);
    Ok(outcome)
}

fn placed(id: u64) -> Placement {
    Placement {
        host: lab::node_addr(id),
        netns: Some(lab::netns_name(id)),
    }
}

fn client_for(profile: &Path) -> anyhow::Result<Client> {
    let profile = Profile::load(profile)?;
    Ok(ClientBuilder::from_profile(&profile)?
        .request_timeout(Duration::from_secs(5))
        .build()?)
}

async fn wait_placed(client: &Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.cluster_shards().await {
            let n: usize = r
                .ranges
                .iter()
                .map(|r| (r.last - r.first + 1) as usize)
                .sum();
            if n == SHARDS {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("shards were not placed within 60 s of start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply_with_retry(client: &Client, doc: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..50 {
        match client.apply_rule(doc, "json").await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("applying the alarm rule failed: {last:?}")
}

/// Applies one step's fault (and membership change), holds it, heals it.
async fn apply_step(r: &mut Running, step: &Step, bin: &Path) -> anyhow::Result<FaultWindow> {
    let started_ms = now_ms();
    let half = Duration::from_millis(step.hold_ms / 2);
    let mut filler: Option<PathBuf> = None;
    match &step.fault {
        Fault::Kill { node } => r.cluster.node_mut(*node)?.kill9().await?,
        Fault::Pause { node } => r.cluster.node(*node)?.pause()?,
        Fault::BrokerRestart => drop(r.broker.take()),
        Fault::DiskFull { node } => {
            filler = Some(lab::fill_disk(&r.cluster.node(*node)?.dir.join("data"))?)
        }
        network => r._lab.apply_network_fault(network)?,
    }
    tokio::time::sleep(half).await;
    if let Some(change) = step.membership {
        membership(r, change, bin).await?;
    }
    tokio::time::sleep(half).await;
    // Recovery is timed from the start of the heal, so a restart's start-up counts.
    let healed_ms = now_ms();
    match &step.fault {
        Fault::Kill { node } => r.cluster.node_mut(*node)?.restart().await?,
        Fault::Pause { node } => r.cluster.node(*node)?.resume()?,
        Fault::BrokerRestart => {
            r.broker = Some(restart_broker(&r.broker_opts).await?);
            // The broker's window lasts until every node has subscribed again: what it
            // acknowledges before that has no subscriber and is dropped (its promise).
            wait_all_ready(&mut r.cluster).await?;
        }
        Fault::DiskFull { .. } => {
            if let Some(path) = filler {
                std::fs::remove_file(path)?;
            }
        }
        _ => r._lab.heal_network(),
    }
    // A node that stopped on its own during the fault (a full disk stops the control plane,
    // and the node exits) is started again, as its supervisor would: the points it stored
    // are only readable while it runs (embedded store, DESIGN.md §6).
    for node in &mut r.cluster.nodes {
        if r.removed.contains(&node.id) {
            continue;
        }
        if let Some(status) = node.restart_if_exited().await? {
            println!("  node {} had exited ({status}): restarted", node.id);
        }
    }
    Ok(FaultWindow {
        description: step.fault.to_string(),
        started_ms,
        healed_ms: if step.fault == Fault::BrokerRestart {
            now_ms()
        } else {
            healed_ms
        },
        broker_crash: step.fault == Fault::BrokerRestart,
    })
}

/// Waits until every running node answers `/readyz` (leader known, MQTT subscription granted).
async fn wait_all_ready(cluster: &mut ServeCluster) -> anyhow::Result<()> {
    for node in &mut cluster.nodes {
        if node.is_running() {
            node.wait_ready().await?;
        }
    }
    Ok(())
}

async fn restart_broker(opts: &MosquittoOptions) -> anyhow::Result<Mosquitto> {
    // The killed broker may hold its port for a moment while it is reaped.
    let mut last = None;
    for _ in 0..20 {
        match Mosquitto::start(opts.clone()).await {
            Ok(b) => return Ok(b),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.context("no attempt")?.context("restarting the broker"))
}

async fn membership(r: &mut Running, change: Membership, bin: &Path) -> anyhow::Result<()> {
    match change {
        Membership::Join(id) => {
            println!("  node {id} joins");
            r.cluster
                .add_node_placed(id, &placed(id))
                .await
                .context("joining during a fault")
        }
        Membership::Remove(id) => {
            println!("  node {id} removed (starling cluster remove)");
            r.removed.push(id);
            let profile = r.cluster.profile();
            let out = tokio::process::Command::new(bin)
                .args(["cluster", "remove", &id.to_string(), "--profile"])
                .arg(&profile)
                .output()
                .await?;
            if !out.status.success() {
                bail!(
                    "starling cluster remove {id} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        }
    }
}

/// Reads stored points (until every acked one is there or 60 s pass), rules per node (until
/// they agree or 30 s pass) and alarms.
async fn observe_healed(
    r: &Running,
    client: &Client,
    base_ts: i64,
    h: &mut History,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for device in h.publishes.keys() {
            if let Ok((seqs, partial)) = observe::stored_seqs(client, device, base_ts).await {
                h.stored.insert(device.clone(), seqs);
                if partial {
                    h.partial_reads.insert(device.clone());
                } else {
                    h.partial_reads.remove(device);
                }
            }
        }
        let missing = checkers::acked_stored::losses(&h.publishes, &h.stored, &[])
            .starling
            .len();
        if missing == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        h.rules_by_node.clear();
        // A removed node left the Raft group and stops applying: only members must agree.
        let members = r
            .cluster
            .nodes
            .iter()
            .filter(|n| !r.removed.contains(&n.id));
        for node in members.clone() {
            let profile = r.cluster.profile_for(node.id)?;
            if let Ok(rules) = observe::rules_of(&client_for(&profile)?).await {
                h.rules_by_node.insert(node.id, rules);
            }
        }
        let versions: Vec<BTreeMap<&String, u64>> = h
            .rules_by_node
            .values()
            .map(|m| m.iter().map(|(k, v)| (k, v.version)).collect())
            .collect();
        let agree = versions.windows(2).all(|w| w[0] == w[1]);
        if (agree && h.rules_by_node.len() == members.count())
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.alarms = observe::alarms(client).await?;
    Ok(())
}

fn judge(name: &str, seed: u64, steps: &[Step], h: &History, r: &Running) -> Outcome {
    let losses = checkers::acked_stored::losses(&h.publishes, &h.stored, &h.faults);
    let logs: Vec<String> = r
        .cluster
        .nodes
        .iter()
        .map(|n| observe::lease_log(&n.dir.join("data")))
        .collect();
    let mut violations: Vec<Violation> = checkers::acked_stored::check(&losses);
    violations.extend(checkers::lease_overlap::check(&logs));
    violations.extend(checkers::rules_converge::check(
        &h.rule_writes,
        &h.rules_by_node,
    ));
    violations.extend(checkers::single_active_alarm::check(&h.alarms));
    violations.extend(checkers::recovery::check(
        &h.recoveries,
        checkers::recovery::RECOVERY_BOUND_MS,
    ));
    if !h.partial_reads.is_empty() {
        println!(
            "  note: reads still partial after healing for {:?}",
            h.partial_reads
        );
    }
    let rules_acked = h
        .rule_writes
        .iter()
        .filter(|w| w.acked_version.is_some())
        .count();
    println!(
        "  history: {} publishes, {} PUBACKed; {} rule writes, {rules_acked} acknowledged; {} alarms",
        h.publishes.values().map(Vec::len).sum::<usize>(),
        h.acked(),
        h.rule_writes.len(),
        h.alarms.len()
    );
    Outcome {
        scenario: name.to_owned(),
        seed,
        faults: steps.len(),
        acked: h.acked(),
        lost: losses.starling.len(),
        broker_lost: losses.broker.len(),
        violations,
        recovery_ms: h.recoveries.iter().filter_map(|r| r.after_heal_ms).max(),
    }
}
