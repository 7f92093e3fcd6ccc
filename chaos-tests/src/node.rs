//! [`StarlingNode`]: one `starling dev` process, started and faulted the way an operator would.
//!
//! The fixture owns the process, not the data dir: the caller keeps the `TempDir` alive, so a
//! test can kill a node, inspect or corrupt its files, and restart it on the same ports.
//! stdout and stderr go to `DIR/node.log`, appended across restarts; every start-up failure
//! carries the tail of that log.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::process::{POLL_INTERVAL, append_log, looks_like_port_race, remaining, tail};
use crate::{free_port, http, metrics};

/// How long a node may take to answer `/readyz` and write its client profile.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before the fixture gives up on it.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts when a port picked by [`free_port`] was taken before the node bound it.
const PORT_RACE_ATTEMPTS: usize = 3;
/// Log lines quoted in start-up errors.
const ERROR_TAIL_LINES: usize = 40;

/// How to run one node. Ports left at 0 are picked with [`free_port`] at the first start and
/// kept for restarts.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `--data-dir`: certificates, store, `client.toml`, and this fixture's `node.log`. The
    /// caller owns it (usually a `TempDir`) so it survives kills and restarts.
    pub data_dir: PathBuf,
    /// Port of the embedded broker's MQTT 3.1.1 listener (`--mqtt-port`); ignored when
    /// `broker` is set.
    pub mqtt_port: u16,
    /// Port of the embedded broker's MQTT 5 listener (`--mqtt5-port`); ignored when `broker`
    /// is set.
    pub mqtt5_port: u16,
    /// Client gRPC port (`--grpc-port`).
    pub grpc_port: u16,
    /// Admin HTTP port (`--http-port`): `/healthz`, `/metrics`.
    pub http_port: u16,
    /// `--broker host:port`: use this broker instead of the embedded one.
    pub broker: Option<String>,
    /// Appended to the command line as given, e.g. `["--idle-timeout", "5s"]`.
    pub extra_args: Vec<String>,
    /// Extra environment variables of the process, e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    /// Options with every port picked automatically.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeOptions {
            data_dir: data_dir.into(),
            ..NodeOptions::default()
        }
    }

    /// Fills ports left at 0. Returns whether any was picked here (so a bind race may be
    /// retried with fresh ones).
    fn pick_ports(&mut self) -> bool {
        let mut picked = false;
        for port in [&mut self.grpc_port, &mut self.http_port] {
            if *port == 0 {
                *port = free_port();
                picked = true;
            }
        }
        if self.broker.is_none() {
            for port in [&mut self.mqtt_port, &mut self.mqtt5_port] {
                if *port == 0 {
                    *port = free_port();
                    picked = true;
                }
            }
        }
        picked
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "dev".to_owned(),
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--grpc-port".to_owned(),
            self.grpc_port.to_string(),
            "--http-port".to_owned(),
            self.http_port.to_string(),
        ];
        match &self.broker {
            Some(broker) => args.extend(["--broker".to_owned(), broker.clone()]),
            None => args.extend([
                "--mqtt-port".to_owned(),
                self.mqtt_port.to_string(),
                "--mqtt5-port".to_owned(),
                self.mqtt5_port.to_string(),
            ]),
        }
        // Tests talk to loopback only, whatever the binary's default is.
        if !self.extra_args.iter().any(|a| a == "--bind") {
            args.extend(["--bind".to_owned(), "127.0.0.1".to_owned()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running (or stopped) `starling dev` process. Dropping it kills the process.
#[derive(Debug)]
pub struct StarlingNode {
    bin: PathBuf,
    /// Resolved options: every port is set, so restarts reuse them.
    opts: NodeOptions,
    /// `None` after [`kill9`](Self::kill9) or [`terminate`](Self::terminate).
    child: Option<Child>,
    /// Number of starts so far, for the log headers.
    starts: u32,
}

impl StarlingNode {
    /// Starts `bin dev …` and waits until `/readyz` answers 200 (Raft leader and MQTT ingest
    /// subscribed) and `DIR/client.toml` exists.
    ///
    /// Fails after [`START_TIMEOUT`], or as soon as the process exits, with the log tail.
    pub async fn start(bin: &Path, opts: NodeOptions) -> anyhow::Result<StarlingNode> {
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("creating {}", opts.data_dir.display()))?;
        let mut attempt = 1;
        loop {
            let mut resolved = opts.clone();
            let picked = resolved.pick_ports();
            let mut node = StarlingNode {
                bin: bin.to_owned(),
                opts: resolved,
                child: None,
                starts: 0,
            };
            match node.spawn_and_wait().await {
                Ok(()) => return Ok(node),
                Err(e) if picked && attempt < PORT_RACE_ATTEMPTS && node.lost_port_race() => {
                    eprintln!("starling-chaos: port taken during start, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the process again with the same options and ports, after
    /// [`kill9`](Self::kill9) or [`terminate`](Self::terminate).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("node is still running; kill9() or terminate() it before restart()");
        }
        self.spawn_and_wait().await
    }

    /// SIGKILL, then wait for the process to be reaped. No-op if it is not running.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing starling")?;
        }
        Ok(())
    }

    /// SIGTERM (graceful shutdown), then wait up to [`TERMINATE_TIMEOUT`] for the exit status.
    /// On timeout the process is killed and an error returned.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("node is not running");
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let pid = child.id().context("running child has a pid")?;
        let pid = Pid::from_raw(i32::try_from(pid).context("pid fits in i32")?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM")?;
        match tokio::time::timeout(TERMINATE_TIMEOUT, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await.ok();
                bail!(
                    "starling did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; killed.\n{}",
                    self.log_tail(ERROR_TAIL_LINES)
                )
            }
        }
    }

    /// Whether the process is alive (reaps it if it has exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `DIR/client.toml`: the SDK profile (endpoint, CA, client certificate and key).
    pub fn profile_path(&self) -> PathBuf {
        self.opts.data_dir.join("client.toml")
    }

    /// The data dir the node was started with.
    pub fn data_dir(&self) -> &Path {
        &self.opts.data_dir
    }

    /// `DIR/node.log`: stdout and stderr of every run, appended.
    pub fn log_path(&self) -> PathBuf {
        self.opts.data_dir.join("node.log")
    }

    pub fn grpc_port(&self) -> u16 {
        self.opts.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.opts.http_port
    }

    /// The MQTT port devices publish to: the embedded broker's, or the external broker's when
    /// the node was started with `broker`.
    pub fn mqtt_port(&self) -> u16 {
        match &self.opts.broker {
            Some(broker) => broker
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .unwrap_or(1883),
            None => self.opts.mqtt_port,
        }
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let response = http::get(self.opts.http_port, "/metrics").await?;
        if response.status != 200 {
            bail!("GET /metrics answered {}", response.status);
        }
        Ok(response.body)
    }

    /// The sum of all series called `name` on `/metrics`; `Ok(None)` when the node exports no
    /// such series (yet: counters appear at their first increment).
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        Ok(metrics::metric_sum(&self.metrics_text().await?, name))
    }

    /// The last `n` lines of `DIR/node.log`.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// Spawns the process and waits for it to serve; on failure the process is killed.
    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let args = self.opts.args();
        let header = format!(
            "start #{}: {} {}",
            self.starts,
            self.bin.display(),
            args.join(" ")
        );
        let (stdout, stderr) = append_log(&self.log_path(), &header)?;
        let child = Command::new(&self.bin)
            .args(&args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        let result = self.wait_until_serving().await;
        if result.is_err() {
            self.kill9().await.ok();
        }
        result
    }

    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_probe = String::from("no answer yet");
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "starling exited during start-up ({status}); last probe: {last_probe}\n\
                     --- {} (tail) ---\n{}",
                    self.log_path().display(),
                    self.log_tail(ERROR_TAIL_LINES)
                );
            }
            // Ready, not just alive: a point published before ingest subscribed would be
            // dropped by the broker (no subscriber yet).
            match http::get(self.opts.http_port, "/readyz").await {
                Ok(r) if r.status == 200 && self.profile_path().exists() => return Ok(()),
                Ok(r) if r.status == 200 => {
                    last_probe = "readyz 200 but client.toml missing".to_owned();
                }
                Ok(r) => last_probe = format!("readyz answered {}", r.status),
                Err(e) => last_probe = format!("{e:#}"),
            }
            let Some(left) = remaining(deadline) else {
                bail!(
                    "starling not serving after {START_TIMEOUT:?}; last probe: {last_probe}\n\
                     --- {} (tail) ---\n{}",
                    self.log_path().display(),
                    self.log_tail(ERROR_TAIL_LINES)
                );
            };
            tokio::time::sleep(POLL_INTERVAL.min(left)).await;
        }
    }

    fn lost_port_race(&self) -> bool {
        looks_like_port_race(&self.log_tail(ERROR_TAIL_LINES))
    }
}

