//! Telemetry topics and payloads → samples. Pure: no IO, no clock, no metrics.
//!
//! What it does:
//! - maps a topic to a [`DeviceKey`]: `devices/{id}/telemetry` (tenant
//!   [`DEFAULT_TENANT`]) or `tenants/{tenant}/devices/{id}/telemetry`,
//!   ids being 1..=128 characters of `[A-Za-z0-9_.:-]`;
//! - parses the JSON payload of DESIGN §5: a flat object `{"ts": 1732200000000, "temp": 21.5}`,
//!   a wrapped object `{"ts": …, "seq": …, "values": {…}}` (chosen whenever `values` holds an
//!   object), or an array of those (a batch). `ts` is an integer of Unix milliseconds (absent →
//!   `None`: the caller fills in receive time), `seq` an optional `u64`. Values are numbers,
//!   booleans, strings (≤ [`Limits::max_string_bytes`]) or positions `{"lat": …, "lon": …}`.
//!   Metrics keep payload order.
//!
//! **Partial acceptance: the unit of rejection is the sample.** A message-level problem
//! (`oversized`, `malformed_json`, `topic`, `too_many_samples`, a top level that is neither an
//! object nor an array, an empty batch) rejects the whole message ([`Rejection`]). Otherwise each
//! sample is checked on its own: a sample with any invalid field is rejected whole, with the
//! reason of its first problem ([`SampleRejection`]), and the other samples of a batch are kept.
//! Size is checked before any parsing.
//!
//! What it does not do: decide what to do with rejections (the MQTT loop counts, logs and reports
//! them), fill in missing timestamps, or check that the device exists.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::model::{DEFAULT_TENANT, DeviceKey, Sample, Value};

/// Why a message or a sample was refused. [`Reason::as_str`] is the metric label and the
/// `reason` field of the error report sent to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Payload larger than [`Limits::max_payload_bytes`].
    Oversized,
    /// Not valid JSON (or not UTF-8).
    MalformedJson,
    /// Top level or batch element is not a JSON object.
    NotAnObject,
    /// `ts` is not an integer of Unix milliseconds in range.
    BadTs,
    /// `seq` is not an unsigned 64-bit integer.
    BadSeq,
    /// A value is null, an array, an object other than a valid position, or a too-long string.
    BadValue,
    /// A metric name is empty, too long, has characters outside `[A-Za-z0-9_.:/-]`, is repeated,
    /// or a field stands next to `values` in the wrapped form.
    MetricName,
    /// More than [`Limits::max_metrics`] metrics in one sample.
    TooManyMetrics,
    /// More than [`Limits::max_samples`] samples in one message.
    TooManySamples,
    /// A sample without values, or an empty batch.
    Empty,
    /// The topic is not a telemetry topic with valid ids.
    Topic,
    /// `ts` is further in the future, or further in the past, than [`Limits`] allow
    /// relative to the receive time (clock errors, replayed junk).
    TsWindow,
}

impl Reason {
    /// Every reason, for tests and for pre-registering metric labels.
    pub const ALL: [Reason; 12] = [
        Reason::Oversized,
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::BadTs,
        Reason::BadSeq,
        Reason::BadValue,
        Reason::MetricName,
        Reason::TooManyMetrics,
        Reason::TooManySamples,
        Reason::Empty,
        Reason::Topic,
        Reason::TsWindow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::BadTs => "bad_ts",
            Reason::BadSeq => "bad_seq",
            Reason::BadValue => "bad_value",
            Reason::MetricName => "metric_name",
            Reason::TooManyMetrics => "too_many_metrics",
            Reason::TooManySamples => "too_many_samples",
            Reason::Empty => "empty",
            Reason::Topic => "topic",
            Reason::TsWindow => "ts_window",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size limits of a message. The defaults are the documented ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted payload, bytes. Checked before parsing.
    pub max_payload_bytes: usize,
    /// Most samples in one message (a batch).
    pub max_samples: usize,
    /// Most metrics in one sample.
    pub max_metrics: usize,
    /// Longest string value, bytes.
    pub max_string_bytes: usize,
    /// Latest accepted `ts`, as milliseconds after the receive time. Default one day.
    pub max_ts_future_ms: Option<i64>,
    /// Oldest accepted `ts`, as milliseconds before the receive time. Default: no limit
    /// (backfilling history is legitimate).
    pub max_ts_age_ms: Option<i64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_samples: 1000,
            max_metrics: 256,
            max_string_bytes: 1024,
            max_ts_future_ms: Some(86_400_000),
            max_ts_age_ms: None,
        }
    }
}

