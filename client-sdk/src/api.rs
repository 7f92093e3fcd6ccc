//! One [`Client`] method per call of the public API, each going through the failover loop.
//!
//! Requests are the protobuf messages or their fields; results are protobuf messages. List
//! calls that page (`list_devices`, `query_all`) follow page tokens to the end.

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::proto::alerts_client::AlertsClient;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::devices_client::DevicesClient;
use crate::proto::rules_client::RulesClient;
use crate::proto::telemetry_client::TelemetryClient;
use crate::proto::{
    AckAlarmRequest, AggregateRequest, AggregateResponse, AggregateRow, Alarm, AlarmEvent,
    ApplyRuleRequest, ClusterMembersRequest, ClusterMembersResponse, ClusterShardsRequest,
    ClusterShardsResponse, ClusterStatus, ClusterStatusRequest, DeleteDeviceRequest,
    DeleteRuleRequest, Device, GetDeviceRequest, GetRuleRequest, LatestRequest, ListAlarmsRequest,
    ListDevicesRequest, ListRulesRequest, Point, PublishRequest, PublishResponse, QueryRequest,
    QueryResponse, RegisterDeviceRequest, RemoveMemberRequest, Rule, Sample, UpdateLabelsRequest,
    WatchAlarmsRequest,
};
use crate::{Client, Error};

/// The events of [`Client::watch_alarms`]. Ends when the server ends the stream; a transport
/// failure arrives as one `Err` item (the stream does not fail over once established).
pub type AlarmStream = BoxStream<'static, Result<AlarmEvent, Error>>;

