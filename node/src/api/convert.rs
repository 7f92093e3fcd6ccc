//! Conversions between protobuf messages and domain types, in one place. Missing or invalid
//! required fields are rejected here, once, with the field named.

use starling_proto::v1 as pb;

use crate::model::{self, DEFAULT_TENANT};

/// A request field that cannot be accepted.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The tenant of a request: empty means the default tenant.
pub fn tenant(t: &str) -> String {
    if t.is_empty() {
        DEFAULT_TENANT.to_owned()
    } else {
        t.to_owned()
    }
}

/// A required device id.
pub fn device_key(tenant_field: &str, device: &str) -> Result<model::DeviceKey, FieldError> {
    if device.is_empty() {
        return Err(field("device", "required"));
    }
    Ok(model::DeviceKey::new(tenant(tenant_field), device))
}

pub fn value_to_pb(v: &model::Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match v {
        model::Value::Number(n) => Kind::Number(*n),
        model::Value::Bool(b) => Kind::Boolean(*b),
        model::Value::Text(s) => Kind::Text(s.clone()),
        model::Value::Position { lat, lon } => Kind::Position(pb::Position {
            lat: *lat,
            lon: *lon,
        }),
    };
    pb::Value { kind: Some(kind) }
}

/// A value from a request; `at` names the field for errors.
pub fn value_from_pb(v: &pb::Value, at: &str) -> Result<model::Value, FieldError> {
    use pb::value::Kind;
    match &v.kind {
        None => Err(field(at, "value has no kind")),
        Some(Kind::Number(n)) => Ok(model::Value::Number(*n)),
        Some(Kind::Boolean(b)) => Ok(model::Value::Bool(*b)),
        Some(Kind::Text(s)) => Ok(model::Value::Text(s.clone())),
        Some(Kind::Position(p)) => Ok(model::Value::Position {
            lat: p.lat,
            lon: p.lon,
        }),
    }
}

pub fn point_to_pb(p: &model::Point) -> pb::Point {
    pb::Point {
        tenant: p.device.tenant.clone(),
        device: p.device.device.clone(),
        metric: p.metric.clone(),
        ts_ms: p.ts_ms,
        value: Some(value_to_pb(&p.value)),
    }
}

/// A page of points ordered by (metric, ts) as columns: one series per metric (layout in
/// `starling_proto::series`; stored numbers are never NaN, ingest refuses them, so NaN
/// marks a non-number unambiguously).
pub fn points_to_series(points: &[model::Point]) -> Vec<pb::Series> {
    let mut out = Vec::new();
    for p in points {
        starling_proto::series::push_point(
            &mut out,
            &p.metric,
            p.ts_ms,
            Some(value_to_pb(&p.value)),
        );
    }
    out
}

/// A published sample, before validation of names and values (see `ingest::payload`).
pub fn sample_from_pb(s: &pb::Sample, index: usize) -> Result<model::Sample, FieldError> {
    let mut values: Vec<(String, model::Value)> = Vec::with_capacity(s.values.len());
    for (metric, v) in &s.values {
        values.push((
            metric.clone(),
            value_from_pb(v, &format!("samples[{index}].values[{metric}]"))?,
        ));
    }
    values.sort_by(|a, b| a.0.cmp(&b.0)); // protobuf maps are unordered; make it stable
    Ok(model::Sample {
        ts_ms: (s.ts_ms != 0).then_some(s.ts_ms),
        seq: s.seq,
        values,
    })
}

/// A registry record, with first/last seen times when the store knows the device.
pub fn device_record_to_pb(
    r: &crate::raft::registry::DeviceRecord,
    seen: Option<&model::DeviceInfo>,
) -> pb::Device {
    pb::Device {
        tenant: r.key.tenant.clone(),
        id: r.key.device.clone(),
        first_seen_ms: seen.map_or(0, |s| s.first_seen_ms),
        last_seen_ms: seen.map_or(0, |s| s.last_seen_ms),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        r#type: r.device_type.clone().unwrap_or_default(),
        registered_at_ms: r.registered_at_ms,
        updated_at_ms: r.updated_at_ms,
        auto_provisioned: r.auto,
    }
}

