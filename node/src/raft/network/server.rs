//! Peer transport of the control plane, server side: the peer gRPC service
//! `starling.peer.v1.Raft`, handing each request to the local openraft instance.
//!
//! Each request is the serde_json of an openraft request; each answer is the serde_json of
//! `Result<Response, RaftError>`, so a Raft-level refusal (e.g. a snapshot chunk out of order)
//! reaches the caller as a value, not as a gRPC error. gRPC errors are kept for what is not
//! Raft's answer: an undecodable request (`INVALID_ARGUMENT`) or a caller that is not a node
//! (`PERMISSION_DENIED`, from [`require_node_cert`]).
//!
//! What it does not do: TLS (the peer server is built with `tls::PeerTls::server_config`), or
//! serve the other peer services (`Control`, `Data`), which live with the cluster layer and
//! are mounted on the same port by whoever builds the server. [`raft_routes`] is the piece to
//! mount.

use std::sync::Arc;
use std::time::Instant;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use starling_proto::peer::RaftPayload;
use starling_proto::peer::raft_server::{Raft as RaftService, RaftServer};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::PEER_MAX_MESSAGE;
use crate::raft::contact::LeaderContact;
use crate::raft::types::{NodeId, Raft, TypeConfig};
use crate::tls::require_node_cert;

/// The interceptor type of peer services: [`require_node_cert`].
pub type NodeCertCheck = fn(Request<()>) -> Result<Request<()>, Status>;

/// The peer `Raft` service behind the node-certificate check, ready for
/// `Server::add_service`.
pub type RaftRoutes = InterceptedService<RaftServer<RaftPeerService>, NodeCertCheck>;

/// The `Raft` service for `raft`, with message limits of [`PEER_MAX_MESSAGE`], behind
/// [`require_node_cert`]. Serve it only on a server configured with the peer TLS.
/// Acknowledged AppendEntries are recorded in `contact`.
pub fn raft_routes(raft: Raft, contact: Arc<LeaderContact>) -> RaftRoutes {
    let server = RaftServer::new(RaftPeerService::new(raft, contact))
        .max_decoding_message_size(PEER_MAX_MESSAGE)
        .max_encoding_message_size(PEER_MAX_MESSAGE);
    InterceptedService::new(server, require_node_cert as NodeCertCheck)
}

/// Implements the peer `Raft` service by calling the local openraft instance.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft,
    contact: Arc<LeaderContact>,
}

impl RaftPeerService {
    pub fn new(raft: Raft, contact: Arc<LeaderContact>) -> RaftPeerService {
        RaftPeerService { raft, contact }
    }
}

#[tonic::async_trait]
impl RaftService for RaftPeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode("AppendEntries", request)?;
        let term = req.vote.leader_id().term;
        // In flight from here: a new leader asking meanwhile gets "now" as the bound.
        let call = self.contact.begin(term);
        let result = self.raft.append_entries(req).await;
        // Anything but a higher vote acknowledges the sender as leader of `term`.
        let acknowledged = matches!(
            &result,
            Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))
        );
        call.end(acknowledged, Instant::now());
        answer(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let req: VoteRequest<NodeId> = decode("Vote", request)?;
        answer(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode("InstallSnapshot", request)?;
        answer(&self.raft.install_snapshot(req).await)
    }
}

/// The openraft request in `request`, or `INVALID_ARGUMENT` naming the RPC.
fn decode<T: DeserializeOwned>(rpc: &str, request: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable {rpc} request: {e}")))
}

/// Raft's answer, value or error, as the payload of the reply.
fn answer<T: Serialize>(result: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(result)
        .map_err(|e| Status::internal(format!("Raft answer does not encode: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}
