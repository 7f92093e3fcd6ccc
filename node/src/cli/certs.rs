//! `starling certs`: a cluster's certificates, made in one directory.
//!
//! - `init`: the cluster CA, `DIR/ca.pem` and `DIR/ca.key` (mode 0600).
//! - `node`: node N's certificate, `DIR/node-N.pem` and `.key`, for its peer and client ports.
//! - `client`: a client certificate, `DIR/client-NAME.pem` and `.key`, and the client profile
//!   `DIR/client-NAME.toml` the CLI and SDK read (`--profile`).
//!
//! Nothing is overwritten without `--force`. Keys are written mode 0600, through a temporary
//! file and a rename.
//!
//! What it does not do: revoke or rotate, or keep the CA key anywhere but `DIR`: whoever can
//! read `DIR/ca.key` can mint nodes and clients, so keep it off the nodes in production.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use starling_sdk::Profile;

use crate::certs::{
    self, CLUSTER_CA_CN, Ca, IssuedCert, absolute, endpoint_url, make_client_cert, make_node_cert,
};

/// `starling certs …`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// Certificate verbs.
#[derive(Debug, Clone, Subcommand)]
pub enum CertsCommand {
    /// Make the cluster CA: DIR/ca.pem and DIR/ca.key.
    Init {
        #[command(flatten)]
        out: Output,
    },
    /// Make node N's certificate (its peer and client ports): DIR/node-N.pem and .key.
    Node {
        #[command(flatten)]
        out: Output,
        /// The node's id (the `urn:starling:node:<id>` its peers see).
        #[arg(long, value_name = "N")]
        id: u64,
        /// A DNS name or IP address peers and clients use to reach the node; repeat for more.
        #[arg(
            long = "host",
            value_name = "HOST",
            value_parser = parse_host,
            default_values_t = ["127.0.0.1".to_owned(), "localhost".to_owned()]
        )]
        hosts: Vec<String>,
    },
    /// Make a client certificate and its profile: DIR/client-NAME.pem, .key and .toml.
    Client {
        #[command(flatten)]
        out: Output,
        /// The client's name (the `urn:starling:client:<name>` servers see).
        #[arg(long, value_parser = parse_client_name)]
        name: String,
        /// A node's client port, `https://host:port`; repeat for failover.
        #[arg(
            long = "endpoint",
            value_name = "URL",
            default_values_t = ["https://127.0.0.1:7600".to_owned()]
        )]
        endpoints: Vec<String>,
    },
}

/// Where certificates go, shared by every verb.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// The certificate directory (holds the CA).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `certs` verb and prints the files it wrote, one per line.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let written = match args.command {
        CertsCommand::Init { out } => init(&out)?,
        CertsCommand::Node { out, id, hosts } => node(&out, id, &hosts)?,
        CertsCommand::Client {
            out,
            name,
            endpoints,
        } => client(&out, &name, &endpoints)?,
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn init(out: &Output) -> anyhow::Result<Vec<PathBuf>> {
    let dir = absolute(&out.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    refuse_overwrite(out.force, &[&cert, &key])?;
    let ca = certs::make_ca(CLUSTER_CA_CN)?;
    certs::write_file(&key, &ca.key_pem(), true)?;
    certs::write_file(&cert, ca.cert_pem(), false)?;
    Ok(vec![cert, key])
}

fn node(out: &Output, id: u64, hosts: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let (dir, ca) = load_ca(&out.dir)?;
    let (cert, key) = (
        dir.join(format!("node-{id}.pem")),
        dir.join(format!("node-{id}.key")),
    );
    refuse_overwrite(out.force, &[&cert, &key])?;
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    write_pair(&make_node_cert(&ca, id, &hosts)?, &cert, &key)?;
    Ok(vec![cert, key])
}

fn client(out: &Output, name: &str, endpoints: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let (dir, ca) = load_ca(&out.dir)?;
    let (cert, key, profile) = (
        dir.join(format!("client-{name}.pem")),
        dir.join(format!("client-{name}.key")),
        dir.join(format!("client-{name}.toml")),
    );
    refuse_overwrite(out.force, &[&cert, &key, &profile])?;
    write_pair(&make_client_cert(&ca, name)?, &cert, &key)?;
    let endpoint: Vec<String> = endpoints.iter().map(|e| endpoint_url(e)).collect();
    let text = toml::to_string(&Profile {
        endpoint: endpoint.join(","),
        ca: dir.join("ca.pem"),
        cert: cert.clone(),
        key: key.clone(),
        server_name: None,
    })?;
    certs::write_file(&profile, &text, false)?;
    Ok(vec![cert, key, profile])
}

/// The absolute `dir` and the CA in it, or an error saying how to make one.
fn load_ca(dir: &Path) -> anyhow::Result<(PathBuf, Ca)> {
    let abs = absolute(dir)?;
    let (cert, key) = (abs.join("ca.pem"), abs.join("ca.key"));
    for path in [&cert, &key] {
        if !path.exists() {
            bail!(
                "{} not found — run `starling certs init --dir {}` first",
                path.display(),
                dir.display()
            );
        }
    }
    Ok((abs, Ca::load(&cert, &key)?))
}

fn refuse_overwrite(force: bool, paths: &[&Path]) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        bail!(
            "{} already exists — pass --force to replace it",
            existing.display()
        );
    }
    Ok(())
}

fn write_pair(issued: &IssuedCert, cert: &Path, key: &Path) -> anyhow::Result<()> {
    certs::write_file(key, &issued.key_pem, true)?;
    certs::write_file(cert, &issued.cert_pem, false)?;
    Ok(())
}

/// An IP address, or a DNS name of letters, digits, `-` and `.` (no port, no scheme).
fn parse_host(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let valid = !s.is_empty()
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is neither an IP address nor a DNS name (give the host without a port)"
        ))
    }
}

fn parse_client_name(s: &str) -> Result<String, String> {
    certs::check_client_name(s)
        .map(|()| s.to_owned())
        .map_err(|reason| format!("invalid client name {s:?}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["127.0.0.1", "::1", "localhost", "node-1.example.com"] {
            assert!(parse_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "h:7600", "https://h", "-h", "a b", "é.example"] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }
}
