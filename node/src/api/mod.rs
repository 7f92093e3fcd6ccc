//! The public gRPC API (`starling.v1`): one small service type per proto service, protobuf
//! conversions in [`convert`], error → status mapping in [`status`].
//!
//! Only this module and `raft/network` import the proto crate. Handlers validate, call the
//! layer below, convert; they hold no state of their own.

pub mod alerts;
pub mod convert;
pub mod devices;
pub mod status;
pub mod telemetry;

use std::sync::Arc;

use starling_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::device::DeviceRouter;
use crate::ingest::PointSink;
use crate::raft::ControlPlane;
use crate::storage::TelemetryStore;

pub use status::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub router: DeviceRouter,
    /// Where published points go: stored here or forwarded to their owner, like MQTT's.
    pub sink: Arc<dyn PointSink>,
    pub cluster: Cluster,
    /// History reads routed to every node that held the device's shard.
    pub reads: crate::cluster::reads::Reads,
    pub store: Arc<dyn TelemetryStore>,
    pub control: ControlPlane,
    /// Validation limits of published samples, the same as MQTT ingest's.
    pub limits: crate::ingest::payload::Limits,
    /// True once the node stops: server streams (alarm watches) end then, or they would
    /// hold up the server's graceful stop.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Adds every public service to a tonic server builder.
pub fn routes(state: ApiState) -> tonic::service::Routes {
    let s = Arc::new(state);
    tonic::service::Routes::new(pb::telemetry_server::TelemetryServer::new(
        telemetry::TelemetryApi(s.clone()),
    ))
    .add_service(pb::devices_server::DevicesServer::new(devices::DevicesApi(
        s.clone(),
    )))
    .add_service(pb::rules_server::RulesServer::new(RulesApi(s.clone())))
    .add_service(pb::alerts_server::AlertsServer::new(alerts::AlertsApi(
        s.clone(),
    )))
    .add_service(pb::cluster_server::ClusterServer::new(ClusterApi(s)))
}

/// `starling.v1.Rules`.
pub struct RulesApi(Arc<ApiState>);

