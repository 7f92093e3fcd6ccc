//! A cluster of `starling serve` processes on loopback: certificates made with the real
//! `starling certs`, one TOML config per node, start/SIGKILL/SIGSTOP/SIGCONT/restart per
//! node, and the lease logs the nodes write.
//!
//! Each node's directory (`BASE/nodeN/`) holds its config, data and `node.log`; the admin
//! client profile (`BASE/certs/client-admin.toml`) lists every node's client endpoint, so the
//! SDK fails over between them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::free_port;
use crate::http;
use crate::process::{POLL_INTERVAL, append_log, remaining, tail};

/// How long a node may take to report ready.
pub const SERVE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// One `starling serve` process.
#[derive(Debug)]
pub struct ServeNode {
    pub id: u64,
    pub dir: PathBuf,
    pub peer_port: u16,
    pub client_port: u16,
    pub http_port: u16,
    bin: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Extra environment of the process (e.g. fault-injection switches).
    pub env: Vec<(String, String)>,
    /// Where the node listens and is reached: 127.0.0.1, or its own address in a network
    /// namespace ([`Placement`]).
    host: String,
    /// The network namespace the process runs in (`ip netns exec NAME`), if any.
    netns: Option<String>,
}

/// Where one node of a [`ServeCluster`] runs: loopback (the default) or its own network
/// namespace with its own address, as the chaos harness places nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The address the node listens on and peers, clients and the admin probe dial.
    pub host: String,
    /// The namespace to run the process in; `None` runs it in the caller's namespace.
    pub netns: Option<String>,
}

impl Placement {
    /// 127.0.0.1 in the caller's namespace, with ports picked by [`free_port`].
    pub fn loopback() -> Placement {
        Placement {
            host: "127.0.0.1".to_owned(),
            netns: None,
        }
    }

    fn is_loopback(&self) -> bool {
        self.netns.is_none() && self.host == "127.0.0.1"
    }
}

/// Ports of a node in its own namespace: it has the address to itself, so they are fixed.
const NETNS_PORTS: (u16, u16, u16) = (7610, 7600, 8080);

impl ServeNode {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("starling.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The node's lease log (grants and releases as JSON lines).
    pub fn lease_log(&self) -> PathBuf {
        self.dir.join("data").join("leases.log")
    }

    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.host, self.peer_port)
    }

    pub fn client_endpoint(&self) -> String {
        format!("https://{}:{}", self.host, self.client_port)
    }

    /// The address the node listens on (127.0.0.1 unless placed in a namespace).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The network namespace the node runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The process id while running (signals, `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// Spawns the process (does not wait for readiness).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let header = format!("start #{} of node {}", self.starts, self.id);
        let (stdout, stderr) = append_log(&self.log_path(), &header)?;
        // `ip netns exec` enters the namespace and execs the binary: the pid stays the node's.
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .env(
                "RUST_LOG",
                std::env::var("STARLING_TEST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn".to_owned()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (MQTT ingest subscribed).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SERVE_START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("node {} exited ({status}):\n{}", self.id, self.log_tail(40));
            }
            if let Ok(r) = http::get_from(&self.host, self.http_port, "/readyz").await
                && r.status == 200
            {
                return Ok(());
            }
            let Some(left) = remaining(deadline) else {
                bail!("node {} not ready in time:\n{}", self.id, self.log_tail(40));
            };
            tokio::time::sleep(POLL_INTERVAL.min(left)).await;
        }
    }

    /// SIGKILL and reap. No-op when not running.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing node")?;
        }
        Ok(())
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("node is not running")?;
        let pid = child.id().context("running child has a pid")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal).context("sending a signal")?;
        Ok(())
    }

    /// SIGSTOP: the process stays, frozen.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Starts again (same ports, same data) and waits until ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("node {} is still running", self.id);
        }
        self.spawn()?;
        self.wait_ready().await
    }

    /// Starts the node again if its process exited on its own (a node that stops on a full
    /// disk, say), as an operator's supervisor (systemd `Restart=on-failure`) would. Returns
    /// the exit status it found, or `None` when the node was running or never started.
    pub async fn restart_if_exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let exited = match &mut self.child {
            Some(c) => c.try_wait()?,
            None => None,
        };
        if exited.is_some() {
            self.child = None;
            self.restart().await?;
        }
        Ok(exited)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Several `starling serve` nodes sharing one CA and one broker.
#[derive(Debug)]
pub struct ServeCluster {
    pub base: PathBuf,
    pub nodes: Vec<ServeNode>,
    bin: PathBuf,
    broker: String,
    /// Extra lines for every node's `[cluster]` section (timings).
    cluster_extra: String,
    /// Environment of every node, added ones included (e.g. fault-injection switches).
    node_env: Vec<(String, String)>,
}

impl ServeCluster {
    /// Makes the CA and certificates under `base/certs`, writes a config per node bootstrapping
    /// all `n` as voters, starts them together and waits until every one is ready.
    pub async fn start(
        bin: &Path,
        base: &Path,
        n: usize,
        broker: &str,
        cluster_extra: &str,
    ) -> anyhow::Result<ServeCluster> {
        let placements = vec![Placement::loopback(); n];
        Self::start_placed(bin, base, &placements, broker, cluster_extra, &[]).await
    }

