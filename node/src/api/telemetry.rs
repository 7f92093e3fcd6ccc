//! `starling.v1.Telemetry`: publish, unary and streamed (answers only after points are
//! durable), live subscriptions (`cluster/live.rs`), range query with paging, latest
//! values, aggregates (paged by interval, any number of intervals).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use starling_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{ApiError, ApiState, convert, now_ms, page_size, query_page_size};
use crate::storage::RangeQuery;
use crate::storage::aggregate::{AggregateQuery, Function};

pub struct TelemetryApi(pub(super) Arc<ApiState>);

/// A server stream of replies.
type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Requests of one `PublishStream` being stored at once; past it the stream is not read
/// until the oldest is answered (back-pressure on the client through HTTP/2 flow control).
pub const MAX_IN_FLIGHT: usize = 32;

/// A device key whose id is valid, or INVALID_ARGUMENT naming `device`.
fn checked_device(tenant: &str, device: &str) -> Result<crate::model::DeviceKey, ApiError> {
    let key = convert::device_key(tenant, device)?;
    crate::ingest::payload::validate_device_id(&key.device).map_err(|m| {
        ApiError::from(convert::FieldError {
            field: "device".into(),
            problem: m,
        })
    })?;
    Ok(key)
}

/// One publish: validate, store through the sink (here or at the owner), answer once durable.
async fn publish(state: &ApiState, r: pb::PublishRequest) -> Result<pb::PublishResponse, Status> {
    let key = checked_device(&r.tenant, &r.device)?;
    let received_at_ms = now_ms();
    let mut samples = Vec::with_capacity(r.samples.len());
    let mut rejections = Vec::new();
    for (i, s) in r.samples.iter().enumerate() {
        let sample = convert::sample_from_pb(s, i).map_err(ApiError::from)?;
        // Same rules as MQTT: the unit of rejection is the sample.
        match crate::ingest::payload::check_sample(&sample, &state.limits, received_at_ms) {
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
        state
            .sink
            .ingest(key, samples.into(), received_at_ms)
            .instrument(span)
            .await
            .map_err(ApiError::from)?;
        points as u32
    };
    Ok(pb::PublishResponse {
        accepted_points,
        rejections,
        request_id: r.request_id,
    })
}

/// Runs the requests of one `PublishStream`, at most [`MAX_IN_FLIGHT`] at once, and sends
/// their replies in request order. The first failure is sent as the stream's status and ends
/// it; so does a broken request stream.
async fn publish_each(
    state: Arc<ApiState>,
    mut requests: Streaming<pb::PublishRequest>,
    replies: mpsc::Sender<Result<pb::PublishResponse, Status>>,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            // The next request, while there is room.
            request = requests.next(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
                match request {
                    Some(Ok(r)) => {
                        let state = state.clone();
                        in_flight.push_back(async move { publish(&state, r).await });
                    }
                    Some(Err(status)) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                    None => reading = false,
                }
            }
            // The oldest request is durable (or failed).
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                let failed = reply.is_err();
                if replies.send(reply).await.is_err() || failed {
                    return;
                }
            }
            // The client closed its side and every request is answered.
            else => return,
        }
    }
}

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetryApi {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        publish(&self.0, req.into_inner()).await.map(Response::new)
    }

    type PublishStreamStream = ReplyStream<pb::PublishResponse>;

    async fn publish_stream(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(publish_each(self.0.clone(), req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = ReplyStream<pb::Point>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let key = checked_device(&r.tenant, &r.device)?;
        if self
            .0
            .control
            .device(&key)
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::NotFound(format!("device {key}")).into());
        }
        let metrics: HashSet<String> = r.metrics.into_iter().collect();
        let live = crate::cluster::live::subscribe(&self.0.cluster, self.0.router.live(), key)
            .await
            .map_err(ApiError::from)?;
        let points = live.filter_map(move |item| {
            let item = match item {
                Ok(p) if metrics.is_empty() || metrics.contains(&p.metric) => {
                    Some(Ok(convert::point_to_pb(&p)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(Status::from(ApiError::from(e)))),
            };
            std::future::ready(item)
        });
        Ok(Response::new(Box::pin(points)))
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
            limit: query_page_size(r.page_size, r.columnar),
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
        };
        let routed = self.0.reads.query(q).await.map_err(ApiError::from)?;
        let points = &routed.value.points;
        let (points, series) = if r.columnar {
            (Vec::new(), convert::points_to_series(points))
        } else {
            (
                points.iter().map(convert::point_to_pb).collect(),
                Vec::new(),
            )
        };
        Ok(Response::new(pb::QueryResponse {
            points,
            series,
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
