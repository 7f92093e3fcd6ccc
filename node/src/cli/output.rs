//! Pure helpers of the client commands: time parsing, JSON ↔ telemetry values, the JSON shape
//! of each printed message, aligned tables and one-line error messages.
//!
//! Nothing here does IO or reads the clock: "now" is a parameter, so all of it is tested with
//! tables below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json, json};
use starling_sdk::proto::{self, value::Kind};

/// Parses a time argument into Unix ms:
/// - `now`;
/// - relative to now: `-1h`, `-30m`, `-1h30m`, `-2days` (humantime durations);
/// - a Unix timestamp in milliseconds: `1700000000000`;
/// - RFC 3339 in UTC: `2026-11-02T10:00:00Z`, `2026-11-02 10:00:00` (offsets other than
///   `+00:00` are not supported).
pub fn parse_time(input: &str, now_ms: i64) -> Result<i64, String> {
    let s = input.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago.trim())
            .map_err(|e| format!("invalid relative time {input:?}: {e}"))?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ms));
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("invalid time {input:?} ({e}): use RFC 3339 (UTC), Unix ms, `now` or `-1h`")
    })?;
    Ok(system_time_ms(t))
}

/// Unix ms of a `SystemTime` (negative before 1970).
pub fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds; `-` for 0 ("never").
pub fn format_ms(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

/// A telemetry value as JSON: number, bool, string or `{"lat":…,"lon":…}`; `null` if unset
/// (or a number JSON cannot hold, such as NaN).
pub fn value_json(value: Option<&proto::Value>) -> Json {
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::Number(n)) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Some(Kind::Boolean(b)) => Json::Bool(*b),
        Some(Kind::Text(s)) => Json::String(s.clone()),
        Some(Kind::Position(p)) => json!({"lat": p.lat, "lon": p.lon}),
        None => Json::Null,
    }
}

/// A telemetry value for a table cell.
pub fn value_text(value: Option<&proto::Value>) -> String {
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::Number(n)) => n.to_string(),
        Some(Kind::Boolean(b)) => b.to_string(),
        Some(Kind::Text(s)) => s.clone(),
        Some(Kind::Position(p)) => format!("{},{}", p.lat, p.lon),
        None => "-".to_owned(),
    }
}

/// The inverse of [`value_json`], for `telemetry publish`.
pub fn json_value(metric: &str, json: &Json) -> Result<proto::Value, String> {
    let kind = match json {
        Json::Number(n) => Kind::Number(
            n.as_f64()
                .ok_or_else(|| format!("{metric}: number out of range"))?,
        ),
        Json::Bool(b) => Kind::Boolean(*b),
        Json::String(s) => Kind::Text(s.clone()),
        Json::Object(o) => match (
            o.get("lat").and_then(Json::as_f64),
            o.get("lon").and_then(Json::as_f64),
        ) {
            (Some(lat), Some(lon)) if o.len() == 2 => Kind::Position(proto::Position { lat, lon }),
            _ => {
                return Err(format!(
                    "{metric}: an object must be {{\"lat\": number, \"lon\": number}}"
                ));
            }
        },
        Json::Null | Json::Array(_) => {
            return Err(format!(
                "{metric}: expected a number, bool, string or {{lat, lon}}"
            ));
        }
    };
    Ok(proto::Value { kind: Some(kind) })
}

/// `--values '{"temp": 21.5, "door": false}'` → one sample's (metric, value) pairs.
pub fn parse_values(input: &str) -> Result<Vec<(String, proto::Value)>, String> {
    let map: Map<String, Json> =
        serde_json::from_str(input).map_err(|e| format!("--values must be a JSON object: {e}"))?;
    if map.is_empty() {
        return Err("--values: no metric given".to_owned());
    }
    map.iter()
        .map(|(metric, v)| Ok((metric.clone(), json_value(metric, v)?)))
        .collect()
}

