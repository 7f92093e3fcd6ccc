//! Table tests of topic and payload parsing: every accepted form, every reason, partial
//! acceptance of batches, unicode and boundaries.

use super::*;

const T: &str = "devices/d1/telemetry";

/// Receive time of the tests about other rules: the end of representable time, so the `ts`
/// window (checked relative to it) never interferes. The window has its own table below.
const NOW: i64 = MAX_TS_MS;

fn num(n: f64) -> Value {
    Value::Number(n)
}

fn sample(ts: Option<i64>, seq: Option<u64>, values: &[(&str, Value)]) -> Sample {
    Sample {
        ts_ms: ts,
        seq,
        values: values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

#[test]
fn topics() {
    let long = "a".repeat(128);
    let too_long = "a".repeat(129);
    let ok: &[(&str, (&str, &str))] = &[
        ("devices/d1/telemetry", (DEFAULT_TENANT, "d1")),
        ("devices/A-z_0.9:x/telemetry", (DEFAULT_TENANT, "A-z_0.9:x")),
        ("tenants/acme/devices/pump-7/telemetry", ("acme", "pump-7")),
        ("tenants/default/devices/x/telemetry", (DEFAULT_TENANT, "x")),
    ];
    for (topic, (tenant, device)) in ok {
        assert_eq!(
            parse_topic(topic),
            Ok(DeviceKey::new(*tenant, *device)),
            "{topic}"
        );
    }
    let long_topic = format!("devices/{long}/telemetry");
    assert_eq!(parse_topic(&long_topic).unwrap().device, long);

    let bad = [
        "devices//telemetry".to_owned(),
        "devices/d1/telemetry/".to_owned(),
        "/devices/d1/telemetry".to_owned(),
        "devices/d1/errors".to_owned(),
        "devices/d 1/telemetry".to_owned(),
        "devices/d+/telemetry".to_owned(),
        "devices/d/1/telemetry".to_owned(),
        "devices/dé/telemetry".to_owned(),
        "tenants//devices/d1/telemetry".to_owned(),
        "tenants/a b/devices/d1/telemetry".to_owned(),
        "tenants/acme/devices/d1".to_owned(),
        "Devices/d1/telemetry".to_owned(),
        String::new(),
        format!("devices/{too_long}/telemetry"),
        format!("tenants/{too_long}/devices/d/telemetry"),
    ];
    for topic in &bad {
        let err = parse_topic(topic).unwrap_err();
        assert_eq!(err.reason, Reason::Topic, "{topic}");
        assert_eq!(err.device, None);
    }
}

#[test]
fn errors_topics() {
    let cases = [
        ("devices/d1/telemetry", Some("devices/d1/errors")),
        (
            "tenants/t/devices/d1/telemetry",
            Some("tenants/t/devices/d1/errors"),
        ),
        ("devices/d1/other", None),
    ];
    for (topic, want) in cases {
        assert_eq!(errors_topic(topic).as_deref(), want, "{topic}");
    }
}

#[test]
fn accepted_forms() {
    let pos = Value::Position {
        lat: -33.5,
        lon: 151.0,
    };
    let cases: Vec<(&str, Vec<Sample>)> = vec![
        (
            r#"{"ts": 1732200000000, "temp": 21.5}"#,
            vec![sample(Some(1732200000000), None, &[("temp", num(21.5))])],
        ),
        (
            r#"{"temp": 21.5}"#,
            vec![sample(None, None, &[("temp", num(21.5))])],
        ),
        (
            r#"{"ts": 0, "seq": 18446744073709551615, "on": true, "n": -3, "big": 1e300}"#,
            vec![sample(
                Some(0),
                Some(u64::MAX),
                &[
                    ("on", Value::Bool(true)),
                    ("n", num(-3.0)),
                    ("big", num(1e300)),
                ],
            )],
        ),
        (
            r#"{"ts": 5, "seq": 7, "values": {"b": 1, "a": "x", "gps": {"lat": -33.5, "lon": 151}}}"#,
            vec![sample(
                Some(5),
                Some(7),
                &[
                    ("b", num(1.0)),
                    ("a", Value::Text("x".into())),
                    ("gps", pos.clone()),
                ],
            )],
        ),
        // Payload order is kept, not sorted.
        (
            r#"{"z": 1, "a": 2, "m": 3}"#,
            vec![sample(
                None,
                None,
                &[("z", num(1.0)), ("a", num(2.0)), ("m", num(3.0))],
            )],
        ),
        (
            r#"{"gps": {"lon": 151, "lat": -33.5}}"#,
            vec![sample(None, None, &[("gps", pos)])],
        ),
        (
            r#"{"edge": {"lat": 90, "lon": -180}}"#,
            vec![sample(
                None,
                None,
                &[(
                    "edge",
                    Value::Position {
                        lat: 90.0,
                        lon: -180.0,
                    },
                )],
            )],
        ),
        // A flat metric named `values` that is not an object.
        (
            r#"{"values": 3}"#,
            vec![sample(None, None, &[("values", num(3.0))])],
        ),
        (
            r#"{"name/with:all.chars_-OK9": "ünïcødé ✓"}"#,
            vec![sample(
                None,
                None,
                &[("name/with:all.chars_-OK9", Value::Text("ünïcødé ✓".into()))],
            )],
        ),
        (
            r#"[{"ts": 1, "a": 1}, {"ts": 2, "values": {"a": 2}}]"#,
            vec![
                sample(Some(1), None, &[("a", num(1.0))]),
                sample(Some(2), None, &[("a", num(2.0))]),
            ],
        ),
    ];
    for (payload, want) in cases {
        let got = parse_message(T, payload.as_bytes(), &Limits::default(), NOW)
            .unwrap_or_else(|e| panic!("{payload}: {e:?}"));
        assert_eq!(got.device, DeviceKey::default_tenant("d1"));
        assert_eq!(got.rejected, vec![], "{payload}");
        assert_eq!(got.samples, want, "{payload}");
    }
    let max_ts = format!("{{\"ts\": {MAX_TS_MS}, \"a\": 1}}");
    let got = parse_message(T, max_ts.as_bytes(), &Limits::default(), NOW).unwrap();
    assert_eq!(got.samples[0].ts_ms, Some(MAX_TS_MS));
}

#[test]
fn message_rejections() {
    let limits = Limits {
        max_payload_bytes: 100,
        max_samples: 2,
        ..Limits::default()
    };
    let cases: &[(&str, &[u8], Reason)] = &[
        ("devices/d1/telemetry", &[b' '; 101], Reason::Oversized),
        // Oversized wins over malformed: size is checked before parsing.
        ("devices/d1/telemetry", &[b'{'; 101], Reason::Oversized),
        ("devices/d1/telemetry", b"{", Reason::MalformedJson),
        ("devices/d1/telemetry", b"", Reason::MalformedJson),
        (
            "devices/d1/telemetry",
            b"{\"a\": 1} x",
            Reason::MalformedJson,
        ),
        ("devices/d1/telemetry", b"\xff\xfe", Reason::MalformedJson),
        (
            "devices/d1/telemetry",
            b"{\"a\": NaN}",
            Reason::MalformedJson,
        ),
        ("devices/d1/telemetry", b"42", Reason::NotAnObject),
        ("devices/d1/telemetry", b"\"s\"", Reason::NotAnObject),
        ("devices/d1/telemetry", b"null", Reason::NotAnObject),
        ("devices/d1/telemetry", b"[]", Reason::Empty),
        (
            "devices/d1/telemetry",
            b"[{}, {}, {}]",
            Reason::TooManySamples,
        ),
        ("devices/d1/nope", b"{\"a\": 1}", Reason::Topic),
    ];
    for (topic, payload, reason) in cases {
        let err = parse_message(topic, payload, &limits, NOW).unwrap_err();
        assert_eq!(err.reason, *reason, "{topic} {payload:?}: {err:?}");
        let want_device = (*reason != Reason::Topic).then(|| DeviceKey::default_tenant("d1"));
        assert_eq!(err.device, want_device);
        assert!(!err.message.is_empty());
    }
    // Exactly at the limits is fine.
    let at_limit = format!("{{\"a\": \"{}\"}}", "x".repeat(100 - 9));
    assert_eq!(at_limit.len(), 100);
    assert!(parse_message(T, at_limit.as_bytes(), &limits, NOW).is_ok());
    assert!(parse_message(T, b"[{\"a\":1},{\"a\":2}]", &limits, NOW).is_ok());
}

#[test]
fn sample_rejections() {
    let s1024 = "é".repeat(512); // 1024 bytes, 512 chars
    let s1025 = format!("{s1024}x");
    let name128 = "m".repeat(128);
    let name129 = "m".repeat(129);
    let metrics257: String = (0..257)
        .map(|i| format!("\"m{i}\": {i}"))
        .collect::<Vec<_>>()
        .join(",");
    let metrics256: String = (0..256)
        .map(|i| format!("\"m{i}\": {i}"))
        .collect::<Vec<_>>()
        .join(",");
    let ok: Vec<String> = vec![
        format!("{{\"s\": \"{s1024}\"}}"),
        format!("{{\"{name128}\": 1}}"),
        format!("{{{metrics256}}}"),
    ];
    for payload in &ok {
        let got = parse_message(T, payload.as_bytes(), &Limits::default(), NOW).unwrap();
        assert_eq!((got.samples.len(), got.rejected.len()), (1, 0));
    }
    let cases: Vec<(String, Reason)> = vec![
        (r#"{"ts": "1732200000000", "a": 1}"#.into(), Reason::BadTs),
        (r#"{"ts": 1.5, "a": 1}"#.into(), Reason::BadTs),
        (r#"{"ts": 1e12, "a": 1}"#.into(), Reason::BadTs),
        (r#"{"ts": -1, "a": 1}"#.into(), Reason::BadTs),
        (r#"{"ts": null, "a": 1}"#.into(), Reason::BadTs),
        (
            format!("{{\"ts\": {}, \"a\": 1}}", MAX_TS_MS + 1),
            Reason::BadTs,
        ),
        (r#"{"ts": 1, "ts": 2, "a": 1}"#.into(), Reason::BadTs),
        (r#"{"seq": -1, "a": 1}"#.into(), Reason::BadSeq),
        (r#"{"seq": 1.0, "a": 1}"#.into(), Reason::BadSeq),
        (r#"{"seq": "1", "a": 1}"#.into(), Reason::BadSeq),
        (
            r#"{"seq": 18446744073709551616, "a": 1}"#.into(),
            Reason::BadSeq,
        ),
        (r#"{"a": null}"#.into(), Reason::BadValue),
        (r#"{"a": [1, 2]}"#.into(), Reason::BadValue),
        (r#"{"a": {"x": 1}}"#.into(), Reason::BadValue),
        (r#"{"a": {"lat": 1}}"#.into(), Reason::BadValue),
        (
            r#"{"a": {"lat": 1, "lon": 2, "alt": 3}}"#.into(),
            Reason::BadValue,
        ),
        (
            r#"{"a": {"lat": 90.0001, "lon": 0}}"#.into(),
            Reason::BadValue,
        ),
        (
            r#"{"a": {"lat": 0, "lon": -180.5}}"#.into(),
            Reason::BadValue,
        ),
        (r#"{"a": {"lat": "1", "lon": 2}}"#.into(), Reason::BadValue),
        (
            r#"{"values": {"a": {"b": {"c": 1}}}}"#.into(),
            Reason::BadValue,
        ),
        (format!("{{\"s\": \"{s1025}\"}}"), Reason::BadValue),
        (r#"{"": 1}"#.into(), Reason::MetricName),
        (r#"{"a b": 1}"#.into(), Reason::MetricName),
        (r#"{"tëmp": 1}"#.into(), Reason::MetricName),
        (r#"{"a+": 1}"#.into(), Reason::MetricName),
        (r#"{"a": 1, "a": 2}"#.into(), Reason::MetricName),
        (r#"{"values": {"a": 1}, "b": 2}"#.into(), Reason::MetricName),
        (format!("{{\"{name129}\": 1}}"), Reason::MetricName),
        (format!("{{{metrics257}}}"), Reason::TooManyMetrics),
        (r#"{}"#.into(), Reason::Empty),
        (r#"{"ts": 1, "seq": 2}"#.into(), Reason::Empty),
        (r#"{"ts": 1, "values": {}}"#.into(), Reason::Empty),
        (r#"[{"a": 1}, 5]"#.into(), Reason::NotAnObject),
        (r#"[{"a": 1}, [{"a": 1}]]"#.into(), Reason::NotAnObject),
    ];
    for (payload, reason) in cases {
        let got = parse_message(T, payload.as_bytes(), &Limits::default(), NOW)
            .unwrap_or_else(|e| panic!("{payload}: {e:?}"));
        let rejected = got.rejected.last().unwrap_or_else(|| panic!("{payload}"));
        assert_eq!(rejected.reason, reason, "{payload}: {rejected:?}");
        assert!(!rejected.message.is_empty());
        assert_eq!(got.samples.len() + got.rejected.len(), {
            if payload.starts_with('[') { 2 } else { 1 }
        });
    }
}

#[test]
fn partial_acceptance_keeps_valid_samples_of_a_batch() {
    let payload = r#"[
        {"ts": 1, "a": 1},
        {"ts": 2, "a": null},
        {"ts": 3, "values": {"a": 3}},
        "nope",
        {"ts": "x", "a": 5},
        {"ts": 6, "a": 6, "ok": true}
    ]"#;
    let got = parse_message(
        "tenants/acme/devices/d9/telemetry",
        payload.as_bytes(),
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(got.device, DeviceKey::new("acme", "d9"));
    let ts: Vec<_> = got.samples.iter().map(|s| s.ts_ms).collect();
    assert_eq!(ts, vec![Some(1), Some(3), Some(6)]);
    let rejected: Vec<_> = got.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(
        rejected,
        vec![
            (1, Reason::BadValue),
            (3, Reason::NotAnObject),
            (4, Reason::BadTs)
        ]
    );
    // A sample with one bad field is rejected whole: nothing of sample 1 is kept.
    assert!(got.samples.iter().all(|s| s.ts_ms != Some(2)));
}

#[test]
fn reasons_have_distinct_labels() {
    let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), Reason::ALL.len());
    assert_eq!(Reason::MalformedJson.to_string(), "malformed_json");
}

#[test]
fn decoded_samples_follow_the_same_rules() {
    let ok = sample(Some(1), None, &[("a", num(1.0)), ("b", Value::Bool(false))]);
    assert_eq!(check_sample(&ok, &Limits::default(), NOW), Ok(()));
    let pos = |lat, lon| Value::Position { lat, lon };
    let cases: Vec<(Sample, &str, &str)> = vec![
        (sample(Some(-1), None, &[("a", num(1.0))]), "bad_ts", ""),
        (sample(None, None, &[]), "empty", ""),
        (
            sample(None, None, &[("a b", num(1.0))]),
            "metric_name",
            "a b",
        ),
        (
            sample(None, None, &[("a", num(1.0)), ("a", num(2.0))]),
            "metric_name",
            "a",
        ),
        (
            sample(None, None, &[("a", num(f64::NAN))]),
            "bad_value",
            "a",
        ),
        (
            sample(None, None, &[("p", pos(91.0, 0.0))]),
            "bad_value",
            "p",
        ),
        (
            sample(None, None, &[("s", Value::Text("x".repeat(1025)))]),
            "bad_value",
            "s",
        ),
    ];
    for (s, reason, metric) in cases {
        let (got_reason, got_metric, message) =
            check_sample(&s, &Limits::default(), NOW).unwrap_err();
        let got_reason = got_reason.as_str();
        assert_eq!((got_reason, got_metric.as_str()), (reason, metric), "{s:?}");
        assert!(!message.is_empty());
    }
    let many: Vec<(String, Value)> = (0..257).map(|i| (format!("m{i}"), num(1.0))).collect();
    let too_many = Sample {
        ts_ms: None,
        seq: None,
        values: many,
    };
    assert_eq!(
        check_sample(&too_many, &Limits::default(), NOW)
            .unwrap_err()
            .0,
        Reason::TooManyMetrics
    );
    assert!(validate_device_id("pump-7").is_ok());
    assert!(validate_device_id("pump 7").is_err());
}

#[test]
fn ts_window_is_relative_to_receive_time() {
    let now = 1_732_200_000_000;
    let day = 86_400_000;
    let limits = Limits {
        max_ts_age_ms: Some(30 * day),
        ..Limits::default()
    };
    // (ts, accepted): the default future window is one day; the age limit here 30 days.
    let cases = [
        (now, true),
        (now + day, true),
        (now + day + 1, false),
        (now - 30 * day, true),
        (now - 30 * day - 1, false),
        (0, false),
    ];
    for (ts, accepted) in cases {
        let payload = format!(r#"[{{"ts": {ts}, "t": 1}}, {{"t": 2}}]"#);
        let got = parse_message(T, payload.as_bytes(), &limits, now).unwrap();
        assert_eq!(got.samples.len(), if accepted { 2 } else { 1 }, "ts {ts}");
        if !accepted {
            assert_eq!(got.rejected[0].index, 0);
            assert_eq!(got.rejected[0].reason, Reason::TsWindow);
        }
        let sample = Sample {
            ts_ms: Some(ts),
            seq: None,
            values: vec![("t".into(), Value::Number(1.0))],
        };
        assert_eq!(
            check_sample(&sample, &limits, now).is_ok(),
            accepted,
            "ts {ts}"
        );
    }
    // Without an age limit (the default) old history is accepted.
    assert!(
        parse_message(T, br#"{"ts": 1, "t": 1}"#, &Limits::default(), now)
            .unwrap()
            .rejected
            .is_empty()
    );
}
