//! Tables for `validate.rs`: documents accepted, documents refused with the field path, and
//! every file of `examples/rules/`.

use std::path::PathBuf;

use super::*;
use crate::model::{GeoTrigger, Shape, Target};

const HOT: &str = r#"{"id":"hot","condition":{"threshold":{"metric":"temp","op":">","value":30}}}"#;

#[test]
fn accepts_valid_documents() {
    let ok = [
        (HOT, "json"),
        (
            r#"{"id":"hot","tenant":"acme","selector":{"devices":["t-1","t-2"]},
                "condition":{"threshold":{"metric":"temp","op":"<=","value":-5.5}},"severity":"critical"}"#,
            "json",
        ),
        (
            "id: hot\ncondition:\n  threshold: {metric: temp, op: \">\", value: 30, for: 90s, clear: 25}\n",
            "yaml",
        ),
        (
            "id: quiet\ncondition: {no_data: {seconds: 60, metric: temp}}\n",
            "yml",
        ),
        (
            r#"{"id":"r","condition":{"rate_of_change":{"metric":"p","window":"1m","op":"<","value":-0.5}}}"#,
            "",
        ),
        (
            r#"{"id":"g","condition":{"any":[{"no_data":{"for":"5m"}},{"all":[
                {"geofence":{"metric":"pos","trigger":"exit","shape":{"circle":{"lat":1,"lon":2,"radius_m":30}}}},
                {"threshold":{"metric":"speed","op":">=","value":80,"clear":70}}]}]},
                "selector":{"type":"truck","labels":{"fleet":"north"}},
                "notify":[{"webhook":{"url":"https://h.example/x"}},{"email":{"to":"a@b.example"}},
                          {"sms":{"to":"+4915112345678"}},{"mqtt":{}}]}"#,
            "json",
        ),
    ];
    for (d, format) in ok {
        parse(d, format).unwrap_or_else(|e| panic!("{d}: {e}"));
    }
}

#[test]
fn json_and_yaml_give_the_same_document() {
    let yaml =
        "id: hot\ncondition:\n  threshold:\n    metric: temp\n    op: \">\"\n    value: 30\n";
    assert_eq!(parse(yaml, "yaml").unwrap(), parse(HOT, "json").unwrap());
}

/// (document, format, expected field of the first problem, a word of the problem)
type Refusal = (&'static str, &'static str, &'static str, &'static str);