/// Longest device id, tenant id or metric name, in characters (all ASCII).
pub const MAX_ID_LEN: usize = 128;

/// Largest accepted `ts`: 9999-12-31T23:59:59.999Z.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;

/// A message of which at least the envelope was valid.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub device: DeviceKey,
    /// Valid samples, in payload order.
    pub samples: Vec<Sample>,
    /// Samples refused, by index in the batch (0 for a single object).
    pub rejected: Vec<SampleRejection>,
}

/// One refused sample of an otherwise valid message.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRejection {
    pub index: usize,
    pub reason: Reason,
    pub message: String,
}

/// A whole message refused. `device` is known when the topic was valid.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub device: Option<DeviceKey>,
    pub reason: Reason,
    pub message: String,
}

/// Parses a telemetry topic into its device.
pub fn parse_topic(topic: &str) -> Result<DeviceKey, Rejection> {
    let parts: Vec<&str> = topic.split('/').collect();
    let key = match parts.as_slice() {
        ["devices", id, "telemetry"] => (DEFAULT_TENANT, *id),
        ["tenants", tenant, "devices", id, "telemetry"] => (*tenant, *id),
        _ => return Err(reject(None, Reason::Topic, "not a telemetry topic")),
    };
    for (what, id) in [("tenant", key.0), ("device", key.1)] {
        if !valid_id(id) {
            let msg = format!("invalid {what} id (1..={MAX_ID_LEN} of [A-Za-z0-9_.:-])");
            return Err(reject(None, Reason::Topic, msg));
        }
    }
    Ok(DeviceKey::new(key.0, key.1))
}

/// The topic where the device of a valid telemetry topic is told about rejections: the same
/// topic with `telemetry` replaced by `errors`, so it keeps the form the device used.
pub fn errors_topic(telemetry_topic: &str) -> Option<String> {
    telemetry_topic
        .strip_suffix("/telemetry")
        .map(|base| format!("{base}/errors"))
}

/// Parses one MQTT message. See the module doc for the acceptance rules.
/// `now_ms` is the receive time, against which the `ts` window of [`Limits`] is checked.
pub fn parse_message(
    topic: &str,
    payload: &[u8],
    limits: &Limits,
    now_ms: i64,
) -> Result<Parsed, Rejection> {
    let device = parse_topic(topic)?;
    let dev = Some(device.clone());
    if payload.len() > limits.max_payload_bytes {
        let msg = format!(
            "payload of {} bytes exceeds {} bytes",
            payload.len(),
            limits.max_payload_bytes
        );
        return Err(reject(dev, Reason::Oversized, msg));
    }
    let node: Node = serde_json::from_slice(payload)
        .map_err(|e| reject(dev.clone(), Reason::MalformedJson, e.to_string()))?;
    let elements = match node {
        Node::Object(fields) => vec![Node::Object(fields)],
        Node::Array(items) if items.is_empty() => {
            return Err(reject(dev, Reason::Empty, "empty batch"));
        }
        Node::Array(items) if items.len() > limits.max_samples => {
            let msg = format!(
                "{} samples exceed {} per message",
                items.len(),
                limits.max_samples
            );
            return Err(reject(dev, Reason::TooManySamples, msg));
        }
        Node::Array(items) => items,
        other => {
            let msg = format!("top level is {}, expected an object or array", other.kind());
            return Err(reject(dev, Reason::NotAnObject, msg));
        }
    };
    let mut samples = Vec::with_capacity(elements.len());
    let mut rejected = Vec::new();
    for (index, element) in elements.into_iter().enumerate() {
        match parse_sample(element, limits).and_then(|s| in_window(s, limits, now_ms)) {
            Ok(sample) => samples.push(sample),
            Err((reason, message)) => rejected.push(SampleRejection {
                index,
                reason,
                message,
            }),
        }
    }
    Ok(Parsed {
        device,
        samples,
        rejected,
    })
}

/// Checks a device id (1..=128 of `[A-Za-z0-9_.:-]`), for callers other than MQTT topics
/// (the gRPC publish path).
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(format!(
            "device id must be 1..={MAX_ID_LEN} characters of [A-Za-z0-9_.:-]"
        ))
    }
}

