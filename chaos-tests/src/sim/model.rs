//! The simulated hosts: one leader holding the shard map and granting leases, and nodes that
//! heartbeat, apply grants and record when they served which shard (in true simulated time).
//!
//! Protocol (DESIGN.md §3, ARCHITECTURE.md "Ownership and leases"), as modelled:
//! - a node sends `hb NODE SENT` every heartbeat, `SENT` on its own (drifting) clock;
//! - the leader answers `grant SENT UNTIL SHARDS` with `UNTIL = SENT + lease` (on the node's
//!   clock, so the lease starts before the leader even saw the heartbeat) and only the shards
//!   the map gives the node *and* whose activation time has passed;
//! - the node applies a grant only if it answers a newer heartbeat than the last applied one
//!   (late datagrams arrive out of order), and serves exactly those shards until `UNTIL`;
//! - the leader declares a node down after `failure_timeout` without a heartbeat (counted from
//!   its own start, after a leader restart) and moves its shards at once; shards taken from a
//!   *live* node (rebalancing onto a returning node) activate only `lease + drift_margin` later.
//!
//! The leader's map lives in [`Shared::map`], which survives a leader crash: it stands for the
//! Raft state machine, whose replication this model does not simulate.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use turmoil::net::UdpSocket;

use super::placement;
use crate::checkers::lease_overlap::Interval;

/// UDP port of every simulated host.
pub const PORT: u16 = 9000;

/// Timings and knobs of one simulation.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub heartbeat_ms: i64,
    pub lease_ms: i64,
    pub failure_timeout_ms: i64,
    pub drift_margin_ms: i64,
    /// Activation delay for shards moved off a live node; the protocol says lease + margin.
    pub move_delay_ms: i64,
    /// Largest clock rate error of a node (0.01 = 1 %).
    pub max_drift: f64,
    pub shards: usize,
}

impl Config {
    /// The defaults of `starling serve` (lease 1.5 s, failure timeout 2.5 s, heartbeat 250 ms).
    pub fn starling_defaults() -> Config {
        Config {
            heartbeat_ms: 250,
            lease_ms: 1500,
            failure_timeout_ms: 2500,
            drift_margin_ms: 500,
            move_delay_ms: 2000,
            max_drift: 0.01,
            shards: 32,
        }
    }
}

/// One shard's owner in the leader's map.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub node: u64,
    /// True time (ms) from which the owner may be granted the shard.
    pub active_from: i64,
}

/// State shared by the hosts and the runner (single-threaded simulation).
#[derive(Debug, Default)]
pub struct Shared {
    /// The replicated shard map (survives leader crashes).
    pub map: Vec<Owner>,
    /// Nodes the leader considers up.
    pub up: BTreeSet<u64>,
    /// Every serving interval of every node, per shard (true ms).
    pub served: BTreeMap<u32, Vec<Interval>>,
}

/// True simulated time in ms.
pub fn true_ms() -> i64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as i64)
}

async fn socket() -> std::io::Result<UdpSocket> {
    UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await
}

/// The leader host.
pub async fn leader(cfg: Config, nodes: Vec<u64>, shared: Rc<RefCell<Shared>>) -> turmoil::Result {
    let sock = socket().await?;
    let started = true_ms();
    let mut last_seen: BTreeMap<u64, i64> = nodes.iter().map(|n| (*n, started)).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            // A heartbeat: note it, answer with a grant.
            r = sock.recv_from(&mut buf) => {
                let (n, from) = r?;
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some((node, sent)) = parse_heartbeat(&text) else { continue };
                let now = true_ms();
                last_seen.insert(node, now);
                let shards = grantable(&mut shared.borrow_mut(), cfg, node, now);
                let reply = format!("grant {sent} {} {}", sent + cfg.lease_ms, shards.join(","));
                sock.send_to(reply.as_bytes(), from).await?;
            }
            // Supervisor round: declare silent nodes down and move their shards at once.
            _ = tick.tick() => {
                let now = true_ms();
                let mut s = shared.borrow_mut();
                let dead: Vec<u64> = s.up.iter().copied()
                    .filter(|n| now - last_seen.get(n).copied().unwrap_or(started) > cfg.failure_timeout_ms)
                    .collect();
                if !dead.is_empty() {
                    for n in dead {
                        s.up.remove(&n);
                    }
                    rebalance(&mut s, cfg, now);
                }
            }
        }
    }
}

