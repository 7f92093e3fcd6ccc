//! Table tests of `RuleState`, continued: geofences, rate of change, AND/OR composition, and
//! late and duplicate points. Helpers are in `state_tests.rs`.

use super::tests::*;

const CIRCLE: &str = r#"{"circle":{"lat":0,"lon":0,"radius_m":1000}}"#;

fn geo(trigger: &str) -> &'static str {
    let s = format!(r#"{{"geofence":{{"metric":"pos","trigger":"{trigger}","shape":{CIRCLE}}}}}"#);
    Box::leak(s.into_boxed_str())
}

// ~0.0045° of latitude is 500 m: inside; 0.02° is ~2.2 km: outside.
const IN: f64 = 0.0045;
const OUT: f64 = 0.02;

#[test]
fn geofence_table() {
    let holed = r#"{"geofence":{"metric":"pos","trigger":"enter","shape":{"polygon":{
        "exterior":[[0,0],[10,0],[10,10],[0,10],[0,0]],
        "holes":[[[4,4],[6,4],[6,6],[4,6],[4,4]]]}}}}"#;
    let fiji = r#"{"geofence":{"metric":"pos","trigger":"inside","shape":{"polygon":{
        "exterior":[[178,-20],[-178,-20],[-178,-15],[178,-15],[178,-20]]}}}}"#;
    check(vec![
        (
            "inside: raise in, clear out",
            geo("inside"),
            vec![pos(1, IN, 0.0), pos(2, OUT, 0.0)],
            &["R@1", "C@2"],
        ),
        (
            "outside: raise out, clear in",
            geo("outside"),
            vec![pos(1, IN, 0.0), pos(2, OUT, 0.0), pos(3, 0.0, 0.0)],
            &["-", "R@2", "C@3"],
        ),
        (
            "enter needs a crossing: a first fix inside is not an entry",
            geo("enter"),
            vec![
                pos(1, IN, 0.0),
                pos(2, OUT, 0.0),
                pos(3, IN, 0.0),
                pos(4, 0.0, 0.0),
                pos(5, OUT, 0.0),
            ],
            &["-", "-", "R@3", "-", "C@5"],
        ),
        (
            "exit needs a crossing",
            geo("exit"),
            vec![
                pos(1, OUT, 0.0),
                pos(2, IN, 0.0),
                pos(3, OUT, 0.0),
                pos(4, IN, 0.0),
            ],
            &["-", "-", "R@3", "C@4"],
        ),
        (
            "non-position values and other metrics are ignored",
            geo("inside"),
            vec![n(1, "pos", 1.0), pos(2, IN, 0.0), n(3, "t", 1.0)],
            &["-", "R@2", "-"],
        ),
        (
            "polygon: from the hole (outside) onto the ring (inside) is an entry",
            holed,
            vec![pos(1, 5.0, 5.0), pos(2, 4.0, 5.0), pos(3, 5.0, 5.0)],
            &["-", "R@2", "C@3"],
        ),
        (
            "polygon: the exterior edge is inside",
            holed,
            vec![pos(1, -1.0, 5.0), pos(2, 0.0, 5.0)],
            &["-", "R@2"],
        ),
        (
            "antimeridian polygon, both sides",
            fiji,
            vec![
                pos(1, -17.0, 179.5),
                pos(2, -17.0, -179.5),
                pos(3, -17.0, 0.0),
            ],
            &["R@1", "-", "C@3"],
        ),
    ]);
}

const RATE: &str = r#"{"rate_of_change":{"metric":"t","window":"10s","op":">","value":1}}"#;

