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
use crate::model::{Alarm, AlarmStatus};
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
        let filter = AlarmFilter {
            tenant: convert::tenant(&r.tenant),
            device: r.device,
            severity: r.severity,
            status: status_filter(r.status)?,
            acknowledged: r.acknowledged,
        };
        let mut alarms = self.0.control.alarms().map_err(ApiError::from)?;
        alarms.retain(|a| filter.matches(a));
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
        let filter = AlarmFilter {
            tenant: convert::tenant(&r.tenant),
            device: r.device,
            severity: r.severity,
            status: status_filter(r.status)?,
            acknowledged: r.acknowledged,
        };
        let events = BroadcastStream::new(self.0.control.subscribe()).filter_map(move |item| {
            match item {
                Ok(Applied::Alarm(ev)) => filter
                    .matches(&ev.alarm)
                    .then(|| Ok(convert::alarm_event_to_pb(&ev))),
                Ok(_) => None,
                // A watcher that falls behind is told so instead of silently missing events.
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::data_loss(format!(
                    "watcher fell {n} events behind; list alarms and watch again"
                )))),
            }
        });
        // The node stops: say so and end the stream.
        let mut stop = self.0.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let closing = futures::stream::once(async {
            Err(Status::unavailable(
                "the node is shutting down; watch again elsewhere",
            ))
        });
        let events = futures::StreamExt::take_until(events, stopped).chain(closing);
        Ok(Response::new(Box::pin(events)))
    }
}

/// The filters of `List` and `Watch`; an empty string or `None` matches everything.
struct AlarmFilter {
    tenant: String,
    device: String,
    severity: String,
    status: Option<AlarmStatus>,
    acknowledged: Option<bool>,
}

impl AlarmFilter {
    fn matches(&self, a: &Alarm) -> bool {
        a.device.tenant == self.tenant
            && (self.device.is_empty() || a.device.device == self.device)
            && (self.severity.is_empty() || a.severity == self.severity)
            && self.status.is_none_or(|s| a.status == s)
            && self.acknowledged.is_none_or(|ack| a.acknowledged == ack)
    }
}

/// The `status` field of a request; an unknown number is INVALID_ARGUMENT naming the field.
fn status_filter(status: i32) -> Result<Option<AlarmStatus>, Status> {
    match pb::AlarmStatus::try_from(status) {
        Ok(pb::AlarmStatus::Active) => Ok(Some(AlarmStatus::Active)),
        Ok(pb::AlarmStatus::Cleared) => Ok(Some(AlarmStatus::Cleared)),
        Ok(pb::AlarmStatus::Unspecified) => Ok(None),
        Err(_) => Err(ApiError::from(convert::FieldError {
            field: "status".into(),
            problem: format!("unknown status {status}"),
        })
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceKey, Value};

    fn alarm(device: &str, severity: &str, status: AlarmStatus, acked: bool) -> Alarm {
        Alarm {
            id: "a-1".into(),
            device: DeviceKey::new("t", device),
            rule_id: "r".into(),
            rule_version: 1,
            severity: severity.into(),
            status,
            acknowledged: acked,
            metric: "m".into(),
            value: Value::Number(1.0),
            raised_at_ms: 0,
            cleared_at_ms: None,
            message: String::new(),
        }
    }

    #[test]
    fn filter_table() {
        let f = |device: &str, severity: &str, status, acknowledged| AlarmFilter {
            tenant: "t".into(),
            device: device.into(),
            severity: severity.into(),
            status,
            acknowledged,
        };
        let a = alarm("d1", "major", AlarmStatus::Active, false);
        let cases = [
            (f("", "", None, None), true),
            (f("d1", "", None, None), true),
            (f("d2", "", None, None), false),
            (f("", "major", None, None), true),
            (f("", "minor", None, None), false),
            (f("", "", Some(AlarmStatus::Active), None), true),
            (f("", "", Some(AlarmStatus::Cleared), None), false),
            (f("", "", None, Some(false)), true),
            (f("", "", None, Some(true)), false),
            (
                f("d1", "major", Some(AlarmStatus::Active), Some(false)),
                true,
            ),
            (
                f("d1", "major", Some(AlarmStatus::Active), Some(true)),
                false,
            ),
        ];
        for (i, (filter, expected)) in cases.into_iter().enumerate() {
            assert_eq!(filter.matches(&a), expected, "case {i}");
        }
        let other_tenant = AlarmFilter {
            tenant: "u".into(),
            ..f("", "", None, None)
        };
        assert!(!other_tenant.matches(&a));
        assert!(status_filter(99).is_err());
    }
}
