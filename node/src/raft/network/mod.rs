//! Peer transport of the control plane, client side: openraft's [`RaftNetworkFactory`] and
//! [`RaftNetwork`] over the peer gRPC service `starling.peer.v1.Raft`, with mutual TLS.
//!
//! Each openraft request travels as the serde_json of the request in a `RaftPayload`; the
//! answer is the serde_json of `Result<Response, RaftError>`, so an error the remote Raft
//! returned comes back as [`RPCError::RemoteError`] (see [`server`]).
//!
//! Error mapping, chosen for openraft's retry behaviour:
//! - no connection (refused, TLS handshake or certificate refused, connect timeout, connection
//!   lost) or no answer within [`RPCOption::hard_ttl`] → [`RPCError::Unreachable`]: openraft
//!   backs off before retrying;
//! - any other gRPC failure (refused by the peer's interceptor, message too large, an
//!   undecodable answer) → [`RPCError::Network`];
//! - an AppendEntries request above [`PEER_MAX_MESSAGE`] → [`RPCError::PayloadTooLarge`], so
//!   openraft sends fewer entries per request.
//!
//! What it does not do: decide whom to call (openraft does), retry (openraft does), or serve
//! (that is [`server`]). Channels are cached per target node in the factory, so the clients
//! openraft makes for each election reuse one HTTP/2 connection per peer.

pub mod server;

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use starling_proto::peer::RaftPayload;
use starling_proto::peer::raft_client::RaftClient;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::types::{NodeId, TypeConfig};

/// The largest peer message either way, request or answer (tonic's default decoding limit).
/// A 1 MiB snapshot chunk is at most ~4 MiB of JSON (bytes are encoded as numbers), so
/// snapshot chunks must stay below ~1000 KiB; see [`server`].
pub const PEER_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on an idle peer connection, so a dead peer is noticed between RPCs.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes [`PeerClient`]s. Cheap to clone; clones share the channel cache.
#[derive(Clone)]
pub struct NetworkFactory {
    /// Presents this node's certificate and trusts only the cluster CA.
    tls: ClientTlsConfig,
    /// One channel per peer, with the address it dials: a node whose address changes gets a
    /// new channel. std Mutex: held only to look up or insert, never across an await.
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
}

impl NetworkFactory {
    /// A factory whose clients dial peers with `tls` (see `tls::PeerTls::client_config`).
    pub fn new(tls: ClientTlsConfig) -> NetworkFactory {
        NetworkFactory {
            tls,
            channels: Arc::default(),
        }
    }

    /// The cached channel to `target` at `addr`, or a new lazy one (no connection is made
    /// until the first RPC).
    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, channel)) = channels.get(&target)
            && cached == addr
        {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tls_config(self.tls.clone())
            .map_err(|e| format!("peer TLS configuration refused: {}", chain(&e)))?
            .connect_lazy();
        channels.insert(target, (addr.to_owned(), channel.clone()));
        Ok(channel)
    }
}

impl std::fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkFactory").finish_non_exhaustive()
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            factory: self.clone(),
            channel: None,
        }
    }
}

/// openraft's client for one peer: sends its RPCs over the peer gRPC port.
pub struct PeerClient {
    target: NodeId,
    /// The peer as the membership names it; `addr` is its peer port, `host:port`.
    node: BasicNode,
    /// Where channels come from (and are shared with other clients of the same peer).
    factory: NetworkFactory,
    /// The channel, once the first RPC asked for it.
    channel: Option<Channel>,
}

