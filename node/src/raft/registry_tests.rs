//! Table tests of the registry's pure apply, filters and validation.

use std::collections::BTreeMap;

use super::*;
use crate::raft::apply::tests::MemState;
use crate::raft::apply::{Outcome, apply};
use crate::raft::command::{ControlCommand, Entry};

fn key(id: &str) -> DeviceKey {
    DeviceKey::default_tenant(id)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn register(id: &str, t: Option<&str>, l: &[(&str, &str)], at_ms: i64) -> DeviceCommand {
    DeviceCommand::Register {
        device: key(id),
        device_type: t.map(str::to_owned),
        labels: labels(l),
        at_ms,
    }
}

fn auto(id: &str, at_ms: i64) -> DeviceCommand {
    DeviceCommand::AutoRegister {
        device: key(id),
        at_ms,
    }
}

fn label(id: &str, set: &[(&str, &str)], remove: &[&str], at_ms: i64) -> DeviceCommand {
    DeviceCommand::Label {
        device: key(id),
        set: labels(set),
        remove: remove.iter().map(|s| (*s).to_owned()).collect(),
        at_ms,
    }
}

fn delete(id: &str) -> DeviceCommand {
    DeviceCommand::Delete { device: key(id) }
}

fn run(state: &mut MemState, index: u64, cmd: &DeviceCommand) -> Outcome {
    let entry = Entry::new(ControlCommand::Device(cmd.clone()));
    let Ok(outcome) = apply(state, index, &entry);
    outcome
}

/// Compact text of a response: `type labels reg/upd auto`, `unchanged`, `deleted`, `rejected`.
fn summary(o: &Outcome) -> String {
    match &o.response {
        ControlResponse::Device(Some(d)) => format!(
            "{} {:?} {}/{}{}",
            d.device_type.as_deref().unwrap_or("-"),
            d.labels,
            d.registered_at_ms,
            d.updated_at_ms,
            if d.auto { " auto" } else { "" }
        ),
        ControlResponse::Device(None) => "deleted".into(),
        ControlResponse::Unchanged => "unchanged".into(),
        ControlResponse::Rejected(r) => format!("rejected: {r}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn apply_table() {
    // (history, command, expected response, events published)
    type Case = (Vec<DeviceCommand>, DeviceCommand, &'static str, usize);
    let cases: Vec<Case> = vec![
        (
            vec![],
            register("d", Some("truck"), &[("site", "n")], 5),
            r#"truck {"site": "n"} 5/5"#,
            1,
        ),
        // Re-registering replaces type and labels, keeps the registration time.
        (
            vec![register("d", Some("truck"), &[("site", "n")], 5)],
            register("d", Some("van"), &[], 9),
            "van {} 5/9",
            1,
        ),
        // The same registration again changes nothing and publishes nothing.
        (
            vec![register("d", Some("truck"), &[], 5)],
            register("d", Some("truck"), &[], 9),
            "truck {} 5/5",
            0,
        ),
        (vec![], auto("d", 7), "- {} 7/7 auto", 1),
        // Auto-registration never touches a known device.
        (
            vec![register("d", Some("truck"), &[], 5)],
            auto("d", 7),
            "unchanged",
            0,
        ),
        (vec![auto("d", 5)], auto("d", 7), "unchanged", 0),
        // An operator's registration of an auto-provisioned device takes it over.
        (
            vec![auto("d", 5)],
            register("d", None, &[], 9),
            "- {} 5/9",
            1,
        ),
        (
            vec![register("d", None, &[("a", "1"), ("b", "2")], 5)],
            label("d", &[("b", "3"), ("c", "4")], &["a"], 8),
            r#"- {"b": "3", "c": "4"} 5/8"#,
            1,
        ),
        // Removing a label that is not there and setting one to its value: no change.
        (
            vec![register("d", None, &[("a", "1")], 5)],
            label("d", &[("a", "1")], &["zz"], 8),
            r#"- {"a": "1"} 5/5"#,
            0,
        ),
        (
            vec![],
            label("d", &[("a", "1")], &[], 8),
            "rejected: no such device: default/d",
            0,
        ),
        (vec![register("d", None, &[], 5)], delete("d"), "deleted", 1),
        (
            vec![],
            delete("d"),
            "rejected: no such device: default/d",
            0,
        ),
        (
            vec![register("d", None, &[], 5), delete("d")],
            delete("d"),
            "rejected: no such device: default/d",
            0,
        ),
        // Other devices are not affected.
        (
            vec![register("e", None, &[], 5)],
            delete("d"),
            "rejected: no such device: default/d",
            0,
        ),
    ];
    for (n, (history, cmd, want, events)) in cases.into_iter().enumerate() {
        let mut state = MemState::default();
        for (i, h) in history.iter().enumerate() {
            run(&mut state, i as u64 + 1, h);
        }
        let out = run(&mut state, 100, &cmd);
        assert_eq!(summary(&out), want, "case {n}: {cmd:?}");
        assert_eq!(out.events.len(), events, "case {n}: events of {cmd:?}");
    }
}

#[test]
fn delete_removes_the_record_and_other_tenants_are_apart() {
    let mut state = MemState::default();
    run(&mut state, 1, &register("d", Some("t"), &[], 1));
    let other = DeviceCommand::Register {
        device: DeviceKey::new("acme", "d"),
        device_type: Some("u".into()),
        labels: BTreeMap::new(),
        at_ms: 2,
    };
    run(&mut state, 2, &other);
    run(&mut state, 3, &delete("d"));
    let out = run(&mut state, 4, &label("d", &[("a", "1")], &[], 5));
    assert_eq!(summary(&out), "rejected: no such device: default/d");
    let acme = DeviceCommand::Label {
        device: DeviceKey::new("acme", "d"),
        set: labels(&[("a", "1")]),
        remove: vec![],
        at_ms: 5,
    };
    assert_eq!(summary(&run(&mut state, 5, &acme)), r#"u {"a": "1"} 2/5"#);
}

fn record(t: Option<&str>, l: &[(&str, &str)]) -> DeviceRecord {
    DeviceRecord {
        key: key("d"),
        device_type: t.map(str::to_owned),
        labels: labels(l),
        registered_at_ms: 0,
        updated_at_ms: 0,
        auto: false,
    }
}

#[test]
fn filters() {
    let cases = [
        (None, vec![], record(None, &[]), true),
        (Some("truck"), vec![], record(Some("truck"), &[]), true),
        (Some("truck"), vec![], record(Some("van"), &[]), false),
        (Some("truck"), vec![], record(None, &[]), false),
        (
            None,
            vec![("site", "n")],
            record(None, &[("site", "n"), ("x", "y")]),
            true,
        ),
        (
            None,
            vec![("site", "n")],
            record(None, &[("site", "s")]),
            false,
        ),
        (
            None,
            vec![("site", "n"), ("x", "y")],
            record(None, &[("site", "n")]),
            false,
        ),
        (
            Some("t"),
            vec![("site", "n")],
            record(Some("t"), &[("site", "n")]),
            true,
        ),
    ];
    for (t, l, rec, want) in cases {
        let filter = DeviceFilter {
            device_type: t.map(str::to_owned),
            labels: labels(&l),
        };
        assert_eq!(filter.matches(&rec), want, "{filter:?} on {rec:?}");
    }
}

#[test]
fn metadata_from_the_record_drives_rule_selectors() {
    use crate::model::Selector;
    let selector = Selector {
        device_type: Some("boiler".into()),
        labels: labels(&[("site", "n")]),
        ..Default::default()
    };
    let rec = record(Some("boiler"), &[("site", "n"), ("floor", "2")]);
    assert!(selector.matches("d", Some(&rec.meta())));
    let rec = record(Some("boiler"), &[("site", "s")]);
    assert!(!selector.matches("d", Some(&rec.meta())));
}

#[test]
fn validation_names_the_field() {
    let long = "x".repeat(MAX_KEY_LEN + 1);
    let long_value = "v".repeat(MAX_VALUE_LEN + 1);
    type Case<'a> = (
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        Result<(), &'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            Some("truck"),
            vec![("site", "north-1"), ("k8s.io/zone", "a")],
            Ok(()),
        ),
        (None, vec![], Ok(())),
        (Some(""), vec![], Err("type: must not be empty")),
        (
            Some("a b"),
            vec![],
            Err("type: character ' ' not allowed: use letters, digits and _ . : / -"),
        ),
        (
            Some(long.as_str()),
            vec![],
            Err("type: longer than 63 characters"),
        ),
        (None, vec![("", "v")], Err("labels.: must not be empty")),
        (
            None,
            vec![("sité", "v")],
            Err("labels.sité: character 'é' not allowed: use letters, digits and _ . : / -"),
        ),
        (
            None,
            vec![("k", long_value.as_str())],
            Err("labels.k: value longer than 256 characters"),
        ),
        (None, vec![("k", "")], Ok(())),
    ];
    for (t, l, want) in cases {
        let got = validate(t, &labels(&l)).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_owned), "{t:?} {l:?}");
    }
    let many: BTreeMap<String, String> = (0..=MAX_LABELS)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert_eq!(
        validate(None, &many).map_err(|e| e.to_string()),
        Err("labels: 65 labels; at most 64".to_owned())
    );
}