#[tonic::async_trait]
impl pb::rules_server::Rules for RulesApi {
    async fn apply(
        &self,
        req: Request<pb::ApplyRuleRequest>,
    ) -> Result<Response<pb::Rule>, Status> {
        use crate::raft::command::{ControlCommand, ControlResponse};
        let r = req.into_inner();
        let doc = crate::rules::validate::parse(&r.document, &r.format).map_err(ApiError::from)?;
        let tenant = doc
            .tenant
            .clone()
            .unwrap_or_else(|| crate::model::DEFAULT_TENANT.into());
        let id = doc.id.clone();
        let cmd = ControlCommand::PutRule {
            doc,
            at_ms: now_ms(),
        };
        match self.0.control.write(cmd).await.map_err(ApiError::from)? {
            ControlResponse::RuleVersion { .. } => {}
            other => return Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
        let rule = self
            .0
            .control
            .rule(&tenant, &id)
            .ok_or_else(|| Status::internal("rule committed but not applied"))?;
        Ok(Response::new(convert::rule_to_pb(&rule)))
    }

    async fn get(&self, req: Request<pb::GetRuleRequest>) -> Result<Response<pb::Rule>, Status> {
        let id = req.into_inner().id;
        match self.0.control.rule(crate::model::DEFAULT_TENANT, &id) {
            Some(r) => Ok(Response::new(convert::rule_to_pb(&r))),
            None => Err(ApiError::NotFound(format!("rule {id}")).into()),
        }
    }

    async fn list(
        &self,
        _req: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let mut rules = self.0.control.rules().to_vec();
        rules.sort_by(|a, b| a.doc.id.cmp(&b.doc.id));
        Ok(Response::new(pb::ListRulesResponse {
            rules: rules.iter().map(convert::rule_to_pb).collect(),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        use crate::raft::command::{ControlCommand, ControlResponse, Rejection};
        let id = req.into_inner().id;
        let cmd = ControlCommand::DeleteRule {
            tenant: crate::model::DEFAULT_TENANT.into(),
            id: id.clone(),
            at_ms: now_ms(),
        };
        match self.0.control.write(cmd).await.map_err(ApiError::from)? {
            ControlResponse::RuleVersion { version, .. } => {
                Ok(Response::new(pb::DeleteRuleResponse { version }))
            }
            ControlResponse::Rejected(Rejection::NoSuchRule(_)) => {
                Err(ApiError::NotFound(format!("rule {id}")).into())
            }
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }

    async fn history(
        &self,
        req: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let id = req.into_inner().id;
        let versions = self
            .0
            .control
            .rule_history(crate::model::DEFAULT_TENANT, &id)
            .map_err(ApiError::from)?;
        if versions.is_empty() {
            return Err(ApiError::NotFound(format!("rule {id}")).into());
        }
        Ok(Response::new(pb::ListRulesResponse {
            rules: versions.iter().map(convert::rule_to_pb).collect(),
        }))
    }
}

/// `starling.v1.Cluster`.
pub struct ClusterApi(Arc<ApiState>);

impl ClusterApi {
    fn members(&self) -> Vec<pb::Member> {
        self.0
            .cluster
            .members()
            .into_iter()
            .map(|m| pb::Member {
                node_id: m.id,
                peer_addr: m.peer_addr,
                voter: m.voter,
                client_addr: m.info.map(|i| i.client_addr).unwrap_or_default(),
                health: m.health,
                last_heartbeat_ms_ago: m.last_heard_ms_ago.map_or(-1, |a| a as i64),
                shards: m.shards,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let s = self.0.control.status();
        Ok(Response::new(pb::ClusterStatus {
            node_id: s.node_id,
            leader_id: s.leader.unwrap_or(0),
            term: s.term,
            commit_index: s.commit_index,
            last_applied: s.last_applied,
            members: self.members(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn members(
        &self,
        _req: Request<pb::ClusterMembersRequest>,
    ) -> Result<Response<pb::ClusterMembersResponse>, Status> {
        Ok(Response::new(pb::ClusterMembersResponse {
            members: self.members(),
            leader_id: self.0.control.status().leader.unwrap_or(0),
        }))
    }

    async fn shards(
        &self,
        _req: Request<pb::ClusterShardsRequest>,
    ) -> Result<Response<pb::ClusterShardsResponse>, Status> {
        let map = self.0.control.shard_map();
        let mut ranges: Vec<pb::ShardRange> = Vec::new();
        for (shard, (owner, epoch)) in map {
            match ranges.last_mut() {
                Some(r) if r.last + 1 == shard && r.owner == owner && r.epoch == epoch => {
                    r.last = shard;
                }
                _ => ranges.push(pb::ShardRange {
                    first: shard,
                    last: shard,
                    owner,
                    epoch,
                }),
            }
        }
        Ok(Response::new(pb::ClusterShardsResponse {
            shard_count: self.0.cluster.settings().shards,
            ranges,
        }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let node = req.into_inner().node_id;
        let cmd = crate::raft::ControlCommand::SetNodeState {
            node,
            state: crate::raft::NodeState::Removed,
            rescuer: None,
            at_ms: now_ms(),
        };
        match self.0.control.write(cmd).await.map_err(ApiError::from)? {
            crate::raft::ControlResponse::Rejected(r) => {
                Err(ApiError::NotFound(r.to_string()).into())
            }
            _ => Ok(Response::new(pb::RemoveMemberResponse {})),
        }
    }
}

/// Default and maximum page sizes of list and query calls.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;
/// Maximum page of a columnar range query: a point costs 16 bytes there (timestamp and
/// number, packed) instead of a message with three strings, so 100,000 points are ~1.6 MB.
const MAX_COLUMNAR_PAGE: usize = 100_000;

/// The page size of a range query: rows are capped at [`MAX_PAGE`], columns at
/// [`MAX_COLUMNAR_PAGE`]; 0 means [`DEFAULT_PAGE`] for both.
fn query_page_size(requested: u32, columnar: bool) -> usize {
    page_size_up_to(
        requested,
        if columnar {
            MAX_COLUMNAR_PAGE
        } else {
            MAX_PAGE
        },
    )
}

fn page_size(requested: u32) -> usize {
    page_size_up_to(requested, MAX_PAGE)
}

fn page_size_up_to(requested: u32, max: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE,
        n => (n as usize).min(max),
    }
}

/// Wall-clock time in Unix ms, for the edges of the system (requests, receive time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        let cases = [
            // (requested, columnar, page)
            (0, false, DEFAULT_PAGE),
            (0, true, DEFAULT_PAGE),
            (1, false, 1),
            (500, true, 500),
            (10_000, false, 10_000),
            (10_001, false, MAX_PAGE),
            (10_001, true, 10_001),
            (100_000, true, 100_000),
            (u32::MAX, true, MAX_COLUMNAR_PAGE),
            (u32::MAX, false, MAX_PAGE),
        ];
        for (requested, columnar, page) in cases {
            assert_eq!(
                query_page_size(requested, columnar),
                page,
                "{requested} {columnar}"
            );
        }
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(u32::MAX), MAX_PAGE);
    }
}