/// Checks an already-decoded sample (the gRPC publish path) with the same rules as MQTT
/// payloads, `now_ms` being the receive time. The error is (reason, offending metric or "",
/// message).
pub fn check_sample(
    sample: &Sample,
    limits: &Limits,
    now_ms: i64,
) -> Result<(), (Reason, String, String)> {
    let err = |reason, metric: &str, message: String| Err((reason, metric.to_owned(), message));
    if let Err((reason, message)) = check_window(sample.ts_ms, limits, now_ms) {
        return err(reason, "", message);
    }
    if let Some(ts) = sample.ts_ms
        && !(0..=MAX_TS_MS).contains(&ts)
    {
        return err(
            Reason::BadTs,
            "",
            format!("`ts` must be in 0..={MAX_TS_MS}"),
        );
    }
    if sample.values.is_empty() {
        return err(Reason::Empty, "", "sample has no values".to_owned());
    }
    if sample.values.len() > limits.max_metrics {
        let msg = format!(
            "{} metrics exceed {}",
            sample.values.len(),
            limits.max_metrics
        );
        return err(Reason::TooManyMetrics, "", msg);
    }
    for (i, (name, value)) in sample.values.iter().enumerate() {
        if !valid_metric_name(name) {
            return err(Reason::MetricName, name, "invalid metric name".to_owned());
        }
        if sample.values[..i].iter().any(|(n, _)| n == name) {
            return err(Reason::MetricName, name, "metric appears twice".to_owned());
        }
        let bad = match value {
            Value::Number(n) => (!n.is_finite()).then_some("number is not finite"),
            Value::Bool(_) => None,
            Value::Text(t) => (t.len() > limits.max_string_bytes).then_some("string too long"),
            Value::Position { lat, lon } => (!(-90.0..=90.0).contains(lat)
                || !(-180.0..=180.0).contains(lon))
            .then_some("position out of range"),
        };
        if let Some(why) = bad {
            return err(Reason::BadValue, name, why.to_owned());
        }
    }
    Ok(())
}

