//! The simulated transport: openraft's RPCs, and client writes, as serde_json frames over
//! turmoil TCP, so turmoil's partitions, holds, latency and crashes apply to them.
//!
//! One connection per call: the caller connects to `host:PORT`, sends one length-prefixed
//! [`Request`], reads one [`Reply`] and closes. A call that does not answer within its
//! deadline (openraft's `hard_ttl`, or the client's) is [`RPCError::Unreachable`], so
//! openraft backs off as it does with the node's gRPC transport.
//!
//! What it does not do: TLS, retries (openraft retries), forwarding writes (the client follows
//! [`WriteReply::Forward`] itself).

use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use starling_node::raft::types::{NodeId, Raft, TypeConfig};
use starling_node::raft::{ControlResponse, Entry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

/// The port every node serves on.
pub const PORT: u16 = 9000;
/// Frames larger than this are refused (a corrupt length would otherwise allocate).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What a caller asks a node.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// openraft's AppendEntries.
    Append(AppendEntriesRequest<TypeConfig>),
    /// openraft's RequestVote.
    Vote(VoteRequest<NodeId>),
    /// openraft's InstallSnapshot (one chunk).
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write: `Raft::client_write` on the node called.
    Write(Entry),
    /// Membership change on the node called: add `node` as a learner (waiting until it has
    /// caught up), then make the voters `voters`.
    Join { node: NodeId, voters: Vec<NodeId> },
}

/// What a node answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The answers of the same-named requests, as the remote `Raft` returned them.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// See [`Reply::Append`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// See [`Reply::Append`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The answer to [`Request::Write`] and [`Request::Join`].
    Write(WriteReply),
}

/// The answer to a client write.
#[derive(Debug, Serialize, Deserialize)]
pub enum WriteReply {
    /// Committed and applied on the leader at this log id.
    Applied {
        /// Log index of the entry.
        index: u64,
        /// Term of its leader id.
        term: u64,
        /// What the leader's state machine answered.
        response: ControlResponse,
    },
    /// This node does not lead; the leader it knows, if any.
    Forward(Option<NodeId>),
    /// Any other failure (openraft stopping, a membership error).
    Failed(String),
}

/// The turmoil host name of node `id`.
pub fn host(id: NodeId) -> String {
    format!("n{id}")
}

async fn write_frame<T: Serialize>(s: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&body).await?;
    s.flush().await
}

async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> std::io::Result<T> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Sends `req` to node `to` and waits up to `ttl` for its reply.
pub async fn call(to: NodeId, req: &Request, ttl: Duration) -> Result<Reply, String> {
    let exchange = async {
        let mut s = TcpStream::connect((host(to).as_str(), PORT)).await?;
        write_frame(&mut s, req).await?;
        read_frame::<Reply>(&mut s).await
    };
    match tokio::time::timeout(ttl, exchange).await {
        Err(_) => Err(format!("no answer from node {to} within {ttl:?}")),
        Ok(Err(e)) => Err(format!("node {to}: {e}")),
        Ok(Ok(reply)) => Ok(reply),
    }
}

/// Serves openraft RPCs and client writes for `raft` until the host stops.
pub async fn serve(raft: Raft) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(answer(stream, raft.clone()));
    }
}

async fn answer(mut s: TcpStream, raft: Raft) {
    let Ok(req) = read_frame::<Request>(&mut s).await else {
        return;
    };
    let reply = match req {
        Request::Append(r) => Reply::Append(raft.append_entries(r).await),
        Request::Vote(r) => Reply::Vote(raft.vote(r).await),
        Request::Snapshot(r) => Reply::Snapshot(raft.install_snapshot(r).await),
        Request::Write(e) => Reply::Write(written(raft.client_write(e).await)),
        Request::Join { node, voters } => {
            let addr = format!("{}:{PORT}", host(node));
            let learner = raft.add_learner(node, BasicNode::new(addr), true).await;
            Reply::Write(match learner {
                Ok(_) => written(raft.change_membership(voters, false).await),
                Err(e) => written(Err(e)),
            })
        }
    };
    let _ = write_frame(&mut s, &reply).await;
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

/// The client's view of a write's outcome.
fn written(r: WriteResult) -> WriteReply {
    match r {
        Ok(r) => WriteReply::Applied {
            index: r.log_id.index,
            term: r.log_id.leader_id.term,
            response: r.data,
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            WriteReply::Forward(f.leader_id)
        }
        Err(e) => WriteReply::Failed(e.to_string()),
    }
}

/// Makes [`Peer`]s for openraft.
#[derive(Clone, Debug, Default)]
pub struct Network;

/// openraft's client of one peer.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Peer {
        Peer { target }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Peer {
    async fn rpc(&self, req: Request, option: &RPCOption) -> Result<Reply, Unreachable> {
        call(self.target, &req, option.hard_ttl())
            .await
            .map_err(|e| Unreachable::new(&AnyError::error(e)))
    }
}

/// An answer of the wrong kind: a bug of the peer, not of the network.
fn mismatched<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, BasicNode, E> {
    let what = format!("unexpected reply {reply:?}");
    RPCError::Network(NetworkError::new(&AnyError::error(what)))
}

// The error type is openraft's, as its `RaftNetwork` methods return it.
#[allow(clippy::result_large_err)]
fn remote<T, E: std::error::Error>(
    target: NodeId,
    r: Result<T, RaftError<NodeId, E>>,
) -> RpcResult<T, E> {
    r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(target, e)))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.rpc(Request::Append(rpc), &option).await? {
            Reply::Append(r) => remote(self.target, r),
            other => Err(mismatched(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.rpc(Request::Snapshot(rpc), &option).await? {
            Reply::Snapshot(r) => remote(self.target, r),
            other => Err(mismatched(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Reply::Vote(r) => remote(self.target, r),
            other => Err(mismatched(&other)),
        }
    }
}
