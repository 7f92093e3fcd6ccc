//! The network lab: one Linux bridge in a namespace of its own and one network namespace per
//! node, joined by veth pairs, addresses in a private /24 that only this harness uses
//! ([`SUBNET`]). The root namespace (broker, workload clients) joins the bridge through one
//! more veth pair at [`BRIDGE_ADDR`]. The bridge lives in its own namespace so the host's
//! firewall (e.g. Docker's `FORWARD DROP` with `bridge-nf-call-iptables`) never sees the
//! node-to-node traffic. Needs root. Everything is named with [`PREFIX`]; stale leftovers of a
//! crashed run are removed at start, and [`Lab`]'s `Drop` tears everything down (also on
//! panic; the runner turns Ctrl-C into an ordinary error so `Drop` runs then too).
//!
//! The lab only ever touches its own namespaces, links and mounts: every command names one
//! of them, and `Lab::nft` refuses a namespace without the prefix.

pub mod nft;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::schedule::Fault;

/// Prefix of every namespace, link and mount the lab creates.
pub const PREFIX: &str = "stch";
/// The lab's /24: the bridge is `.1`, node N is `.(10 + N)`.
pub const SUBNET: &str = "10.213.77";
/// The bridge (root namespace) address, where the broker listens for the nodes.
pub const BRIDGE_ADDR: &str = "10.213.77.1";

/// The namespace holding the bridge.
fn bridge_ns() -> String {
    format!("{PREFIX}-br")
}

/// The bridge device, inside [`bridge_ns`].
const BRIDGE_DEV: &str = "br0";

/// Namespace of node `id`.
pub fn netns_name(id: u64) -> String {
    format!("{PREFIX}-n{id}")
}

/// Address of node `id`.
pub fn node_addr(id: u64) -> String {
    format!("{SUBNET}.{}", 10 + id)
}

/// Whether this process may run the lab (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command to completion; fails with its stderr.
fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces, bridge and tmpfs mounts of one run.
#[derive(Debug)]
pub struct Lab {
    nodes: Vec<u64>,
    mounts: Vec<PathBuf>,
}

