//! Notification delivery against real servers: a real Mosquitto (the node's broker and an
//! `alerts/#` subscriber), a real SMTP server (Python's aiosmtpd, writing a Maildir), and a
//! real HTTP server (axum on hyper) that fails the first attempts of every delivery, records
//! the `Idempotency-Key` header and serves as the SMS provider webhook.

mod common;

#[path = "t55_notify/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use servers::*;
use starling_sdk::proto::{AlarmStatus, ListAlarmsRequest};

#[tokio::test(flavor = "multi_thread")]
async fn every_transition_reaches_every_target_with_its_idempotency_key() {
    let work = tempfile::tempdir().unwrap();
    let broker = start_mosquitto().await.unwrap();
    let smtp = Smtp::start(work.path()).await.unwrap();
    let (http_port, seen) = start_http(2).await.unwrap();
    let config = write_notify_config(
        work.path(),
        &format!(
            "retry_attempts = 5\nretry_min_delay = \"20ms\"\nretry_max_delay = \"100ms\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\n\
             smtp_from = \"Starling <alerts@example.com>\"\n\
             sms_url = \"http://127.0.0.1:{http_port}/sms\"\nsms_token = \"t0k\"\n",
            smtp.port
        ),
    )
    .unwrap();
    let mut alerts = subscribe_alerts(broker.port()).await.unwrap();
    let node = start_notifying_node(&broker, &config).await.unwrap();
    let client = client(&node.node).unwrap();
    let rule = format!(
        r#"{{"id":"hot","condition":{{"threshold":{{"metric":"temp","op":">","value":30}}}},
            "severity":"major","notify":[
              {{"webhook":{{"url":"http://127.0.0.1:{http_port}/flaky"}}}},
              {{"email":{{"to":"ops@example.com"}}}},
              {{"sms":{{"to":"+15550100"}}}},
              {{"mqtt":{{}}}}]}}"#
    );
    client.apply_rule(&rule, "json").await.unwrap();

    let mut dev = Device::connect(broker.port(), "boiler").await.unwrap();
    dev.send(r#"{"ts": 1, "temp": 35}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    dev.send(r#"{"ts": 2, "temp": 20}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let cleared = ListAlarmsRequest {
        status: AlarmStatus::Cleared as i32,
        ..Default::default()
    };
    let alarms = wait_alarms(&client, cleared, 1).await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let id = alarms[0].id.clone();
    client.ack_alarm(&id).await.unwrap();
    let keys: Vec<String> = ["raised", "cleared", "acknowledged"]
        .iter()
        .map(|t| format!("{id}:{t}"))
        .collect();

    // Webhook: each key answered 503 twice, then 200; every attempt carried the key.
    let flaky = eventually("three webhook deliveries", || {
        let seen = seen.lock().unwrap();
        let by_key: BTreeMap<String, Vec<serde_json::Value>> = seen
            .iter()
            .filter(|(p, _, _)| p == "/flaky")
            .fold(BTreeMap::new(), |mut m, (_, k, b)| {
                m.entry(k.clone()).or_default().push(b.clone());
                m
            });
        (keys
            .iter()
            .all(|k| by_key.get(k).is_some_and(|v| v.len() >= 3)))
        .then_some(by_key)
    })
    .await
    .unwrap();
    assert_eq!(flaky.len(), 3, "only the three keys: {:?}", flaky.keys());
    for (key, bodies) in &flaky {
        for body in bodies {
            assert_eq!(body["idempotency_key"], key.as_str());
            assert_eq!(
                format!(
                    "{}:{}",
                    body["alarm"]["id"].as_str().unwrap(),
                    body["transition"].as_str().unwrap()
                ),
                *key
            );
            assert_eq!(body["alarm"]["device"], "boiler");
            assert_eq!(body["alarm"]["severity"], "major");
        }
    }

    // SMS provider webhook: {to, text} with the key, once per transition.
    let sms = eventually("three SMS", || {
        let seen = seen.lock().unwrap();
        let sms: Vec<_> = seen
            .iter()
            .filter(|(p, _, _)| p == "/sms")
            .cloned()
            .collect();
        (sms.len() >= 3).then_some(sms)
    })
    .await
    .unwrap();
    let mut sms_keys: Vec<String> = sms.iter().map(|(_, k, _)| k.clone()).collect();
    sms_keys.sort();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    assert_eq!(sms_keys, sorted_keys);
    for (_, _, body) in &sms {
        assert_eq!(body["to"], "+15550100");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("[major] boiler: hot "),
            "{body}"
        );
    }

    // Email through the real SMTP server, Message-ID from the key.
    let mails = eventually("three emails", || {
        let m = smtp.messages();
        (m.len() >= 3).then_some(m)
    })
    .await
    .unwrap();
    assert_eq!(mails.len(), 3);
    for t in ["raised", "cleared", "acknowledged"] {
        let mid = format!("<{id}.{t}@starling.alerts>");
        let mail = mails
            .iter()
            .find(|m| m.contains(&mid))
            .unwrap_or_else(|| panic!("no mail with Message-ID {mid}: {mails:?}"));
        assert!(mail.contains("To: ops@example.com"), "{mail}");
        assert!(
            mail.contains(&format!("Subject: [major] boiler: hot {t}")),
            "{mail}"
        );
    }

    // MQTT alerts/boiler, QoS 1, JSON with the key.
    let mut got = Vec::new();
    while got.len() < 3 {
        let (topic, body) = tokio::time::timeout(Duration::from_secs(30), alerts.recv())
            .await
            .expect("alert on alerts/boiler")
            .unwrap();
        assert_eq!(topic, "alerts/boiler");
        got.push(body["idempotency_key"].as_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, sorted_keys);

    let text = node.node.metrics_text().await.unwrap();
    for kind in ["webhook", "email", "sms", "mqtt"] {
        assert_eq!(
            series(&text, "starling_notify_sent_total", kind),
            3.0,
            "{kind}\n{text}"
        );
    }
    assert!(series(&text, "starling_notify_retries_total", "webhook") >= 6.0);
    assert_eq!(
        series(&text, "starling_notify_failed_total", "webhook"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_errors_are_not_retried_and_rate_limits_drop() {
    let work = tempfile::tempdir().unwrap();
    let broker = start_mosquitto().await.unwrap();
    let (http_port, seen) = start_http(0).await.unwrap();
    let config = write_notify_config(
        work.path(),
        "retry_attempts = 5\nretry_min_delay = \"20ms\"\nrate_per_minute = 1\nrate_burst = 1\n",
    )
    .unwrap();
    let node = start_notifying_node(&broker, &config).await.unwrap();
    let client = client(&node.node).unwrap();
    let rule = format!(
        r#"{{"id":"hot","condition":{{"threshold":{{"metric":"temp","op":">","value":30}}}},
            "notify":[{{"webhook":{{"url":"http://127.0.0.1:{http_port}/reject"}}}},
                      {{"email":{{"to":"ops@example.com"}}}}]}}"#
    );
    client.apply_rule(&rule, "json").await.unwrap();
    let mut dev = Device::connect(broker.port(), "oven").await.unwrap();
    dev.send(r#"{"ts": 1, "temp": 35}"#).await.unwrap();
    dev.send(r#"{"ts": 2, "temp": 20}"#).await.unwrap();
    dev.wait_acks(2).await.unwrap();

    // Raised: one attempt, answered 400, not retried. Cleared: over the 1/min limit, dropped.
    wait_metric(&node.node, "starling_notify_rate_limited_total", 2.0)
        .await
        .unwrap();
    wait_metric(&node.node, "starling_notify_failed_total", 2.0)
        .await
        .unwrap();
    let text = node.node.metrics_text().await.unwrap();
    assert_eq!(
        series(&text, "starling_notify_failed_total", "webhook"),
        1.0,
        "{text}"
    );
    // Email is not configured here: a permanent failure naming the setting.
    assert_eq!(
        series(&text, "starling_notify_failed_total", "email"),
        1.0,
        "{text}"
    );
    assert_eq!(
        series(&text, "starling_notify_rate_limited_total", "webhook"),
        1.0
    );
    assert_eq!(
        series(&text, "starling_notify_retries_total", "webhook"),
        0.0
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].1.ends_with(":raised"), "{seen:?}");
    assert!(
        node.node
            .log_tail(200)
            .contains("notify.smtp_host is not set")
    );
}

/// `starling alerts list` through the real CLI, returning the alarms' (rule, severity).
fn cli_list(profile: &Path, filters: &[&str]) -> Vec<(String, String)> {
    let out = Command::new(bin())
        .args(["alerts", "list", "--format", "json"])
        .args(filters)
        .env("STARLING_PROFILE", profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let alarms: Vec<serde_json::Value> = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    let mut got: Vec<(String, String)> = alarms
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_list_and_watch_filter_by_device_severity_and_status() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    for (id, limit, severity) in [("hot", 30, "major"), ("warm", 25, "minor")] {
        let rule = format!(
            r#"{{"id":"{id}","condition":{{"threshold":{{"metric":"temp","op":">","value":{limit}}}}},"severity":"{severity}"}}"#
        );
        client.apply_rule(&rule, "json").await.unwrap();
    }
    let mut dev = Device::connect(node.node.mqtt_port(), "kiln")
        .await
        .unwrap();
    dev.send(r#"{"ts": 1, "temp": 35}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let all = wait_alarms(&client, ListAlarmsRequest::default(), 2).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let hot = all.iter().find(|a| a.rule_id == "hot").unwrap();
    client.ack_alarm(&hot.id).await.unwrap();

    let profile = node.node.profile_path();
    let pair = |r: &str, s: &str| (r.to_owned(), s.to_owned());
    type Case<'a> = (&'a [&'a str], Vec<(String, String)>);
    let cases: [Case; 7] = [
        (&[], vec![pair("hot", "major"), pair("warm", "minor")]),
        (&["--severity", "major"], vec![pair("hot", "major")]),
        (&["--status", "unacked"], vec![pair("warm", "minor")]),
        (&["--status", "acked"], vec![pair("hot", "major")]),
        (&["--severity", "minor", "--status", "acked"], vec![]),
        (
            &["--status", "active", "--device", "kiln"],
            vec![pair("hot", "major"), pair("warm", "minor")],
        ),
        (&["--device", "other"], vec![]),
    ];
    for (filters, expected) in cases {
        assert_eq!(cli_list(&profile, filters), expected, "{filters:?}");
    }

    // Watch: only the minor alarm's clear passes severity + status filters.
    let mut watch = client
        .watch_alarms(starling_sdk::proto::WatchAlarmsRequest {
            severity: "minor".into(),
            status: AlarmStatus::Cleared as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    dev.send(r#"{"ts": 2, "temp": 10}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let ev = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_stream::StreamExt::next(&mut watch),
    )
    .await
    .expect("a cleared minor alarm")
    .unwrap()
    .unwrap();
    let alarm = ev.alarm.unwrap();
    assert_eq!(
        (alarm.rule_id.as_str(), alarm.severity.as_str()),
        ("warm", "minor")
    );
    assert_eq!(alarm.status, AlarmStatus::Cleared as i32);
    // The major alarm's clear was committed before this acknowledgement; the next event
    // being the acknowledgement (it leaves the minor alarm cleared) shows it was filtered out.
    client.ack_alarm(&alarm.id).await.unwrap();
    let next = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_stream::StreamExt::next(&mut watch),
    )
    .await;
    let ev = next.expect("the acknowledgement").unwrap().unwrap();
    assert_eq!(
        ev.transition,
        starling_sdk::proto::Transition::Acknowledged as i32
    );
    assert_eq!(ev.alarm.unwrap().rule_id, "warm");
}

fn raised_event(id: &str) -> starling_node::model::AlarmEvent {
    use starling_node::model::{Alarm, AlarmEvent, AlarmStatus, DeviceKey, Transition, Value};
    AlarmEvent {
        alarm: Alarm {
            id: id.into(),
            device: DeviceKey::default_tenant("boiler"),
            rule_id: "hot".into(),
            rule_version: 3,
            severity: "major".into(),
            status: AlarmStatus::Active,
            acknowledged: false,
            metric: "temp".into(),
            value: Value::Number(35.0),
            raised_at_ms: 1,
            cleared_at_ms: None,
            message: String::new(),
        },
        transition: Transition::Raised,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn email_over_starttls_and_smtps_trusts_only_the_configured_ca() {
    use starling_node::certs::{Usage, make_ca, make_signed_cert};
    use starling_node::config::notify::{NotifyConfig, SmtpTls};
    use starling_node::notify::email::Mailer;

    let work = tempfile::tempdir().unwrap();
    let ca = make_ca("smtp test ca").unwrap();
    let server = make_signed_cert(&ca, "localhost", &["localhost"], Usage::Server).unwrap();
    let (ca_pem, cert, key) = (
        work.path().join("ca.pem"),
        work.path().join("smtp.pem"),
        work.path().join("smtp.key"),
    );
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    let starttls = Smtp::start_with(
        work.path(),
        &[Path::new("--tlscert"), &cert, Path::new("--tlskey"), &key],
    )
    .await
    .unwrap();
    let smtps = Smtp::start_with(
        work.path(),
        &[
            Path::new("--smtpscert"),
            &cert,
            Path::new("--smtpskey"),
            &key,
        ],
    )
    .await
    .unwrap();

    for (smtp, mode, id) in [
        (&starttls, SmtpTls::Starttls, "a-1"),
        (&smtps, SmtpTls::Tls, "a-2"),
    ] {
        let config = NotifyConfig {
            smtp_host: Some("localhost".into()),
            smtp_port: smtp.port,
            smtp_tls: mode,
            smtp_from: Some("alerts@example.com".into()),
            smtp_ca: Some(ca_pem.clone()),
            attempt_timeout: Duration::from_secs(10),
            ..NotifyConfig::default()
        };
        let mailer = Mailer::from_config(&config).unwrap().unwrap();
        mailer
            .send("ops@example.com", &raised_event(id))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let mails = smtp.messages();
        assert_eq!(mails.len(), 1, "{mode:?}");
        assert!(mails[0].contains(&format!("<{id}.raised@starling.alerts>")));

        // Without the private CA the server's certificate is not trusted: nothing is sent.
        let untrusted = Mailer::from_config(&NotifyConfig {
            smtp_ca: None,
            ..config
        })
        .unwrap()
        .unwrap();
        let err = untrusted
            .send("ops@example.com", &raised_event("a-9"))
            .await
            .unwrap_err();
        assert!(!err.message.is_empty());
        assert_eq!(smtp.messages().len(), 1, "{mode:?}: {err}");
    }
    // STARTTLS is required by this server: a plain-text client is refused.
    let plain = Mailer::from_config(&NotifyConfig {
        smtp_host: Some("localhost".into()),
        smtp_port: starttls.port,
        smtp_tls: SmtpTls::None,
        smtp_from: Some("alerts@example.com".into()),
        ..NotifyConfig::default()
    })
    .unwrap()
    .unwrap();
    assert!(
        plain
            .send("ops@example.com", &raised_event("a-8"))
            .await
            .is_err()
    );
    assert_eq!(starttls.messages().len(), 1);
}
