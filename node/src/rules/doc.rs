//! The rule language: the types a rule document (JSON or YAML) deserializes into, and that
//! travel inside `RuleDoc` through Raft. Plain data with serde derives; `model.rs` re-exports
//! them so every layer names them `crate::model::…`.
//!
//! What this does not do: check values serde cannot (ranges, ring closure, duration bounds —
//! `validate.rs`), or evaluate anything (`state.rs`, `leaf.rs`).
//!
//! Compatibility: the first-cut document `{"threshold": {"metric", "op", "value"}}` is still
//! valid, and new optional fields are skipped when serializing, so stored rules written before
//! the rules issue read and serialize byte-for-byte the same.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Comparison operator of threshold and rate-of-change conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl CmpOp {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A duration written as a human-readable string (`"30s"`, `"5m"`, `"1h 30m"`), held in
/// milliseconds. Serialized back in the same notation (normalized: `"90s"` becomes `"1m 30s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleDuration {
    pub ms: u64,
}

impl RuleDuration {
    pub fn from_secs(secs: u64) -> Self {
        Self { ms: secs * 1000 }
    }

    /// Milliseconds as a signed timestamp offset (durations are bounded by validation).
    pub fn as_ms_i64(self) -> i64 {
        i64::try_from(self.ms).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for RuleDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = std::time::Duration::from_millis(self.ms);
        write!(f, "{}", humantime::format_duration(d))
    }
}

impl Serialize for RuleDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuleDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write it like \"30s\", \"5m\" or \"1h 30m\""
            ))
        })?;
        let ms = u64::try_from(parsed.as_millis())
            .map_err(|_| serde::de::Error::custom(format!("duration {text:?} is too long")))?;
        Ok(Self { ms })
    }
}

/// Which devices a rule applies to. Every constraint given must hold (AND); an empty selector
/// matches every device of the rule's tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Device ids; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The device type; `None` means any.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Labels the device must carry with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What a selector's `type` and `labels` are matched against.
///
/// Today there is no device registry, so devices have no type and no labels: callers pass
/// `None`, and a selector naming a type or labels matches no device (it is not faked). The
/// device registry issue supplies real metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceMeta {
    pub device_type: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether a device with this id (and metadata, when known) is selected.
    pub fn matches(&self, device: &str, meta: Option<&DeviceMeta>) -> bool {
        if !self.devices.is_empty() && !self.devices.iter().any(|d| d == device) {
            return false;
        }
        if self.device_type.is_none() && self.labels.is_empty() {
            return true;
        }
        let Some(meta) = meta else {
            return false; // unknown type and labels match no constraint on them
        };
        let type_ok = self
            .device_type
            .as_ref()
            .is_none_or(|t| meta.device_type.as_ref() == Some(t));
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| meta.labels.get(k) == Some(v));
        type_ok && labels_ok
    }
}

/// A threshold on one numeric metric (numbers; booleans as 0/1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub metric: String,
    pub op: CmpOp,
    pub value: f64,
    /// `for`: the condition must hold this long (event time) before it counts as true.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<RuleDuration>,
    /// Hysteresis: once true, a `>`/`>=` condition stays true until the value drops below
    /// `clear`; a `<`/`<=` one until it rises above `clear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
}

/// No data (of one metric, or of any) for a while, in receive time: the device is offline.
/// Exactly one of `seconds` and `for` is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoData {
    /// Only samples carrying this metric count as data; `None`: any sample does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RuleDuration>,
}

impl NoData {
    /// The silence that makes the condition true, whichever way it was written.
    pub fn duration(&self) -> Option<RuleDuration> {
        self.after
            .or_else(|| self.seconds.map(RuleDuration::from_secs))
    }
}

/// A circle on the Earth: centre and radius (great-circle distance, haversine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circle {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// A polygon as in GeoJSON: rings of `[lon, lat]` points, each closed (last point = first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolygonShape {
    pub exterior: Vec<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<Vec<[f64; 2]>>,
}

/// The area of a geofence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    Circle(Circle),
    Polygon(PolygonShape),
}

/// When a geofence condition is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeoTrigger {
    /// Seen outside, then inside; false again once outside.
    Enter,
    /// Seen inside, then outside; false again once inside.
    Exit,
    /// Inside (the boundary counts as inside).
    Inside,
    /// Strictly outside.
    Outside,
}

/// A geofence on a position metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geofence {
    /// A metric whose values are positions.
    pub metric: String,
    pub shape: Shape,
    pub trigger: GeoTrigger,
}

/// The rate of change of a numeric metric over a sliding window, per second:
/// `(newest - oldest in window) / seconds between them`, compared with `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOfChange {
    pub metric: String,
    pub window: RuleDuration,
    pub op: CmpOp,
    /// Units of the metric per second.
    pub value: f64,
}

/// A rule's condition: a leaf, or an AND (`all`) / OR (`any`) of conditions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    Threshold(Threshold),
    NoData(NoData),
    Geofence(Geofence),
    RateOfChange(RateOfChange),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

/// Where a rule's alarm transitions are sent. Validated here; delivery is the notifications
/// issue (today only the Watch stream carries alarms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// HTTP POST of the alarm event.
    Webhook { url: String },
    /// An email (SMTP).
    Email { to: String },
    /// A text message, E.164 number (`+` and digits).
    Sms { to: String },
    /// Publish on the broker under `alerts/…`.
    Mqtt {},
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(t: Option<&str>, labels: &[(&str, &str)]) -> DeviceMeta {
        DeviceMeta {
            device_type: t.map(str::to_owned),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn selector_table() {
        let by_type = Selector {
            device_type: Some("boiler".into()),
            ..Default::default()
        };
        let by_label = Selector {
            labels: [("site".to_string(), "berlin".to_string())].into(),
            ..Default::default()
        };
        let by_id_and_type = Selector {
            devices: vec!["d1".into()],
            device_type: Some("boiler".into()),
            ..Default::default()
        };
        let boiler = meta(Some("boiler"), &[("site", "berlin"), ("floor", "2")]);
        let fridge = meta(Some("fridge"), &[("site", "paris")]);
        let cases: &[(&str, &Selector, &str, Option<&DeviceMeta>, bool)] = &[
            ("empty matches all", &Selector::default(), "x", None, true),
            ("type matches", &by_type, "d1", Some(&boiler), true),
            ("type differs", &by_type, "d1", Some(&fridge), false),
            (
                "no metadata: type never matches",
                &by_type,
                "d1",
                None,
                false,
            ),
            ("label subset matches", &by_label, "d1", Some(&boiler), true),
            ("label differs", &by_label, "d1", Some(&fridge), false),
            (
                "no metadata: labels never match",
                &by_label,
                "d1",
                None,
                false,
            ),
            ("id and type", &by_id_and_type, "d1", Some(&boiler), true),
            ("id wrong", &by_id_and_type, "d2", Some(&boiler), false),
        ];
        for (name, sel, dev, m, want) in cases {
            assert_eq!(sel.matches(dev, *m), *want, "{name}");
        }
    }

    #[test]
    fn durations_parse_and_print() {
        let d: RuleDuration = serde_json::from_str("\"1h 30m\"").unwrap();
        assert_eq!(d.ms, 5_400_000);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h 30m\"");
        let e = serde_json::from_str::<RuleDuration>("\"5 parsecs\"").unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        assert!(serde_json::from_str::<RuleDuration>("300").is_err());
    }

    #[test]
    fn first_cut_documents_serialize_unchanged() {
        let old = r#"{"threshold":{"metric":"temp","op":">","value":30.0}}"#;
        let c: Condition = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), old);
    }
}