#[test]
fn rejects_with_field_paths() {
    let th = |inner: &str| format!(r#"{{"id":"x","condition":{{"threshold":{{{inner}}}}}}}"#);
    let owned: Vec<(String, &str, &str, &str)> = vec![
        (
            th(r#""metric":"","op":">","value":1"#),
            "json",
            "condition.threshold.metric",
            "1 to 128",
        ),
        (
            th(r#""metric":"t","op":"~","value":1"#),
            "json",
            "condition.threshold.op",
            "unknown variant",
        ),
        (
            th(r#""metric":"t","op":">","value":1,"extra":2"#),
            "json",
            "condition.threshold.extra",
            "unknown field",
        ),
        (
            th(r#""metric":"t","op":">","value":"hot""#),
            "json",
            "condition.threshold.value",
            "invalid type",
        ),
        (
            th(r#""metric":"t","op":">","value":1,"for":"5 parsecs""#),
            "json",
            "condition.threshold.for",
            "invalid duration",
        ),
        (
            th(r#""metric":"t","op":">","value":1,"for":"10ms""#),
            "json",
            "condition.threshold.for",
            "between 1s",
        ),
        (
            th(r#""metric":"t","op":">","value":30,"clear":35"#),
            "json",
            "condition.threshold.clear",
            "at most value",
        ),
        (
            th(r#""metric":"t","op":"<","value":0,"clear":-2"#),
            "json",
            "condition.threshold.clear",
            "at least value",
        ),
        (
            th(r#""metric":"t","op":"==","value":1,"clear":1"#),
            "json",
            "condition.threshold.clear",
            "hysteresis",
        ),
    ];
    let fixed: &[Refusal] = &[
        (
            r#"{"condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
            "json",
            "document",
            "missing field `id`",
        ),
        (
            r#"{"id":"a b","condition":{"threshold":{"metric":"t","op":">","value":1}}}"#,
            "json",
            "id",
            "must be",
        ),
        (
            r#"{"id":"x","condition":{"threshold":{"metric":"t","op":">","value":1}},"extra":1}"#,
            "json",
            "extra",
            "unknown field",
        ),
        (
            r#"{"id":"x","selector":{"devices":[""]},"condition":{"no_data":{"seconds":5}}}"#,
            "json",
            "selector.devices[0]",
            "must be",
        ),
        (
            r#"{"id":"x","selector":{"type":"a b"},"condition":{"no_data":{"seconds":5}}}"#,
            "json",
            "selector.type",
            "must be",
        ),
        (
            r#"{"id":"x","severity":"","condition":{"no_data":{"seconds":5}}}"#,
            "json",
            "severity",
            "1 to 32",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{}}}"#,
            "json",
            "condition.no_data",
            "give seconds or for",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":5,"for":"5s"}}}"#,
            "json",
            "condition.no_data",
            "not both",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":0}}}"#,
            "json",
            "condition.no_data.seconds",
            "between",
        ),
        (
            r#"{"id":"x","condition":{"rate_of_change":{"metric":"p","window":"0s","op":">","value":1}}}"#,
            "json",
            "condition.rate_of_change.window",
            "between",
        ),
        (
            r#"{"id":"x","condition":{"all":[]}}"#,
            "json",
            "condition.all",
            "at least one",
        ),
        (
            r#"{"id":"x","condition":{"all":[{"no_data":{"seconds":5}},{"geofence":{"metric":"pos","trigger":"enter",
               "shape":{"polygon":{"exterior":[[0,0],[1,0],[1,1]]}}}}]}}"#,
            "json",
            "condition.all[1].geofence.shape.polygon.exterior",
            "ring must have at least 4 points and be closed",
        ),
        (
            r#"{"id":"x","condition":{"any":[{"geofence":{"metric":"pos","trigger":"inside",
               "shape":{"polygon":{"exterior":[[0,0],[1,0],[1,1],[0,0]],"holes":[[[0,0],[5,5]]]}}}}]}}"#,
            "json",
            "condition.any[0].geofence.shape.polygon.holes[0]",
            "ring must",
        ),
        (
            r#"{"id":"x","condition":{"geofence":{"metric":"pos","trigger":"inside","shape":{"circle":{"lat":95,"lon":0,"radius_m":1}}}}}"#,
            "json",
            "condition.geofence.shape.circle.lat",
            "latitude",
        ),
        (
            r#"{"id":"x","condition":{"geofence":{"metric":"pos","trigger":"inside","shape":{"square":{}}}}}"#,
            "json",
            "condition.geofence.shape",
            "unknown variant",
        ),
        (
            r#"{"id":"x","condition":{"geofence":{"metric":"pos","trigger":"near","shape":{"circle":{"lat":1,"lon":0,"radius_m":1}}}}}"#,
            "json",
            "condition.geofence.trigger",
            "unknown variant",
        ),
        (
            r#"{"id":"x","condition":{"geofence":{"metric":"pos","trigger":"inside","shape":{"polygon":{"exterior":[[0,0,0],[1,0],[1,1],[0,0]]}}}}}"#,
            "json",
            "condition.geofence.shape.polygon.exterior[0]",
            "length",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":5}},"notify":[{"webhook":{"url":"ftp://x"}}]}"#,
            "json",
            "notify[0].webhook.url",
            "http",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":5}},"notify":[{"mqtt":{}},{"email":{"to":"nobody"}}]}"#,
            "json",
            "notify[1].email.to",
            "email",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":5}},"notify":[{"sms":{"to":"12345"}}]}"#,
            "json",
            "notify[0].sms.to",
            "E.164",
        ),
        (
            r#"{"id":"x","condition":{"no_data":{"seconds":5}},"notify":[{"pigeon":{}}]}"#,
            "json",
            "notify[0]",
            "unknown variant",
        ),
        (
            "id: x\ncondition:\n  threshold: {metric: t, op: \">\", value: [1]}\n",
            "yaml",
            "condition.threshold.value",
            "invalid type",
        ),
        (
            "id: x\ncondition: {threshold: {metric: t, op: \">\"",
            "yaml",
            "document",
            "YAML",
        ),
        ("not json", "json", "document", "JSON"),
        ("{}", "xml", "format", "unknown format"),
    ];
    let all = owned
        .iter()
        .map(|(d, f, field, word)| (d.as_str(), *f, *field, *word))
        .chain(fixed.iter().copied());
    for (doc, format, field, word) in all {
        let err = parse(doc, format).expect_err(doc);
        assert_eq!(err.field(), field, "{doc}: {err}");
        assert!(err.to_string().contains(word), "{doc}: {err}");
    }
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let doc = r#"{"id":"a b","severity":"","condition":{"all":[
        {"threshold":{"metric":"","op":">","value":1}},
        {"no_data":{}}]},
        "notify":[{"sms":{"to":"x"}}]}"#;
    let err = parse(doc, "json").unwrap_err();
    let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "id",
            "severity",
            "condition.all[0].threshold.metric",
            "condition.all[1].no_data",
            "notify[0].sms.to"
        ]
    );
}