impl Client {
    /// Stores samples of one device. Retried on UNAVAILABLE: give samples a `ts_ms` or `seq`
    /// so a retry cannot store a point twice (`ts_ms = 0` means server receive time).
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use starling_sdk::proto::{Sample, Value, value::Kind};
    ///
    /// let value = Value { kind: Some(Kind::Number(3.2)) };
    /// let sample = Sample { ts_ms: 1_700_000_000_000, seq: None, values: [("bar".into(), value)].into() };
    /// let reply = client.publish("", "pump-7", vec![sample]).await?;
    /// for r in &reply.rejections {
    ///     eprintln!("sample {} refused: {} ({})", r.sample, r.message, r.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn publish(
        &self,
        tenant: &str,
        device: &str,
        samples: Vec<Sample>,
    ) -> Result<PublishResponse, Error> {
        let request = PublishRequest {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            samples,
            request_id: 0,
        };
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(TelemetryClient::new(ch)
                    .publish(request)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// One page of points.
    pub async fn query(&self, request: QueryRequest) -> Result<QueryResponse, Error> {
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(TelemetryClient::new(ch).query(request).await?.into_inner()) }
        })
        .await
    }

    /// Every point matching `request`, following page tokens from `request.page_token`.
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use starling_sdk::proto::QueryRequest;
    ///
    /// // The last hour of one metric (`to_ms: 0` means now).
    /// let now_ms = 1_700_000_000_000;
    /// let request = QueryRequest {
    ///     device: "pump-7".into(),
    ///     metric: "bar".into(),
    ///     from_ms: now_ms - 3_600_000,
    ///     ..Default::default()
    /// };
    /// for p in client.query_all(request).await? {
    ///     println!("{} {:?}", p.ts_ms, p.value);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn query_all(&self, mut request: QueryRequest) -> Result<Vec<Point>, Error> {
        let mut points = Vec::new();
        loop {
            let page = self.query(request.clone()).await?;
            points.extend(page.points);
            if page.next_page_token.is_empty() || page.next_page_token == request.page_token {
                return Ok(points);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// One page of an aggregate (function of one metric over intervals; see
    /// `AggregateRequest` for how the server picks raw points or 1m/1h rollups).
    pub async fn aggregate(&self, request: AggregateRequest) -> Result<AggregateResponse, Error> {
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(TelemetryClient::new(ch)
                    .aggregate(request)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Every interval of an aggregate, following page tokens from `request.page_token`
    /// (there is no cap on the number of intervals: mind the range and interval).
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use starling_sdk::proto::AggregateRequest;
    ///
    /// // Hourly averages of one day (answered from 1-hour rollups).
    /// let request = AggregateRequest {
    ///     device: "pump-7".into(),
    ///     metric: "bar".into(),
    ///     function: "avg".into(),
    ///     interval_ms: 3_600_000,
    ///     from_ms: 1_699_920_000_000,
    ///     to_ms: 1_700_006_400_000,
    ///     ..Default::default()
    /// };
    /// for row in client.aggregate_all(request).await? {
    ///     println!("{}: {} over {} points", row.start_ms, row.value, row.count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn aggregate_all(
        &self,
        mut request: AggregateRequest,
    ) -> Result<Vec<AggregateRow>, Error> {
        let mut rows = Vec::new();
        loop {
            let page = self.aggregate(request.clone()).await?;
            rows.extend(page.rows);
            if page.next_page_token.is_empty() || page.next_page_token == request.page_token {
                return Ok(rows);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// The newest point of each metric of a device.
    pub async fn latest(&self, tenant: &str, device: &str) -> Result<Vec<Point>, Error> {
        let request = LatestRequest {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
        };
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(TelemetryClient::new(ch)
                    .latest(request)
                    .await?
                    .into_inner()
                    .points)
            }
        })
        .await
    }

    /// One device.
    pub async fn get_device(&self, tenant: &str, id: &str) -> Result<Device, Error> {
        let request = GetDeviceRequest {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
        };
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(DevicesClient::new(ch).get(request).await?.into_inner()) }
        })
        .await
    }

    /// Every device of a tenant, following page tokens.
    pub async fn list_devices(&self, tenant: &str) -> Result<Vec<Device>, Error> {
        self.list_devices_matching(ListDevicesRequest {
            tenant: tenant.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Every device matching `request` (tenant, `type`, `labels`), following page tokens
    /// from `request.page_token`.
    pub async fn list_devices_matching(
        &self,
        mut request: ListDevicesRequest,
    ) -> Result<Vec<Device>, Error> {
        let mut devices = Vec::new();
        loop {
            let page = self
                .call(|ch| {
                    let request = request.clone();
                    async move { Ok(DevicesClient::new(ch).list(request).await?.into_inner()) }
                })
                .await?;
            devices.extend(page.devices);
            if page.next_page_token.is_empty() || page.next_page_token == request.page_token {
                return Ok(devices);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// Registers a device, or replaces the type and labels of a registered one. Safe to
    /// retry: registering the same thing twice leaves one record.
    pub async fn register_device(&self, request: RegisterDeviceRequest) -> Result<Device, Error> {
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(DevicesClient::new(ch).register(request).await?.into_inner()) }
        })
        .await
    }

    /// Sets and removes labels of a registered device ([`Error::NotFound`] if it is not).
    pub async fn update_device_labels(
        &self,
        request: UpdateLabelsRequest,
    ) -> Result<Device, Error> {
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(DevicesClient::new(ch)
                    .update_labels(request)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Removes a device from the registry ([`Error::NotFound`] if it is not registered); its
    /// stored telemetry stays.
    pub async fn delete_device(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let request = DeleteDeviceRequest {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
        };
        self.call(|ch| {
            let request = request.clone();
            async move {
                DevicesClient::new(ch).delete(request).await?;
                Ok(())
            }
        })
        .await
    }

    /// Creates or replaces a rule. `format` is `"json"` or `"yaml"`.
    pub async fn apply_rule(&self, document: &str, format: &str) -> Result<Rule, Error> {
        let request = ApplyRuleRequest {
            document: document.to_owned(),
            format: format.to_owned(),
        };
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(RulesClient::new(ch).apply(request).await?.into_inner()) }
        })
        .await
    }

    /// One rule.
    pub async fn get_rule(&self, id: &str) -> Result<Rule, Error> {
        let request = GetRuleRequest { id: id.to_owned() };
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(RulesClient::new(ch).get(request).await?.into_inner()) }
        })
        .await
    }

    /// Every rule.
    pub async fn list_rules(&self) -> Result<Vec<Rule>, Error> {
        self.call(|ch| async move {
            Ok(RulesClient::new(ch)
                .list(ListRulesRequest {})
                .await?
                .into_inner()
                .rules)
        })
        .await
    }

    /// Every version of a rule, oldest first (kept after a delete).
    pub async fn rule_history(&self, id: &str) -> Result<Vec<Rule>, Error> {
        let request = GetRuleRequest { id: id.to_owned() };
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(RulesClient::new(ch)
                    .history(request)
                    .await?
                    .into_inner()
                    .rules)
            }
        })
        .await
    }

    /// Re-applies the document of an earlier `version` of rule `id`: it becomes a new version.
    pub async fn rollback_rule(&self, id: &str, version: u64) -> Result<Rule, Error> {
        let history = self.rule_history(id).await?;
        let Some(old) = history.into_iter().find(|r| r.version == version) else {
            return Err(Error::NotFound(format!(
                "rule {id} has no version {version}"
            )));
        };
        self.apply_rule(&old.document, "json").await
    }

    /// Deletes a rule; returns the version of the deletion.
    pub async fn delete_rule(&self, id: &str) -> Result<u64, Error> {
        let request = DeleteRuleRequest { id: id.to_owned() };
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(RulesClient::new(ch)
                    .delete(request)
                    .await?
                    .into_inner()
                    .version)
            }
        })
        .await
    }

    /// Alarms matching the request's tenant, device and status filters.
    pub async fn list_alarms(&self, request: ListAlarmsRequest) -> Result<Vec<Alarm>, Error> {
        self.call(|ch| {
            let request = request.clone();
            async move {
                Ok(AlertsClient::new(ch)
                    .list(request)
                    .await?
                    .into_inner()
                    .alarms)
            }
        })
        .await
    }

    /// Acknowledges an alarm.
    pub async fn ack_alarm(&self, id: &str) -> Result<Alarm, Error> {
        let request = AckAlarmRequest { id: id.to_owned() };
        self.call(|ch| {
            let request = request.clone();
            async move { Ok(AlertsClient::new(ch).ack(request).await?.into_inner()) }
        })
        .await
    }

    /// Committed alarm transitions from now on. Opening the stream fails over; the open
    /// stream does not (re-watch on an `Err` item).
    ///
    /// ```no_run
    /// # async fn demo(client: starling_sdk::Client) -> Result<(), starling_sdk::Error> {
    /// use futures::StreamExt;
    /// use starling_sdk::proto::{Transition, WatchAlarmsRequest};
    ///
    /// let mut events = client
    ///     .watch_alarms(WatchAlarmsRequest { severity: "critical".into(), ..Default::default() })
    ///     .await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     let raised = event.transition() == Transition::Raised;
    ///     let alarm = event.alarm.unwrap_or_default();
    ///     if raised {
    ///         println!("{} raised on {}: {}", alarm.rule_id, alarm.device, alarm.message);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_alarms(&self, request: WatchAlarmsRequest) -> Result<AlarmStream, Error> {
        let stream = self
            .call(|ch| {
                let request = request.clone();
                async move { Ok(AlertsClient::new(ch).watch(request).await?.into_inner()) }
            })
            .await?;
        Ok(stream.map(|item| item.map_err(Error::from)).boxed())
    }

    /// The answering node's view of the cluster.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        self.call(|ch| async move {
            Ok(ClusterClient::new(ch)
                .status(ClusterStatusRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// Every member with its health and lease as the leader sees it (recorded state when
    /// the answering node is not the leader).
    pub async fn cluster_members(&self) -> Result<ClusterMembersResponse, Error> {
        self.call(|ch| async move {
            Ok(ClusterClient::new(ch)
                .members(ClusterMembersRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// The shard map as runs of consecutive shards with the same owner and epoch.
    pub async fn cluster_shards(&self) -> Result<ClusterShardsResponse, Error> {
        self.call(|ch| async move {
            Ok(ClusterClient::new(ch)
                .shards(ClusterShardsRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// Removes a node from the cluster: its shards move to the others, then it leaves the
    /// Raft membership.
    pub async fn remove_member(&self, node_id: u64) -> Result<(), Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .remove_member(RemoveMemberRequest { node_id })
                .await?;
            Ok(())
        })
        .await
    }
}