/// Marks `node` up (rebalancing when it was not) and lists the shards it may be granted now.
fn grantable(s: &mut Shared, cfg: Config, node: u64, now: i64) -> Vec<String> {
    if s.up.insert(node) {
        rebalance(s, cfg, now);
    }
    s.map
        .iter()
        .enumerate()
        .filter(|(_, o)| o.node == node && o.active_from <= now)
        .map(|(i, _)| i.to_string())
        .collect()
}

/// Applies placement moves: shards of down nodes activate at once, shards taken from live
/// nodes after the move delay.
fn rebalance(s: &mut Shared, cfg: Config, now: i64) {
    let live: Vec<u64> = s.up.iter().copied().collect();
    let map: placement::Map = s.map.iter().map(|o| o.node).collect();
    for (shard, to) in placement::moves(&map, &live) {
        let from_live = live.contains(&s.map[shard].node);
        let delay = if from_live { cfg.move_delay_ms } else { 0 };
        s.map[shard] = Owner {
            node: to,
            active_from: now + delay,
        };
    }
}

fn parse_heartbeat(text: &str) -> Option<(u64, i64)> {
    let mut parts = text.split(' ');
    (parts.next()? == "hb").then_some(())?;
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn parse_grant(text: &str) -> Option<(i64, i64, Vec<u32>)> {
    let mut parts = text.split(' ');
    (parts.next()? == "grant").then_some(())?;
    let sent = parts.next()?.parse().ok()?;
    let until = parts.next()?.parse().ok()?;
    let shards = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    Some((sent, until, shards))
}

/// A node host; `drift` is its clock rate error (local = true × (1 + drift)).
pub async fn node(
    cfg: Config,
    id: u64,
    drift: f64,
    shared: Rc<RefCell<Shared>>,
) -> turmoil::Result {
    let sock = socket().await?;
    let local = |t: i64| (t as f64 * (1.0 + drift)) as i64;
    let true_of = |l: i64| (l as f64 / (1.0 + drift)).ceil() as i64;
    let mut beat = tokio::time::interval(Duration::from_millis(cfg.heartbeat_ms as u64));
    let mut applied_sent = i64::MIN;
    let mut serving: Vec<u32> = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            // Heartbeat to the leader.
            _ = beat.tick() => {
                let msg = format!("hb {id} {}", local(true_ms()));
                // A partitioned link drops the datagram; that is the point.
                let _ = sock.send_to(msg.as_bytes(), ("leader", PORT)).await;
            }
            // A grant: apply it if it answers a newer heartbeat and is still valid.
            r = sock.recv_from(&mut buf) => {
                let (n, _) = r?;
                let Some((sent, until, shards)) = parse_grant(&String::from_utf8_lossy(&buf[..n])) else { continue };
                let now = true_ms();
                if sent <= applied_sent || until <= local(now) {
                    continue;
                }
                applied_sent = sent;
                let until_true = true_of(until);
                let mut s = shared.borrow_mut();
                // Shards no longer granted stop being served now.
                for shard in serving.iter().filter(|x| !shards.contains(x)) {
                    if let Some(iv) = s.served.get_mut(shard).and_then(|l| l.iter_mut().rev().find(|iv| iv.node == id)) {
                        iv.to = iv.to.min(now);
                    }
                }
                for shard in &shards {
                    s.served.entry(*shard).or_default().push(Interval { node: id, from: now, to: until_true });
                }
                serving = shards;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        assert_eq!(parse_heartbeat("hb 3 1200"), Some((3, 1200)));
        assert_eq!(parse_heartbeat("grant 1 2 3"), None);
        assert_eq!(
            parse_grant("grant 10 1510 0,5,7"),
            Some((10, 1510, vec![0, 5, 7]))
        );
        assert_eq!(parse_grant("grant 10 1510 "), Some((10, 1510, vec![])));
        assert_eq!(parse_grant("grant x"), None);
    }
}
