//! The nemesis schedule: which faults, on which nodes, for how long — derived only from a
//! scenario's fault kinds, the node ids and a seed, so a seed replays the same schedule
//! (Jepsen's generator, made deterministic). Pure: no clock, no I/O.
//!
//! The random source is SplitMix64, written out here so that a seed means the same schedule
//! forever, whatever version of a random-number crate the tree resolves to.

use std::fmt;

/// One fault the nemesis can apply and heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node; restart it on the same data at heal.
    Kill { node: u64 },
    /// SIGSTOP the node; SIGCONT at heal.
    Pause { node: u64 },
    /// Cut the node off from every other node (the broker stays reachable).
    Isolate { node: u64 },
    /// Majority/minority split: `minority` sees only itself, the rest only the rest.
    Split { minority: Vec<u64> },
    /// Two halves that cannot see each other, and one node that sees both.
    Bridge {
        left: Vec<u64>,
        bridge: u64,
        right: Vec<u64>,
    },
    /// `from` cannot send to `to`; the reverse direction works.
    OneWay { from: u64, to: Vec<u64> },
    /// The nodes drop `percent` % of their packets, in and out (nft numgen).
    Loss { nodes: Vec<u64>, percent: u8 },
    /// SIGKILL the broker (in-memory, as the fixture runs it) and start it again.
    BrokerRestart,
    /// Fill the node's data filesystem (a small tmpfs) until writes fail; free it at heal.
    DiskFull { node: u64 },
}

/// A membership change performed in the middle of a fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Start node `id` joining the cluster.
    Join(u64),
    /// `starling cluster remove id` through the CLI.
    Remove(u64),
}

/// The kinds a scenario draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kill,
    Pause,
    Isolate,
    Split,
    Bridge,
    OneWay,
    Loss,
    BrokerRestart,
    DiskFull,
}

/// One step: apply `fault` (and `membership` halfway), hold it, heal, wait `gap_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub membership: Option<Membership>,
    pub hold_ms: u64,
    pub gap_ms: u64,
}

/// SplitMix64: a tiny, well-known generator; good enough to pick faults, and stable.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `items` in a seeded order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Draws `steps` faults of `kinds` over `nodes` from `seed`. With `membership`, the first
/// step also starts node `max(nodes) + 1` and the last removes it again.
pub fn generate(
    kinds: &[Kind],
    nodes: &[u64],
    seed: u64,
    steps: usize,
    membership: bool,
) -> Vec<Step> {
    assert!(
        !kinds.is_empty() && nodes.len() >= 3,
        "a schedule needs kinds and 3+ nodes"
    );
    let mut rng = SplitMix64::new(seed);
    let newcomer = nodes.iter().max().copied().unwrap_or(0) + 1;
    (0..steps)
        .map(|i| {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let fault = draw(kind, nodes, &mut rng);
            let membership = match (membership, i) {
                (true, 0) => Some(Membership::Join(newcomer)),
                (true, i) if i + 1 == steps => Some(Membership::Remove(newcomer)),
                _ => None,
            };
            Step {
                fault,
                membership,
                hold_ms: rng.between(4_000, 8_000),
                gap_ms: rng.between(3_000, 5_000),
            }
        })
        .collect()
}

fn draw(kind: Kind, nodes: &[u64], rng: &mut SplitMix64) -> Fault {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let one = shuffled[0];
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    match kind {
        Kind::Kill => Fault::Kill { node: one },
        Kind::Pause => Fault::Pause { node: one },
        Kind::Isolate => Fault::Isolate { node: one },
        Kind::Split => Fault::Split {
            minority: sorted(shuffled[..(nodes.len() - 1) / 2].to_vec()),
        },
        Kind::Bridge => {
            let half = (nodes.len() - 1) / 2;
            Fault::Bridge {
                left: sorted(shuffled[1..1 + half].to_vec()),
                bridge: one,
                right: sorted(shuffled[1 + half..].to_vec()),
            }
        }
        Kind::OneWay => Fault::OneWay {
            from: one,
            to: sorted(shuffled[1..].to_vec()),
        },
        Kind::Loss => Fault::Loss {
            nodes: sorted(shuffled[..rng.between(1, nodes.len() as u64) as usize].to_vec()),
            percent: rng.between(10, 40) as u8,
        },
        Kind::BrokerRestart => Fault::BrokerRestart,
        Kind::DiskFull => Fault::DiskFull { node: one },
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { node } => write!(f, "kill -9 node {node}, restart"),
            Fault::Pause { node } => write!(f, "SIGSTOP node {node}, SIGCONT"),
            Fault::Isolate { node } => write!(f, "isolate node {node}"),
            Fault::Split { minority } => write!(f, "split minority {minority:?} | rest"),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => {
                write!(f, "bridge {left:?} <- {bridge} -> {right:?}")
            }
            Fault::OneWay { from, to } => write!(f, "one-way: {from} cannot send to {to:?}"),
            Fault::Loss { nodes, percent } => write!(f, "{percent}% packet loss on {nodes:?}"),
            Fault::BrokerRestart => write!(f, "broker kill -9, restart"),
            Fault::DiskFull { node } => write!(f, "disk full on node {node}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {} ms", self.fault, self.hold_ms)?;
        match self.membership {
            Some(Membership::Join(id)) => write!(f, ", node {id} joins meanwhile")?,
            Some(Membership::Remove(id)) => write!(f, ", node {id} removed meanwhile")?,
            None => {}
        }
        write!(f, "; then {} ms calm", self.gap_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Kind] = &[
        Kind::Kill,
        Kind::Pause,
        Kind::Isolate,
        Kind::Split,
        Kind::Bridge,
        Kind::OneWay,
        Kind::Loss,
        Kind::BrokerRestart,
        Kind::DiskFull,
    ];

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let a = generate(ALL, &[1, 2, 3, 4, 5], 7, 6, true);
        assert_eq!(a, generate(ALL, &[1, 2, 3, 4, 5], 7, 6, true));
        assert_ne!(a, generate(ALL, &[1, 2, 3, 4, 5], 8, 6, true));
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (the published reference sequence).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn faults_are_well_formed_for_every_seed() {
        for seed in 0..500 {
            for n in [3usize, 5] {
                let nodes: Vec<u64> = (1..=n as u64).collect();
                for step in generate(ALL, &nodes, seed, 4, true) {
                    match &step.fault {
                        Fault::Split { minority } => {
                            assert!(!minority.is_empty() && minority.len() * 2 < n, "{step}")
                        }
                        Fault::Bridge {
                            left,
                            bridge,
                            right,
                        } => {
                            assert_eq!(left.len() + right.len() + 1, n);
                            assert!(!left.contains(bridge) && !right.contains(bridge));
                            assert!(!left.is_empty() && !right.is_empty(), "{step}");
                        }
                        Fault::OneWay { from, to } => {
                            assert_eq!(to.len(), n - 1);
                            assert!(!to.contains(from));
                        }
                        Fault::Loss { nodes: ns, percent } => {
                            assert!(!ns.is_empty() && (10..=40).contains(percent))
                        }
                        _ => {}
                    }
                    assert!((4_000..=8_000).contains(&step.hold_ms));
                }
            }
        }
    }

    #[test]
    fn membership_joins_first_and_removes_last() {
        let s = generate(&[Kind::Pause], &[1, 2, 3], 1, 3, true);
        assert_eq!(s[0].membership, Some(Membership::Join(4)));
        assert_eq!(s[1].membership, None);
        assert_eq!(s[2].membership, Some(Membership::Remove(4)));
    }
}