/// `{"device","metric","ts","value"}`; `ts` in Unix ms.
pub fn point_json(p: &proto::Point) -> Json {
    json!({"device": p.device, "metric": p.metric, "ts": p.ts_ms, "value": value_json(p.value.as_ref())})
}

/// A device as one JSON object.
pub fn device_json(d: &proto::Device) -> Json {
    let labels: std::collections::BTreeMap<_, _> = d.labels.iter().collect();
    json!({"tenant": d.tenant, "id": d.id, "type": d.r#type, "labels": labels,
           "first_seen": d.first_seen_ms, "last_seen": d.last_seen_ms,
           "registered_at": d.registered_at_ms, "updated_at": d.updated_at_ms,
           "auto_provisioned": d.auto_provisioned})
}

/// Labels as `k=v,k=v`, sorted by key (empty: none).
pub fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: std::collections::BTreeMap<_, _> = labels.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A rule; the document embedded as JSON when it parses, else as a string.
pub fn rule_json(r: &proto::Rule) -> Json {
    let document = serde_json::from_str::<Json>(&r.document)
        .unwrap_or_else(|_| Json::String(r.document.clone()));
    json!({"id": r.id, "version": r.version, "updated_at": r.updated_at_ms, "document": document})
}

/// `active` / `cleared` / `-`.
pub fn status_name(status: proto::AlarmStatus) -> &'static str {
    match status {
        proto::AlarmStatus::Active => "active",
        proto::AlarmStatus::Cleared => "cleared",
        proto::AlarmStatus::Unspecified => "-",
    }
}

/// `raised` / `cleared` / `acknowledged` / `-`.
pub fn transition_name(t: proto::Transition) -> &'static str {
    match t {
        proto::Transition::Raised => "raised",
        proto::Transition::Cleared => "cleared",
        proto::Transition::Acknowledged => "acknowledged",
        proto::Transition::Unspecified => "-",
    }
}

/// An alarm as one JSON object.
pub fn alarm_json(a: &proto::Alarm) -> Json {
    json!({"id": a.id, "tenant": a.tenant, "device": a.device, "rule": a.rule_id,
           "rule_version": a.rule_version, "severity": a.severity,
           "status": status_name(a.status()), "acknowledged": a.acknowledged,
           "metric": a.metric, "value": value_json(a.value.as_ref()),
           "raised_at": a.raised_at_ms, "cleared_at": a.cleared_at_ms, "message": a.message})
}

/// An alarm event as one JSON object: `{"transition": …, "alarm": {…}}`.
pub fn event_json(e: &proto::AlarmEvent) -> Json {
    json!({"transition": transition_name(e.transition()),
           "alarm": e.alarm.as_ref().map_or(Json::Null, alarm_json)})
}

/// One member as one JSON object.
pub fn member_json(m: &proto::Member) -> Json {
    let ago = (m.last_heartbeat_ms_ago >= 0).then_some(m.last_heartbeat_ms_ago);
    json!({"node_id": m.node_id, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
           "voter": m.voter, "health": m.health, "last_heartbeat_ms_ago": ago,
           "shards": m.shards})
}

/// The cluster status as one JSON object.
pub fn status_json(s: &proto::ClusterStatus) -> Json {
    let members: Vec<Json> = s.members.iter().map(member_json).collect();
    json!({"node_id": s.node_id, "leader_id": s.leader_id, "term": s.term,
           "commit_index": s.commit_index, "last_applied": s.last_applied,
           "members": members, "version": s.version})
}

/// Columns of `cluster status`.
pub const STATUS_HEADERS: [&str; 6] = ["NODE", "LEADER", "TERM", "COMMIT", "APPLIED", "VERSION"];

pub fn status_row(s: &proto::ClusterStatus) -> Vec<String> {
    let leader = if s.leader_id == 0 {
        "none".to_owned()
    } else {
        s.leader_id.to_string()
    };
    vec![
        s.node_id.to_string(),
        leader,
        s.term.to_string(),
        s.commit_index.to_string(),
        s.last_applied.to_string(),
        s.version.clone(),
    ]
}

