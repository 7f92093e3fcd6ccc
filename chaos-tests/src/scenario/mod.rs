//! The scenario catalogue and the smoke subset. A scenario names the fault kinds its seeded
//! schedule draws from, the cluster size, the number of fault steps, and whether a node joins
//! and leaves during the faults. [`run::run`] executes one; [`report`] prints the table.

pub mod report;
pub mod run;

use crate::schedule::Kind;

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub nodes: usize,
    pub kinds: &'static [Kind],
    pub steps: usize,
    pub membership: bool,
    /// Give every node a small tmpfs data dir (the disk-full fault fills it).
    pub tmpfs: bool,
}

const NET: &[Kind] = &[Kind::Isolate, Kind::Split, Kind::Bridge, Kind::OneWay];

/// Every scenario, in catalogue order.
pub const CATALOGUE: &[Scenario] = &[
    Scenario {
        name: "kill",
        about: "SIGKILL a node (leader or follower), restart it on its data",
        nodes: 3,
        kinds: &[Kind::Kill],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "pause",
        about: "SIGSTOP a node, SIGCONT it: a frozen owner wakes up late",
        nodes: 3,
        kinds: &[Kind::Pause],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "isolate",
        about: "cut one node off from its peers (broker still reachable)",
        nodes: 3,
        kinds: &[Kind::Isolate],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "split",
        about: "majority/minority partition of five nodes",
        nodes: 5,
        kinds: &[Kind::Split],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "bridge",
        about: "two halves that see one bridge node but not each other",
        nodes: 5,
        kinds: &[Kind::Bridge],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "one-way",
        about: "a node that can receive from its peers but not send to them",
        nodes: 3,
        kinds: &[Kind::OneWay],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "loss",
        about: "10-40% random packet loss (nft numgen) on some nodes",
        nodes: 3,
        kinds: &[Kind::Loss],
        steps: 3,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "broker",
        about: "kill -9 the broker and restart it; its losses are reported apart",
        nodes: 3,
        kinds: &[Kind::BrokerRestart],
        steps: 2,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "disk-full",
        about: "fill a node's (tmpfs) data dir until writes fail, then free it",
        nodes: 3,
        kinds: &[Kind::DiskFull],
        steps: 2,
        membership: false,
        tmpfs: true,
    },
    Scenario {
        name: "membership",
        about: "a fourth node joins during one fault and is removed (CLI) during another",
        nodes: 3,
        kinds: &[Kind::Kill, Kind::Pause, Kind::Isolate, Kind::Loss],
        steps: 3,
        membership: true,
        tmpfs: false,
    },
    Scenario {
        name: "partitions",
        about: "every partition kind, drawn by the seed",
        nodes: 5,
        kinds: NET,
        steps: 4,
        membership: false,
        tmpfs: false,
    },
    Scenario {
        name: "mixed",
        about: "every fault kind, drawn by the seed",
        nodes: 5,
        kinds: &[
            Kind::Kill,
            Kind::Pause,
            Kind::Isolate,
            Kind::Split,
            Kind::Bridge,
            Kind::OneWay,
            Kind::Loss,
            Kind::BrokerRestart,
            Kind::DiskFull,
        ],
        steps: 5,
        membership: false,
        tmpfs: true,
    },
];

/// The smoke subset (CI): scenario names, run with seed 1, within ten minutes on 2 cores.
pub const SMOKE: &[&str] = &["kill", "pause", "split", "loss", "broker"];

/// Scenarios named in the catalogue but not supported on this machine, with the reason.
pub const UNSUPPORTED: &[(&str, &str)] = &[(
    "power-loss",
    "dropping writes not yet fsynced needs a block or filesystem layer that forgets them \
     (device-mapper log-writes/flakey, or a FUSE layer such as LazyFS); this kernel has no \
     device-mapper and LazyFS is not packaged for Debian. See chaos-tests/README.md.",
)];

/// The catalogue entry called `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Scenario> {
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
        anyhow::bail!("scenario {name:?} is not supported: {why}");
    }
    CATALOGUE.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        anyhow::anyhow!(
            "no scenario {name:?}; the catalogue has {}",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_names_exist_and_unsupported_ones_say_why() {
        for name in SMOKE {
            assert!(find(name).is_ok(), "{name}");
        }
        let err = find("power-loss").unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        assert!(find("nope").unwrap_err().to_string().contains("kill"));
    }
}
