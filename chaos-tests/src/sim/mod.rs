//! Deterministic simulation of Starling's lease and placement protocol with turmoil.
//!
//! What is simulated: a leader granting shard leases over a lossy, delayed, partitionable
//! network (turmoil UDP) to 3 nodes whose clocks drift; heartbeats, grants arriving late and
//! out of order, failure detection, reassignment of a dead node's shards, rebalancing onto a
//! returning node with the activation delay, node crashes and restarts, leader crashes and
//! restarts, partitions (both ways and one-way) and held messages — all drawn from the seed.
//!
//! What is NOT simulated: openraft itself (leader election, log replication, snapshots) and
//! the node binary's code. The leader's map stands for the committed Raft state (it survives
//! a leader crash, and a write commits at once). The model is the protocol as DESIGN.md §3
//! states it, written again here; the real code is exercised by the namespace scenarios.
//!
//! Checked per seed: no shard served by two nodes at overlapping true times
//! ([`crate::checkers::lease_overlap`]), and after the faults end and the cluster settles,
//! every shard is on a live node, shares are balanced, and every shard is being served.

pub mod model;
pub mod placement;
pub mod raft;

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use crate::checkers::lease_overlap::first_overlap;
use crate::schedule::SplitMix64;
use model::{Config, Owner, Shared};

/// Nodes of every simulation.
pub const NODES: u64 = 3;
/// Virtual time with faults, then calm until the end.
const FAULTY_MS: u64 = 20_000;
/// Long enough for the last fault (≤ 5 s) to heal, detection, and the rebalancing delay.
const CALM_MS: u64 = 10_000;

/// A scheduled network or process fault (true ms).
#[derive(Debug, Clone)]
enum SimFault {
    Partition(String, String, u64),
    OneWay(String, String, u64),
    Hold(String, String, u64),
    Crash(String, u64),
}

fn host(i: u64) -> String {
    if i == 0 {
        "leader".into()
    } else {
        format!("n{i}")
    }
}

fn faults(seed: u64) -> Vec<(u64, SimFault)> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_CAFE);
    let mut t = 2_000;
    let mut out = Vec::new();
    while t < FAULTY_MS {
        let a = rng.below(NODES + 1);
        let b = (a + 1 + rng.below(NODES)) % (NODES + 1);
        let len = rng.between(500, 5_000);
        let f = match rng.below(4) {
            0 => SimFault::Partition(host(a), host(b), len),
            1 => SimFault::OneWay(host(a), host(b), len),
            2 => SimFault::Hold(host(a), host(b), rng.between(100, 2_000)),
            _ => SimFault::Crash(host(a), len),
        };
        out.push((t, f));
        t += rng.between(1_000, 4_000);
    }
    out
}

/// Runs one seed; `Err` describes the first violated property.
pub fn run_one(seed: u64, cfg: Config) -> Result<(), String> {
    let shared = Rc::new(RefCell::new(Shared {
        map: (0..cfg.shards)
            .map(|s| Owner {
                node: s as u64 % NODES + 1,
                active_from: 0,
            })
            .collect(),
        ..Shared::default()
    }));
    let mut rng = SplitMix64::new(seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(FAULTY_MS + CALM_MS + 5_000))
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(60))
        .rng_seed(seed)
        .build();
    let nodes: Vec<u64> = (1..=NODES).collect();
    let s = shared.clone();
    let ids = nodes.clone();
    sim.host("leader", move || model::leader(cfg, ids.clone(), s.clone()));
    for id in nodes {
        let drift = (rng.below(2001) as f64 / 1000.0 - 1.0) * cfg.max_drift;
        let s = shared.clone();
        sim.host(host(id), move || model::node(cfg, id, drift, s.clone()));
    }
    sim.client("clock", async {
        tokio::time::sleep(Duration::from_millis(FAULTY_MS + CALM_MS)).await;
        Ok(())
    });
    let mut pending = faults(seed);
    pending.reverse();
    let mut heals: Vec<(u64, SimFault)> = Vec::new();
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while pending.last().is_some_and(|(t, _)| *t <= now) {
            let (_, f) = pending.pop().expect("checked");
            let end = match &f {
                SimFault::Partition(a, b, len) => {
                    sim.partition(a.as_str(), b.as_str());
                    now + len
                }
                SimFault::OneWay(a, b, len) => {
                    sim.partition_oneway(a.as_str(), b.as_str());
                    now + len
                }
                SimFault::Hold(a, b, len) => {
                    sim.hold(a.as_str(), b.as_str());
                    now + len
                }
                SimFault::Crash(a, len) => {
                    sim.crash(a.as_str());
                    now + len
                }
            };
            heals.push((end, f));
        }
        heals.retain(|(end, f)| {
            if *end > now {
                return true;
            }
            match f {
                SimFault::Partition(a, b, _) => sim.repair(a.as_str(), b.as_str()),
                SimFault::OneWay(a, b, _) => sim.repair_oneway(a.as_str(), b.as_str()),
                SimFault::Hold(a, b, _) => sim.release(a.as_str(), b.as_str()),
                SimFault::Crash(a, _) => sim.bounce(a.as_str()),
            }
            false
        });
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("simulation error: {e}")),
        }
    }
    let end = sim.elapsed().as_millis() as i64;
    let s = shared.borrow();
    if let Some((shard, a, b)) = first_overlap(&s.served) {
        return Err(format!(
            "shard {shard} served by node {} [{}, {}) and node {} [{}, {})",
            a.node, a.from, a.to, b.node, b.from, b.to
        ));
    }
    let live: Vec<u64> = s.up.iter().copied().collect();
    if live.len() != NODES as usize {
        return Err(format!("after calm, the leader sees only {live:?} up"));
    }
    let map: placement::Map = s.map.iter().map(|o| o.node).collect();
    if !placement::balanced(&map, &live) {
        return Err(format!("after calm, placement is unbalanced: {map:?}"));
    }
    for shard in 0..cfg.shards as u32 {
        let served_now = s.served.get(&shard).is_some_and(|l| {
            l.iter()
                .any(|iv| iv.from <= end - 1_000 && iv.to >= end - 1_000)
        });
        if !served_now {
            return Err(format!("after calm, shard {shard} is served by nobody"));
        }
    }
    Ok(())
}

/// Runs seeds `first..first + n` with the default timings; prints a summary and every failing
/// seed with its replay command.
pub fn run_seeds(first: u64, n: u64) -> ExitCode {
    let cfg = Config::starling_defaults();
    let mut failed = 0;
    for seed in first..first + n {
        if let Err(e) = run_one(seed, cfg) {
            failed += 1;
            println!("seed {seed}: {e}");
            println!("replay: cargo run -p chaos-tests --release -- sim --first {seed} --seeds 1");
        }
    }
    println!("sim: {} seeds, {} passed, {failed} failed", n, n - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_schedule_is_deterministic() {
        assert_eq!(format!("{:?}", faults(3)), format!("{:?}", faults(3)));
        assert_ne!(format!("{:?}", faults(3)), format!("{:?}", faults(4)));
    }
}
