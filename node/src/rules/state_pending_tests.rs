//! Table tests of pending-timer records: export, resume on a new owner (passed and future
//! deadlines, cleared pending, stale versions), and rule-update re-evaluation. Injected time.

use super::super::tests::{GT30, GT30_FOR60, NODATA60, nr, rule, rule_v};
use super::*;
use crate::rules::pending::LeafTimer;
use crate::rules::state::tests::Step;

const BOTH: &str = r#"{"all":[{"threshold":{"metric":"t","op":">","value":30,"for":"60s"}},{"no_data":{"seconds":60}}]}"#;

/// Runs points/ticks on a state and returns its record afterwards.
fn record_after(rule: &Rule, steps: &[Step]) -> Option<PendingTimers> {
    let mut st = RuleState::new(rule, false);
    for s in steps {
        match s {
            Step::Point(ts, rx, v) => {
                st.on_point(rule, *ts, v, *rx);
            }
            Step::Tick(now) => {
                st.on_tick(rule, *now);
            }
        }
    }
    st.pending()
}

fn for_run(since: i64, deadline: i64) -> LeafTimer {
    LeafTimer::For {
        leaf: 0,
        since_ms: since,
        deadline_ms: deadline,
        metric: "t".into(),
        value: Value::Number(31.0),
    }
}

#[test]
fn export_table() {
    let nodata = |leaf, t| LeafTimer::NoData {
        leaf,
        last_received_ms: t,
    };
    type Case = (
        &'static str,
        &'static str,
        Vec<Step>,
        Option<Vec<LeafTimer>>,
    );
    let cases: Vec<Case> = vec![
        (
            "no `for`: nothing pending",
            GT30,
            vec![nr(0, 0, "t", 31.0)],
            None,
        ),
        (
            "a `for` run starts: since and absolute deadline",
            GT30_FOR60,
            vec![nr(1_000, 1_500, "t", 31.0)],
            Some(vec![for_run(1_000, 61_500)]),
        ),
        (
            "the run keeps its start and first value",
            GT30_FOR60,
            vec![nr(1_000, 1_500, "t", 31.0), nr(2_000, 2_500, "t", 45.0)],
            Some(vec![for_run(1_000, 61_500)]),
        ),
        (
            "broken run: nothing pending",
            GT30_FOR60,
            vec![nr(1_000, 1_000, "t", 31.0), nr(2_000, 2_000, "t", 20.0)],
            None,
        ),
        (
            "matured run: nothing pending",
            GT30_FOR60,
            vec![nr(0, 0, "t", 31.0), Step::Tick(60_000)],
            None,
        ),
        (
            "no-data watch armed at first receipt",
            NODATA60,
            vec![nr(5, 1_000, "t", 1.0)],
            Some(vec![nodata(0, 1_000)]),
        ),
        (
            "no-data fired: nothing pending",
            NODATA60,
            vec![nr(5, 1_000, "t", 1.0), Step::Tick(61_000)],
            None,
        ),
        (
            "two leaves numbered depth-first",
            BOTH,
            vec![nr(0, 100, "t", 31.0)],
            Some(vec![
                LeafTimer::For {
                    leaf: 0,
                    since_ms: 0,
                    deadline_ms: 60_100,
                    metric: "t".into(),
                    value: Value::Number(31.0),
                },
                nodata(1, 100),
            ]),
        ),
    ];
    for (name, cond, steps, want) in cases {
        let r = rule(cond);
        let got = record_after(&r, &steps);
        let want = want.map(|leaves| PendingTimers {
            rule_version: 1,
            leaves,
        });
        assert_eq!(got, want, "{name}");
    }
}

/// A state resumed from `record` at `resume_ms`, then the steps; outcomes as `run` gives them.
fn resumed(
    rule: &Rule,
    record: Option<&PendingTimers>,
    resume_ms: i64,
    steps: &[Step],
) -> (Option<i64>, Vec<String>) {
    let mut st = RuleState::resume(rule, false, record, resume_ms);
    let deadline = st.next_deadline();
    let out = steps
        .iter()
        .map(|s| {
            let t = match s {
                Step::Point(ts, rx, v) => st.on_point(rule, *ts, v, *rx),
                Step::Tick(now) => st.on_tick(rule, *now),
            };
            match t {
                None => "-".to_string(),
                Some(Transition::Raise { at_ms, .. }) => format!("R@{at_ms}"),
                Some(Transition::Clear { at_ms, .. }) => format!("C@{at_ms}"),
            }
        })
        .collect();
    (deadline, out)
}

