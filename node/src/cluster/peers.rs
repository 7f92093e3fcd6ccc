//! Clients of other nodes' peer ports: one lazily connected mTLS channel per address, and
//! typed calls of the `Control` and `Data` peer services.
//!
//! Errors become [`PeerError`]: `Unreachable` (connect failure, timeout, the peer said
//! UNAVAILABLE) is retryable elsewhere or later; `Refused` is an answer that will not change.
//! This file also implements the control plane's [`LeaderForward`] over `Control.Write`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use starling_proto::peer as pb;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::Renewal;
use crate::raft::{ControlCommand, ControlError, ControlResponse, LeaderForward};

/// Connect timeout of peer channels.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default deadline of one peer call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or was not ready; retry (maybe elsewhere).
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer refused the call; retrying the same call will not help.
    #[error("peer {addr} refused: {reason}")]
    Refused { addr: String, reason: String },
}

impl PeerError {
    fn from_status(addr: &str, s: tonic::Status) -> Self {
        use tonic::Code;
        let reason = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                PeerError::Unreachable {
                    addr: addr.to_owned(),
                    reason,
                }
            }
            _ => PeerError::Refused {
                addr: addr.to_owned(),
                reason,
            },
        }
    }
}

/// A peer's answer to a lease renewal.
#[derive(Debug)]
pub struct HeartbeatAnswer {
    /// Granted, or the reason it was not.
    pub granted: Result<(), String>,
    /// The peer has applied this node's removal from the cluster.
    pub removed: bool,
}

/// Channels to peers, shared by every caller on this node. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    tls: ClientTlsConfig,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// `tls` presents this node's certificate and trusts only the cluster CA.
    pub fn new(tls: ClientTlsConfig) -> Self {
        Self {
            tls,
            channels: Arc::default(),
        }
    }

    /// The channel to `addr` ("host:port"), created on first use and kept.
    pub fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let unreachable = |e: tonic::transport::Error| PeerError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        };
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(unreachable)?
            .tls_config(self.tls.clone())
            .map_err(unreachable)?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub fn control(
        &self,
        addr: &str,
    ) -> Result<pb::control_client::ControlClient<Channel>, PeerError> {
        Ok(pb::control_client::ControlClient::new(self.channel(addr)?))
    }

    pub fn data(&self, addr: &str) -> Result<pb::data_client::DataClient<Channel>, PeerError> {
        Ok(pb::data_client::DataClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024))
    }

    /// Renews this node's lease with the leader at `addr`; `Ok(Err(reason))` when refused.
    pub async fn heartbeat(
        &self,
        addr: &str,
        renewal: Renewal,
        timeout: Duration,
    ) -> Result<HeartbeatAnswer, PeerError> {
        let ago = Instant::now().saturating_duration_since(renewal.prior_ack);
        let mut req = tonic::Request::new(pb::HeartbeatRequest {
            node_id: renewal.node,
            applied_index: renewal.applied,
            term: renewal.term,
            // Rounded down: the leader's bound (its receive time minus this) is never early.
            prior_leader_ack_ago_us: ago.as_micros().try_into().unwrap_or(u64::MAX),
        });
        req.set_timeout(timeout);
        let reply = self
            .control(addr)?
            .heartbeat(req)
            .await
            .map_err(|s| PeerError::from_status(addr, s))?
            .into_inner();
        Ok(HeartbeatAnswer {
            granted: if reply.granted {
                Ok(())
            } else {
                Err(reply.reason)
            },
            removed: reply.removed,
        })
    }

    /// Asks the member at `addr` to add this node to the cluster.
    pub async fn join(
        &self,
        addr: &str,
        node_id: u64,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<pb::JoinReply, PeerError> {
        let mut req = tonic::Request::new(pb::JoinRequest {
            node_id,
            peer_addr: peer_addr.to_owned(),
            client_addr: client_addr.to_owned(),
        });
        // Adding a learner waits until it has caught up with the log.
        req.set_timeout(Duration::from_secs(60));
        self.control(addr)?
            .join(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| PeerError::from_status(addr, s))
    }

    /// Asks the member at `addr` (forwarded to the leader) to remove `node_id`.
    pub async fn remove(&self, addr: &str, node_id: u64) -> Result<(), PeerError> {
        self.control(addr)?
            .remove(pb::RemoveRequest { node_id })
            .await
            .map(|_| ())
            .map_err(|s| PeerError::from_status(addr, s))
    }
}

#[async_trait]
impl LeaderForward for Peers {
    async fn forward(
        &self,
        leader: u64,
        addr: &str,
        cmd: &ControlCommand,
    ) -> Result<(u64, ControlResponse), ControlError> {
        let command = serde_json::to_vec(cmd).map_err(ControlError::fatal)?;
        let mut client = self
            .control(addr)
            .map_err(|e| ControlError::unavailable(e.to_string()))?;
        let reply = client
            .write(pb::ControlWriteRequest { command })
            .await
            .map_err(|s| match PeerError::from_status(addr, s) {
                PeerError::Unreachable { reason, .. } => {
                    ControlError::unavailable(format!("leader {leader} at {addr}: {reason}"))
                }
                PeerError::Refused { reason, .. } => ControlError::fatal(format!(
                    "leader {leader} at {addr} refused the write: {reason}"
                )),
            })?
            .into_inner();
        let response = serde_json::from_slice(&reply.response).map_err(ControlError::fatal)?;
        Ok((reply.index, response))
    }
}
