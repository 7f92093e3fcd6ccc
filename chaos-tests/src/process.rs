//! Helpers shared by the process fixtures: log files, log tails, bounded waits.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How often start-up waits poll the process and its ports.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Opens `path` for appending, writes `header` on its own line, and returns the file twice as
/// the child's stdout and stderr. Appending keeps earlier runs, so after a restart the log
/// still shows why the first run ended.
pub(crate) fn append_log(path: &Path, header: &str) -> anyhow::Result<(Stdio, Stdio)> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))?;
    writeln!(file, "===== {header}")?;
    let stderr = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(stderr)))
}

/// The last `n` lines of a log file; a note instead when it cannot be read.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Whether a start-up failure looks like losing the race for a port picked by `free_port`.
pub(crate) fn looks_like_port_race(log_tail: &str) -> bool {
    let lower = log_tail.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("addrinuse")
}

/// True once 127.0.0.1:`port` accepts a TCP connection.
pub(crate) async fn accepts_tcp(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Time left until `deadline`, or `None` once it has passed.
pub(crate) fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&path, 10), "a\nb\nc");
        assert!(tail(&dir.path().join("missing.log"), 3).starts_with("(cannot read"));
    }

    #[test]
    fn port_race_is_recognised() {
        assert!(looks_like_port_race(
            "Error: bind 127.0.0.1:4000: Address already in use (os error 98)"
        ));
        assert!(!looks_like_port_race("Error: permission denied"));
    }
}