    /// Like [`start`](Self::start), with node `i + 1` at `placements[i]` (the chaos harness
    /// puts each node in its own network namespace) and `env` in every node's environment.
    pub async fn start_placed(
        bin: &Path,
        base: &Path,
        placements: &[Placement],
        broker: &str,
        cluster_extra: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<ServeCluster> {
        let certs = base.join("certs");
        run(bin, &["certs", "init", "--dir", path_str(&certs)?]).await?;
        let mut cluster = ServeCluster {
            base: base.to_owned(),
            nodes: Vec::new(),
            bin: bin.to_owned(),
            broker: broker.to_owned(),
            cluster_extra: cluster_extra.to_owned(),
            node_env: env.to_vec(),
        };
        for (i, placement) in placements.iter().enumerate() {
            let node = cluster.new_node(i as u64 + 1, placement).await?;
            cluster.nodes.push(node);
        }
        let voters: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("{{ id = {}, peer = \"{}\" }}", node.id, node.peer_addr()))
            .collect();
        let membership = format!("bootstrap = [{}]", voters.join(", "));
        for i in 0..cluster.nodes.len() {
            cluster.write_config(i, &membership)?;
        }
        cluster.write_profile().await?;
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        for node in &mut cluster.nodes {
            node.wait_ready().await?;
        }
        Ok(cluster)
    }

    async fn new_node(&self, id: u64, placement: &Placement) -> anyhow::Result<ServeNode> {
        let dir = self.base.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)?;
        let certs = self.base.join("certs");
        let id_text = id.to_string();
        let mut args = vec![
            "certs",
            "node",
            "--dir",
            path_str(&certs)?,
            "--id",
            &id_text,
        ];
        if !placement.is_loopback() {
            args.extend(["--host", &placement.host]);
        }
        run(&self.bin, &args).await?;
        if !placement.is_loopback() {
            let (peer_port, client_port, http_port) = NETNS_PORTS;
            return Ok(ServeNode {
                id,
                dir,
                peer_port,
                client_port,
                http_port,
                bin: self.bin.clone(),
                child: None,
                starts: 0,
                env: self.node_env.clone(),
                host: placement.host.clone(),
                netns: placement.netns.clone(),
            });
        }
        // `free_port` may hand out a port twice (it is free again once probed): keep the
        // node's three ports distinct from each other and from the other nodes'.
        let mut taken: Vec<u16> = self
            .nodes
            .iter()
            .flat_map(|n| [n.peer_port, n.client_port, n.http_port])
            .collect();
        let mut pick = || loop {
            let port = free_port();
            if !taken.contains(&port) {
                taken.push(port);
                return port;
            }
        };
        let (peer_port, client_port, http_port) = (pick(), pick(), pick());
        Ok(ServeNode {
            id,
            dir,
            peer_port,
            client_port,
            http_port,
            bin: self.bin.clone(),
            child: None,
            starts: 0,
            env: self.node_env.clone(),
            host: placement.host.clone(),
            netns: None,
        })
    }

    fn write_config(&self, index: usize, membership: &str) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let certs = self.base.join("certs");
        let text = format!(
            "node_id = {id}\ndata_dir = \"{data}\"\n\n[listen]\npeer = \"{host}:{peer}\"\n\
             client = \"{host}:{client}\"\nhttp = \"{host}:{http}\"\n\n[tls]\n\
             ca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n[cluster]\n{membership}\n\
             {extra}\n\n[mqtt]\nbroker = \"{broker}\"\n",
            id = node.id,
            host = node.host,
            data = node.dir.join("data").display(),
            peer = node.peer_port,
            client = node.client_port,
            http = node.http_port,
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("node-{}.pem", node.id)).display(),
            key = certs.join(format!("node-{}.key", node.id)).display(),
            extra = self.cluster_extra,
            broker = self.broker,
        );
        std::fs::write(node.config_path(), text)?;
        Ok(())
    }

    /// (Re)writes the admin client profile with every node's endpoint.
    async fn write_profile(&self) -> anyhow::Result<()> {
        let certs = self.base.join("certs");
        let mut args = vec![
            "certs",
            "client",
            "--dir",
            path_str(&certs)?,
            "--name",
            "admin",
            "--force",
        ];
        let endpoints: Vec<String> = self.nodes.iter().map(ServeNode::client_endpoint).collect();
        for e in &endpoints {
            args.push("--endpoint");
            args.push(e);
        }
        run(&self.bin, &args).await
    }

    /// The admin profile (all endpoints, failover in node order).
    pub fn profile(&self) -> PathBuf {
        self.base.join("certs").join("client-admin.toml")
    }

    /// A profile that talks to one node only (`client-node{id}.toml`).
    pub fn profile_for(&self, id: u64) -> anyhow::Result<PathBuf> {
        let all = std::fs::read_to_string(self.profile())?;
        let node = self.node(id)?;
        let mut out = String::new();
        for line in all.lines() {
            if line.trim_start().starts_with("endpoint") {
                out.push_str(&format!("endpoint = \"{}\"\n", node.client_endpoint()));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        let path = self
            .base
            .join("certs")
            .join(format!("client-node{id}.toml"));
        std::fs::write(&path, out)?;
        Ok(path)
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&ServeNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .context("no such node")
    }

    pub fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut ServeNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .context("no such node")
    }

    /// Adds node `id`, joining through the peer ports of the current nodes, and waits until
    /// it is ready.
    pub async fn add_node(&mut self, id: u64) -> anyhow::Result<()> {
        self.add_node_placed(id, &Placement::loopback()).await
    }

    /// Like [`add_node`](Self::add_node), with the new node at `placement`.
    pub async fn add_node_placed(&mut self, id: u64, placement: &Placement) -> anyhow::Result<()> {
        let node = self.new_node(id, placement).await?;
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.peer_addr()))
            .collect();
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        self.write_config(index, &format!("join = [{}]", peers.join(", ")))?;
        self.write_profile().await?;
        let node = &mut self.nodes[index];
        node.spawn()?;
        node.wait_ready().await
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("path is not UTF-8")
}

/// Runs `bin args…` to completion; fails with its output when it fails.
async fn run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
