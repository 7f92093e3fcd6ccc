//! The peer services this node serves to other nodes (peer port only, node certificates
//! only): `Control` (forwarded writes, join, remove, lease heartbeats) and `Data` (points
//! forwarded to their owner, reads of this node's local store, live points of a device).
//!
//! Handlers decode, call the cluster/router/store, encode; they hold no state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use starling_proto::peer as pb;
use tonic::{Request, Response, Status};

use super::{Cluster, Renewal, Route};
use crate::device::DeviceRouter;
use crate::model::{DeviceKey, Sample};
use crate::raft::ops::now_ms;
use crate::raft::{ControlCommand, ControlError, NodeState};
use crate::storage::{RangeQuery, RollupQuery, TelemetryStore};

/// A read of a node's local store, as `Data.LocalRead` carries it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum LocalRead {
    Range(RangeQuery),
    Latest(DeviceKey),
    /// Rollup buckets (for routed aggregates).
    Rollups(RollupQuery),
}

/// `starling.peer.v1.Control`.
pub struct ControlService {
    pub cluster: Cluster,
}

fn control_status(e: ControlError) -> Status {
    match e {
        ControlError::NotLeader { leader, addr } => {
            Status::unavailable(format!("not the leader; node {leader} at {addr} leads"))
        }
        e if e.is_retryable() => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn write(
        &self,
        req: Request<pb::ControlWriteRequest>,
    ) -> Result<Response<pb::ControlWriteReply>, Status> {
        let cmd: ControlCommand = serde_json::from_slice(&req.into_inner().command)
            .map_err(|e| Status::invalid_argument(format!("control command: {e}")))?;
        let (index, response) = self
            .cluster
            .control()
            .write_local_indexed(cmd)
            .await
            .map_err(control_status)?;
        let response =
            serde_json::to_vec(&response).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ControlWriteReply { response, index }))
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let r = req.into_inner();
        let control = self.cluster.control();
        if !control.is_leader() {
            let Some((leader, addr)) = control.leader() else {
                return Err(Status::unavailable("no leader yet"));
            };
            if leader == control.node_id() {
                return Err(Status::unavailable("leadership changing"));
            }
            return self
                .cluster
                .peers()
                .join(&addr, r.node_id, &r.peer_addr, &r.client_addr)
                .await
                .map(Response::new)
                .map_err(|e| Status::unavailable(e.to_string()));
        }
        if r.node_id == 0 || r.peer_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node_id and peer_addr are required",
            ));
        }
        tracing::info!(node = r.node_id, peer_addr = %r.peer_addr, "adding a learner");
        control
            .add_learner(r.node_id, &r.peer_addr)
            .await
            .map_err(control_status)?;
        Ok(Response::new(pb::JoinReply {
            leader_id: control.node_id(),
            voter: false,
        }))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveReply>, Status> {
        let node = req.into_inner().node_id;
        let cmd = ControlCommand::SetNodeState {
            node,
            state: NodeState::Removed,
            rescuer: None,
            at_ms: now_ms(),
        };
        // `write` forwards to the leader; the supervisor then moves the node's shards away
        // and takes it out of the membership.
        match self.cluster.control().write(cmd).await {
            Ok(crate::raft::ControlResponse::Rejected(r)) => Err(Status::not_found(r.to_string())),
            Ok(_) => Ok(Response::new(pb::RemoveReply {})),
            Err(e) => Err(control_status(e)),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let r = req.into_inner();
        let now = Instant::now();
        let renewal = Renewal {
            node: r.node_id,
            applied: r.applied_index,
            term: r.term,
            prior_ack: now
                .checked_sub(Duration::from_micros(r.prior_leader_ack_ago_us))
                .unwrap_or(now),
        };
        let node = renewal.node;
        let result = self.cluster.on_heartbeat(renewal, now).await;
        let control = self.cluster.control();
        Ok(Response::new(pb::HeartbeatReply {
            leader_id: control.leader().map_or(0, |(l, _)| l),
            granted: result.is_ok(),
            reason: result.err().unwrap_or_default(),
            removed: control
                .node_info(node)
                .is_some_and(|i| i.state == crate::raft::NodeState::Removed),
        }))
    }
}

/// `starling.peer.v1.Data`.
pub struct DataService {
    pub cluster: Cluster,
    pub router: DeviceRouter,
    pub store: Arc<dyn TelemetryStore>,
}

fn result(code: pb::ForwardCode, message: String) -> pb::ForwardResult {
    pb::ForwardResult {
        code: code as i32,
        message,
        owner: 0,
        epoch: 0,
    }
}

impl DataService {
    async fn forwarded(&self, item: pb::ForwardItem) -> pb::ForwardResult {
        let key = DeviceKey {
            tenant: item.tenant,
            device: item.device,
        };
        let samples: Vec<Sample> = match serde_json::from_slice(&item.samples) {
            Ok(s) => s,
            Err(e) => return result(pb::ForwardCode::Failed, format!("samples: {e}")),
        };
        match self.cluster.route(&key) {
            Route::Local { epoch } => {
                match self
                    .router
                    .ingest(key, samples.into(), item.received_at_ms, epoch)
                    .await
                {
                    Ok(_) => result(pb::ForwardCode::Ok, String::new()),
                    Err(e) if e.is_retryable() => result(pb::ForwardCode::Retry, e.to_string()),
                    Err(e) => result(pb::ForwardCode::Failed, e.to_string()),
                }
            }
            Route::Remote { node, epoch, .. } => pb::ForwardResult {
                code: pb::ForwardCode::NotOwner as i32,
                message: format!("node {} does not own this shard", self.cluster.me()),
                owner: node,
                epoch,
            },
            Route::Unavailable(reason) => result(pb::ForwardCode::Retry, reason),
        }
    }
}

type LiveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LivePoints, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::data_server::Data for DataService {
    type LiveStream = LiveStream;

    async fn live(
        &self,
        req: Request<pb::LiveRequest>,
    ) -> Result<Response<Self::LiveStream>, Status> {
        let r = req.into_inner();
        let key = DeviceKey {
            tenant: r.tenant,
            device: r.device,
        };
        let points = super::live::serve_peer(self.router.live(), &key);
        Ok(Response::new(Box::pin(points)))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let items = req.into_inner().items;
        // Started in order (each reaches its actor's mailbox in request order), run together.
        let results = futures::future::join_all(items.into_iter().map(|i| self.forwarded(i))).await;
        Ok(Response::new(pb::ForwardReply { results }))
    }

    async fn local_read(
        &self,
        req: Request<pb::LocalReadRequest>,
    ) -> Result<Response<pb::LocalReadReply>, Status> {
        let read: LocalRead = serde_json::from_slice(&req.into_inner().query)
            .map_err(|e| Status::invalid_argument(format!("local read: {e}")))?;
        let encoded = match read {
            LocalRead::Range(q) => self.store.query(q).await.map(|p| serde_json::to_vec(&p)),
            LocalRead::Latest(d) => self.store.latest(&d).await.map(|p| serde_json::to_vec(&p)),
            LocalRead::Rollups(q) => self.store.rollups(q).await.map(|p| serde_json::to_vec(&p)),
        };
        let bytes = encoded
            .map_err(|e| Status::unavailable(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::LocalReadReply { result: bytes }))
    }
}
