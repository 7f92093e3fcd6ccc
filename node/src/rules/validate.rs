//! Rule document parsing (JSON or YAML) and validation, pure. Errors name the field path and
//! the problem: `condition.all[1].geofence.shape.polygon.exterior: ring must have …`.
//!
//! Parsing goes document → `serde_json::Value` (JSON with serde_json, YAML with serde-saphyr)
//! → [`RuleDoc`] through `serde_path_to_error`, so both formats report type errors with the
//! same paths. Then one validation pass collects every problem serde cannot see (names,
//! ranges, durations, rings, hysteresis direction, notification targets), not just the first.
//!
//! What this does not do: evaluate rules, or check that metrics exist (any metric name may
//! arrive later).

use std::fmt;

use super::doc::{CmpOp, Condition, NoData, RuleDuration, Target, Threshold};
use super::geofence::Region;
use crate::model::RuleDoc;

/// One problem with a rule document.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Path of the offending field, e.g. `condition.threshold.value`, `notify[0].webhook.url`;
    /// `document` for the document as a whole, `format` for the format name.
    pub field: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// A rule document that cannot be accepted: every problem found, at least one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct RuleError {
    pub problems: Vec<Problem>,
}

impl RuleError {
    fn one(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                field: field.into(),
                problem: problem.into(),
            }],
        }
    }

    /// The field of the first problem.
    pub fn field(&self) -> &str {
        self.problems.first().map_or("", |p| p.field.as_str())
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Largest rule document accepted, in bytes (polygons can be long).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest nesting of `all`/`any`.
pub const MAX_DEPTH: usize = 8;
/// Most conditions (leaves and groups) in one rule.
pub const MAX_CONDITIONS: usize = 64;
/// Most points in one polygon ring.
pub const MAX_RING_POINTS: usize = 10_000;
/// Most notification targets of one rule.
pub const MAX_TARGETS: usize = 16;
/// Bounds of `for`, `window` and no-data durations.
pub const MIN_DURATION: RuleDuration = RuleDuration { ms: 1_000 };
pub const MAX_DURATION: RuleDuration = RuleDuration {
    ms: 30 * 24 * 3_600_000,
};

/// Parses a rule document in the given format (`json` or empty, `yaml` or `yml`) and
/// validates it.
pub fn parse(document: &str, format: &str) -> Result<RuleDoc, RuleError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(RuleError::one(
            "document",
            format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
        ));
    }
    let tree: serde_json::Value = match format {
        "" | "json" => serde_json::from_str(document)
            .map_err(|e| RuleError::one("document", format!("not valid JSON: {e}")))?,
        "yaml" | "yml" => serde_saphyr::from_str(document)
            .map_err(|e| RuleError::one("document", format!("not valid YAML: {e}")))?,
        other => {
            return Err(RuleError::one(
                "format",
                format!("unknown format {other:?}; expected \"json\" or \"yaml\""),
            ));
        }
    };
    let doc: RuleDoc = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "document".into() } else { path };
        RuleError::one(field, e.into_inner().to_string())
    })?;
    validate(&doc)?;
    Ok(doc)
}

