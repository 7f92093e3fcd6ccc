//! Fault-injection points for the chaos and cluster tests, off unless an environment variable
//! names them. Each widens a race window that real faults open only by chance, so a test can
//! show what happens inside it; none changes behaviour when unset.
//!
//! - `STARLING_FAULT_ALARM_COMMIT_DELAY_MS=N`: a device actor waits N ms after storing a
//!   message's points and before committing its alarm transitions through Raft. A test pauses
//!   the node (SIGSTOP) inside that window, lets its shards move, resumes it (SIGCONT) and
//!   sees the stale commit refused by epoch.

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
