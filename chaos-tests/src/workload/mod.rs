//! Workloads of a chaos run, each recording what was acknowledged (Jepsen's client history):
//! - [`mqtt`]: devices publishing QoS 1 with per-device sequence numbers, stop-and-wait, and
//!   a temperature pattern that raises and clears alarms;
//! - [`rules`]: rule writes through the SDK, and the alarm rule the pattern trips;
//! - [`probe`]: a durable gRPC write repeated after each heal, timing recovery;
//! - [`observe`]: what the healed cluster shows (stored points, rules per node, alarms).

pub mod mqtt;
pub mod observe;
pub mod probe;
pub mod rules;

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix ms (the lease logs' clock).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
