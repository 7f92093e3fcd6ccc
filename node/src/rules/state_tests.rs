//! Table tests of `RuleState`: every condition kind fed a sequence of points and clock ticks
//! (injected time, no sleeps), with the transition expected after each step.

use super::*;
use crate::model::{RuleDoc, Selector};

pub(super) fn rule_v(condition: &str, version: u64) -> Rule {
    let doc = RuleDoc {
        id: "r".into(),
        tenant: None,
        selector: Selector::default(),
        condition: serde_json::from_str(condition).unwrap_or_else(|e| panic!("{condition}: {e}")),
        severity: "major".into(),
        notify: Vec::new(),
    };
    crate::rules::validate::validate(&doc).unwrap_or_else(|e| panic!("{condition}: {e}"));
    Rule {
        doc,
        version,
        updated_at_ms: 0,
    }
}

pub(super) fn rule(condition: &str) -> Rule {
    rule_v(condition, 1)
}

#[derive(Clone, Debug)]
pub(super) enum Step {
    /// A point: event time, receive time, values.
    Point(i64, i64, Vec<(String, Value)>),
    /// The receive clock reads this.
    Tick(i64),
}

/// A numeric point received at its event time.
pub(super) fn n(ts: i64, metric: &str, x: f64) -> Step {
    Step::Point(ts, ts, vec![(metric.into(), Value::Number(x))])
}

/// A numeric point received at `rx`.
pub(super) fn nr(ts: i64, rx: i64, metric: &str, x: f64) -> Step {
    Step::Point(ts, rx, vec![(metric.into(), Value::Number(x))])
}

/// A position point (metric `pos`) received at its event time.
pub(super) fn pos(ts: i64, lat: f64, lon: f64) -> Step {
    Step::Point(ts, ts, vec![("pos".into(), Value::Position { lat, lon })])
}

pub(super) fn tick(now: i64) -> Step {
    Step::Tick(now)
}

/// Runs the steps on a fresh state and summarizes each outcome: `-`, `R@at`, `C@at`.
pub(super) fn run(rule: &Rule, active: bool, steps: &[Step]) -> Vec<String> {
    let mut st = RuleState::new(rule, active);
    steps
        .iter()
        .map(|s| {
            let t = match s {
                Step::Point(ts, rx, values) => st.on_point(rule, *ts, values, *rx),
                Step::Tick(now) => st.on_tick(rule, *now),
            };
            match t {
                None => "-".to_string(),
                Some(Transition::Raise { at_ms, .. }) => format!("R@{at_ms}"),
                Some(Transition::Clear { at_ms, .. }) => format!("C@{at_ms}"),
            }
        })
        .collect()
}

pub(super) type Case = (
    &'static str,
    &'static str,
    Vec<Step>,
    &'static [&'static str],
);

pub(super) fn check(cases: Vec<Case>) {
    for (name, condition, steps, want) in cases {
        let got = run(&rule(condition), false, &steps);
        assert_eq!(got, want, "{name}: {condition}");
    }
}

pub(super) const GT30: &str = r#"{"threshold":{"metric":"t","op":">","value":30}}"#;
pub(super) const GE30: &str = r#"{"threshold":{"metric":"t","op":">=","value":30}}"#;
pub(super) const GT30_CLEAR25: &str =
    r#"{"threshold":{"metric":"t","op":">","value":30,"clear":25}}"#;
pub(super) const LT0_CLEAR2: &str = r#"{"threshold":{"metric":"t","op":"<","value":0,"clear":2}}"#;
pub(super) const GT30_FOR60: &str =
    r#"{"threshold":{"metric":"t","op":">","value":30,"for":"60s"}}"#;
pub(super) const GT30_FOR60_CLEAR25: &str =
    r#"{"threshold":{"metric":"t","op":">","value":30,"for":"60s","clear":25}}"#;

#[test]
fn threshold_table() {
    check(vec![
        (
            "exactly at threshold: > does not hold",
            GT30,
            vec![n(1, "t", 30.0)],
            &["-"],
        ),
        (
            "just above raises",
            GT30,
            vec![n(1, "t", 30.000_001)],
            &["R@1"],
        ),
        (
            "exactly at threshold: >= holds",
            GE30,
            vec![n(1, "t", 30.0)],
            &["R@1"],
        ),
        (
            "one alarm while it holds",
            GT30,
            vec![n(1, "t", 31.0), n(2, "t", 35.0)],
            &["R@1", "-"],
        ),
        (
            "clears when it stops holding",
            GT30,
            vec![n(1, "t", 31.0), n(2, "t", 30.0)],
            &["R@1", "C@2"],
        ),
        (
            "other metrics change nothing",
            GT30,
            vec![n(1, "t", 31.0), n(2, "h", 0.0)],
            &["R@1", "-"],
        ),
        (
            "non-numeric values change nothing",
            GT30,
            vec![Step::Point(
                1,
                1,
                vec![("t".into(), Value::Text("hot".into()))],
            )],
            &["-"],
        ),
        (
            "booleans are 0/1",
            r#"{"threshold":{"metric":"door","op":"==","value":1}}"#,
            vec![Step::Point(1, 1, vec![("door".into(), Value::Bool(true))])],
            &["R@1"],
        ),
        (
            "ticks do nothing without deadlines",
            GT30,
            vec![n(1, "t", 31.0), tick(1_000_000)],
            &["R@1", "-"],
        ),
    ]);
}

