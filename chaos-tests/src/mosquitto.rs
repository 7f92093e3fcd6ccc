//! [`Mosquitto`]: a throwaway Mosquitto broker on a loopback port.
//!
//! The broker runs with the queue and in-flight settings we ship in
//! `docker/mosquitto/mosquitto.conf` (read at compile time, see [`SHIPPED_SETTINGS`]), so tests
//! and benchmarks see the limits production sees — in particular `max_queued_messages`, past
//! which Mosquitto drops silently. Listener, authentication, persistence and logging are the
//! fixture's own: anonymous, in memory, logging to `mosquitto.log` in its temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::free_port;
use crate::process::{
    POLL_INTERVAL, accepts_tcp, append_log, looks_like_port_race, remaining, tail,
};

/// The production broker configuration, source of [`SHIPPED_SETTINGS`].
const SHIPPED_CONF: &str = include_str!("../../docker/mosquitto/mosquitto.conf");

/// Keys of the shipped configuration that the fixture copies: the ones Starling's delivery
/// and throughput depend on.
pub const SHIPPED_SETTINGS: &[&str] = &[
    "max_queued_messages",
    "max_queued_bytes",
    "max_inflight_messages",
    "max_inflight_bytes",
    "max_packet_size",
    "queue_qos0_messages",
    "set_tcp_nodelay",
    "persistent_client_expiration",
];

/// How long the broker may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Start attempts when the picked port was taken before Mosquitto bound it.
const PORT_RACE_ATTEMPTS: usize = 3;

/// How to run the broker.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Listener port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Configuration lines appended after the generated ones (later lines win for global
    /// options), e.g. `"max_queued_messages 10"` to provoke drops.
    pub extra_config: Vec<String>,
}

/// A running Mosquitto. Dropping it kills the broker and deletes its config and log.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    port: u16,
    /// Holds `mosquitto.conf` and `mosquitto.log`; deleted on drop.
    dir: TempDir,
}

impl Mosquitto {
    /// Whether a Mosquitto binary is installed (see [`binary`]).
    pub fn available() -> bool {
        binary().is_some()
    }

    /// Writes a config, starts the broker and waits until its port accepts TCP connections.
    pub async fn start(opts: MosquittoOptions) -> anyhow::Result<Mosquitto> {
        let bin = binary()
            .context("mosquitto not found (set MOSQUITTO_BIN or `apt-get install mosquitto`)")?;
        let mut attempt = 1;
        loop {
            let port = if opts.port == 0 {
                free_port()
            } else {
                opts.port
            };
            match Self::start_on(&bin, port, &opts.extra_config).await {
                Ok(broker) => return Ok(broker),
                Err(e)
                    if opts.port == 0
                        && attempt < PORT_RACE_ATTEMPTS
                        && looks_like_port_race(&format!("{e:#}")) =>
                {
                    eprintln!("starling-chaos: mosquitto port taken, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_on(bin: &Path, port: u16, extra: &[String]) -> anyhow::Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("starling-mosquitto-")
            .tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, render_config(port, SHIPPED_CONF, extra))?;
        let log = dir.path().join("mosquitto.log");
        let (stdout, stderr) = append_log(&log, &format!("mosquitto on 127.0.0.1:{port}"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut broker = Mosquitto { child, port, dir };
        broker.wait_until_listening().await?;
        Ok(broker)
    }

    async fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "mosquitto exited during start-up ({status}):\n{}",
                    self.log_tail(20)
                );
            }
            if accepts_tcp(self.port).await {
                return Ok(());
            }
            let Some(left) = remaining(deadline) else {
                bail!(
                    "mosquitto not listening on {} after {START_TIMEOUT:?}:\n{}",
                    self.addr(),
                    self.log_tail(20)
                );
            };
            tokio::time::sleep(POLL_INTERVAL.min(left)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the form `starling dev --broker` takes.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// The last `n` lines of the broker's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dir.path().join("mosquitto.log"), n)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // SIGKILL now; tokio reaps the process in the background.
        self.child.start_kill().ok();
    }
}

/// The Mosquitto binary: `$MOSQUITTO_BIN`, else `/usr/sbin/mosquitto` (Debian), else
/// `mosquitto` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("MOSQUITTO_BIN") {
        return Some(PathBuf::from(bin));
    }
    let debian = PathBuf::from("/usr/sbin/mosquitto");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// The `key value` lines of `conf` whose key is in [`SHIPPED_SETTINGS`], in file order.
pub fn shipped_settings(conf: &str) -> Vec<&str> {
    conf.lines()
        .map(str::trim)
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|key| SHIPPED_SETTINGS.contains(&key))
        })
        .collect()
}

/// The fixture's configuration: a loopback listener, anonymous access, no persistence, the
/// shipped settings taken from `shipped_conf`, then `extra` lines.
pub fn render_config(port: u16, shipped_conf: &str, extra: &[String]) -> String {
    let mut conf = format!(
        "# Generated by starling-chaos for one test run.\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         connection_messages true\n\
         # From docker/mosquitto/mosquitto.conf:\n"
    );
    for line in shipped_settings(shipped_conf) {
        conf.push_str(line);
        conf.push('\n');
    }
    if !extra.is_empty() {
        conf.push_str("# Test-specific:\n");
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_has_every_setting_once() {
        let lines = shipped_settings(SHIPPED_CONF);
        for key in SHIPPED_SETTINGS {
            let count = lines
                .iter()
                .filter(|l| l.split_whitespace().next() == Some(key))
                .count();
            assert_eq!(count, 1, "{key} in docker/mosquitto/mosquitto.conf");
        }
    }

    #[test]
    fn shipped_queue_limit_survives_a_dead_node() {
        // DESIGN.md §5: the default 1000 drops a dead node's share of traffic within a second.
        let queued: u64 = setting_value("max_queued_messages").parse().unwrap();
        assert!(queued >= 100_000, "max_queued_messages {queued}");
        let inflight: u64 = setting_value("max_inflight_messages").parse().unwrap();
        assert!(inflight >= 500, "max_inflight_messages {inflight}");
    }

    fn setting_value(key: &str) -> &'static str {
        shipped_settings(SHIPPED_CONF)
            .into_iter()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap()
    }

    #[test]
    fn render_keeps_only_shipped_keys_and_appends_extra() {
        let shipped = "# comment max_queued_messages 5\n\
                       listener 1883 0.0.0.0\n\
                       persistence true\n\
                       max_queued_messages 1000000\n\
                       max_inflight_messages 1000\n";
        let conf = render_config(4242, shipped, &["max_queued_messages 10".to_owned()]);
        assert!(conf.contains("listener 4242 127.0.0.1\n"));
        assert!(!conf.contains("0.0.0.0"));
        assert!(!conf.contains("persistence true"));
        assert!(conf.contains("max_queued_messages 1000000\nmax_inflight_messages 1000\n"));
        assert!(conf.ends_with("max_queued_messages 10\n"));
    }

    #[tokio::test]
    async fn real_broker_accepts_connections() {
        if !Mosquitto::available() {
            panic!("mosquitto is required for this test: apt-get install mosquitto");
        }
        let broker = Mosquitto::start(MosquittoOptions::default()).await.unwrap();
        assert_eq!(broker.addr(), format!("127.0.0.1:{}", broker.port()));
        let stream = tokio::net::TcpStream::connect(broker.addr()).await;
        assert!(stream.is_ok(), "{}", broker.log_tail(20));
        let conf = std::fs::read_to_string(broker.config_path()).unwrap();
        assert!(conf.contains("max_queued_messages"), "{conf}");
    }
}
