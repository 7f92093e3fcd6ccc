//! `starling.v1.Telemetry`: publish (answers only after points are durable), range query
//! with paging, latest values, aggregates (paged by interval, any number of intervals).

use std::sync::Arc;

use starling_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{ApiError, ApiState, convert, now_ms, page_size};
use crate::storage::RangeQuery;
use crate::storage::aggregate::{AggregateQuery, Function};

pub struct TelemetryApi(pub(super) Arc<ApiState>);

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetryApi {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = req.into_inner();
        let key = convert::device_key(&r.tenant, &r.device).map_err(ApiError::from)?;
        crate::ingest::payload::validate_device_id(&key.device).map_err(|m| {
            ApiError::from(convert::FieldError {
                field: "device".into(),
                problem: m,
            })
        })?;
        let received_at_ms = now_ms();
        let mut samples = Vec::with_capacity(r.samples.len());
        let mut rejections = Vec::new();
        for (i, s) in r.samples.iter().enumerate() {
            let sample = convert::sample_from_pb(s, i).map_err(ApiError::from)?;
            // Same rules as MQTT: the unit of rejection is the sample.
            match crate::ingest::payload::check_sample(&sample, &self.0.limits, received_at_ms) {
                Ok(()) => samples.push(sample),
                Err((reason, metric, message)) => {
                    let reason = reason.as_str();
                    metrics::counter!(crate::metrics_names::INGEST_REJECTED, "reason" => reason)
                        .increment(1);
                    rejections.push(pb::Rejection {
                        sample: i as u32,
                        metric,
                        reason: reason.to_owned(),
                        message,
                    });
                }
            }
        }
        let span = tracing::info_span!("api.publish", device = %key, samples = samples.len());
        let accepted_points = if samples.is_empty() {
            0
        } else {
            let points: usize = samples.iter().map(|s| s.values.len()).sum();
            self.0
                .sink
                .ingest(key, samples.into(), received_at_ms)
                .instrument(span)
                .await
                .map_err(ApiError::from)?;
            points as u32
        };
        Ok(Response::new(pb::PublishResponse {
            accepted_points,
            rejections,
        }))
    }

    async fn query(
        &self,
        req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let r = req.into_inner();
        let device = convert::device_key(&r.tenant, &r.device).map_err(ApiError::from)?;
        let q = RangeQuery {
            device,
            metric: (!r.metric.is_empty()).then_some(r.metric),
            from_ms: r.from_ms,
            to_ms: if r.to_ms == 0 { i64::MAX } else { r.to_ms },
            limit: page_size(r.page_size),
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
        };
        let routed = self.0.reads.query(q).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::QueryResponse {
            points: routed
                .value
                .points
                .iter()
                .map(convert::point_to_pb)
                .collect(),
            next_page_token: routed.value.next.unwrap_or_default(),
            partial: routed.partial,
        }))
    }

    async fn latest(
        &self,
        req: Request<pb::LatestRequest>,
    ) -> Result<Response<pb::LatestResponse>, Status> {
        let r = req.into_inner();
        let device = convert::device_key(&r.tenant, &r.device).map_err(ApiError::from)?;
        let routed = self.0.reads.latest(&device).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::LatestResponse {
            points: routed.value.iter().map(convert::point_to_pb).collect(),
            partial: routed.partial,
        }))
    }

    async fn aggregate(
        &self,
        req: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        let r = req.into_inner();
        let device = convert::device_key(&r.tenant, &r.device).map_err(ApiError::from)?;
        let q = AggregateQuery {
            device,
            metric: r.metric,
            function: Function::parse(&r.function).map_err(ApiError::from)?,
            interval_ms: r.interval_ms,
            from_ms: r.from_ms,
            to_ms: if r.to_ms == 0 { i64::MAX } else { r.to_ms },
            limit: page_size(r.page_size),
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
        };
        let routed = self.0.reads.aggregate(q).await.map_err(ApiError::from)?;
        let page = routed.value;
        Ok(Response::new(pb::AggregateResponse {
            rows: page
                .rows
                .iter()
                .map(|row| pb::AggregateRow {
                    start_ms: row.start_ms,
                    value: row.value,
                    count: row.count,
                })
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
            partial: routed.partial,
            source: page.source.map_or("raw", |res| res.as_str()).to_owned(),
        }))
    }
}
