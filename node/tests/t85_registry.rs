//! The device registry on a real 3-node `starling serve` cluster behind a real Mosquitto,
//! with `serve`'s default `ingest.auto_provision = false`: registration through one node is
//! read on the others (Raft), list filters and paging, relabel, delete, field-named errors;
//! an unknown device's telemetry is acknowledged, not stored, counted and explained on
//! `devices/{id}/errors`; the CLI prints the registry as a table and as JSON lines.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::TestCluster;
use common::{Device, bin, query_all, wait_points};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use starling_sdk::proto::{ListDevicesRequest, RegisterDeviceRequest, UpdateLabelsRequest};
use starling_sdk::{Client, Error};

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn register(client: &Client, id: &str, t: &str, l: &[(&str, &str)]) {
    let device = client
        .register_device(RegisterDeviceRequest {
            id: id.into(),
            r#type: t.into(),
            labels: labels(l),
            ..Default::default()
        })
        .await
        .expect("register");
    assert_eq!((device.id.as_str(), device.r#type.as_str()), (id, t));
    assert!(!device.auto_provisioned && device.registered_at_ms > 0);
}

/// Ids of the devices `client` lists for a type and labels filter.
async fn ids(client: &Client, t: &str, l: &[(&str, &str)]) -> Vec<String> {
    let request = ListDevicesRequest {
        r#type: t.into(),
        labels: labels(l),
        ..Default::default()
    };
    let devices = client.list_devices_matching(request).await.expect("list");
    devices.into_iter().map(|d| d.id).collect()
}

/// Polls until `client` lists `want` for the filter (reads trail the leader by a heartbeat).
async fn wait_ids(client: &Client, t: &str, l: &[(&str, &str)], want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = ids(client, t, l).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "filter {t:?} {l:?}: {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sum over the nodes of `starling_ingest_rejected_total{reason="unknown_device"}`.
async fn unknown_device_rejections(tc: &TestCluster) -> f64 {
    let mut sum = 0.0;
    for node in &tc.cluster.nodes {
        let page = starling_chaos::http::get(node.http_port, "/metrics")
            .await
            .expect("metrics");
        sum += page
            .body
            .lines()
            .filter(|l| {
                l.starts_with("starling_ingest_rejected_total{")
                    && l.contains("reason=\"unknown_device\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// An MQTT client recording what arrives on `filter`.
async fn subscriber(port: u16, filter: &str) -> (AsyncClient, Arc<Mutex<Vec<String>>>) {
    let opts = MqttOptions::new("errors-listener", "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => sink
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&p.payload).into_owned()),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SUBACK in time")
        .expect("SUBACK");
    (client, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_filters_rejection_and_cli() {
    let tc = TestCluster::start_with(3, "").await.expect("cluster");
    let via_1 = tc.client_of(1).expect("client 1");
    let via_3 = tc.client_of(3).expect("client 3");

    // Register through node 1; list and filter through node 3.
    register(&via_1, "truck-a", "truck", &[("site", "north")]).await;
    register(&via_1, "van-b", "van", &[("site", "north")]).await;
    register(
        &via_1,
        "truck-c",
        "truck",
        &[("site", "south"), ("fleet", "7")],
    )
    .await;
    wait_ids(&via_3, "", &[], &["truck-a", "truck-c", "van-b"]).await;
    wait_ids(&via_3, "truck", &[], &["truck-a", "truck-c"]).await;
    wait_ids(&via_3, "", &[("site", "north")], &["truck-a", "van-b"]).await;
    wait_ids(&via_3, "truck", &[("site", "north")], &["truck-a"]).await;
    wait_ids(&via_3, "boat", &[], &[]).await;
    // Paging: one device per page still yields every device once, in id order.
    let page = via_3
        .list_devices_matching(ListDevicesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("paged list");
    let paged: Vec<_> = page.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(paged, ["truck-a", "truck-c", "van-b"]);

    // Relabel: set one, remove one.
    let relabelled = via_3
        .update_device_labels(UpdateLabelsRequest {
            id: "truck-c".into(),
            set: labels(&[("site", "north")]),
            remove: vec!["fleet".into()],
            ..Default::default()
        })
        .await
        .expect("label");
    assert_eq!(relabelled.labels, labels(&[("site", "north")]));
    wait_ids(
        &via_1,
        "truck",
        &[("site", "north")],
        &["truck-a", "truck-c"],
    )
    .await;

    // Delete; a second delete and a get are NOT_FOUND.
    via_1.delete_device("", "van-b").await.expect("delete");
    wait_ids(&via_3, "", &[], &["truck-a", "truck-c"]).await;
    assert!(matches!(
        via_3.delete_device("", "van-b").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        via_1.get_device("", "van-b").await,
        Err(Error::NotFound(_))
    ));
    // Invalid labels name the field.
    let bad = via_1
        .register_device(RegisterDeviceRequest {
            id: "x".into(),
            labels: labels(&[("bad key", "v")]),
            ..Default::default()
        })
        .await;
    match bad {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field.as_deref(), Some("labels.bad key"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    // Telemetry: a registered device is stored; an unknown one is acknowledged, not stored,
    // counted and told why on its errors topic.
    let port = tc.broker.port();
    let (_listener, reports) = subscriber(port, "devices/stranger/errors").await;
    let mut known = Device::connect(port, "truck-a").await.expect("device");
    known
        .send(r#"{"ts": 1732200000000, "temp": 21.5}"#)
        .await
        .expect("publish");
    known.wait_acks(1).await.expect("PUBACK");
    wait_points(&via_1, "truck-a", 1).await.expect("stored");
    let before = unknown_device_rejections(&tc).await;
    let mut stranger = Device::connect(port, "stranger").await.expect("device");
    for ts in 0..3 {
        stranger
            .send(format!(
                r#"{{"ts": {}, "temp": 1}}"#,
                1_732_200_000_000i64 + ts
            ))
            .await
            .expect("publish");
    }
    stranger
        .wait_acks(3)
        .await
        .expect("PUBACKs for refused messages");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reports.lock().expect("lock").len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "error reports: {:?}",
            reports.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for report in reports.lock().expect("lock").iter() {
        let v: serde_json::Value = serde_json::from_str(report).expect("JSON report");
        assert_eq!(v["reason"], "unknown_device", "{report}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("starling devices register stranger"),
            "{report}"
        );
    }
    assert_eq!(unknown_device_rejections(&tc).await - before, 3.0);
    assert!(
        query_all(&via_1, "stranger")
            .await
            .expect("query")
            .is_empty()
    );
    assert!(matches!(
        via_1.get_device("", "stranger").await,
        Err(Error::NotFound(_))
    ));
    // gRPC publish of an unknown device: FAILED_PRECONDITION, not stored.
    let refused = via_3
        .publish(
            "",
            "stranger",
            vec![starling_sdk::proto::Sample {
                ts_ms: 1_732_200_000_000,
                values: HashMap::from([(
                    "temp".to_owned(),
                    starling_sdk::proto::Value {
                        kind: Some(starling_sdk::proto::value::Kind::Number(1.0)),
                    },
                )]),
                ..Default::default()
            }],
        )
        .await;
    match refused {
        Err(Error::Other(s)) => assert_eq!(s.code(), tonic::Code::FailedPrecondition),
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }

    // The CLI: JSON lines and a table of the same registry.
    let profile = tc.cluster.profile();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--profile")
            .arg(&profile)
            .output()
            .expect("run starling");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    run(&[
        "devices", "register", "meter-1", "--type", "meter", "--label", "floor=2",
    ]);
    let json = run(&["devices", "list", "--type", "meter", "--format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    assert_eq!(lines[0]["id"], "meter-1");
    assert_eq!(lines[0]["type"], "meter");
    assert_eq!(lines[0]["labels"], serde_json::json!({"floor": "2"}));
    let labelled = run(&["devices", "label", "meter-1", "room=b", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(labelled.trim()).expect("JSON");
    assert_eq!(v["labels"], serde_json::json!({"floor": "2", "room": "b"}));
    let table = run(&["devices", "list", "--label", "site=north"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("TENANT") && rows[0].contains("LABELS"),
        "{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[1].contains("truck-a") && rows[1].contains("site=north"),
        "{table}"
    );
    let deleted = run(&["devices", "delete", "meter-1", "--format", "json"]);
    assert!(deleted.contains("\"deleted\":\"meter-1\""), "{deleted}");
    // A CLI error names what to do.
    let out = std::process::Command::new(bin())
        .args(["devices", "get", "meter-1", "--profile"])
        .arg(&profile)
        .output()
        .expect("run starling");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
}
