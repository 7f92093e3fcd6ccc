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
    /// Start every node with `STARLING_FAULT_POWER_LOSS=1`: writes not yet fsynced live in the
    /// node's memory, so a kill loses them as a power cut would.
    pub power_loss: bool,
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
        power_loss: false,
    },
    Scenario {
        name: "power-loss",
        about: "SIGKILL a node that keeps its unsynced writes in memory (a power cut), restart it",
        nodes: 3,
        kinds: &[Kind::Kill],
        steps: 4,
        membership: false,
        tmpfs: false,
        power_loss: true,
    },
    Scenario {
        name: "pause",
        about: "SIGSTOP a node, SIGCONT it: a frozen owner wakes up late",
        nodes: 3,
        kinds: &[Kind::Pause],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "isolate",
        about: "cut one node off from its peers (broker still reachable)",
        nodes: 3,
        kinds: &[Kind::Isolate],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "split",
        about: "majority/minority partition of five nodes",
        nodes: 5,
        kinds: &[Kind::Split],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "bridge",
        about: "two halves that see one bridge node but not each other",
        nodes: 5,
        kinds: &[Kind::Bridge],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "one-way",
        about: "a node that can receive from its peers but not send to them",
        nodes: 3,
        kinds: &[Kind::OneWay],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "loss",
        about: "10-40% random packet loss (nft numgen) on some nodes",
        nodes: 3,
        kinds: &[Kind::Loss],
        steps: 3,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "broker",
        about: "kill -9 the broker and restart it; its losses are reported apart",
        nodes: 3,
        kinds: &[Kind::BrokerRestart],
        steps: 2,
        membership: false,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "disk-full",
        about: "fill a node's (tmpfs) data dir until writes fail, then free it",
        nodes: 3,
        kinds: &[Kind::DiskFull],
        steps: 2,
        membership: false,
        tmpfs: true,
        power_loss: false,
    },
    Scenario {
        name: "membership",
        about: "a fourth node joins during one fault and is removed (CLI) during another",
        nodes: 3,
        kinds: &[Kind::Kill, Kind::Pause, Kind::Isolate, Kind::Loss],
        steps: 3,
        membership: true,
        tmpfs: false,
        power_loss: false,
    },
    Scenario {
        name: "partitions",
        about: "every partition kind, drawn by the seed",
        nodes: 5,
        kinds: NET,
        steps: 4,
        membership: false,
        tmpfs: false,
        power_loss: false,
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
        power_loss: false,
    },
];

/// The smoke subset (CI): scenario names, run with seed 1, within ten minutes on 2 cores.
pub const SMOKE: &[&str] = &[
    "kill",
    "pause",
    "split",
    "loss",
    "broker",
    "power-loss",
    "membership",
];

/// Scenarios named in the catalogue but not supported on this machine, with the reason.
pub const UNSUPPORTED: &[(&str, &str)] = &[];

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
        for (name, _) in UNSUPPORTED {
            let err = find(name).unwrap_err().to_string();
            assert!(err.contains("not supported"), "{err}");
        }
        assert!(find("nope").unwrap_err().to_string().contains("kill"));
    }

    #[test]
    fn only_the_power_loss_scenario_runs_nodes_in_the_power_loss_mode() {
        let on: Vec<&str> = CATALOGUE
            .iter()
            .filter(|s| s.power_loss)
            .map(|s| s.name)
            .collect();
        assert_eq!(on, ["power-loss"]);
        let s = find("power-loss").expect("in the catalogue");
        assert_eq!(s.kinds, [Kind::Kill]);
        assert!(s.steps > 1);
    }
}
