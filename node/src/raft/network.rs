//! Peer transport of the control plane: openraft's [`RaftNetworkFactory`].
//!
//! A single-member group never talks to a peer, so this transport only says so: every RPC
//! fails with `Unreachable` and an honest message, never a fake success. The cluster issue
//! replaces this file with the peer gRPC transport (mTLS, snapshot chunks ≤ 1 MiB); nothing
//! else in `raft/` depends on how peers are reached.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};

use super::types::{NodeId, TypeConfig};

/// What every peer RPC answers until the peer transport exists.
pub const NO_TRANSPORT: &str =
    "peer transport not available yet: multi-node arrives with the cluster issue";

/// Makes [`NoPeer`] clients.
#[derive(Clone, Debug, Default)]
pub struct NetworkFactory;

/// A client for one peer that cannot reach it.
#[derive(Clone, Debug)]
pub struct NoPeer {
    target: NodeId,
    addr: String,
}

impl NoPeer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        tracing::debug!(target = self.target, addr = %self.addr, "{NO_TRANSPORT}");
        RPCError::Unreachable(Unreachable::from(AnyError::error(NO_TRANSPORT)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> NoPeer {
        NoPeer {
            target,
            addr: node.addr.clone(),
        }
    }
}

type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peers_are_unreachable_with_an_honest_message() {
        let mut factory = NetworkFactory;
        let mut client = factory
            .new_client(2, &BasicNode::new("10.0.0.2:7001"))
            .await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let err = client
            .vote(vote, RPCOption::new(std::time::Duration::from_secs(1)))
            .await;
        match err {
            Err(RPCError::Unreachable(u)) => assert!(u.to_string().contains(NO_TRANSPORT)),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
