//! `starling-chaos`: run chaos scenarios against real `starling serve` nodes in network
//! namespaces, or the deterministic control-plane simulation.
//!
//! ```text
//! cargo run -p chaos-tests --release -- list
//! cargo run -p chaos-tests --release -- run --scenario kill --seed 7
//! cargo run -p chaos-tests --release -- smoke
//! cargo run -p chaos-tests --release -- sim --seeds 200
//! cargo run -p chaos-tests --release -- sim-raft --seeds 200
//! ```
//! Exit codes: 0 all invariants held, 1 a violation or a failed run, 2 not root.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling_chaos::scenario::{self, report};
use starling_chaos::{lab, sim};

#[derive(Parser)]
#[command(about = "Break a real Starling cluster on purpose and check its promises")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the scenario catalogue.
    List,
    /// Run one scenario with one seed.
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the smoke subset (CI): a few scenarios, seed 1.
    Smoke,
    /// The deterministic simulation of leases and placement (turmoil), over many seeds.
    Sim {
        /// Number of seeds, starting at --first.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
    /// The deterministic simulation of the real openraft control plane (turmoil), over many
    /// seeds.
    SimRaft {
        /// Number of seeds, starting at --first.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Print every seed's report (trace hash, acknowledged writes, terms).
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in scenario::CATALOGUE {
                println!("{:<12} {} nodes  {}", s.name, s.nodes, s.about);
            }
            for (name, why) in scenario::UNSUPPORTED {
                println!("{name:<12} not supported: {why}");
            }
            ExitCode::SUCCESS
        }
        Command::Sim { seeds, first } => sim::run_seeds(first, seeds),
        Command::SimRaft {
            seeds,
            first,
            verbose,
        } => sim::raft::run_seeds(first, seeds, verbose),
        Command::Run { scenario, seed } => run_all(&[(scenario, seed)]),
        Command::Smoke => run_all(
            &scenario::SMOKE
                .iter()
                .map(|s| ((*s).to_owned(), 1))
                .collect::<Vec<_>>(),
        ),
    }
}

fn run_all(runs: &[(String, u64)]) -> ExitCode {
    if !lab::is_root() {
        eprintln!(
            "starling-chaos needs root: it creates network namespaces, nftables rules and tmpfs \
             mounts. Run it as root (CI does), e.g. `sudo -E cargo run -p chaos-tests --release -- …`."
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for (name, seed) in runs {
        let result = runtime.block_on(async {
            tokio::select! {
                // The run; its guards tear everything down when it returns or is dropped.
                r = run_one(name, *seed) => r,
                // Ctrl-C: dropping the run future runs every Drop guard.
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C); lab torn down")),
            }
        });
        match result {
            Ok(o) => {
                if !o.violations.is_empty() {
                    failed.push((name.clone(), *seed));
                    for v in &o.violations {
                        println!("  VIOLATION {v}");
                    }
                }
                outcomes.push(o);
            }
            Err(e) => {
                println!("  run {name} seed {seed} failed: {e:#}");
                failed.push((name.clone(), *seed));
            }
        }
    }
    println!("\n{}", report::table(&outcomes));
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, seed) in failed {
        println!("replay: {}", report::replay_command(&name, seed));
    }
    ExitCode::FAILURE
}

async fn run_one(name: &str, seed: u64) -> anyhow::Result<report::Outcome> {
    let scenario = scenario::find(name)?;
    let bin = starling_bin()?;
    let mut dir = tempfile::Builder::new()
        .prefix("starling-chaos-")
        .tempdir()?;
    let outcome = scenario::run::run(scenario, seed, &bin, dir.path()).await;
    let keep = std::env::var_os("STARLING_KEEP_TEST_DIRS").is_some();
    if keep || !matches!(&outcome, Ok(o) if o.violations.is_empty()) {
        dir.disable_cleanup(true);
        println!("  logs and data kept in {}", dir.path().display());
    }
    outcome
}

/// `$STARLING_BIN`, else `release/starling` under `$CARGO_TARGET_DIR` or the workspace target.
fn starling_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("STARLING_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release").join("starling");
    let bin = std::path::absolute(&bin).context("resolving the binary path")?;
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p starling-node` or set STARLING_BIN",
        bin.display()
    );
    Ok(bin)
}
