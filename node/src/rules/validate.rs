//! Rule document parsing and validation, pure. Errors name the field and the problem.

use crate::model::{Condition, RuleDoc};

/// A rule document that cannot be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RuleError {
    /// Dotted path of the offending field, e.g. `condition.threshold.value`.
    pub field: String,
    pub problem: String,
}

impl RuleError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Parses a rule document in the given format (`json`, or empty for JSON) and validates it.
pub fn parse(document: &str, format: &str) -> Result<RuleDoc, RuleError> {
    let doc: RuleDoc = match format {
        "" | "json" => serde_json::from_str(document).map_err(|e| {
            // serde's message names the unknown or missing field and the position.
            RuleError::new("document", e.to_string())
        })?,
        "yaml" | "yml" => {
            return Err(RuleError::new(
                "format",
                "YAML rule documents are not supported yet; send JSON",
            ));
        }
        other => {
            return Err(RuleError::new(
                "format",
                format!("unknown format {other:?}; expected \"json\""),
            ));
        }
    };
    validate(&doc)?;
    Ok(doc)
}

/// Checks what serde cannot: ids, names and numbers.
pub fn validate(doc: &RuleDoc) -> Result<(), RuleError> {
    check_name("id", &doc.id)?;
    if let Some(t) = &doc.tenant {
        check_name("tenant", t)?;
    }
    for (i, d) in doc.selector.devices.iter().enumerate() {
        check_name(&format!("selector.devices[{i}]"), d)?;
    }
    if doc.severity.is_empty() || doc.severity.len() > 32 {
        return Err(RuleError::new("severity", "must be 1 to 32 characters"));
    }
    match &doc.condition {
        Condition::Threshold(t) => {
            if t.metric.is_empty() || t.metric.len() > 128 {
                return Err(RuleError::new(
                    "condition.threshold.metric",
                    "must be 1 to 128 characters",
                ));
            }
            if !t.value.is_finite() {
                return Err(RuleError::new(
                    "condition.threshold.value",
                    "must be a finite number",
                ));
            }
        }
    }
    Ok(())
}

fn check_name(field: &str, s: &str) -> Result<(), RuleError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if s.is_empty() || s.len() > 128 || !s.chars().all(ok_char) {
        return Err(RuleError::new(
            field,
            format!("{s:?} must be 1 to 128 characters of [A-Za-z0-9_.:-]"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_documents() {
        let ok = [
            r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}}}"#,
            r#"{"id":"hot","tenant":"acme","selector":{"devices":["t-1","t-2"]},
                "condition":{"threshold":{"metric":"temp","op":"<=","value":-5.5}},"severity":"critical"}"#,
        ];
        for d in ok {
            parse(d, "json").unwrap_or_else(|e| panic!("{d}: {e}"));
        }
    }

    #[test]
    fn rejects_with_field_names() {
        let cases = [
            (
                r#"{"condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
                "document",
            ),
            (
                r#"{"id":"a b","condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
                "id",
            ),
            (
                r#"{"id":"x","condition":{"threshold":{"metric":"","op":">","value":1}}}"#,
                "condition.threshold.metric",
            ),
            (
                r#"{"id":"x","condition":{"threshold":{"metric":"t","op":"~","value":1}}}"#,
                "document",
            ),
            (
                r#"{"id":"x","condition":{"threshold":{"metric":"t","op":">","value":1}},"extra":1}"#,
                "document",
            ),
            (
                r#"{"id":"x","selector":{"devices":[""]},"condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
                "selector.devices[0]",
            ),
            (
                r#"{"id":"x","severity":"","condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
                "severity",
            ),
            ("not json", "document"),
        ];
        for (doc, field) in cases {
            let err = parse(doc, "json").expect_err(doc);
            assert_eq!(err.field, field, "{doc}: {err}");
        }
        assert_eq!(parse("id: x", "yaml").unwrap_err().field, "format");
        assert_eq!(parse("{}", "xml").unwrap_err().field, "format");
    }
}
