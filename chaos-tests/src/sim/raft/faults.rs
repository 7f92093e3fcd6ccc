//! Faults of a simulated run, drawn from the seed, and the loop that steps the simulation
//! while applying and healing them.
//!
//! Kinds: isolate the current leader (or a random node) from the other nodes (the client
//! still reaches it), split a minority (one node of 3, two of 4, the leader among them or
//! not) from the majority and the client, cut one direction of one link, hold one link's messages, crash the current
//! leader or a random node and restart it later. Each lasts 0.1–5 s; a new one starts every
//! 1–3 s during the faulty period, so they overlap. "The current leader" is the one the
//! nodes' metrics last reported, read when the fault starts.

use super::obs::Shared;
use crate::schedule::SplitMix64;

/// What to do to whom, not yet resolved against the current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Isolate,
    Split,
    OneWay,
    Hold,
    Crash,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    at_ms: u64,
    kind: Kind,
    /// Aim at the current leader instead of `node`.
    leader: bool,
    node: u64,
    other: u64,
    len_ms: u64,
}

/// A fault in force, to heal at `until_ms`.
#[derive(Debug)]
enum Active {
    /// Links cut both ways.
    Cut(Vec<(String, String)>),
    OneWay(String, String),
    Held(String, String),
    Crashed(String),
}

fn plan(seed: u64, faulty_ms: u64, nodes: u64) -> Vec<Planned> {
    let mut rng = SplitMix64::new(seed ^ 0xFA17_5EED);
    let mut t = 1_500;
    let mut out = Vec::new();
    while t < faulty_ms {
        let node = 1 + rng.below(nodes);
        let other = 1 + (node + rng.below(nodes - 1)) % nodes;
        let kind = match rng.below(5) {
            0 => Kind::Isolate,
            1 => Kind::Split,
            2 => Kind::OneWay,
            3 => Kind::Hold,
            _ => Kind::Crash,
        };
        let len_ms = match kind {
            Kind::Hold => rng.between(100, 2_000),
            _ => rng.between(300, 5_000),
        };
        let leader = rng.below(2) == 0;
        out.push(Planned {
            at_ms: t,
            kind,
            leader,
            node,
            other,
            len_ms,
        });
        t += rng.between(1_000, 3_000);
    }
    out
}

fn name(id: u64) -> String {
    super::net::host(id)
}

fn start(sim: &mut turmoil::Sim<'_>, p: &Planned, leader: Option<u64>, nodes: u64) -> Active {
    let a = match (p.leader, leader) {
        (true, Some(l)) => l,
        _ => p.node,
    };
    let b = if p.other == a { 1 + a % nodes } else { p.other };
    match p.kind {
        Kind::Isolate => {
            let pairs: Vec<_> = (1..=nodes)
                .filter(|n| *n != a)
                .map(|n| (name(a), name(n)))
                .collect();
            cut(sim, pairs)
        }
        Kind::Split => {
            // A minority (one node of 3, two of 4) apart from the rest and the client.
            let minority: Vec<u64> = if nodes >= 4 { vec![a, b] } else { vec![a] };
            let mut rest: Vec<String> = (1..=nodes)
                .filter(|n| !minority.contains(n))
                .map(name)
                .collect();
            rest.push("client".into());
            let pairs = minority
                .iter()
                .flat_map(|m| rest.iter().map(move |r| (name(*m), r.clone())))
                .collect();
            cut(sim, pairs)
        }
        Kind::OneWay => {
            sim.partition_oneway(name(a).as_str(), name(b).as_str());
            Active::OneWay(name(a), name(b))
        }
        Kind::Hold => {
            sim.hold(name(a).as_str(), name(b).as_str());
            Active::Held(name(a), name(b))
        }
        Kind::Crash => {
            sim.crash(name(a).as_str());
            Active::Crashed(name(a))
        }
    }
}

fn cut(sim: &mut turmoil::Sim<'_>, pairs: Vec<(String, String)>) -> Active {
    for (a, b) in &pairs {
        sim.partition(a.as_str(), b.as_str());
    }
    Active::Cut(pairs)
}

fn heal(sim: &mut turmoil::Sim<'_>, f: &Active) {
    match f {
        Active::Cut(pairs) => {
            for (a, b) in pairs {
                sim.repair(a.as_str(), b.as_str());
            }
        }
        Active::OneWay(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
        Active::Held(a, b) => sim.release(a.as_str(), b.as_str()),
        Active::Crashed(a) => {
            if !sim.is_host_running(a.as_str()) {
                sim.bounce(a.as_str());
            }
        }
    }
}

/// Steps `sim` to its end, starting and healing the seed's faults among hosts `n1..=n{nodes}`.
pub fn drive(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    faulty_ms: u64,
    nodes: u64,
    obs: &Shared,
) -> Result<(), String> {
    let mut pending = plan(seed, faulty_ms, nodes);
    pending.reverse();
    let mut active: Vec<(u64, Active)> = Vec::new();
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while pending.last().is_some_and(|p| p.at_ms <= now) {
            let p = pending.pop().expect("checked");
            let leader = obs.lock().last_leader;
            let f = start(sim, &p, leader, nodes);
            obs.lock().trace(now.into(), 0, &format!("fault {f:?}"));
            active.push((now + p.len_ms, f));
        }
        active.retain(|(until, f)| {
            if *until > now {
                return true;
            }
            heal(sim, f);
            false
        });
        match sim.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(format!("simulation error: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        assert_eq!(plan(3, 20_000, 3), plan(3, 20_000, 3));
        assert_ne!(plan(3, 20_000, 3), plan(4, 20_000, 3));
        for nodes in [3, 4] {
            let p = plan(3, 20_000, nodes);
            assert!(
                p.iter().all(|p| p.node != p.other && p.other <= nodes),
                "{p:?}"
            );
        }
    }
}
