//! Tests of the serve configuration: the reference file, defaults, schema errors, environment
//! overrides, and the conversions. The validation rules are in `serve_validate_tests.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::serve::*;
use super::serve_env::{KEYS, Kind};

/// The reference configuration shipped in `examples/`.
const EXAMPLE: &str = include_str!("../../../examples/starling.toml");

/// The smallest valid file: required keys, addresses to advertise, and a way into a cluster.
const MINIMAL: &str = r#"
node_id = 2
data_dir = "/data"
[advertise]
peer = "10.0.0.2:7700"
client = "10.0.0.2:7600"
[tls]
ca = "ca.pem"
cert = "node-2.pem"
key = "node-2.key"
[cluster]
join = ["10.0.0.1:7700"]
"#;

type Env = Vec<(String, String)>;

fn env(vars: &[(&str, &str)]) -> Env {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<ServeConfig, ServeConfigError> {
    ServeConfig::load_from(text, env(vars))
}

pub(super) fn minimal() -> ServeConfig {
    let c = load(MINIMAL, &[]).expect("minimal config loads");
    c.validate().expect("minimal config is valid");
    c
}

#[test]
fn the_example_loads_and_validates() {
    let c = load(EXAMPLE, &[]).expect("example loads");
    c.validate().expect("example is valid");
    assert_eq!(c.node_id, 1);
    assert_eq!(c.cluster.bootstrap.len(), 3);
    assert_eq!(c.advertise_peer(), "10.0.0.1:7700");
    assert_eq!(c.mqtt_client_id(), "starling-node-1");
}

#[test]
fn the_example_states_the_code_defaults() {
    // The example writes every defaulted key out with its default: it must not drift.
    let c = load(EXAMPLE, &[]).expect("example loads");
    assert_eq!(c.listen, Listen::default());
    assert_eq!(
        Cluster {
            bootstrap: Vec::new(),
            ..c.cluster
        },
        Cluster::default()
    );
    assert_eq!(c.mqtt, Mqtt::default());
    assert_eq!(c.ingest, Ingest::default());
    assert_eq!(c.log, Log::default());
    assert_eq!(c.notify, crate::config::notify::NotifyConfig::default());
    assert_eq!(c.tls.client_ca, None);
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = minimal();
    let ms = Duration::from_millis;
    assert_eq!(c.listen.peer.to_string(), "0.0.0.0:7700");
    assert_eq!(c.listen.client.to_string(), "0.0.0.0:7600");
    assert_eq!(c.listen.http.to_string(), "0.0.0.0:8080");
    let k = &c.cluster;
    assert_eq!((k.shards, k.max_voters), (4096, 3));
    assert_eq!(
        (k.heartbeat, k.lease, k.failure_timeout, k.drift_margin),
        (ms(200), ms(1000), ms(1500), ms(200))
    );
    let m = &c.mqtt;
    assert_eq!(m.broker, "127.0.0.1:1883");
    assert_eq!(
        (m.receive_maximum, m.connections, m.rescue),
        (1000, 1, true)
    );
    assert_eq!((&m.username, &m.password), (&None, &None));
    assert_eq!(c.mqtt_client_id(), "starling-node-2");
    let i = &c.ingest;
    assert_eq!(i.max_payload_bytes, 64 * 1024);
    assert_eq!((i.max_ts_future, i.max_ts_age), (ms(86_400_000), None));
    assert_eq!((i.idle_timeout, i.auto_provision), (ms(300_000), false));
    assert_eq!(c.client_ca(), std::path::Path::new("ca.pem"));
}

#[test]
fn schema_errors_name_the_key_and_line() {
    let with = |extra: &str| format!("{MINIMAL}{extra}");
    let cases: Vec<(String, &[&str])> = vec![
        (
            MINIMAL.replace("node_id = 2", "node_idd = 2"),
            &["unknown field `node_idd`", "line 2"],
        ),
        (
            with("[mqtt]\nbrokr = \"h:1883\"\n"),
            &["unknown field `brokr`", "line 14", "brokr = "],
        ),
        (with("[logging]\n"), &["unknown field `logging`"]),
        (
            MINIMAL.replace(
                "join = [\"10.0.0.1:7700\"]",
                "bootstrap = [{ id = 2, peer = \"h:7700\", voter = true }]",
            ),
            &["unknown field `voter`"],
        ),
        (
            MINIMAL.replace("[cluster]", "[cluster]\nlease = \"soon\""),
            &["\"soon\" is not a duration", "line 12"],
        ),
        (
            MINIMAL.replace("[cluster]", "[cluster]\nlease = 1500"),
            &["expected a string", "lease = 1500"],
        ),
        (
            with("[listen]\npeer = \"localhost:7700\"\n"),
            &["invalid socket address", "line 14"],
        ),
        (
            with("[mqtt]\nconnections = 300\n"),
            &["connections = 300", "u8"],
        ),
        (
            MINIMAL.replace("node_id = 2", ""),
            &["missing field `node_id`"],
        ),
        (
            MINIMAL.replace("key = \"node-2.key\"", ""),
            &["missing field `key`"],
        ),
        (with("[mqtt\n"), &["line 13", "config:"]),
    ];
    for (text, needles) in cases {
        let err = load(&text, &[]).expect_err(needles[0]);
        assert!(matches!(err, ServeConfigError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        for needle in needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
}

#[test]
fn environment_overrides_win_over_the_file() {
    type Check = fn(&ServeConfig) -> bool;
    let cases: Vec<(&[(&str, &str)], Check)> = vec![
        (&[("STARLING_NODE_ID", "3")], |c| c.node_id == 3),
        (&[("STARLING_DATA_DIR", "/srv/x")], |c| {
            c.data_dir == std::path::Path::new("/srv/x")
        }),
        (&[("STARLING_MQTT__BROKER", "10.0.0.5:1883")], |c| {
            c.mqtt.broker == "10.0.0.5:1883"
        }),
        (&[("starling_mqtt__broker", "b:1")], |c| {
            c.mqtt.broker == "b:1"
        }),
        (&[("STARLING_MQTT__PASSWORD", "12345")], |c| {
            c.mqtt.password.as_deref() == Some("12345")
        }),
        (&[("STARLING_MQTT__CLIENT_ID", "007")], |c| {
            c.mqtt_client_id() == "007"
        }),
        (&[("STARLING_MQTT__RESCUE", "false")], |c| !c.mqtt.rescue),
        (&[("STARLING_MQTT__CONNECTIONS", " 4 ")], |c| {
            c.mqtt.connections == 4
        }),
        (&[("STARLING_CLUSTER__LEASE", "1200ms")], |c| {
            c.cluster.lease == Duration::from_millis(1200)
        }),
        (&[("STARLING_CLUSTER__JOIN", "a:7700, b:7700,")], |c| {
            c.cluster.join == ["a:7700", "b:7700"]
        }),
        (
            &[
                ("STARLING_CLUSTER__JOIN", ""),
                (
                    "STARLING_CLUSTER__BOOTSTRAP",
                    "2=10.0.0.2:7700, 3 = n3:7700",
                ),
            ],
            |c| {
                c.cluster.join.is_empty()
                    && c.cluster.bootstrap
                        == [
                            Voter {
                                id: 2,
                                peer: "10.0.0.2:7700".into(),
                            },
                            Voter {
                                id: 3,
                                peer: "n3:7700".into(),
                            },
                        ]
            },
        ),
        (&[("STARLING_INGEST__MAX_TS_AGE", "30d")], |c| {
            c.ingest.max_ts_age == Some(Duration::from_secs(30 * 86_400))
        }),
        (&[("STARLING_INGEST__AUTO_PROVISION", "TRUE")], |c| {
            c.ingest.auto_provision
        }),
        (&[("STARLING_LOG__FILTER", "debug")], |c| {
            c.log.filter.as_deref() == Some("debug")
        }),
        (&[("STARLING_TLS__CLIENT_CA", "clients.pem")], |c| {
            c.client_ca() == std::path::Path::new("clients.pem")
        }),
        // Not configuration: ignored.
        (
            &[
                ("STARLING_PROFILE", "/p.toml"),
                ("STARLING_TEST_SCYLLA", "h:9042"),
                ("PATH", "/bin"),
            ],
            |c| *c == minimal(),
        ),
    ];
    for (vars, check) in cases {
        let c = load(MINIMAL, vars).unwrap_or_else(|e| panic!("{vars:?}: {e}"));
        c.validate().unwrap_or_else(|e| panic!("{vars:?}: {e}"));
        assert!(check(&c), "{vars:?}: {c:#?}");
    }
}

#[test]
fn bad_environment_variables_are_named() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "STARLING_MQTT__BROKR",
            "h:1",
            &[
                "STARLING_MQTT__BROKR",
                "`mqtt.brokr` is not a configuration key",
                "broker",
            ],
        ),
        ("STARLING_MQTT", "h:1", &["STARLING_MQTT", "`mqtt`"]),
        (
            "STARLING_NODE_ID",
            "three",
            &[
                "STARLING_NODE_ID",
                "node_id",
                "\"three\" is not a decimal integer",
            ],
        ),
        (
            "STARLING_MQTT__RESCUE",
            "yes",
            &["mqtt.rescue", "not true or false"],
        ),
        (
            "STARLING_CLUSTER__BOOTSTRAP",
            "n1:7700",
            &["cluster.bootstrap", "id=host:port"],
        ),
    ];
    for (var, value, needles) in cases {
        let err = load(MINIMAL, &[(var, value)]).expect_err(var);
        assert!(matches!(err, ServeConfigError::Env { .. }), "{err:?}");
        let message = err.to_string();
        for needle in *needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
    // A value of the right kind but out of range is caught by the schema, naming the key.
    let err = load(MINIMAL, &[("STARLING_MQTT__CONNECTIONS", "300")]).expect_err("u8");
    let message = err.to_string();
    assert!(message.contains("mqtt.connections"), "{message}");
    assert!(message.contains("with STARLING_* overrides"), "{message}");
    // Required keys may come from the environment alone.
    let without_id = MINIMAL.replace("node_id = 2", "");
    assert_eq!(
        load(&without_id, &[("STARLING_NODE_ID", "2")]).ok(),
        Some(minimal())
    );
}

#[test]
fn env_keys_cover_the_schema() {
    // Every key of a fully populated configuration, and nothing else, is in `KEYS`.
    let mut c = load(EXAMPLE, &[]).expect("example");
    c.cluster.join = vec!["a:7700".into()];
    c.mqtt.username = Some("u".into());
    c.mqtt.password = Some("p".into());
    c.ingest.max_ts_age = Some(Duration::from_secs(1));
    c.log.filter = Some("info".into());
    c.notify.smtp_host = Some("mail".into());
    c.notify.smtp_from = Some("a@b.c".into());
    c.notify.smtp_username = Some("u".into());
    c.notify.smtp_password = Some("p".into());
    c.notify.smtp_ca = Some("ca.pem".into());
    c.notify.sms_url = Some("https://sms/send".into());
    c.notify.sms_token = Some("t".into());
    c.retention.raw = Some(Duration::from_secs(86_400));
    c.retention.minute = Some(Duration::from_secs(86_400));
    c.retention.hour = Some(Duration::from_secs(86_400));
    c.storage.scylla.ttl = Some(Duration::from_secs(86_400));
    let table: toml::Table = toml::from_str(&c.to_toml()).expect("to_toml parses");
    fn leaves(prefix: &str, t: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => leaves(&path, t, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let mut schema = BTreeSet::new();
    leaves("", &table, &mut schema);
    let listed: BTreeSet<String> = KEYS.iter().map(|(k, _)| (*k).to_owned()).collect();
    assert_eq!(schema, listed);
    // Kinds match the values' TOML types.
    for (key, kind) in KEYS {
        let mut v = &toml::Value::Table(table.clone());
        for part in key.split('.') {
            v = &v[part];
        }
        let ok = match kind {
            Kind::Str => v.is_str(),
            Kind::Int => v.is_integer(),
            Kind::Bool => v.is_bool(),
            Kind::List => v
                .as_array()
                .is_some_and(|a| a.iter().all(toml::Value::is_str)),
            Kind::Voters => v
                .as_array()
                .is_some_and(|a| a.iter().all(toml::Value::is_table)),
        };
        assert!(ok, "{key}: {kind:?} but {v:?}");
    }
}

#[test]
fn to_toml_prints_the_effective_config_and_reloads() {
    let mut c = minimal();
    c.mqtt.password = Some("secret".into());
    let text = c.to_toml();
    assert!(!text.contains("secret"), "{text}");
    for needle in [
        "client_id = \"starling-node-2\"",
        "client_ca = \"ca.pem\"",
        "lease = \"1s\"",
        "max_ts_future = \"1d\"",
        "idle_timeout = \"5m\"",
        "password = \"<redacted>\"",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(
        !format!("{c:?}").contains("secret"),
        "Debug shows the password"
    );
    let again = load(&text, &[]).expect("effective config loads");
    again.validate().expect("effective config is valid");
    assert_eq!(again.to_toml(), text);
    assert_eq!(again.mqtt.password.as_deref(), Some(REDACTED));
    let example = load(EXAMPLE, &[]).expect("example");
    assert_eq!(
        load(&example.to_toml(), &[]).expect("reload").to_toml(),
        example.to_toml()
    );
}

#[test]
fn to_node_config_carries_the_settings() {
    let mut c = minimal();
    c.tls.client_ca = Some("clients.pem".into());
    c.mqtt.receive_maximum = 500;
    c.ingest.max_ts_age = Some(Duration::from_secs(60));
    c.cluster.shards = 1024;
    let n = c.to_node_config();
    n.validate().expect("node config is valid");
    assert_eq!((n.node_id, n.data_dir.to_str()), (2, Some("/data")));
    assert_eq!(
        (n.broker.as_str(), n.mqtt_client_id.as_str()),
        ("127.0.0.1:1883", "starling-node-2")
    );
    assert_eq!(n.mqtt_filters, crate::ingest::mqtt::DEFAULT_FILTERS);
    assert_eq!(
        (n.mqtt_in_flight, n.max_payload_bytes, n.shards),
        (500, 65_536, 1024)
    );
    assert_eq!(
        (n.max_ts_future, n.max_ts_age),
        (
            Some(Duration::from_secs(86_400)),
            Some(Duration::from_secs(60))
        )
    );
    assert_eq!(n.idle_timeout, Duration::from_secs(300));
    assert_eq!(
        (n.tls_ca.to_str(), n.tls_cert.to_str(), n.tls_key.to_str()),
        (Some("clients.pem"), Some("node-2.pem"), Some("node-2.key"))
    );
}

#[test]
fn client_ids_differ_per_connection() {
    let mut c = minimal();
    assert_eq!(c.mqtt_client_ids(), ["starling-node-2"]);
    c.mqtt.connections = 3;
    c.mqtt.client_id = Some("edge".into());
    assert_eq!(c.mqtt_client_ids(), ["edge", "edge-1", "edge-2"]);
}

#[test]
fn durations_print_in_their_largest_exact_unit() {
    let cases = [
        (Duration::ZERO, "0ms"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(2), "2s"),
        (Duration::from_secs(300), "5m"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_secs(86_400), "1d"),
        (Duration::from_micros(1500), "1ms 500us"),
    ];
    for (d, text) in cases {
        assert_eq!(super::duration::format(d), text);
        assert_eq!(humantime::parse_duration(text).ok(), Some(d), "{text}");
    }
}