impl Lab {
    /// Removes stale lab objects, then creates the bridge and a namespace per node id.
    pub fn setup(nodes: &[u64]) -> anyhow::Result<Lab> {
        if !is_root() {
            bail!("the chaos lab needs root (network namespaces, nftables, tmpfs mounts)");
        }
        cleanup_stale();
        let mut lab = Lab {
            nodes: Vec::new(),
            mounts: Vec::new(),
        };
        let br = bridge_ns();
        sh("ip", &["netns", "add", &br])?;
        sh(
            "ip",
            &["-n", &br, "link", "add", BRIDGE_DEV, "type", "bridge"],
        )?;
        sh("ip", &["-n", &br, "link", "set", BRIDGE_DEV, "up"])?;
        // The root namespace's port on the bridge.
        let (root_end, bridge_end) = (format!("{PREFIX}-h0"), format!("{PREFIX}-b0"));
        sh(
            "ip",
            &[
                "link",
                "add",
                &root_end,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_end,
            ],
        )?;
        sh("ip", &["link", "set", &bridge_end, "netns", &br])?;
        sh(
            "ip",
            &[
                "-n",
                &br,
                "link",
                "set",
                &bridge_end,
                "master",
                BRIDGE_DEV,
                "up",
            ],
        )?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{BRIDGE_ADDR}/24"),
                "dev",
                &root_end,
            ],
        )?;
        sh("ip", &["link", "set", &root_end, "up"])?;
        for id in nodes {
            lab.add_node(*id)?;
        }
        Ok(lab)
    }

    fn add_node(&mut self, id: u64) -> anyhow::Result<()> {
        let ns = netns_name(id);
        let (br, outer) = (bridge_ns(), format!("{PREFIX}-b{id}"));
        let inner = format!("{PREFIX}-c{id}");
        sh("ip", &["netns", "add", &ns])?;
        self.nodes.push(id);
        sh(
            "ip",
            &[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
        )?;
        sh("ip", &["link", "set", &inner, "netns", &ns])?;
        sh("ip", &["link", "set", &outer, "netns", &br])?;
        sh(
            "ip",
            &["-n", &br, "link", "set", &outer, "master", BRIDGE_DEV, "up"],
        )?;
        let addr = format!("{}/24", node_addr(id));
        sh("ip", &["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        sh("ip", &["-n", &ns, "link", "set", &inner, "up"])?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Node ids that have a namespace.
    pub fn nodes(&self) -> &[u64] {
        &self.nodes
    }

    /// Mounts a tmpfs of `mib` MiB at `dir` (a node's data dir), for the disk-full fault.
    pub fn mount_tmpfs(&mut self, dir: &Path, mib: u64) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.to_str().context("data dir is not UTF-8")?;
        let opts = format!("size={mib}m");
        sh(
            "mount",
            &["-t", "tmpfs", "-o", &opts, &format!("{PREFIX}-data"), path],
        )?;
        self.mounts.push(dir.to_owned());
        Ok(())
    }

    /// Loads node `id`'s share of `fault` into its namespace (nothing when untouched).
    pub fn apply_network_fault(&self, fault: &Fault) -> anyhow::Result<()> {
        for id in &self.nodes {
            if let Some(rules) = nft::ruleset(fault, *id, &self.nodes, &|n| node_addr(n)) {
                self.nft(&netns_name(*id), &rules)?;
            }
        }
        Ok(())
    }

    /// Removes every fault table from every node namespace.
    pub fn heal_network(&self) {
        for id in &self.nodes {
            let ns = netns_name(*id);
            // Absent when the fault did not touch this node: not an error.
            let _ = sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    nft::TABLE,
                ],
            );
        }
    }

    fn nft(&self, ns: &str, rules: &str) -> anyhow::Result<()> {
        if !ns.starts_with(PREFIX) {
            bail!("refusing to touch namespace {ns}: not one of the lab's");
        }
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {ns} failed: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for dir in self.mounts.drain(..) {
            let _ = sh("umount", &["-l", &dir.display().to_string()]);
        }
        for id in self.nodes.drain(..) {
            let _ = sh("ip", &["netns", "del", &netns_name(id)]);
        }
        // Deleting a veth end deletes its peer; the bridge goes with its namespace.
        let _ = sh("ip", &["link", "del", &format!("{PREFIX}-h0")]);
        let _ = sh("ip", &["netns", "del", &bridge_ns()]);
    }
}

/// Deletes lab objects a crashed run left behind: namespaces, links and tmpfs mounts whose
/// names start with [`PREFIX`]. Touches nothing else.
pub fn cleanup_stale() {
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for line in mounts.lines() {
            let mut fields = line.split_whitespace();
            if fields.next() == Some(&format!("{PREFIX}-data"))
                && let Some(target) = fields.next()
            {
                let _ = sh("umount", &["-l", target]);
            }
        }
    }
    if let Ok(list) = sh("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(&format!("{PREFIX}-")) {
                let _ = sh("ip", &["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = sh("ip", &["-o", "link", "show"]) {
        for name in links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
        {
            if name.starts_with(&format!("{PREFIX}-")) {
                let _ = sh("ip", &["link", "del", &name]);
            }
        }
    }
}

/// Fills the filesystem holding `dir` with a filler file until it is full (ENOSPC).
pub fn fill_disk(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("chaos-filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(path),
            Err(e) => return Err(e).context("filling the data dir"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_carry_the_prefix() {
        for id in [1, 5, 99] {
            let names = [
                netns_name(id),
                format!("{PREFIX}-b{id}"),
                format!("{PREFIX}-c{id}"),
                bridge_ns(),
            ];
            for n in names {
                assert!(n.len() <= 15 && n.starts_with(PREFIX), "{n}");
            }
        }
        assert_eq!(node_addr(3), "10.213.77.13");
    }
}
