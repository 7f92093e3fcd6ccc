//! The streaming calls: [`Client::publish_stream`] (many publishes over one bidi stream,
//! acknowledged in order once durable) and [`Client::subscribe`] (a device's points as they
//! are stored).
//!
//! Opening a stream fails over like every call; an open stream does not (it ends with one
//! `Err` item, after which the caller opens a new one).

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::telemetry_client::TelemetryClient;
use crate::proto::{Point, PublishRequest, PublishResponse, Sample, SubscribeRequest};
use crate::{Client, Error};

/// Requests the server stores at once per stream (`PublishStream`'s bound); the SDK queues as
/// many more before [`PublishSender::send`] waits.
pub const PUBLISH_WINDOW: usize = 32;

/// The acknowledgements of a [`Client::publish_stream`], one per request in request order,
/// each sent once that request's points are durably stored. After an `Err` item the stream
/// ends: requests without an `Ok` acknowledgement may or may not be stored (publishing them
/// again is safe when their samples carry `ts_ms`).
pub type PublishAcks = BoxStream<'static, Result<PublishResponse, Error>>;

/// The points of a [`Client::subscribe`], in the order the device's owner stored them. An
/// `Err` item ends it: [`Error::DataLoss`] when the subscriber fell behind (the message says
/// how many points it missed), [`Error::Unavailable`] when the node went away or stops.
pub type PointStream = BoxStream<'static, Result<Point, Error>>;

/// The sending half of a [`Client::publish_stream`]. Drop it (or call
/// [`PublishSender::finish`]) when done: the acknowledgements then end after the last one.
pub struct PublishSender {
    requests: mpsc::Sender<PublishRequest>,
    /// The `request_id` of the last request sent.
    last_id: u64,
}

impl PublishSender {
    /// Queues one publish of `device`'s samples (default tenant) and returns its
    /// `request_id` (1, 2, 3, … in send order), which its acknowledgement carries. Waits
    /// while [`PUBLISH_WINDOW`] requests are queued and the server holds as many in flight.
    pub async fn send(&mut self, device: &str, samples: Vec<Sample>) -> Result<u64, Error> {
        self.send_request(PublishRequest {
            device: device.to_owned(),
            samples,
            ..Default::default()
        })
        .await
    }

    /// As [`PublishSender::send`] with a whole request (its tenant); its `request_id` is
    /// replaced by the next one in sequence, which is returned.
    pub async fn send_request(&mut self, mut request: PublishRequest) -> Result<u64, Error> {
        request.request_id = self.last_id + 1;
        self.requests.send(request).await.map_err(|_| {
            Error::Unavailable("the publish stream ended; see its acknowledgements".into())
        })?;
        self.last_id += 1;
        Ok(self.last_id)
    }

    /// Closes the sending side; the acknowledgements end after the last request's.
    pub fn finish(self) {}
}

impl Client {
    /// Opens a publish stream: a [`PublishSender`] to queue requests and the stream of their
    /// acknowledgements. Keep reading the acknowledgements while sending: the server stops
    /// reading requests while it holds 32 unanswered ones.
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use futures::StreamExt;
    /// use starling_sdk::proto::{Sample, Value, value::Kind};
    ///
    /// let (mut sender, mut acks) = client.publish_stream().await?;
    /// let sending = tokio::spawn(async move {
    ///     for ts_ms in 1_700_000_000_000..1_700_000_000_100 {
    ///         let value = Value { kind: Some(Kind::Number(21.5)) };
    ///         let sample = Sample { ts_ms, seq: None, values: [("temp".into(), value)].into() };
    ///         sender.send("boiler-1", vec![sample]).await?;
    ///     }
    ///     Ok::<_, starling_sdk::Error>(())
    /// });
    /// while let Some(ack) = acks.next().await {
    ///     let ack = ack?; // durable once it arrives
    ///     println!("request {} stored {} points", ack.request_id, ack.accepted_points);
    /// }
    /// sending.await.expect("sender task")?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_stream(&self) -> Result<(PublishSender, PublishAcks), Error> {
        let (requests, acks) = self
            .call(|ch| async move {
                let (tx, rx) = mpsc::channel(PUBLISH_WINDOW);
                let acks = TelemetryClient::new(ch)
                    .publish_stream(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                Ok((tx, acks))
            })
            .await?;
        let sender = PublishSender {
            requests,
            last_id: 0,
        };
        Ok((sender, acks.map(|item| item.map_err(Error::from)).boxed()))
    }

    /// Every point of `device` stored from now on (once this returns, none is missed but
    /// for a lag, which ends the stream with an error). [`Error::NotFound`] if the device is
    /// not registered, [`Error::InvalidArgument`] if its id is malformed.
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use futures::StreamExt;
    ///
    /// let mut points = client.subscribe("", "boiler-1").await?;
    /// while let Some(point) = points.next().await {
    ///     match point {
    ///         Ok(p) => println!("{} {} at {}", p.device, p.metric, p.ts_ms),
    ///         // Read too slowly: query the gap, then subscribe again.
    ///         Err(starling_sdk::Error::DataLoss(why)) => eprintln!("{why}"),
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, tenant: &str, device: &str) -> Result<PointStream, Error> {
        self.subscribe_with(SubscribeRequest {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            metrics: Vec::new(),
        })
        .await
    }

    /// As [`Client::subscribe`], with the request's metric filter.
    pub async fn subscribe_with(&self, request: SubscribeRequest) -> Result<PointStream, Error> {
        let points = self
            .call(|ch| {
                let request = request.clone();
                async move {
                    Ok(TelemetryClient::new(ch)
                        .subscribe(request)
                        .await?
                        .into_inner())
                }
            })
            .await?;
        Ok(points.map(|item| item.map_err(Error::from)).boxed())
    }
}
