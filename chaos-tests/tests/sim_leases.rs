//! The deterministic lease/placement simulation (turmoil) over many seeds, and proof that it
//! catches a broken protocol. No root, no processes: part of the default `cargo test`.
//! `STARLING_SIM_SEEDS` sets the seed count (default 24, to keep `cargo test` fast in debug
//! builds); CI runs 200 seeds in release through `scripts/chaos-smoke` (`starling-chaos sim`).

use starling_chaos::sim::{self, model::Config};

#[test]
fn leases_never_overlap_and_placement_heals_for_every_seed() {
    let seeds = starling_chaos::env_count("STARLING_SIM_SEEDS", 24).expect("seed count") as u64;
    let cfg = Config::starling_defaults();
    let failed: Vec<String> = (0..seeds)
        .filter_map(|seed| {
            sim::run_one(seed, cfg)
                .err()
                .map(|e| format!("seed {seed}: {e}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {seeds} seeds failed; replay one with `cargo run -p chaos-tests --release -- sim --first SEED --seeds 1`:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn a_lease_longer_than_the_failure_timeout_is_caught() {
    // The invariant `lease + drift < failure_timeout` broken on purpose: a silent node keeps
    // serving after its shards were given away. Some seed among the first 40 must show it.
    let cfg = Config {
        lease_ms: 4000,
        ..Config::starling_defaults()
    };
    let caught = (0..40).find_map(|seed| sim::run_one(seed, cfg).err());
    let caught = caught.expect("no seed caught an overlapping lease");
    assert!(caught.contains("served by node"), "{caught}");
}

#[test]
fn moving_a_live_nodes_shard_without_delay_is_caught() {
    // Rebalancing onto a returning node without waiting out the old owner's lease.
    let cfg = Config {
        move_delay_ms: 0,
        ..Config::starling_defaults()
    };
    let caught = (0..40).find_map(|seed| sim::run_one(seed, cfg).err());
    let caught = caught.expect("no seed caught an early activation");
    assert!(caught.contains("served by node"), "{caught}");
}
