//! One seeded run: three turmoil hosts running openraft (four in odd seeds, the fourth
//! joining as learner then voter), a client host, faults drawn from the seed, a calm period,
//! then the checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use starling_node::raft::types::{NodeId, Raft};

use super::client::Client;
use super::net::{self, host};
use super::obs::Shared;
use super::store::{self, Bug, Disk, LogStore, StateMachine};
use super::{check, faults};
use crate::schedule::SplitMix64;

/// Voters every run starts with.
pub const NODES: u64 = 3;
/// Slots of election timeouts: one per node that may run (the initial voters and a joiner).
const SLOTS: u64 = NODES + 1;

/// What a run is configured with besides its seed.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A deliberate storage bug (tests of the checkers only).
    pub bug: Bug,
    /// Virtual time during which faults start.
    pub faulty_ms: u64,
    /// Virtual time after the faults during which the client still writes.
    pub calm_ms: u64,
    /// Virtual time the client then allows for its final write and convergence.
    pub converge_ms: u64,
    /// In odd seeds, a 4th node joins as learner, then voter, during the faults.
    pub join_in_odd_seeds: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bug: Bug::None,
            faulty_ms: 20_000,
            calm_ms: 5_000,
            converge_ms: 20_000,
            join_in_odd_seeds: true,
        }
    }
}

/// What a passing run measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Hash of every recorded event in order: equal for two runs of a seed.
    pub trace: u64,
    /// Events folded into `trace`.
    pub events: u64,
    /// Writes the client saw acknowledged.
    pub acked: usize,
    /// Voters at the end (4 when a node joined).
    pub voters: u64,
    /// Highest index applied (by every node, after convergence).
    pub last_index: u64,
    /// Highest term reached.
    pub terms: u64,
    /// Terms in which more than one node led (openraft 0.9 allows it: leader ids are
    /// (term, node) and ordered; see the module doc).
    pub shared_terms: usize,
}

/// The openraft configuration of node `id` in a run: Starling's timings, and an election
/// timeout range of exactly one value (`min..min + 1`), different per node and per seed, so
/// openraft's `thread_rng()` draw has only one possible outcome.
pub fn raft_config(seed: u64, id: NodeId) -> Config {
    let mut rng = SplitMix64::new(seed ^ 0xE1EC_7104);
    let mut slots: Vec<u64> = (0..SLOTS).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let min = 300 + 37 * slots[(id - 1) as usize] + rng.below(30);
    Config {
        cluster_name: "starling-sim".into(),
        heartbeat_interval: 100,
        election_timeout_min: min,
        election_timeout_max: min + 1,
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    }
}

/// Software of node `id`: openraft on its disk, serving the peers and the client.
async fn node(seed: u64, id: NodeId, disk: Disk, bug: Bug, obs: Shared) -> turmoil::Result {
    store::boot(&disk, bug);
    let config = Arc::new(raft_config(seed, id).validate()?);
    let (flush, jobs) = tokio::sync::mpsc::unbounded_channel();
    let flush_ms = SplitMix64::new(seed ^ id ^ 0xF1D5_4A11).between(2, 25);
    tokio::task::spawn_local(store::flusher(
        disk.clone(),
        jobs,
        Duration::from_millis(flush_ms),
    ));
    let log = LogStore {
        node: id,
        disk,
        obs: obs.clone(),
        flush,
    };
    let sm = StateMachine::new(id, obs.clone());
    let raft = Raft::new(id, config, net::Network, log, sm).await?;
    if id == 1 && !raft.is_initialized().await? {
        let members: BTreeMap<NodeId, BasicNode> = (1..=NODES)
            .map(|n| (n, BasicNode::new(format!("{}:{}", host(n), net::PORT))))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tokio::task::spawn_local(watch(id, raft.clone(), obs));
    net::serve(raft).await?;
    Ok(())
}

/// Records leaders per term and the node's progress from its Raft metrics.
async fn watch(id: NodeId, raft: Raft, obs: Shared) {
    let mut metrics = raft.metrics();
    loop {
        {
            let m = metrics.borrow_and_update();
            let leader = m.state == ServerState::Leader;
            let mut o = obs.lock();
            if leader {
                o.leaders.entry(m.current_term).or_default().insert(id);
                o.last_leader = Some(id);
            }
            let applied = m.last_applied.map_or(0, |l| l.index);
            let event = format!("{:?} t{} a{applied}", m.state, m.current_term);
            o.trace(turmoil::elapsed().as_millis(), id, &event);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `seed`; `Err` is the first violated invariant (or a simulation failure).
pub fn run_one(seed: u64, opts: Options) -> Result<Report, String> {
    let obs = Shared::default();
    let mut rng = SplitMix64::new(seed);
    let max_latency = rng.between(2, 100);
    let client_ms = opts.faulty_ms + opts.calm_ms;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(client_ms + opts.converge_ms + 10_000))
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(max_latency))
        .rng_seed(seed)
        .build();
    let joins = opts.join_in_odd_seeds && seed % 2 == 1;
    let nodes = if joins { NODES + 1 } else { NODES };
    obs.lock().voters = NODES;
    for id in 1..=nodes {
        let disk = Disk::default();
        let (o, bug) = (obs.clone(), opts.bug);
        sim.host(host(id), move || {
            node(seed, id, disk.clone(), bug, o.clone())
        });
    }
    let client = Client::new(seed, nodes, joins, obs.clone());
    sim.client("client", client.run(client_ms, opts.converge_ms));
    faults::drive(&mut sim, seed, opts.faulty_ms, nodes, &obs)?;
    let o = obs.lock();
    if joins && o.voters != nodes {
        return Err(format!("node {nodes} never joined as a voter"));
    }
    check::all(&o, o.voters)?;
    Ok(Report {
        trace: o.trace,
        events: o.events,
        acked: o.acked.len(),
        last_index: (1..=o.voters).map(|n| o.last_applied(n)).min().unwrap_or(0),
        voters: o.voters,
        terms: o.leaders.keys().next_back().copied().unwrap_or(0),
        shared_terms: o.voted_leaders.values().filter(|l| l.len() > 1).count(),
    })
}