#[test]
fn hysteresis_table() {
    check(vec![
        (
            "inside the band the alarm stays; exactly at clear it stays; below it clears",
            GT30_CLEAR25,
            vec![
                n(1, "t", 31.0),
                n(2, "t", 28.0),
                n(3, "t", 25.0),
                n(4, "t", 24.9),
            ],
            &["R@1", "-", "-", "C@4"],
        ),
        (
            "the band alone does not raise",
            GT30_CLEAR25,
            vec![n(1, "t", 28.0), n(2, "t", 30.0)],
            &["-", "-"],
        ),
        (
            "after a clear, raising needs the threshold again",
            GT30_CLEAR25,
            vec![
                n(1, "t", 31.0),
                n(2, "t", 24.0),
                n(3, "t", 29.0),
                n(4, "t", 30.5),
            ],
            &["R@1", "C@2", "-", "R@4"],
        ),
        (
            "below-threshold rules clear above the band",
            LT0_CLEAR2,
            vec![
                n(1, "t", -1.0),
                n(2, "t", 1.5),
                n(3, "t", 2.0),
                n(4, "t", 2.1),
            ],
            &["R@1", "-", "-", "C@4"],
        ),
    ]);
}

#[test]
fn for_duration_table() {
    check(vec![
        (
            "raises when a point shows it held for the whole duration (exactly 60 s)",
            GT30_FOR60,
            vec![n(0, "t", 31.0), n(30_000, "t", 32.0), n(60_000, "t", 33.0)],
            &["-", "-", "R@60000"],
        ),
        (
            "one millisecond short is not enough",
            GT30_FOR60,
            vec![n(0, "t", 31.0), n(59_999, "t", 31.0)],
            &["-", "-"],
        ),
        (
            "a point that does not hold resets the run",
            GT30_FOR60,
            vec![
                n(0, "t", 31.0),
                n(30_000, "t", 29.0),
                n(60_000, "t", 31.0),
                n(90_000, "t", 31.0),
                n(120_000, "t", 31.0),
            ],
            &["-", "-", "-", "-", "R@120000"],
        ),
        (
            "fires on the clock without new data, at the deadline",
            GT30_FOR60,
            vec![n(0, "t", 31.0), tick(59_999), tick(60_000), tick(70_000)],
            &["-", "-", "R@60000", "-"],
        ),
        (
            "the deadline is in receive time; the raise in event time",
            GT30_FOR60,
            vec![nr(1_000, 5_000, "t", 31.0), tick(64_999), tick(65_000)],
            &["-", "-", "R@61000"],
        ),
        (
            "contradicted before the deadline: nothing fires",
            GT30_FOR60,
            vec![n(0, "t", 31.0), n(10_000, "t", 20.0), tick(60_000)],
            &["-", "-", "-"],
        ),
        (
            "clearing is immediate",
            GT30_FOR60,
            vec![n(0, "t", 31.0), tick(60_000), n(61_000, "t", 29.0)],
            &["-", "R@60000", "C@61000"],
        ),
        (
            "hysteresis band keeps the run going",
            GT30_FOR60_CLEAR25,
            vec![
                n(0, "t", 31.0),
                n(30_000, "t", 28.0),
                n(60_000, "t", 28.0),
                n(70_000, "t", 26.0),
                n(80_000, "t", 24.0),
            ],
            &["-", "-", "R@60000", "-", "C@80000"],
        ),
    ]);
}

#[test]
fn rehydrated_active_alarm_is_neither_raised_again_nor_cleared_by_a_running_for() {
    let r = rule(GT30_FOR60);
    let got = run(
        &r,
        true,
        &[n(0, "t", 31.0), tick(60_000), n(70_000, "t", 10.0)],
    );
    assert_eq!(got, ["-", "-", "C@70000"]);
    assert_eq!(run(&rule(GT30), true, &[n(0, "t", 99.0)]), ["-"]);
}

pub(super) const NODATA60: &str = r#"{"no_data":{"seconds":60}}"#;
pub(super) const NODATA_T: &str = r#"{"no_data":{"for":"1m","metric":"t"}}"#;

