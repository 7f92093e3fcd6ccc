//! OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, one trace follows a point from MQTT
//! receive through the device actor and the store to the alarm it raises (with the rule
//! version), exported over OTLP/gRPC to a real collector endpoint run by the test.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use starling_chaos::{NodeOptions, StarlingNode};
use tokio_stream::wrappers::TcpListenerStream;

/// Collects every exported span.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_point_is_traced_from_mqtt_to_its_alarm_over_otlp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut opts = NodeOptions::new(dir.path());
    opts.env = vec![(
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        format!("http://{addr}"),
    )];
    let mut node = StarlingNode::start(bin(), opts).await.unwrap();
    let client = client(&node).unwrap();
    let rule = client
        .apply_rule(
            r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}}}"#,
            "json",
        )
        .await
        .unwrap();
    let mut dev = Device::connect(node.mqtt_port(), "traced").await.unwrap();
    dev.send(r#"{"ts": 1, "temp": 99}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    wait_points(&client, "traced", 1).await.unwrap();
    wait_metric(&node, "starling_alarm_transitions_total", 1.0)
        .await
        .unwrap();
    // A graceful stop flushes the batch exporter.
    let status = node.terminate().await.unwrap();
    assert!(status.success(), "{}", node.log_tail(30));

    let spans = collector.0.lock().unwrap().clone();
    let by_name: HashMap<&str, &Span> = spans
        .iter()
        .filter(|s| attr(s, "device").is_some_and(|d| d.contains("traced")))
        .map(|s| (s.name.as_str(), s))
        .collect();
    for name in [
        "ingest.message",
        "device.route",
        "device.execute",
        "store.write",
        "alarm.raise",
    ] {
        assert!(
            by_name.contains_key(name) || spans.iter().any(|s| s.name == name),
            "span {name} missing; got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    let root = by_name["ingest.message"];
    let raise = spans.iter().find(|s| s.name == "alarm.raise").unwrap();
    assert_eq!(
        raise.trace_id, root.trace_id,
        "the alarm belongs to the point's trace"
    );
    assert_eq!(attr(raise, "rule_version"), Some(rule.version.to_string()));
    let store = spans
        .iter()
        .find(|s| s.name == "store.write" && s.trace_id == root.trace_id);
    assert!(
        store.is_some(),
        "the store write belongs to the point's trace"
    );
}
