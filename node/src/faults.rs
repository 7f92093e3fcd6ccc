//! Fault-injection points for the chaos and cluster tests, off unless an environment variable
//! names them. Each widens a race window that real faults open only by chance, so a test can
//! show what happens inside it; none changes behaviour when unset.
//!
//! - `STARLING_FAULT_ALARM_COMMIT_DELAY_MS=N`: a device actor waits N ms after storing a
//!   message's points and before committing its alarm transitions through Raft. A test pauses
//!   the node (SIGSTOP) inside that window, lets its shards move, resumes it (SIGCONT) and
//!   sees the stale commit refused by epoch.
//! - `STARLING_FAULT_POWER_LOSS=1`: every durable file the node writes (its redb databases and
//!   the Raft journal) keeps writes not yet synced in this process's memory
//!   (`storage::volatile`), so a SIGKILL loses what a power cut would: what was not fsynced.

use std::sync::OnceLock;
use std::time::Duration;

/// The alarm-commit delay, read once from the environment.
pub fn alarm_commit_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var("STARLING_FAULT_ALARM_COMMIT_DELAY_MS")
            .ok()?
            .parse()
            .ok()?;
        tracing::warn!(ms, "fault injection: alarm commits are delayed");
        Some(Duration::from_millis(ms))
    })
}

/// Whether the power-loss mode is on, read once from the environment.
pub fn power_loss() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("STARLING_FAULT_POWER_LOSS").is_ok_and(|v| v == "1");
        if on {
            tracing::warn!(
                "fault injection: POWER LOSS mode: writes not yet fsynced are held in memory \
                 and lost when the process dies (never run a production node like this)"
            );
        }
        on
    })
}