#[test]
fn nesting_and_size_are_bounded() {
    let mut c = r#"{"no_data":{"seconds":5}}"#.to_string();
    for _ in 0..MAX_DEPTH {
        c = format!(r#"{{"all":[{c}]}}"#);
    }
    parse(&format!(r#"{{"id":"x","condition":{c}}}"#), "json").unwrap();
    let deeper = format!(r#"{{"id":"x","condition":{{"any":[{c}]}}}}"#);
    let err = parse(&deeper, "json").unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");

    let many = vec![r#"{"no_data":{"seconds":5}}"#; MAX_CONDITIONS];
    let wide = format!(r#"{{"id":"x","condition":{{"any":[{}]}}}}"#, many.join(","));
    assert_eq!(parse(&wide, "json").unwrap_err().field(), "condition");
}

#[test]
fn yaml_alias_bombs_are_refused() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    doc.push_str("id: x\ncondition: {no_data: {seconds: 5}}\n");
    assert_eq!(parse(&doc, "yaml").unwrap_err().field(), "document");
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/rules")
}

/// Every file in `examples/rules/` parses and validates, and together they show every
/// condition type, both shapes, every trigger kind used in practice and every target.
#[test]
fn every_example_validates() {
    let mut seen: Vec<&'static str> = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/rules exists") {
        let path = entry.unwrap().path();
        let format = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        assert!(
            matches!(format, "json" | "yaml" | "yml"),
            "{}: examples are .json or .yaml",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let doc = parse(&text, format).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
        collect_kinds(&doc.condition, &mut seen);
        for t in &doc.notify {
            seen.push(match t {
                Target::Webhook { .. } => "webhook",
                Target::Email { .. } => "email",
                Target::Sms { .. } => "sms",
                Target::Mqtt {} => "mqtt",
            });
        }
        // What is stored reads back as the same document.
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(parse(&json, "json").unwrap(), doc, "{}", path.display());
    }
    assert!(files >= 7, "{files} examples");
    for kind in [
        "threshold",
        "for",
        "clear",
        "no_data",
        "circle",
        "polygon",
        "hole",
        "enter",
        "exit",
        "inside",
        "outside",
        "rate_of_change",
        "all",
        "any",
        "webhook",
        "email",
        "sms",
        "mqtt",
    ] {
        assert!(seen.contains(&kind), "no example uses {kind}");
    }
}

fn collect_kinds(c: &Condition, seen: &mut Vec<&'static str>) {
    match c {
        Condition::Threshold(t) => {
            seen.push("threshold");
            if t.hold.is_some() {
                seen.push("for");
            }
            if t.clear.is_some() {
                seen.push("clear");
            }
        }
        Condition::NoData(_) => seen.push("no_data"),
        Condition::Geofence(g) => {
            match &g.shape {
                Shape::Circle(_) => seen.push("circle"),
                Shape::Polygon(p) => {
                    seen.push("polygon");
                    if !p.holes.is_empty() {
                        seen.push("hole");
                    }
                }
            }
            seen.push(match g.trigger {
                GeoTrigger::Enter => "enter",
                GeoTrigger::Exit => "exit",
                GeoTrigger::Inside => "inside",
                GeoTrigger::Outside => "outside",
            });
        }
        Condition::RateOfChange(_) => seen.push("rate_of_change"),
        Condition::All(cs) | Condition::Any(cs) => {
            seen.push(if matches!(c, Condition::All(_)) {
                "all"
            } else {
                "any"
            });
            cs.iter().for_each(|c| collect_kinds(c, seen));
        }
    }
}
