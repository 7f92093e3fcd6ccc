//! Prometheus text exposition parsing (pure): enough to read counters and gauges in tests.
//!
//! A sample line is `name value [timestamp]` or `name{label="value",...} value [timestamp]`;
//! lines starting with `#` are comments (`HELP`, `TYPE`). Label values may contain spaces,
//! braces and escaped quotes, so the label block is skipped by scanning quotes, not by
//! splitting on whitespace. Histograms and summaries are read through their series names
//! (`x_bucket`, `x_sum`, `x_count`); nothing here interprets them.

/// Sum of every series named exactly `name` (all label sets), or `None` when there is none.
///
/// `name` must match the whole metric name: `starling_points_stored_total` does not match
/// `starling_points_stored_total_bytes`.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| sample_value(line, name))
        .fold(None, |sum, value| Some(sum.unwrap_or(0.0) + value))
}

/// The value of one sample line if it is a series of `name`.
fn sample_value(line: &str, name: &str) -> Option<f64> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    let rest = line.strip_prefix(name)?;
    let rest = if let Some(labels) = rest.strip_prefix('{') {
        &labels[label_block_len(labels)?..]
    } else if rest.starts_with([' ', '\t']) {
        rest
    } else {
        // A longer name that merely starts with `name`, or a malformed line.
        return None;
    };
    parse_value(rest.split_whitespace().next()?)
}

/// Length of a label block up to and including its closing `}` (the opening `{` is already
/// consumed); `None` if it never closes.
fn label_block_len(labels: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Prometheus values are Go floats: `1`, `1.5e3`, `+Inf`, `-Inf`, `NaN`.
fn parse_value(token: &str) -> Option<f64> {
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP starling_points_stored_total Points durably stored.
# TYPE starling_points_stored_total counter
starling_points_stored_total{source="mqtt"} 1200
starling_points_stored_total{source="grpc"} 34
starling_points_stored_total_bytes 99999
starling_ingest_in_flight 7
starling_ingest_rejected_total{reason="bad json, really {}",kind="a\"b}"} 2
starling_ingest_rejected_total{reason="metric_name"} 3 1732200000000
starling_store_write_seconds_bucket{le="+Inf"} 5
starling_store_write_seconds_sum 0.0125
weird_metric NaN
"#;

    #[test]
    fn sums_series_by_exact_name() {
        let cases: &[(&str, Option<f64>)] = &[
            ("starling_points_stored_total", Some(1234.0)),
            ("starling_points_stored_total_bytes", Some(99999.0)),
            ("starling_ingest_in_flight", Some(7.0)),
            // Label values with spaces, braces and escaped quotes; a trailing timestamp.
            ("starling_ingest_rejected_total", Some(5.0)),
            ("starling_store_write_seconds_bucket", Some(5.0)),
            ("starling_store_write_seconds_sum", Some(0.0125)),
            ("starling_store_write_seconds", None),
            ("starling_points", None),
            ("absent_total", None),
            // HELP and TYPE lines are not samples.
            ("HELP", None),
        ];
        for (name, expected) in cases {
            assert_eq!(metric_sum(PAGE, name), *expected, "metric {name}");
        }
    }

    #[test]
    fn nan_is_a_value() {
        assert!(metric_sum(PAGE, "weird_metric").unwrap().is_nan());
    }

    #[test]
    fn infinities_parse() {
        assert_eq!(metric_sum("g +Inf\n", "g"), Some(f64::INFINITY));
        assert_eq!(metric_sum("g -Inf\n", "g"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "c{a=\"unterminated} 5\nc\nc notanumber\nc 2\n";
        assert_eq!(metric_sum(text, "c"), Some(2.0));
        assert_eq!(metric_sum("", "c"), None);
    }
}