#[test]
fn rate_of_change_table() {
    check(vec![
        (
            "rate from the oldest point in the window",
            RATE,
            vec![
                n(0, "t", 0.0),
                n(5_000, "t", 10.0),
                n(10_000, "t", 11.0),
                n(20_000, "t", 12.0),
            ],
            // 2/s; (11-0)/10 = 1.1/s; window [10s, 20s]: (12-11)/10 = 0.1/s
            &["-", "R@5000", "-", "C@20000"],
        ),
        (
            "exactly 1/s does not exceed 1/s; the window start is inclusive",
            RATE,
            vec![n(0, "t", 0.0), n(10_000, "t", 10.0)],
            &["-", "-"],
        ),
        (
            "a point just outside the window is dropped",
            RATE,
            vec![n(0, "t", 0.0), n(10_001, "t", 20.0)],
            &["-", "-"],
        ),
        (
            "duplicate timestamps: the last value wins, no rate over zero time",
            RATE,
            vec![n(0, "t", 0.0), n(0, "t", 100.0), n(1_000, "t", 102.0)],
            &["-", "-", "R@1000"],
        ),
        (
            "a late point joins the window (without it the rate would be 2/s)",
            RATE,
            vec![
                n(0, "t", 0.0),
                n(10_000, "t", 10.0),
                n(5_000, "t", 9.5),
                n(12_000, "t", 14.0),
            ],
            &["-", "-", "-", "-"],
        ),
        (
            "falling rates",
            r#"{"rate_of_change":{"metric":"p","window":"1m","op":"<","value":-0.5}}"#,
            vec![n(0, "p", 100.0), n(10_000, "p", 90.0), n(20_000, "p", 89.0)],
            // -1/s; (89-100)/20 = -0.55/s: still falling fast enough
            &["-", "R@10000", "-"],
        ),
    ]);
}

#[test]
fn composition_table() {
    let all = r#"{"all":[{"threshold":{"metric":"t","op":">","value":30}},
                        {"threshold":{"metric":"h","op":">","value":80}}]}"#;
    let any = r#"{"any":[{"threshold":{"metric":"t","op":">","value":30}},
                        {"threshold":{"metric":"h","op":">","value":80}}]}"#;
    let offline_inside = format!(r#"{{"all":[{NODATA60},{}]}}"#, geo("inside"));
    let offline_inside: &'static str = Box::leak(offline_inside.into_boxed_str());
    check(vec![
        (
            "all: each part known and true raises; one false clears",
            all,
            vec![n(1, "t", 31.0), n(2, "h", 90.0), n(3, "t", 20.0)],
            &["-", "R@2", "C@3"],
        ),
        (
            "any: one true raises; all false clears",
            any,
            vec![
                n(1, "t", 31.0),
                n(2, "h", 90.0),
                n(3, "t", 20.0),
                n(4, "h", 10.0),
            ],
            &["R@1", "-", "-", "C@4"],
        ),
        (
            "any: parts without data do not hold the alarm open",
            any,
            vec![n(1, "t", 31.0), n(2, "t", 1.0)],
            &["R@1", "C@2"],
        ),
        (
            "all: a false part with an unknown one is false",
            all,
            vec![n(1, "t", 20.0), n(2, "h", 90.0)],
            &["-", "-"],
        ),
        (
            "a time-driven part completes an AND on the clock",
            offline_inside,
            vec![
                pos(0, IN, 0.0),
                tick(59_000),
                tick(60_000),
                pos(70_000, IN, 0.0),
            ],
            &["-", "-", "R@60000", "C@70000"],
        ),
    ]);
}

#[test]
fn late_and_duplicate_points_table() {
    check(vec![
        (
            "a late point cannot raise",
            GT30,
            vec![n(10, "t", 20.0), n(5, "t", 99.0)],
            &["-", "-"],
        ),
        (
            "a late point cannot clear",
            GT30,
            vec![n(10, "t", 31.0), n(5, "t", 0.0)],
            &["R@10", "-"],
        ),
        (
            "an equal timestamp is not late",
            GT30,
            vec![n(10, "t", 20.0), n(10, "t", 31.0)],
            &["-", "R@10"],
        ),
        (
            "an exact duplicate changes nothing",
            GT30,
            vec![n(10, "t", 31.0), n(10, "t", 31.0)],
            &["R@10", "-"],
        ),
        (
            "late points do not restart a for run",
            GT30_FOR60,
            vec![n(60_000, "t", 31.0), n(0, "t", 31.0), n(120_000, "t", 31.0)],
            &["-", "-", "R@120000"],
        ),
    ]);
}