/// Members as a table: role, health, last heartbeat, shards.
pub fn members_table(members: &[proto::Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.node_id.to_string(),
                if m.voter { "voter" } else { "learner" }.to_owned(),
                m.health.clone(),
                if m.last_heartbeat_ms_ago >= 0 {
                    format!("{}ms", m.last_heartbeat_ms_ago)
                } else {
                    "-".to_owned()
                },
                m.shards.to_string(),
                m.peer_addr.clone(),
                m.client_addr.clone(),
            ]
        })
        .collect();
    table(
        &[
            "MEMBER",
            "ROLE",
            "HEALTH",
            "HEARTBEAT",
            "SHARDS",
            "PEER",
            "CLIENT",
        ],
        &rows,
    )
}

/// Left-aligned columns separated by two spaces, header first. No trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            } else {
                widths.push(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The one-line message for an SDK error. `profile` names the profile file, for hints.
pub fn describe_error(err: &starling_sdk::Error, profile: &std::path::Path) -> String {
    use starling_sdk::Error as E;
    match err {
        E::Unavailable(m) if m.to_lowercase().contains("connection refused") => {
            format!("cannot reach {m} — is `starling dev` (or the node in the profile) running?")
        }
        E::Unavailable(m) => format!("cannot reach {m}"),
        E::Other(s) if s.code() == tonic::Code::FailedPrecondition => s.message().to_owned(),
        E::Config(m) => {
            let path = profile.display().to_string();
            let which = if m.contains(&path) {
                String::new()
            } else {
                format!("profile {path}; ")
            };
            format!("{m} ({which}start `starling dev` or pass --profile / STARLING_PROFILE)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn times() {
        let cases: &[(&str, Result<i64, ()>)] = &[
            ("now", Ok(NOW)),
            (" now ", Ok(NOW)),
            ("-1h", Ok(NOW - 3_600_000)),
            ("-30m", Ok(NOW - 1_800_000)),
            ("-1h30m", Ok(NOW - 5_400_000)),
            ("-10s", Ok(NOW - 10_000)),
            ("0", Ok(0)),
            ("1700000000000", Ok(1_700_000_000_000)),
            ("1970-01-01T00:00:01Z", Ok(1000)),
            ("2026-11-02T10:00:00.250Z", Ok(1_793_613_600_250)),
            ("2026-11-02 10:00:00", Ok(1_793_613_600_000)),
            ("yesterday", Err(())),
            ("-1 fortnight", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_time(input, NOW).map_err(|_| ());
            assert_eq!(&got, want, "{input:?}");
        }
    }

    #[test]
    fn formats_times() {
        assert_eq!(format_ms(0), "-");
        assert_eq!(format_ms(1000), "1970-01-01T00:00:01.000Z");
        assert_eq!(format_ms(1_793_613_600_250), "2026-11-02T10:00:00.250Z");
    }

    fn v(kind: Kind) -> proto::Value {
        proto::Value { kind: Some(kind) }
    }

    #[test]
    fn values_to_json_and_text() {
        let pos = Kind::Position(proto::Position {
            lat: 1.5,
            lon: -2.0,
        });
        let cases: Vec<(Option<proto::Value>, Json, &str)> = vec![
            (Some(v(Kind::Number(21.5))), json!(21.5), "21.5"),
            (Some(v(Kind::Boolean(true))), json!(true), "true"),
            (Some(v(Kind::Text("on".into()))), json!("on"), "on"),
            (Some(v(pos)), json!({"lat": 1.5, "lon": -2.0}), "1.5,-2"),
            (Some(v(Kind::Number(f64::NAN))), Json::Null, "NaN"),
            (Some(proto::Value { kind: None }), Json::Null, "-"),
            (None, Json::Null, "-"),
        ];
        for (value, want_json, want_text) in cases {
            assert_eq!(value_json(value.as_ref()), want_json, "{value:?}");
            assert_eq!(value_text(value.as_ref()), want_text, "{value:?}");
        }
    }

    #[test]
    fn json_to_values() {
        let ok = [
            (json!(3), Kind::Number(3.0)),
            (json!(-0.5), Kind::Number(-0.5)),
            (json!(false), Kind::Boolean(false)),
            (json!("x"), Kind::Text("x".into())),
            (
                json!({"lat": 1, "lon": 2.5}),
                Kind::Position(proto::Position { lat: 1.0, lon: 2.5 }),
            ),
        ];
        for (input, want) in ok {
            assert_eq!(json_value("m", &input), Ok(v(want)), "{input}");
        }
        for bad in [
            json!(null),
            json!([1]),
            json!({"lat": 1}),
            json!({"lat": 1, "lon": 2, "x": 3}),
        ] {
            assert!(json_value("m", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_argument() {
        let got = parse_values(r#"{"temp": 21.5, "door": true}"#).expect("parse");
        let names: Vec<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"temp") && names.contains(&"door"));
        for bad in ["", "[]", "{}", "21.5", r#"{"a": null}"#] {
            assert!(parse_values(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn point_json_shape() {
        let p = proto::Point {
            tenant: "default".into(),
            device: "truck-1".into(),
            metric: "temp".into(),
            ts_ms: 42,
            value: Some(v(Kind::Number(21.5))),
        };
        assert_eq!(
            point_json(&p).to_string(),
            r#"{"device":"truck-1","metric":"temp","ts":42,"value":21.5}"#
        );
    }

    /// Headers, rows, expected output.
    type TableCase = (&'static [&'static str], Vec<Vec<String>>, &'static str);

    #[test]
    fn tables() {
        let cases: Vec<TableCase> = vec![
            (&["A", "B"], vec![], "A  B\n"),
            (
                &["ID", "VALUE"],
                vec![
                    vec!["truck-1".into(), "1".into()],
                    vec!["x".into(), "22.5".into()],
                ],
                "ID       VALUE\ntruck-1  1\nx        22.5\n",
            ),
            (&["É", "Z"], vec![vec!["ü".into(), "".into()]], "É  Z\nü\n"),
        ];
        for (headers, rows, want) in cases {
            assert_eq!(table(headers, &rows), want, "{headers:?}");
        }
    }

    #[test]
    fn error_messages() {
        use starling_sdk::Error as E;
        let profile = std::path::Path::new("/d/client.toml");
        let cases = [
            (
                E::Unavailable("https://127.0.0.1:7600: tcp connect error".into()),
                "cannot reach https://127.0.0.1:7600: tcp connect error",
            ),
            (
                E::PermissionDenied("tenant b".into()),
                "permission denied: tenant b",
            ),
            (E::NotFound("rule r1".into()), "not found: rule r1"),
            (
                E::Unavailable(
                    "https://127.0.0.1:7600: tcp connect error: Connection refused (os error 111)"
                        .into(),
                ),
                "cannot reach https://127.0.0.1:7600: tcp connect error: Connection refused (os error 111) — is `starling dev` (or the node in the profile) running?",
            ),
            (
                E::Other(tonic::Status::failed_precondition(
                    "device d is not registered",
                )),
                "device d is not registered",
            ),
            (E::Other(tonic::Status::internal("boom")), "Internal: boom"),
        ];
        for (err, want) in cases {
            assert_eq!(describe_error(&err, profile), want);
        }
        let config = describe_error(&E::Config("cannot read ca".into()), profile);
        assert!(
            config.starts_with("cannot read ca (profile /d/client.toml; start"),
            "{config}"
        );
        let config = describe_error(&E::Config("cannot read /d/client.toml".into()), profile);
        assert!(
            config.starts_with("cannot read /d/client.toml (start"),
            "{config}"
        );
    }
}
