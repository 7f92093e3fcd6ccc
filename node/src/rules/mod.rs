//! Rule evaluation, pure: given a rule, whether its alarm is active, and a sample, decide the
//! alarm transition. Never awaits, never does I/O, never reads a clock (times come in).
//!
//! Semantics of this first cut (threshold conditions only):
//! - A threshold holds when the sample carries the rule's metric with a numeric view
//!   (numbers; booleans as 0/1) and `value OP threshold` is true.
//! - Holds and not active → raise. Present, does not hold, and active → clear.
//! - A sample without the metric (or with a non-numeric value for it) changes nothing.
//!
//! The rules issue adds `for` durations, hysteresis, no-data, geofences, rate of change and
//! AND/OR; this module is where they go.

pub mod validate;

use crate::model::{Condition, Rule, Value};

/// The outcome of evaluating one rule against one sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing changes.
    Keep,
    /// Raise an alarm: the metric and value that made the condition hold.
    Raise {
        metric: String,
        value: Value,
        message: String,
    },
    /// Clear the active alarm.
    Clear,
}

/// Evaluates `rule` against one sample's values, given whether its alarm is active.
pub fn evaluate(rule: &Rule, active: bool, values: &[(String, Value)]) -> Decision {
    match &rule.doc.condition {
        Condition::Threshold(t) => {
            let Some((_, value)) = values.iter().find(|(m, _)| *m == t.metric) else {
                return Decision::Keep;
            };
            let Some(x) = value.as_f64() else {
                return Decision::Keep;
            };
            let holds = t.op.holds(x, t.value);
            match (holds, active) {
                (true, false) => Decision::Raise {
                    metric: t.metric.clone(),
                    value: value.clone(),
                    message: format!("{} {} {} (value {})", t.metric, op_str(t.op), t.value, x),
                },
                (false, true) => Decision::Clear,
                _ => Decision::Keep,
            }
        }
    }
}

fn op_str(op: crate::model::CmpOp) -> &'static str {
    use crate::model::CmpOp::*;
    match op {
        Gt => ">",
        Ge => ">=",
        Lt => "<",
        Le => "<=",
        Eq => "==",
        Ne => "!=",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CmpOp, RuleDoc, Selector, Threshold};

    fn rule(op: CmpOp, threshold: f64) -> Rule {
        Rule {
            doc: RuleDoc {
                id: "r".into(),
                tenant: None,
                selector: Selector::default(),
                condition: Condition::Threshold(Threshold {
                    metric: "temp".into(),
                    op,
                    value: threshold,
                }),
                severity: "major".into(),
            },
            version: 7,
            updated_at_ms: 0,
        }
    }

    fn num(metric: &str, x: f64) -> Vec<(String, Value)> {
        vec![(metric.to_owned(), Value::Number(x))]
    }

    #[test]
    fn threshold_table() {
        use CmpOp::*;
        // (op, threshold, active, sample, expected: 'R' raise, 'C' clear, '-' keep)
        type Case = (CmpOp, f64, bool, Vec<(String, Value)>, char);
        let cases: &[Case] = &[
            (Gt, 30.0, false, num("temp", 31.0), 'R'),
            (Gt, 30.0, false, num("temp", 30.0), '-'), // exactly at threshold: > does not hold
            (Ge, 30.0, false, num("temp", 30.0), 'R'),
            (Gt, 30.0, true, num("temp", 31.0), '-'), // already active: one alarm
            (Gt, 30.0, true, num("temp", 30.0), 'C'),
            (Gt, 30.0, false, num("temp", 10.0), '-'),
            (Lt, 0.0, false, num("temp", -0.5), 'R'),
            (Le, 0.0, true, num("temp", 0.5), 'C'),
            (
                Eq,
                1.0,
                false,
                vec![("temp".into(), Value::Bool(true))],
                'R',
            ),
            (Ne, 1.0, false, num("temp", 1.0), '-'),
            (Gt, 30.0, false, num("humidity", 99.0), '-'), // other metric
            (Gt, 30.0, true, num("humidity", 0.0), '-'),   // absent metric never clears
            (
                Gt,
                30.0,
                false,
                vec![("temp".into(), Value::Text("hot".into()))],
                '-',
            ), // non-numeric
            (
                Gt,
                30.0,
                false,
                vec![("temp".into(), Value::Position { lat: 1.0, lon: 2.0 })],
                '-',
            ),
        ];
        for (i, (op, th, active, values, want)) in cases.iter().enumerate() {
            let got = match evaluate(&rule(*op, *th), *active, values) {
                Decision::Raise { .. } => 'R',
                Decision::Clear => 'C',
                Decision::Keep => '-',
            };
            assert_eq!(
                got, *want,
                "case {i}: {op:?} {th} active={active} {values:?}"
            );
        }
    }

    #[test]
    fn raise_carries_metric_value_and_message() {
        let d = evaluate(&rule(CmpOp::Gt, 30.0), false, &num("temp", 42.5));
        assert_eq!(
            d,
            Decision::Raise {
                metric: "temp".into(),
                value: Value::Number(42.5),
                message: "temp > 30 (value 42.5)".into(),
            }
        );
    }
}
