//! `starling.v1.Alerts`: list with filters, acknowledge (a Raft entry), and a live stream of
//! committed transitions.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use starling_proto::v1 as pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use super::{ApiError, ApiState, convert};
use crate::model::AlarmStatus;
use crate::raft::Applied;
use crate::raft::command::{ControlCommand, ControlResponse, Rejection};

pub struct AlertsApi(pub(super) Arc<ApiState>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AlarmEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::alerts_server::Alerts for AlertsApi {
    async fn list(
        &self,
        req: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        let r = req.into_inner();
        let tenant = convert::tenant(&r.tenant);
        let status = match pb::AlarmStatus::try_from(r.status) {
            Ok(pb::AlarmStatus::Active) => Some(AlarmStatus::Active),
            Ok(pb::AlarmStatus::Cleared) => Some(AlarmStatus::Cleared),
            Ok(pb::AlarmStatus::Unspecified) => None,
            Err(_) => {
                return Err(ApiError::from(convert::FieldError {
                    field: "status".into(),
                    problem: format!("unknown status {}", r.status),
                })
                .into());
            }
        };
        let mut alarms = self.0.control.alarms().map_err(ApiError::from)?;
        alarms.retain(|a| {
            a.device.tenant == tenant
                && (r.device.is_empty() || a.device.device == r.device)
                && status.is_none_or(|s| a.status == s)
        });
        alarms.sort_by(|a, b| (a.raised_at_ms, &a.id).cmp(&(b.raised_at_ms, &b.id)));
        Ok(Response::new(pb::ListAlarmsResponse {
            alarms: alarms.iter().map(convert::alarm_to_pb).collect(),
        }))
    }

    async fn ack(&self, req: Request<pb::AckAlarmRequest>) -> Result<Response<pb::Alarm>, Status> {
        let id = req.into_inner().id;
        let cmd = ControlCommand::AckAlarm { id: id.clone() };
        match self.0.control.write(cmd).await.map_err(ApiError::from)? {
            ControlResponse::Rejected(Rejection::NoSuchAlarm(_)) => {
                Err(ApiError::NotFound(format!("alarm {id}")).into())
            }
            ControlResponse::Rejected(r) => Err(Status::failed_precondition(r.to_string())),
            _ => match self.0.control.alarm(&id).map_err(ApiError::from)? {
                Some(a) => Ok(Response::new(convert::alarm_to_pb(&a))),
                None => Err(ApiError::NotFound(format!("alarm {id}")).into()),
            },
        }
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchAlarmsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let tenant = convert::tenant(&r.tenant);
        let device = r.device;
        let events = BroadcastStream::new(self.0.control.subscribe()).filter_map(move |item| {
            match item {
                Ok(Applied::Alarm(ev)) => {
                    let wanted = ev.alarm.device.tenant == tenant
                        && (device.is_empty() || ev.alarm.device.device == device);
                    wanted.then(|| Ok(convert::alarm_event_to_pb(&ev)))
                }
                Ok(_) => None,
                // A watcher that falls behind is told so instead of silently missing events.
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::data_loss(format!(
                    "watcher fell {n} events behind; list alarms and watch again"
                )))),
            }
        });
        Ok(Response::new(Box::pin(events)))
    }
}
