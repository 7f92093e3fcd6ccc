//! Tests of [`ServeConfig::validate`]: each rule rejects a valid configuration changed in one
//! place, with an error naming the field.

use std::time::Duration;

use super::serve::{ServeConfig, ServeConfigError, Voter};
use super::serve_tests::minimal;

fn voter(id: u64, peer: &str) -> Voter {
    Voter {
        id,
        peer: peer.to_owned(),
    }
}

#[test]
fn each_rule_rejects_naming_the_field() {
    type Mutation = fn(&mut ServeConfig);
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (|c| c.node_id = 0, "node_id", "node_id must be at least 1"),
        (|c| c.data_dir = "".into(), "data_dir", "data_dir"),
        (
            |c| c.listen.client = c.listen.peer,
            "listen.client",
            "is also listen.peer",
        ),
        (
            |c| c.advertise.peer = None,
            "advertise.peer",
            "advertise.peer is required when listen.peer (0.0.0.0:7700)",
        ),
        (
            |c| c.advertise.client = None,
            "advertise.client",
            "listen.client (0.0.0.0:7600)",
        ),
        (
            |c| c.advertise.peer = Some("0.0.0.0:7700".into()),
            "advertise.peer",
            "unspecified",
        ),
        (
            |c| c.advertise.peer = Some("[::]:7700".into()),
            "advertise.peer",
            "unspecified",
        ),
        (
            |c| c.advertise.peer = Some("node-2".into()),
            "advertise.peer",
            "host:port",
        ),
        (|c| c.tls.key = "".into(), "tls.key", "tls.key"),
        (
            |c| c.tls.client_ca = Some("".into()),
            "tls.client_ca",
            "tls.client_ca",
        ),
        (
            |c| c.cluster.join.clear(),
            "cluster.bootstrap",
            "cluster.bootstrap or cluster.join must be given",
        ),
        (
            |c| {
                c.cluster.bootstrap = vec![Voter {
                    id: 2,
                    peer: "10.0.0.2:7700".into(),
                }]
            },
            "cluster.join",
            "mutually exclusive",
        ),
        (
            |c| c.cluster.join = vec!["10.0.0.1".into()],
            "cluster.join",
            "cluster.join[0]",
        ),
        (
            |c| c.cluster.max_voters = 4,
            "cluster.max_voters",
            "cluster.max_voters (4) must be 3 or 5",
        ),
        (
            |c| c.cluster.shards = 1000,
            "cluster.shards",
            "cluster.shards (1000)",
        ),
        (
            |c| c.cluster.shards = 131_072,
            "cluster.shards",
            "at most 65536",
        ),
        (|c| c.cluster.shards = 0, "cluster.shards", "power of two"),
        (
            |c| c.cluster.heartbeat = Duration::ZERO,
            "cluster.heartbeat",
            "cluster.heartbeat",
        ),
        (
            |c| c.cluster.heartbeat = Duration::from_millis(400),
            "cluster.lease",
            "cluster.lease (1s) must be at least 3 × cluster.heartbeat (3 × 400ms = 1200ms)",
        ),
        (
            |c| c.cluster.failure_timeout = Duration::from_millis(1200),
            "cluster.failure_timeout",
            "cluster.failure_timeout (1200ms) must exceed cluster.lease + cluster.drift_margin (1s + 200ms = 1200ms)",
        ),
        (
            |c| c.cluster.drift_margin = Duration::from_secs(1),
            "cluster.failure_timeout",
            "1s + 1s = 2s",
        ),
        (
            |c| c.mqtt.broker = "broker".into(),
            "mqtt.broker",
            "mqtt.broker (\"broker\") must be host:port",
        ),
        (
            |c| c.mqtt.broker = "broker:0".into(),
            "mqtt.broker",
            "mqtt.broker",
        ),
        (
            |c| c.mqtt.client_id = Some(" ".into()),
            "mqtt.client_id",
            "mqtt.client_id",
        ),
        (
            |c| c.mqtt.receive_maximum = 0,
            "mqtt.receive_maximum",
            "between 1 and 65535",
        ),
        (
            |c| c.mqtt.connections = 0,
            "mqtt.connections",
            "mqtt.connections (0)",
        ),
        (
            |c| c.mqtt.connections = 17,
            "mqtt.connections",
            "between 1 and 16",
        ),
        (
            |c| c.ingest.max_payload_bytes = 0,
            "ingest.max_payload_bytes",
            "ingest.max_payload_bytes (0)",
        ),
        (
            |c| c.ingest.max_ts_future = Duration::ZERO,
            "ingest.max_ts_future",
            "ingest.max_ts_future",
        ),
        (
            |c| c.ingest.max_ts_age = Some(Duration::ZERO),
            "ingest.max_ts_age",
            "ingest.max_ts_age",
        ),
        (
            |c| c.ingest.idle_timeout = Duration::ZERO,
            "ingest.idle_timeout",
            "ingest.idle_timeout",
        ),
        (
            |c| c.log.filter = Some("info,[".into()),
            "log.filter",
            "log.filter",
        ),
    ];
    for (mutate, field, text) in cases {
        let mut c = minimal();
        mutate(&mut c);
        let err = c.validate().expect_err(field);
        let ServeConfigError::Invalid { field: got, .. } = &err else {
            panic!("{field}: not a rule error: {err}");
        };
        let message = err.to_string();
        assert_eq!(*got, field, "{message}");
        assert!(message.contains(field), "{message}");
        assert!(
            message.contains(text),
            "{field}: {message:?} lacks {text:?}"
        );
    }
}

#[test]
fn bootstrap_must_list_this_node_once_within_max_voters() {
    // A list with this node (node_id 2) is valid; the others name cluster.bootstrap.
    let bootstrap: Vec<(Vec<Voter>, Option<&str>)> = vec![
        (vec![voter(2, "10.0.0.2:7700")], None),
        (
            vec![voter(1, "a:7700"), voter(2, "b:7700"), voter(3, "c:7700")],
            None,
        ),
        (
            vec![voter(1, "a:7700"), voter(3, "c:7700")],
            Some("must list this node (node_id 2)"),
        ),
        (
            vec![voter(2, "a:7700"), voter(2, "b:7700")],
            Some("node 2 is listed twice"),
        ),
        (
            vec![voter(2, "a:7700"), voter(3, "a:7700")],
            Some("a:7700 is listed twice"),
        ),
        (
            vec![voter(2, "a:7700"), voter(0, "b:7700")],
            Some("cluster.bootstrap[1].id must be at least 1"),
        ),
        (
            vec![voter(2, "a")],
            Some("cluster.bootstrap[0].peer (\"a\") must be host:port"),
        ),
        (
            (1..=4).map(|i| voter(i, &format!("n{i}:7700"))).collect(),
            Some("4 voters, more than cluster.max_voters (3)"),
        ),
    ];
    for (voters, expected) in bootstrap {
        let mut c = minimal();
        c.cluster.join.clear();
        c.cluster.bootstrap = voters.clone();
        match (c.validate(), expected) {
            (Ok(()), None) => {}
            (Err(ServeConfigError::Invalid { field, message }), Some(text)) => {
                assert_eq!(field, "cluster.bootstrap", "{message}");
                assert!(message.contains(text), "{message:?} lacks {text:?}");
            }
            (got, _) => panic!("{voters:?}: expected {expected:?}, got {got:?}"),
        }
    }
}
