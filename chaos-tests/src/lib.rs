//! # Starling chaos fixtures
//!
//! Real processes, real brokers, real faults: the pieces integration tests, chaos scenarios and
//! benchmarks use to run Starling the way users do — as the `starling` binary next to a
//! Mosquitto broker, on loopback ports.
//!
//! ## Layout
//! - [`node`]: [`StarlingNode`], one `starling dev` process with its data dir, ports and log;
//!   start, SIGKILL, SIGTERM, restart on the same ports, read its metrics.
//! - [`cluster`]: [`cluster::ServeCluster`], several `starling serve` processes with their
//!   certificates and configs; SIGKILL, SIGSTOP/SIGCONT, restart and join per node.
//! - [`mosquitto`]: [`Mosquitto`], a throwaway broker configured with the queue and in-flight
//!   settings we ship in `docker/mosquitto/mosquitto.conf`.
//! - [`load`]: MQTT device load (rumqttc): publish a telemetry workload at QoS 1, count what a
//!   subscriber receives.
//! - [`metrics`]: Prometheus text parsing (pure).
//! - [`http`]: a minimal HTTP/1.0 GET for `/healthz` and `/metrics`, so fixtures need no HTTP
//!   client crate.
//!
//! The chaos suite (binary `starling-chaos`, see README.md in this crate):
//! - [`lab`]: network namespaces, a bridge, nftables faults, tmpfs data dirs (root only).
//! - [`schedule`]: the seeded nemesis schedule (pure).
//! - [`workload`]: MQTT QoS 1 devices, SDK rule writes, the recovery probe, post-heal reads.
//! - [`history`]: what a run records; [`checkers`]: one invariant per file, pure.
//! - [`scenario`]: the catalogue, the runner and the results table.
//! - [`sim`]: deterministic simulation (turmoil) of the lease and placement protocol, and
//!   ([`sim::raft`]) of the real openraft control plane with Starling's commands and `apply`.
//!
//! ## What this crate does not do
//! It never reaches beyond 127.0.0.1 and the lab's own namespaces, and never waits without a
//! bound: every wait has a deadline and fails with the process's log tail. Fixtures and
//! scenarios drive the binary (a test sees exactly what a user sees); only [`sim::raft`]
//! links the node crate, for its Raft types and pure `apply`.

pub mod checkers;
pub mod cluster;
pub mod history;
pub mod http;
pub mod lab;
pub mod load;
pub mod metrics;
pub mod mosquitto;
pub mod node;
mod process;
pub mod scenario;
pub mod schedule;
pub mod sim;
pub mod workload;

pub use mosquitto::{Mosquitto, MosquittoOptions};
pub use node::{NodeOptions, StarlingNode};

/// A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read the port, close.
///
/// Another process can take it before the caller binds it; fixtures that start processes on
/// such ports retry with fresh ports when the process reports the address in use.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .expect("binding 127.0.0.1:0 must succeed on a machine that runs tests");
    listener
        .local_addr()
        .expect("a bound listener has a local address")
        .port()
}

/// A positive count from the environment variable `name`, or `default` when it is unset: the
/// size knobs of benches and load runs (`BENCH_DEVICES=200`, …).
pub fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => {
            let n: usize = value
                .parse()
                .map_err(|_| anyhow::anyhow!("{name}={value:?} is not a count"))?;
            anyhow::ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        }
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_nonzero_and_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port should still be free");
    }
}