/// The three RPCs of the peer `Raft` service.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::InstallSnapshot => "InstallSnapshot",
        })
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    /// Sends `data` (an encoded request) as `rpc` and decodes the answer, within `ttl`.
    async fn call<Resp, E>(&mut self, rpc: Rpc, data: Vec<u8>, ttl: Duration) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = match &self.channel {
            Some(channel) => channel.clone(),
            None => {
                let channel = self
                    .factory
                    .channel(self.target, &self.node.addr)
                    .map_err(|e| self.unreachable(rpc, e))?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(PEER_MAX_MESSAGE)
            .max_encoding_message_size(PEER_MAX_MESSAGE);
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let call = async move {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_) => return Err(self.unreachable(rpc, format!("no answer within {ttl:?}"))),
            Ok(Err(status)) => return Err(self.status_error(rpc, &status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let answer: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.data)
            .map_err(|e| self.network(rpc, format!("undecodable answer: {e}")))?;
        answer.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// `req` as JSON, refused above [`PEER_MAX_MESSAGE`] (`entries` = how many log entries it
    /// carries, for openraft's hint to send fewer).
    #[allow(clippy::result_large_err)] // openraft's error type, which the trait methods return
    fn encode<E: std::error::Error>(
        &self,
        rpc: Rpc,
        req: &impl Serialize,
        entries: usize,
    ) -> RpcResult<Vec<u8>, E> {
        let data = serde_json::to_vec(req)
            .map_err(|e| self.network(rpc, format!("request does not encode: {e}")))?;
        if data.len() <= PEER_MAX_MESSAGE {
            return Ok(data);
        }
        if entries > 1 {
            let hint = (entries / 2) as u64;
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        Err(self.network(
            rpc,
            format!(
                "request of {} bytes exceeds the peer message limit of {PEER_MAX_MESSAGE} bytes \
                 (for InstallSnapshot: lower the snapshot chunk size)",
                data.len()
            ),
        ))
    }

    /// A gRPC failure: no connection (or no answer) is `Unreachable`, the rest `Network`.
    fn status_error<E: std::error::Error>(
        &self,
        rpc: Rpc,
        status: &tonic::Status,
    ) -> RPCError<NodeId, BasicNode, E> {
        let detail = describe(status);
        if is_unreachable(status) {
            self.unreachable(rpc, detail)
        } else {
            self.network(rpc, detail)
        }
    }

    fn unreachable<E: std::error::Error>(
        &self,
        rpc: Rpc,
        detail: String,
    ) -> RPCError<NodeId, BasicNode, E> {
        let message = self.context(rpc, &detail);
        tracing::debug!(target = self.target, "{message}");
        RPCError::Unreachable(Unreachable::from(AnyError::error(message)))
    }

    fn network<E: std::error::Error>(
        &self,
        rpc: Rpc,
        detail: String,
    ) -> RPCError<NodeId, BasicNode, E> {
        let message = self.context(rpc, &detail);
        tracing::debug!(target = self.target, "{message}");
        RPCError::Network(NetworkError::from(AnyError::error(message)))
    }

    fn context(&self, rpc: Rpc, detail: &str) -> String {
        format!(
            "{rpc} to node {} at {}: {detail}",
            self.target, self.node.addr
        )
    }
}

/// Whether a failed call means the peer could not be reached: tonic reports connection
/// failures (refused, connect timeout) as `UNAVAILABLE` and an expired deadline as
/// `DEADLINE_EXCEEDED`. A connection that breaks under the call is `UNKNOWN` with the
/// transport or IO error as its source: with TLS 1.3 the server checks the client's
/// certificate after the client considers the handshake done, so a refused certificate shows
/// up that way ("received fatal alert: …").
fn is_unreachable(status: &tonic::Status) -> bool {
    if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
        return true;
    }
    let mut next = status.source();
    while let Some(source) = next {
        if source.is::<tonic::transport::Error>() || source.is::<std::io::Error>() {
            return true;
        }
        next = source.source();
    }
    false
}

/// `code: message: root cause` of a failed call, on one line (the layers between, "transport
/// error" and the like, repeat the message).
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut root = None;
    let mut next = status.source();
    while let Some(source) = next {
        root = Some(source);
        next = source.source();
    }
    if let Some(root) = root.map(|e| e.to_string())
        && !text.contains(&root)
    {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// An error and its sources, `a: b: c`, skipping a source whose text its parent already has.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let data = self.encode(Rpc::AppendEntries, &rpc, rpc.entries.len())?;
        self.call(Rpc::AppendEntries, data, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let data = self.encode(Rpc::InstallSnapshot, &rpc, 0)?;
        self.call(Rpc::InstallSnapshot, data, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let data = self.encode(Rpc::Vote, &rpc, 0)?;
        self.call(Rpc::Vote, data, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_means_no_connection_or_no_answer() {
        use tonic::Status;
        for (status, unreachable) in [
            (Status::unavailable("connection refused"), true),
            (Status::deadline_exceeded("timeout"), true),
            (Status::permission_denied("node certificates only"), false),
            (Status::out_of_range("message too large"), false),
            (Status::internal("bug"), false),
            (Status::invalid_argument("undecodable"), false),
        ] {
            assert_eq!(is_unreachable(&status), unreachable, "{status:?}");
        }
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: UnknownCA",
        );
        let broken = Status::from_error(Box::new(alert));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert!(is_unreachable(&broken), "{broken:?}");
    }

    #[tokio::test]
    async fn oversized_append_entries_asks_openraft_for_fewer_entries() {
        let mut factory = NetworkFactory::new(ClientTlsConfig::new());
        let client = factory.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let big = vec![0u8; PEER_MAX_MESSAGE];
        let err = client
            .encode::<openraft::error::Infallible>(Rpc::AppendEntries, &big, 10)
            .expect_err("too large");
        match err {
            RPCError::PayloadTooLarge(p) => assert_eq!(p.entries_hint(), 5),
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        let err = client
            .encode::<openraft::error::Infallible>(Rpc::InstallSnapshot, &big, 0)
            .expect_err("too large");
        assert!(
            matches!(&err, RPCError::Network(e) if e.to_string().contains("snapshot chunk size")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn clients_of_one_peer_share_a_channel_until_its_address_changes() {
        let factory = NetworkFactory::new(ClientTlsConfig::new());
        factory.channel(2, "127.0.0.1:1").expect("first");
        factory.channel(2, "127.0.0.1:1").expect("again");
        assert_eq!(factory.channels.lock().expect("lock").len(), 1);
        factory.channel(2, "127.0.0.1:2").expect("moved");
        let channels = factory.channels.lock().expect("lock");
        assert_eq!(
            channels.get(&2).map(|(a, _)| a.as_str()),
            Some("127.0.0.1:2")
        );
        drop(channels);
        assert!(factory.channel(3, "not a host:port/").is_err());
    }
}