impl Drop for StarlingNode {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGKILL now; tokio reaps the process in the background.
            child.start_kill().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_use_embedded_broker_by_default_and_bind_loopback() {
        let opts = NodeOptions {
            data_dir: "/d".into(),
            mqtt_port: 1,
            mqtt5_port: 4,
            grpc_port: 2,
            http_port: 3,
            ..NodeOptions::default()
        };
        assert_eq!(
            opts.args().join(" "),
            "dev --data-dir /d --grpc-port 2 --http-port 3 --mqtt-port 1 --mqtt5-port 4 --bind 127.0.0.1"
        );
    }

    #[test]
    fn args_with_external_broker_and_own_bind() {
        let opts = NodeOptions {
            data_dir: "/d".into(),
            grpc_port: 2,
            http_port: 3,
            broker: Some("127.0.0.1:1884".into()),
            extra_args: vec!["--bind".into(), "0.0.0.0".into()],
            ..NodeOptions::default()
        };
        assert_eq!(
            opts.args().join(" "),
            "dev --data-dir /d --grpc-port 2 --http-port 3 --broker 127.0.0.1:1884 --bind 0.0.0.0"
        );
    }

    #[test]
    fn pick_ports_fills_only_zero_ports() {
        let mut opts = NodeOptions {
            grpc_port: 5000,
            broker: Some("127.0.0.1:1884".into()),
            ..NodeOptions::new("/d")
        };
        assert!(opts.pick_ports());
        assert_eq!(opts.grpc_port, 5000);
        assert_ne!(opts.http_port, 0);
        assert_eq!(opts.mqtt_port, 0, "no embedded broker with an external one");
        assert!(!opts.pick_ports(), "nothing left to pick");
    }

    #[tokio::test]
    async fn start_fails_fast_with_log_tail_when_the_binary_exits() {
        let dir = tempfile::tempdir().unwrap();
        // `false` ignores its arguments and exits 1: a node that dies during start-up.
        let err = StarlingNode::start(Path::new("/bin/false"), NodeOptions::new(dir.path()))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("exited during start-up"), "{msg}");
        assert!(msg.contains("===== start #1"), "log tail missing: {msg}");
    }
}