/// Checks what serde cannot, collecting every problem.
pub fn validate(doc: &RuleDoc) -> Result<(), RuleError> {
    let mut v = Validator::default();
    v.name("id", &doc.id);
    if let Some(t) = &doc.tenant {
        v.name("tenant", t);
    }
    for (i, d) in doc.selector.devices.iter().enumerate() {
        v.name(&format!("selector.devices[{i}]"), d);
    }
    if let Some(t) = &doc.selector.device_type {
        v.name("selector.type", t);
    }
    for (k, val) in &doc.selector.labels {
        v.name(&format!("selector.labels.{k}"), k);
        if val.is_empty() || val.len() > 128 {
            v.problem(
                format!("selector.labels.{k}"),
                "value must be 1 to 128 characters",
            );
        }
    }
    if doc.severity.is_empty() || doc.severity.len() > 32 {
        v.problem("severity", "must be 1 to 32 characters");
    }
    v.condition("condition", &doc.condition, 1);
    if v.conditions > MAX_CONDITIONS {
        v.problem(
            "condition",
            format!("has {} conditions; at most {MAX_CONDITIONS}", v.conditions),
        );
    }
    if doc.notify.len() > MAX_TARGETS {
        v.problem("notify", format!("at most {MAX_TARGETS} targets"));
    }
    for (i, t) in doc.notify.iter().enumerate() {
        v.target(&format!("notify[{i}]"), t);
    }
    if v.problems.is_empty() {
        Ok(())
    } else {
        Err(RuleError {
            problems: v.problems,
        })
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    conditions: usize,
}

impl Validator {
    fn problem(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            problem: problem.into(),
        });
    }

    fn name(&mut self, field: &str, s: &str) {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
        if s.is_empty() || s.len() > 128 || !s.chars().all(ok_char) {
            self.problem(
                field,
                format!("{s:?} must be 1 to 128 characters of [A-Za-z0-9_.:-]"),
            );
        }
    }

    fn metric(&mut self, field: String, m: &str) {
        if m.is_empty() || m.len() > 128 {
            self.problem(field, "must be 1 to 128 characters");
        }
    }

    fn finite(&mut self, field: String, x: f64) {
        if !x.is_finite() {
            self.problem(field, "must be a finite number");
        }
    }

    fn duration(&mut self, field: String, d: RuleDuration) {
        if d < MIN_DURATION || d > MAX_DURATION {
            self.problem(
                field,
                format!("must be between {MIN_DURATION} and {MAX_DURATION}"),
            );
        }
    }

    fn condition(&mut self, at: &str, c: &Condition, depth: usize) {
        self.conditions += 1;
        match c {
            Condition::Threshold(t) => self.threshold(&format!("{at}.threshold"), t),
            Condition::NoData(n) => self.no_data(&format!("{at}.no_data"), n),
            Condition::Geofence(g) => {
                let at = format!("{at}.geofence");
                self.metric(format!("{at}.metric"), &g.metric);
                let (shape_at, points) = match &g.shape {
                    super::doc::Shape::Circle(_) => (format!("{at}.shape.circle"), 0),
                    super::doc::Shape::Polygon(p) => (
                        format!("{at}.shape.polygon"),
                        p.holes
                            .iter()
                            .map(Vec::len)
                            .max()
                            .unwrap_or(0)
                            .max(p.exterior.len()),
                    ),
                };
                if points > MAX_RING_POINTS {
                    self.problem(
                        shape_at,
                        format!("rings have at most {MAX_RING_POINTS} points"),
                    );
                } else if let Err(problems) = Region::compile(&g.shape) {
                    for p in problems {
                        let field = if p.field.is_empty() {
                            shape_at.clone()
                        } else {
                            format!("{shape_at}.{}", p.field)
                        };
                        self.problem(field, p.problem);
                    }
                }
            }
            Condition::RateOfChange(r) => {
                let at = format!("{at}.rate_of_change");
                self.metric(format!("{at}.metric"), &r.metric);
                self.duration(format!("{at}.window"), r.window);
                self.finite(format!("{at}.value"), r.value);
            }
            Condition::All(cs) | Condition::Any(cs) => {
                let at = format!(
                    "{at}.{}",
                    if matches!(c, Condition::All(_)) {
                        "all"
                    } else {
                        "any"
                    }
                );
                if cs.is_empty() {
                    self.problem(at.clone(), "must list at least one condition");
                }
                if depth > MAX_DEPTH {
                    self.problem(at, format!("nested deeper than {MAX_DEPTH} levels"));
                    return;
                }
                for (i, c) in cs.iter().enumerate() {
                    self.condition(&format!("{at}[{i}]"), c, depth + 1);
                }
            }
        }
    }

    fn threshold(&mut self, at: &str, t: &Threshold) {
        self.metric(format!("{at}.metric"), &t.metric);
        self.finite(format!("{at}.value"), t.value);
        if let Some(d) = t.hold {
            self.duration(format!("{at}.for"), d);
        }
        let Some(clear) = t.clear else {
            return;
        };
        let field = format!("{at}.clear");
        if !clear.is_finite() {
            return self.problem(field, "must be a finite number");
        }
        match t.op {
            CmpOp::Gt | CmpOp::Ge if clear > t.value => self.problem(
                field,
                format!(
                    "must be at most value ({}) for {}: the alarm clears when the value drops below it",
                    t.value, t.op
                ),
            ),
            CmpOp::Lt | CmpOp::Le if clear < t.value => self.problem(
                field,
                format!(
                    "must be at least value ({}) for {}: the alarm clears when the value rises above it",
                    t.value, t.op
                ),
            ),
            CmpOp::Eq | CmpOp::Ne => {
                self.problem(field, "hysteresis needs one of >, >=, <, <=")
            }
            _ => {}
        }
    }

    fn no_data(&mut self, at: &str, n: &NoData) {
        if let Some(m) = &n.metric {
            self.metric(format!("{at}.metric"), m);
        }
        match (n.seconds, n.after) {
            (Some(_), Some(_)) => self.problem(at, "give either seconds or for, not both"),
            (None, None) => self.problem(at, "give seconds or for: how long without data"),
            (Some(s), None) => self.duration(
                format!("{at}.seconds"),
                RuleDuration::from_secs(s.min(u64::MAX / 1000)),
            ),
            (None, Some(d)) => self.duration(format!("{at}.for"), d),
        }
    }

    fn target(&mut self, at: &str, t: &Target) {
        match t {
            Target::Webhook { url } => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
                if url.len() > 2048
                    || url.chars().any(|c| c.is_whitespace() || c.is_control())
                    || host.is_none_or(str::is_empty)
                {
                    self.problem(
                        format!("{at}.webhook.url"),
                        "must be an http:// or https:// URL with a host",
                    );
                }
            }
            Target::Email { to } => {
                let ok = to.len() <= 254
                    && !to.chars().any(|c| c.is_whitespace() || c.is_control())
                    && to.split_once('@').is_some_and(|(local, domain)| {
                        !local.is_empty()
                            && !domain.contains('@')
                            && domain.contains('.')
                            && !domain.starts_with('.')
                            && !domain.ends_with('.')
                    });
                if !ok {
                    self.problem(format!("{at}.email.to"), "must be an email address");
                }
            }
            Target::Sms { to } => {
                let digits = to.strip_prefix('+').unwrap_or("");
                let ok = (7..=15).contains(&digits.len())
                    && digits.chars().all(|c| c.is_ascii_digit())
                    && !digits.starts_with('0');
                if !ok {
                    self.problem(
                        format!("{at}.sms.to"),
                        "must be an E.164 number: + and 7 to 15 digits",
                    );
                }
            }
            Target::Mqtt {} => {}
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
