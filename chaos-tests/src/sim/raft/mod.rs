//! Deterministic simulation of the real control plane: openraft 0.9 with Starling's command
//! types and pure `apply`, on three turmoil hosts, under faults drawn from a seed.
//!
//! ## What runs
//! - [`run`]: per node, `openraft::Raft` with Starling's `TypeConfig`, an in-memory log store
//!   whose [`store::Durable`] part survives host crashes (entries are acknowledged once
//!   flushed, 2–25 ms after being appended; a crash loses unflushed ones), and a state
//!   machine that calls `starling_node::raft::apply::apply` over the node crate's in-memory
//!   control state ([`starling_node::raft::mem_state::MemState`], shared with its table
//!   tests). Node 1 initializes the 3-voter group on its first boot; in odd seeds a 4th
//!   node is added by the client as a learner and then made a voter, during the faults.
//! - [`net`]: openraft's append-entries, vote and install-snapshot RPCs (and client writes)
//!   as serde_json over turmoil TCP, so partitions, holds, latency and crashes apply to them.
//! - [`client`]: a client host proposing `PutRule`, `AssignShards`, `RaiseAlarm` and
//!   `ClearAlarm` (some with stale epochs) to the node it believes leads.
//! - [`faults`]: isolating the leader or a node, splitting a minority from the majority,
//!   one-way cuts, held links, crashes and restarts of the leader or a node, message latency
//!   up to 2–100 ms — all from the seed — then a calm period and a final write every voter
//!   must apply. Overlapping faults on one link are healed by the first to end.
//! - [`check`]: election safety in openraft's form (below), state-machine safety (and
//!   identical re-application after a restart), every acknowledged write applied on every
//!   node, shard epochs never going back, alarm writes with a stale epoch refused and current
//!   ones accepted, at most one active alarm per (device, rule).
//!
//! ## Election safety is not "one leader per term" here
//! Starling builds openraft 0.9 without its `single-term-leader` feature, so a leader is
//! identified by (term, node id) and those ids are totally ordered: two candidates of the
//! same term can both win (a voter grants T18-N1, then the larger T18-N2), the smaller being
//! superseded. The simulation sees it (in a few terms over seeds 0..200). So the check is that every node's saved vote only grows (across restarts) and that
//! a node reported as leader holds a committed vote naming it; the safety that matters to
//! Starling — one entry per index, acknowledged writes never lost — is checked directly.
//!
//! ## What is deterministic, and what is not
//! Deterministic: the fault schedule and the client's commands (SplitMix64 of the seed),
//! turmoil's network (latency, ordering; its RNG is seeded with the seed), all timers (tokio
//! time is paused and advanced by turmoil), and openraft's election timeouts: openraft 0.9
//! draws them with `rand::thread_rng().gen_range(min..max)`, which cannot be seeded, so each
//! node gets a range of exactly one value (`min..min + 1`; the value depends on the node and
//! the seed). The test `a_seed_replays_identically` checks two runs of a seed produce the
//! same trace hash (every apply, metrics change, acknowledgement and fault, with its virtual
//! time).
//!
//! Not deterministic in principle: tokio picks a random branch in an unbiased `select!` when
//! several are ready at once (openraft's replication loop has one), and tokio's RNG can be
//! seeded only with `--cfg tokio_unstable` (then turmoil seeds it), which this build does not
//! use. Such ties need two events at the same virtual instant on one host. Observed: two
//! processes, and a debug and a release build, running seeds 0..200 (`sim-raft --verbose`)
//! printed identical trace hashes; a replay could still in principle differ.
//!
//! ## What is not simulated
//! Starling's redb state machine and journal log store (the stores here are in memory, with
//! the same durability contract), the gRPC/mTLS transport, forwarding of writes between
//! nodes, membership changes other than one join (no removals, no replacement), snapshots
//! (never triggered: the log is not purged), and everything above the control plane (placement decisions, leases).

pub mod check;
pub mod client;
pub mod faults;
pub mod net;
pub mod obs;
pub mod run;
pub mod store;

use std::process::ExitCode;

pub use run::{NODES, Options, Report, run_one};
pub use store::Bug;

/// Runs seeds `first..first + n`; prints every failing seed with its replay command, and a
/// summary; with `verbose`, also every passing seed's report (its trace hash shows whether
/// a replay is identical).
pub fn run_seeds(first: u64, n: u64, verbose: bool) -> ExitCode {
    let mut failed = 0;
    let (mut acked, mut shared, mut joined) = (0, 0, 0);
    for seed in first..first + n {
        match run_one(seed, Options::default()) {
            Ok(report) => {
                if verbose {
                    println!("seed {seed}: {report:?}");
                }
                acked += report.acked;
                shared += report.shared_terms;
                joined += usize::from(report.voters > NODES);
            }
            Err(e) => {
                failed += 1;
                println!("seed {seed}: {e}");
                println!(
                    "replay: cargo run -p chaos-tests --release -- sim-raft --first {seed} --seeds 1"
                );
            }
        }
    }
    println!(
        "sim-raft: {n} seeds, {} passed, {failed} failed ({acked} acknowledged writes checked; \
         {joined} seeds with a 4th voter; {shared} terms with two leader ids)",
        n - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