pub fn rule_to_pb(r: &model::Rule) -> pb::Rule {
    pb::Rule {
        id: r.doc.id.clone(),
        version: r.version,
        // Serializing a plain data struct to JSON cannot fail.
        document: serde_json::to_string(&r.doc).unwrap_or_default(),
        updated_at_ms: r.updated_at_ms,
    }
}

pub fn alarm_status_to_pb(s: model::AlarmStatus) -> pb::AlarmStatus {
    match s {
        model::AlarmStatus::Active => pb::AlarmStatus::Active,
        model::AlarmStatus::Cleared => pb::AlarmStatus::Cleared,
    }
}

pub fn alarm_to_pb(a: &model::Alarm) -> pb::Alarm {
    pb::Alarm {
        id: a.id.clone(),
        tenant: a.device.tenant.clone(),
        device: a.device.device.clone(),
        rule_id: a.rule_id.clone(),
        rule_version: a.rule_version,
        severity: a.severity.clone(),
        status: alarm_status_to_pb(a.status) as i32,
        acknowledged: a.acknowledged,
        metric: a.metric.clone(),
        value: Some(value_to_pb(&a.value)),
        raised_at_ms: a.raised_at_ms,
        cleared_at_ms: a.cleared_at_ms.unwrap_or(0),
        message: a.message.clone(),
    }
}

pub fn transition_to_pb(t: model::Transition) -> pb::Transition {
    match t {
        model::Transition::Raised => pb::Transition::Raised,
        model::Transition::Cleared => pb::Transition::Cleared,
        model::Transition::Acknowledged => pb::Transition::Acknowledged,
    }
}

pub fn alarm_event_to_pb(e: &model::AlarmEvent) -> pb::AlarmEvent {
    pb::AlarmEvent {
        alarm: Some(alarm_to_pb(&e.alarm)),
        transition: transition_to_pb(e.transition) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let vals = [
            model::Value::Number(-1.5),
            model::Value::Bool(true),
            model::Value::Text("ok".into()),
            model::Value::Position {
                lat: 1.0,
                lon: -2.0,
            },
        ];
        for v in vals {
            assert_eq!(value_from_pb(&value_to_pb(&v), "v").unwrap(), v);
        }
        assert_eq!(
            value_from_pb(&pb::Value { kind: None }, "samples[0].values[x]")
                .unwrap_err()
                .field,
            "samples[0].values[x]"
        );
    }

    #[test]
    fn stored_points_become_series() {
        let d = model::DeviceKey::new("t", "d");
        let p = |metric: &str, ts_ms, value| model::Point {
            device: d.clone(),
            metric: metric.into(),
            ts_ms,
            value,
        };
        let text = model::Value::Text("on".into());
        let series = points_to_series(&[
            p("a", 1, model::Value::Number(1.5)),
            p("a", 2, text.clone()),
            p("b", 3, model::Value::Number(2.0)),
        ]);
        assert_eq!(series.len(), 2);
        assert_eq!(
            (series[0].metric.as_str(), &series[0].ts_ms[..]),
            ("a", &[1, 2][..])
        );
        assert_eq!(series[0].numbers[0], 1.5);
        assert!(series[0].numbers[1].is_nan());
        assert_eq!(series[0].other_at, [1]);
        assert_eq!(value_from_pb(&series[0].others[0], "v").unwrap(), text);
        assert_eq!(
            (series[1].metric.as_str(), &series[1].numbers[..]),
            ("b", &[2.0][..])
        );
    }

    #[test]
    fn sample_ts_zero_means_server_time() {
        let s = pb::Sample {
            ts_ms: 0,
            seq: None,
            values: Default::default(),
        };
        assert_eq!(sample_from_pb(&s, 0).unwrap().ts_ms, None);
    }

    #[test]
    fn empty_device_is_refused_and_tenant_defaults() {
        assert_eq!(device_key("", "").unwrap_err().field, "device");
        assert_eq!(device_key("", "d").unwrap().tenant, DEFAULT_TENANT);
    }
}
