//! Rules through Raft and alarms from device actors, driven through the SDK and the CLI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use starling_sdk::proto::{AlarmStatus, ListAlarmsRequest, Transition, WatchAlarmsRequest};
use tokio_stream::StreamExt;

const HOT: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}},"severity":"major"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn threshold_rule_raises_one_alarm_with_its_version_and_clears() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let v1 = client.apply_rule(HOT, "json").await.unwrap();
    let v2 = client.apply_rule(HOT, "json").await.unwrap();
    assert!(
        v2.version > v1.version,
        "versions must increase: {} then {}",
        v1.version,
        v2.version
    );

    let mut watch = client
        .watch_alarms(WatchAlarmsRequest {
            device: "boiler".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut dev = Device::connect(node.node.mqtt_port(), "boiler")
        .await
        .unwrap();
    for (ts, temp) in [(1, 20.0), (2, 35.0), (3, 40.0), (4, 36.0)] {
        dev.send(format!(r#"{{"ts": {ts}, "temp": {temp}}}"#))
            .await
            .unwrap();
    }
    dev.wait_acks(4).await.unwrap();

    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("alarm event")
        .unwrap()
        .unwrap();
    assert_eq!(ev.transition, Transition::Raised as i32);
    let alarm = ev.alarm.unwrap();
    assert_eq!(alarm.rule_id, "hot");
    assert_eq!(alarm.rule_version, v2.version);
    assert_eq!(alarm.raised_at_ms, 2);

    // Three hot points, one active alarm.
    let active = client
        .list_alarms(ListAlarmsRequest {
            status: AlarmStatus::Active as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 1, "{active:?}");

    dev.send(r#"{"ts": 5, "temp": 10}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("clear event")
        .unwrap()
        .unwrap();
    assert_eq!(ev.transition, Transition::Cleared as i32);

    let acked = client.ack_alarm(&alarm.id).await.unwrap();
    assert!(acked.acknowledged);
    assert_eq!(acked.status, AlarmStatus::Cleared as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_rule_is_refused_with_the_field() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let bad = r#"{"id":"x","condition":{"threshold":{"metric":"","op":">","value":1}}}"#;
    let err = client.apply_rule(bad, "json").await.unwrap_err();
    match err {
        starling_sdk::Error::InvalidArgument { message, .. } => {
            assert!(message.contains("condition.threshold.metric"), "{message}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(client.list_rules().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn alarms_and_rules_survive_restart() {
    let mut node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let rule = client.apply_rule(HOT, "json").await.unwrap();
    let mut dev = Device::connect(node.node.mqtt_port(), "oven")
        .await
        .unwrap();
    dev.send(r#"{"ts": 1, "temp": 99}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    wait_metric(&node.node, "starling_alarm_transitions_total", 1.0)
        .await
        .unwrap();
    node.node.kill9().await.unwrap();
    node.node.restart().await.unwrap();

    let client = common::client(&node.node).unwrap();
    let rules = client.list_rules().await.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].version, rule.version);
    // The alarm is still active, and a new hot point after restart does not raise a second.
    let mut dev = Device::connect(node.node.mqtt_port(), "oven")
        .await
        .unwrap();
    dev.send(r#"{"ts": 2, "temp": 98}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    wait_points(&client, "oven", 2).await.unwrap();
    let alarms = client
        .list_alarms(ListAlarmsRequest::default())
        .await
        .unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].status, AlarmStatus::Active as i32);
}

/// The CLI as a user runs it: apply a rule from a file, query telemetry as JSON lines.
#[tokio::test(flavor = "multi_thread")]
async fn cli_rules_apply_and_telemetry_query_json() {
    let node = start_node(None, &[]).await.unwrap();
    let profile = node.node.profile_path();
    let rule_file = node.dir.path().join("rule.json");
    std::fs::write(&rule_file, HOT).unwrap();
    let out = Command::new(bin())
        .args(["rules", "apply", "--file"])
        .arg(&rule_file)
        .arg("--profile")
        .arg(&profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut dev = Device::connect(node.node.mqtt_port(), "cli-dev")
        .await
        .unwrap();
    dev.send(r#"{"ts": 1732200000000, "temp": 21.5}"#)
        .await
        .unwrap();
    dev.wait_acks(1).await.unwrap();
    let client = client(&node.node).unwrap();
    wait_points(&client, "cli-dev", 1).await.unwrap();

    let out = Command::new(bin())
        .args([
            "telemetry",
            "query",
            "--device",
            "cli-dev",
            "--format",
            "json",
            "--from",
            "2024-01-01T00:00:00Z",
        ])
        .env("STARLING_PROFILE", &profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"device": "cli-dev", "metric": "temp", "ts": 1732200000000i64, "value": 21.5})
    );

    let out = Command::new(bin())
        .args(["alerts", "list", "--format", "json"])
        .env("STARLING_PROFILE", &profile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn example_rules() -> Vec<(std::path::PathBuf, String, &'static str)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml") => "yaml",
                _ => "json",
            };
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text, format)
        })
        .collect()
}

/// Every example in examples/rules/ (one per condition type, JSON and YAML) is accepted by a
/// real node through the API, and a YAML one through the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn every_example_rule_applies() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let examples = example_rules();
    for (path, text, format) in &examples {
        let rule = client
            .apply_rule(text, format)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Stored and served back as the JSON of the same document.
        let stored: serde_json::Value = serde_json::from_str(&rule.document).unwrap();
        assert!(stored.get("condition").is_some(), "{}", rule.document);
    }
    assert_eq!(client.list_rules().await.unwrap().len(), examples.len());

    let yaml = examples
        .iter()
        .find(|(_, _, f)| *f == "yaml")
        .expect("a YAML example");
    let out = Command::new(bin())
        .args(["rules", "apply", "--file"])
        .arg(&yaml.0)
        .arg("--profile")
        .arg(node.node.profile_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A no-data rule raises on the device actor's timer, with no new data, then clears when
/// data comes back. (Real time: the rule waits two seconds; the test waits for events.)
#[tokio::test(flavor = "multi_thread")]
async fn no_data_rule_fires_without_new_data_and_clears_on_data() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let rule = r#"{"id":"offline","selector":{"devices":["quiet"]},
                   "condition":{"no_data":{"seconds":2}},"severity":"warning"}"#;
    let applied = client.apply_rule(rule, "json").await.unwrap();
    let mut watch = client
        .watch_alarms(WatchAlarmsRequest {
            device: "quiet".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut dev = Device::connect(node.node.mqtt_port(), "quiet")
        .await
        .unwrap();
    dev.send(r#"{"temp": 1}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();

    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("no-data alarm without new data")
        .unwrap()
        .unwrap();
    assert_eq!(ev.transition, Transition::Raised as i32);
    let alarm = ev.alarm.unwrap();
    assert_eq!(
        (alarm.rule_id.as_str(), alarm.rule_version),
        ("offline", applied.version)
    );

    dev.send(r#"{"temp": 2}"#).await.unwrap();
    dev.wait_acks(1).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("clear on data")
        .unwrap()
        .unwrap();
    assert_eq!(ev.transition, Transition::Cleared as i32);
}

/// `rules history` lists every version (also after a delete) and `rules rollback` makes an old
/// document current again as a new version, through the real CLI.
#[tokio::test(flavor = "multi_thread")]
async fn rule_history_and_rollback_through_the_cli() {
    let node = start_node(None, &[]).await.unwrap();
    let client = client(&node.node).unwrap();
    let v1 = client.apply_rule(HOT, "json").await.unwrap();
    let warmer = HOT.replace("\"value\":30", "\"value\":35");
    let v2 = client.apply_rule(&warmer, "json").await.unwrap();
    client.delete_rule("hot").await.unwrap();

    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .args(["--format", "json"])
            .env("STARLING_PROFILE", node.node.profile_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let history = cli(&["rules", "history", "hot"]);
    let versions: Vec<u64> = history
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![v1.version, v2.version]);

    let restored = cli(&[
        "rules",
        "rollback",
        "hot",
        "--to-version",
        &v1.version.to_string(),
    ]);
    let version = restored[0]["version"].as_u64().unwrap();
    assert!(version > v2.version, "a rollback is a new version");
    let current = client.get_rule("hot").await.unwrap();
    assert_eq!(current.version, version);
    assert_eq!(
        current.document, v1.document,
        "the old document is current again"
    );
    assert_eq!(client.rule_history("hot").await.unwrap().len(), 3);
}