fn reject(device: Option<DeviceKey>, reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection {
        device,
        reason,
        message: message.into(),
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn valid_metric_name(name: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
}

type SampleError = (Reason, String);

/// Refuses a `ts` outside the window of `limits` around `now_ms`; a missing `ts` (receive
/// time) is always inside.
fn check_window(ts_ms: Option<i64>, limits: &Limits, now_ms: i64) -> Result<(), SampleError> {
    let Some(ts) = ts_ms else { return Ok(()) };
    if let Some(future) = limits.max_ts_future_ms
        && ts > now_ms.saturating_add(future)
    {
        return Err((
            Reason::TsWindow,
            format!("`ts` {ts} is more than {future} ms after the receive time {now_ms}"),
        ));
    }
    if let Some(age) = limits.max_ts_age_ms
        && ts < now_ms.saturating_sub(age)
    {
        return Err((
            Reason::TsWindow,
            format!("`ts` {ts} is more than {age} ms before the receive time {now_ms}"),
        ));
    }
    Ok(())
}

fn in_window(sample: Sample, limits: &Limits, now_ms: i64) -> Result<Sample, SampleError> {
    check_window(sample.ts_ms, limits, now_ms).map(|()| sample)
}

fn parse_sample(node: Node, limits: &Limits) -> Result<Sample, SampleError> {
    let Node::Object(mut fields) = node else {
        return Err((
            Reason::NotAnObject,
            format!("sample is {}, expected an object", node.kind()),
        ));
    };
    let ts = take_field(&mut fields, "ts").map(parse_ts).transpose()?;
    let seq = take_field(&mut fields, "seq").map(parse_seq).transpose()?;
    let metrics = match take_values_object(&mut fields) {
        Some(inner) => {
            if let Some((extra, _)) = fields.first() {
                return Err((
                    Reason::MetricName,
                    format!("field `{extra}` is not allowed next to `values`"),
                ));
            }
            inner
        }
        None => fields,
    };
    if metrics.is_empty() {
        return Err((Reason::Empty, "sample has no values".to_owned()));
    }
    if metrics.len() > limits.max_metrics {
        return Err((
            Reason::TooManyMetrics,
            format!(
                "{} metrics exceed {} per sample",
                metrics.len(),
                limits.max_metrics
            ),
        ));
    }
    let mut values: Vec<(String, Value)> = Vec::with_capacity(metrics.len());
    for (name, node) in metrics {
        if !valid_metric_name(&name) {
            return Err((
                Reason::MetricName,
                format!("invalid metric name `{}`", truncate(&name, 40)),
            ));
        }
        if values.iter().any(|(n, _)| *n == name) {
            return Err((Reason::MetricName, format!("metric `{name}` appears twice")));
        }
        let value = parse_value(&name, node, limits)?;
        values.push((name, value));
    }
    Ok(Sample {
        ts_ms: ts,
        seq,
        values,
    })
}

/// Removes the `values` field when it holds an object (the wrapped form) and returns its fields.
fn take_values_object(fields: &mut Vec<(String, Node)>) -> Option<Vec<(String, Node)>> {
    let at = fields
        .iter()
        .position(|(k, v)| k == "values" && matches!(v, Node::Object(_)))?;
    match fields.remove(at) {
        (_, Node::Object(inner)) => Some(inner),
        (key, other) => {
            fields.insert(at, (key, other));
            None
        }
    }
}

/// Removes the first field named `name`; a repeated reserved field is a bad value of that field.
fn take_field(fields: &mut Vec<(String, Node)>, name: &str) -> Option<Node> {
    let at = fields.iter().position(|(k, _)| k == name)?;
    let (_, node) = fields.remove(at);
    if fields.iter().any(|(k, _)| k == name) {
        // Make the parser of that field refuse it.
        return Some(Node::Null);
    }
    Some(node)
}

fn parse_ts(node: Node) -> Result<i64, SampleError> {
    match node {
        Node::U64(n) if n <= MAX_TS_MS as u64 => Ok(n as i64),
        _ => Err((
            Reason::BadTs,
            format!("`ts` must be an integer of Unix milliseconds in 0..={MAX_TS_MS}, once"),
        )),
    }
}

fn parse_seq(node: Node) -> Result<u64, SampleError> {
    match node {
        Node::U64(n) => Ok(n),
        _ => Err((
            Reason::BadSeq,
            "`seq` must be an unsigned 64-bit integer, once".to_owned(),
        )),
    }
}

fn parse_value(name: &str, node: Node, limits: &Limits) -> Result<Value, SampleError> {
    let bad = |why: String| Err((Reason::BadValue, format!("metric `{name}`: {why}")));
    match node {
        Node::U64(n) => Ok(Value::Number(n as f64)),
        Node::I64(n) => Ok(Value::Number(n as f64)),
        Node::F64(n) => Ok(Value::Number(n)),
        Node::Bool(b) => Ok(Value::Bool(b)),
        Node::Str(s) if s.len() <= limits.max_string_bytes => Ok(Value::Text(s)),
        Node::Str(s) => bad(format!(
            "string of {} bytes exceeds {}",
            s.len(),
            limits.max_string_bytes
        )),
        Node::Object(fields) => match position(&fields) {
            Some((lat, lon)) => Ok(Value::Position { lat, lon }),
            None => {
                bad("objects must be positions {\"lat\": -90..=90, \"lon\": -180..=180}".to_owned())
            }
        },
        other => bad(format!("{} is not a value", other.kind())),
    }
}

fn position(fields: &[(String, Node)]) -> Option<(f64, f64)> {
    let [(k1, v1), (k2, v2)] = fields else {
        return None;
    };
    let (lat, lon) = match (k1.as_str(), k2.as_str()) {
        ("lat", "lon") => (v1, v2),
        ("lon", "lat") => (v2, v1),
        _ => return None,
    };
    let (lat, lon) = (lat.as_f64()?, lon.as_f64()?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// A JSON tree whose objects keep key order and duplicate keys (serde_json's `Value` sorts
/// keys unless its `preserve_order` feature is on, and keeps only the last duplicate).
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::U64(_) | Node::I64(_) | Node::F64(_) => "a number",
            Node::Str(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Node::U64(n) => Some(*n as f64),
            Node::I64(n) => Some(*n as f64),
            Node::F64(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        // serde_json reports non-negative integers through `visit_u64`.
        Ok(Node::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            fields.push((k, v));
        }
        Ok(Node::Object(fields))
    }
}

#[cfg(test)]
mod tests;