#[test]
fn no_data_table() {
    check(vec![
        (
            "fires on the clock at last receipt + duration, clears on data",
            NODATA60,
            vec![
                n(0, "t", 1.0),
                tick(59_999),
                tick(60_000),
                tick(70_000),
                n(61_000, "t", 1.0),
            ],
            &["-", "-", "R@60000", "-", "C@61000"],
        ),
        (
            "data moves the deadline",
            NODATA60,
            vec![
                n(0, "t", 1.0),
                n(30_000, "h", 1.0),
                tick(60_000),
                tick(90_000),
            ],
            &["-", "-", "-", "R@90000"],
        ),
        (
            "receive time, not event time, counts",
            NODATA60,
            vec![nr(0, 100_000, "t", 1.0), tick(60_000), tick(160_000)],
            &["-", "-", "R@160000"],
        ),
        (
            "for one metric, other metrics are not data",
            NODATA_T,
            vec![n(0, "t", 1.0), n(30_000, "h", 1.0), tick(60_000)],
            &["-", "-", "R@60000"],
        ),
        (
            "a metric that never arrives is missing from the first point on",
            NODATA_T,
            vec![n(0, "h", 1.0), tick(60_000)],
            &["-", "R@60000"],
        ),
        (
            "a late point is data received",
            NODATA60,
            vec![
                n(100_000, "t", 1.0),
                nr(50_000, 130_000, "t", 1.0),
                tick(160_000),
                tick(190_000),
            ],
            &["-", "-", "-", "R@190000"],
        ),
    ]);
}

#[test]
fn deadlines_are_absolute_receive_times() {
    let r = rule(NODATA60);
    let mut st = RuleState::new(&r, false);
    assert_eq!(st.next_deadline(), None);
    st.on_point(&r, 5, &[("t".into(), Value::Number(1.0))], 1_000);
    assert_eq!(st.next_deadline(), Some(61_000));
    assert!(st.on_tick(&r, 61_000).is_some());
    assert_eq!(st.next_deadline(), None, "fired: nothing more to wait for");

    let r = rule(GT30_FOR60);
    let mut st = RuleState::new(&r, false);
    st.on_point(&r, 0, &[("t".into(), Value::Number(31.0))], 2_000);
    assert_eq!(st.next_deadline(), Some(62_000));
    st.on_point(&r, 1, &[("t".into(), Value::Number(1.0))], 2_500);
    assert_eq!(st.next_deadline(), None, "run reset");
}

#[test]
fn transitions_carry_value_times_and_message() {
    let r = rule(GT30);
    let mut st = RuleState::new(&r, false);
    let raise = st.on_point(&r, 7, &[("t".into(), Value::Number(42.5))], 9);
    assert_eq!(
        raise,
        Some(Transition::Raise {
            trigger: Witness {
                metric: "t".into(),
                value: Value::Number(42.5),
                at_ms: 7
            },
            at_ms: 7,
            received_at_ms: 9,
            message: "t > 30 (value 42.5)".into(),
        })
    );
    let clear = st.on_point(&r, 8, &[("t".into(), Value::Number(1.0))], 10);
    assert!(matches!(
        clear,
        Some(Transition::Clear { at_ms: 8, received_at_ms: 10, trigger: Some(Witness { value: Value::Number(x), .. }) }) if x == 1.0
    ));

    let r = rule(NODATA60);
    let mut st = RuleState::new(&r, false);
    st.on_point(&r, 0, &[("t".into(), Value::Number(1.0))], 0);
    match st.on_tick(&r, 61_000) {
        Some(Transition::Raise {
            message,
            at_ms,
            received_at_ms,
            ..
        }) => {
            assert_eq!((at_ms, received_at_ms), (60_000, 61_000));
            assert_eq!(message, "no data for 1m (silent 60 s)");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_clear_is_never_dated_before_its_raise() {
    // No-data raises at a receive time; the data that clears it carries an older event time.
    let r = rule(NODATA60);
    let got = run(
        &r,
        false,
        &[n(0, "t", 1.0), tick(60_000), nr(30_000, 65_000, "t", 1.0)],
    );
    assert_eq!(got, ["-", "R@60000", "C@60000"]);
}

#[test]
fn a_new_version_re_evaluates_under_the_new_condition() {
    let v1 = rule_v(GT30, 1);
    let v2 = rule_v(r#"{"threshold":{"metric":"t","op":">","value":50}}"#, 2);
    let mut st = RuleState::new(&v1, false);
    assert!(
        st.on_point(&v1, 1, &[("t".into(), Value::Number(40.0))], 1)
            .is_some()
    );
    assert!(st.is_active());
    let t = st.on_point(&v2, 2, &[("t".into(), Value::Number(40.0))], 2);
    assert!(
        matches!(t, Some(Transition::Clear { at_ms: 2, .. })),
        "{t:?}"
    );
}