#[test]
fn resume_table() {
    let run_rec = |v| PendingTimers {
        rule_version: v,
        leaves: vec![for_run(1_000, 61_000)],
    };
    let nd_rec = PendingTimers {
        rule_version: 1,
        leaves: vec![LeafTimer::NoData {
            leaf: 0,
            last_received_ms: 10_000,
        }],
    };
    type Case = (
        &'static str,
        &'static str,
        Option<PendingTimers>,
        i64,
        Vec<Step>,
        Option<i64>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "future deadline: quiet before, raises at it, dated since + for",
            GT30_FOR60,
            Some(run_rec(1)),
            30_000,
            vec![Step::Tick(60_999), Step::Tick(61_000)],
            Some(61_000),
            &["-", "R@61000"],
        ),
        (
            "deadline passed during the failover: the first tick raises",
            GT30_FOR60,
            Some(run_rec(1)),
            90_000,
            vec![Step::Tick(90_000)],
            Some(61_000),
            &["R@61000"],
        ),
        (
            "resumed run continues with points: matures in event time",
            GT30_FOR60,
            Some(run_rec(1)),
            30_000,
            vec![nr(40_000, 40_000, "t", 35.0), nr(61_000, 61_000, "t", 36.0)],
            Some(61_000),
            &["-", "R@61000"],
        ),
        (
            "a point below the threshold breaks the resumed run",
            GT30_FOR60,
            Some(run_rec(1)),
            30_000,
            vec![nr(40_000, 40_000, "t", 20.0), Step::Tick(61_000)],
            Some(61_000),
            &["-", "-"],
        ),
        (
            "cleared pending (no record): nothing to resume",
            GT30_FOR60,
            None,
            30_000,
            vec![Step::Tick(100_000)],
            None,
            &["-"],
        ),
        (
            "stale record (older rule version): ignored",
            GT30_FOR60,
            Some(run_rec(0)),
            90_000,
            vec![Step::Tick(90_000)],
            None,
            &["-"],
        ),
        (
            "no-data resumes from the resume time, never earlier",
            NODATA60,
            Some(nd_rec.clone()),
            30_000,
            vec![Step::Tick(70_000), Step::Tick(90_000)],
            Some(90_000),
            &["-", "R@90000"],
        ),
        (
            "no-data: data after resume disarms nothing early",
            NODATA60,
            Some(nd_rec),
            30_000,
            vec![nr(50_000, 50_000, "t", 1.0), Step::Tick(90_000)],
            Some(90_000),
            &["-", "-"],
        ),
    ];
    for (name, cond, record, resume_ms, steps, deadline, want) in cases {
        let r = rule(cond);
        let (d, got) = resumed(&r, record.as_ref(), resume_ms, &steps);
        assert_eq!(d, deadline, "{name}: deadline");
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn rule_update_table() {
    let t = |x: f64| vec![("t".to_string(), Value::Number(x))];
    let gt = |v: f64| format!(r#"{{"threshold":{{"metric":"t","op":">","value":{v}}}}}"#);
    // (name, new threshold, new version, last value, active, expected)
    let cases: Vec<(&str, f64, u64, f64, bool, &str)> = vec![
        (
            "raised threshold no longer met: clears",
            40.0,
            2,
            35.0,
            true,
            "C@1000",
        ),
        (
            "raised threshold still met: stays",
            40.0,
            2,
            45.0,
            true,
            "-",
        ),
        (
            "exactly at the new threshold: clears",
            35.0,
            2,
            35.0,
            true,
            "C@1000",
        ),
        ("same version: nothing", 40.0, 1, 35.0, true, "-"),
        (
            "not active: nothing (the next point decides)",
            20.0,
            2,
            35.0,
            false,
            "-",
        ),
    ];
    for (name, threshold, version, last, active, want) in cases {
        let old = rule(&gt(30.0));
        let mut st = RuleState::new(&old, active);
        let new = rule_v(&gt(threshold), version);
        let got = match st.on_rule_update(&new, 1_000, &t(last), 5_000) {
            None => "-".to_string(),
            Some(Transition::Raise { at_ms, .. }) => format!("R@{at_ms}"),
            Some(Transition::Clear { at_ms, .. }) => format!("C@{at_ms}"),
        };
        // Dated by the last value's event time here; the device state dates a rule-update
        // clear at the update itself (`now`).
        assert_eq!(got, want, "{name}");
        assert_eq!(st.is_active(), active && got == "-", "{name}: active after");
    }
}
