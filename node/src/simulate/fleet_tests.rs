//! Tables and fixed seeds for the pure fleet model.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::*;
use crate::ingest::payload::{Limits, parse_message};
use crate::model::Value;
use crate::simulate::geo;
use crate::simulate::scenario::Scenario;
use crate::simulate::scenario::logistics::{BOX_HALF_M, FUEL_PER_KM, MAX_LEG_M, TEMP_RANGE_C};

const T0: i64 = 1_732_200_000_000;

fn config(devices: usize, rate: f64) -> FleetConfig {
    FleetConfig {
        devices,
        rate_per_s: rate,
        fault_probability: 0.0,
        ..FleetConfig::default()
    }
}

/// Steps the fleet every `step_ms` from T0 to T0 + `millis` inclusive.
fn run(fleet: &mut Fleet, millis: i64, step_ms: i64) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let mut now = T0;
    while now <= T0 + millis {
        out.extend(fleet.step(now));
        now += step_ms;
    }
    out
}

fn by_device(out: &[Outgoing]) -> BTreeMap<usize, Vec<&Outgoing>> {
    let mut map: BTreeMap<usize, Vec<&Outgoing>> = BTreeMap::new();
    for o in out {
        map.entry(o.device).or_default().push(o);
    }
    map
}

fn json(o: &Outgoing) -> Json {
    serde_json::from_str(&o.payload).expect("valid JSON")
}

fn pos(o: &Outgoing) -> geo::LatLon {
    let v = json(o);
    geo::LatLon {
        lat: v["pos"]["lat"].as_f64().expect("lat"),
        lon: v["pos"]["lon"].as_f64().expect("lon"),
    }
}

const SCENARIOS: [Scenario; 3] = [Scenario::Logistics, Scenario::Weather, Scenario::Factory];

#[test]
fn same_seed_same_payloads_other_seed_other_payloads() {
    for scenario in SCENARIOS {
        let cfg = FleetConfig {
            scenario,
            devices: 4,
            rate_per_s: 5.0,
            fault_probability: 0.1,
            dropout_probability: 0.02,
            malformed_probability: 0.1,
            ..FleetConfig::default()
        };
        let payloads = |seed| -> Vec<(usize, String)> {
            run(&mut Fleet::new(cfg.clone(), seed), 20_000, 37)
                .into_iter()
                .map(|o| (o.device, o.payload))
                .collect()
        };
        let (a, b, c) = (payloads(42), payloads(42), payloads(43));
        assert!(a.len() > 100, "{scenario:?}: {}", a.len());
        assert_eq!(a, b, "{scenario:?}");
        assert_ne!(a, c, "{scenario:?}");
        // Stepped differently, the same seed still gives the same payloads.
        let coarse: Vec<(usize, String)> = run(&mut Fleet::new(cfg.clone(), 42), 20_000, 1_000)
            .into_iter()
            .map(|o| (o.device, o.payload))
            .collect();
        let by = |v: &[(usize, String)]| {
            let mut m: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (d, p) in v {
                m.entry(*d).or_default().push(p.clone());
            }
            m
        };
        // Per device, the step size does not matter (the runs may end one slot apart).
        let (fine, coarse) = (by(&a), by(&coarse));
        assert_eq!(fine.len(), coarse.len(), "{scenario:?}");
        for (d, fine) in &fine {
            let coarse = &coarse[d];
            let n = fine.len().min(coarse.len());
            assert!(
                n + 1 >= fine.len().max(coarse.len()),
                "{scenario:?} device {d}"
            );
            assert_eq!(fine[..n], coarse[..n], "{scenario:?} device {d}");
        }
    }
}

#[test]
fn rate_is_respected() {
    // (devices, messages/s per device, seconds, step ms)
    let cases = [
        (1, 1.0, 60, 100),
        (10, 1.0, 60, 250),
        (5, 20.0, 10, 10),
        (5, 20.0, 10, 1_000), // coarse steps: catches up, same count
        (3, 0.5, 100, 70),
        (7, 333.0, 3, 5),
        (2, 1000.0, 2, 1),
    ];
    for (devices, rate, secs, step) in cases {
        let mut fleet = Fleet::new(config(devices, rate), 1);
        let out = run(&mut fleet, secs * 1000, step);
        let per_device = rate * secs as f64;
        let grouped = by_device(&out);
        assert_eq!(grouped.len(), devices, "{devices} × {rate}/s");
        for (d, msgs) in grouped {
            let n = msgs.len() as f64;
            assert!(
                (n - per_device).abs() <= 1.0,
                "{devices} × {rate}/s × {secs} s, step {step}: device {d} sent {n}"
            );
            // ts strictly increasing, seq counting from 0.
            for (k, pair) in msgs.windows(2).enumerate() {
                assert!(pair[0].ts_ms < pair[1].ts_ms);
                assert_eq!((pair[0].seq, pair[1].seq), (k as u64, k as u64 + 1));
            }
        }
    }
}

#[test]
fn messages_limit_stops_each_device() {
    let mut cfg = config(5, 20.0);
    cfg.messages_per_device = Some(20);
    let mut fleet = Fleet::new(cfg, 7);
    assert_eq!(fleet.next_due_ms(), None, "no origin before the first step");
    let out = run(&mut fleet, 5_000, 10);
    assert!(fleet.is_done());
    assert_eq!(fleet.next_due_ms(), None);
    assert_eq!(out.len(), 100);
    for (_, msgs) in by_device(&out) {
        assert_eq!(msgs.len(), 20);
    }
    // Done in about 20 intervals of 50 ms.
    let last = out.iter().map(|o| o.ts_ms).max().unwrap_or(0);
    assert!(last - T0 < 1_000, "{}", last - T0);
}

#[test]
fn next_due_is_the_earliest_slot() {
    let mut fleet = Fleet::new(config(4, 1.0), 3);
    let first = fleet.step(T0);
    assert_eq!(first.len(), 1, "only device 0 has phase 0");
    assert_eq!(fleet.next_due_ms(), Some(T0 + 250));
    assert!(fleet.step(T0 + 249).is_empty());
    let second = fleet.step(T0 + 250);
    assert_eq!((second.len(), second[0].device), (1, 1));
}

#[test]
fn positions_stay_valid_and_move_at_speed() {
    // (centre, km/h, messages/s)
    let cases = [
        (
            geo::LatLon {
                lat: 48.137,
                lon: 11.575,
            },
            60.0,
            1.0,
        ),
        (
            geo::LatLon {
                lat: 48.137,
                lon: 11.575,
            },
            120.0,
            10.0,
        ),
        (
            geo::LatLon {
                lat: 0.0,
                lon: 179.99,
            },
            90.0,
            2.0,
        ), // on the antimeridian
        (
            geo::LatLon {
                lat: -33.9,
                lon: 18.4,
            },
            30.0,
            0.2,
        ),
        (
            geo::LatLon {
                lat: 78.2,
                lon: 15.6,
            },
            80.0,
            1.0,
        ), // Svalbard
    ];
    for (center, kmh, rate) in cases {
        let cfg = FleetConfig {
            devices: 3,
            rate_per_s: rate,
            center,
            speed_kmh: kmh,
            fault_probability: 0.0,
            ..FleetConfig::default()
        };
        // Long enough to reach the box edge and turn back: 2 hours.
        let out = run(&mut Fleet::new(cfg, 11), 2 * 3_600_000, 1_000);
        for (_, msgs) in by_device(&out) {
            for pair in msgs.windows(2) {
                let (a, b) = (pos(pair[0]), pos(pair[1]));
                assert!(a.is_valid() && b.is_valid());
                let inside = geo::offset_m(center, b);
                assert!(
                    inside.0.abs() <= BOX_HALF_M * 1.01 && inside.1.abs() <= BOX_HALF_M * 1.01,
                    "{center:?}: left the box at {b:?} ({inside:?})"
                );
                let dt_s = (pair[1].ts_ms - pair[0].ts_ms) as f64 / 1000.0;
                let want = (kmh / 3.6 * dt_s).min(MAX_LEG_M);
                let got = geo::haversine_m(a, b);
                assert!(
                    (got - want).abs() <= want * 0.01,
                    "{center:?} {kmh} km/h: moved {got} m in {dt_s} s, want {want}"
                );
            }
        }
    }
}

#[test]
fn fault_probability_one_makes_every_temperature_hot() {
    let cfg = FleetConfig {
        fault_probability: 1.0,
        ..config(3, 2.0)
    };
    let out = run(&mut Fleet::new(cfg, 5), 120_000, 100);
    assert!(!out.is_empty());
    for o in &out {
        assert_eq!(o.kind, Kind::Fault);
        let temp = json(o)["temp"].as_f64().expect("temp");
        assert!(temp > 30.0, "{temp}");
    }
}

#[test]
fn without_spikes_temperatures_stay_normal_and_spikes_are_runs() {
    let out = run(&mut Fleet::new(config(5, 5.0), 9), 600_000, 200);
    for o in &out {
        assert_eq!(o.kind, Kind::Normal);
        let temp = json(o)["temp"].as_f64().expect("temp");
        assert!((TEMP_RANGE_C.0..=TEMP_RANGE_C.1).contains(&temp), "{temp}");
        let fuel = json(o)["fuel"].as_f64().expect("fuel");
        assert!((0.0..=100.0).contains(&fuel), "{fuel}");
    }
    // At 5 %, spikes come in runs of 3 to 6 messages.
    let cfg = FleetConfig {
        fault_probability: 0.05,
        ..config(1, 5.0)
    };
    let out = run(&mut Fleet::new(cfg, 9), 600_000, 200);
    let kinds: Vec<Kind> = out.iter().map(|o| o.kind).collect();
    let runs: Vec<usize> = kinds
        .split(|k| *k != Kind::Fault)
        .map(<[Kind]>::len)
        .filter(|n| *n > 0)
        .collect();
    assert!(runs.len() > 10, "{runs:?}");
    // Runs may touch end to end, so a run is a multiple of 3..=6.
    assert!(runs.iter().all(|n| *n >= 3), "{runs:?}");
}

#[test]
fn fuel_falls_with_distance() {
    let out = run(&mut Fleet::new(config(1, 1.0), 2), 600_000, 1_000);
    let fuel: Vec<f64> = out
        .iter()
        .map(|o| json(o)["fuel"].as_f64().expect("fuel"))
        .collect();
    let used = fuel[0] - fuel[fuel.len() - 1];
    // 10 minutes at 60 km/h is 10 km.
    assert!((used - 10.0 * FUEL_PER_KM).abs() < 0.02, "{used}");
}

#[test]
fn valid_payloads_are_telemetry_with_the_scenarios_metrics() {
    // (scenario, device id prefix)
    let cases = [
        (Scenario::Logistics, "truck-"),
        (Scenario::Weather, "w-"),
        (Scenario::Factory, "machine-"),
    ];
    for (scenario, prefix) in cases {
        let cfg = FleetConfig {
            scenario,
            prefix: prefix.to_owned(),
            tenant: "acme".to_owned(),
            fault_probability: 0.2,
            ..config(3, 4.0)
        };
        let out = run(&mut Fleet::new(cfg, 8), 30_000, 100);
        assert!(out.iter().any(|o| o.kind == Kind::Fault), "{scenario:?}");
        for o in &out {
            assert!(
                o.topic
                    .starts_with(&format!("tenants/acme/devices/{prefix}"))
            );
            let parsed = parse_message(&o.topic, o.payload.as_bytes(), &Limits::default(), o.ts_ms)
                .expect("valid message");
            assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
            let [sample] = parsed.samples.as_slice() else {
                panic!("one sample expected: {}", o.payload);
            };
            assert_eq!(sample.ts_ms, Some(o.ts_ms));
            assert_eq!(sample.seq, Some(o.seq));
            let names: Vec<&str> = sample.values.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, scenario.metrics(), "{scenario:?}");
            if scenario == Scenario::Logistics {
                assert!(matches!(sample.values[2].1, Value::Bool(_)));
            }
        }
    }
}

#[test]
fn malformed_probability_one_makes_only_invalid_telemetry() {
    for scenario in SCENARIOS {
        let cfg = FleetConfig {
            scenario,
            malformed_probability: 1.0,
            ..config(4, 10.0)
        };
        let out = run(&mut Fleet::new(cfg, 13), 20_000, 50);
        assert!((796..=804).contains(&out.len()), "{}", out.len());
        let mut shapes = std::collections::BTreeSet::new();
        for o in &out {
            assert_eq!(o.kind, Kind::Malformed);
            match parse_message(&o.topic, o.payload.as_bytes(), &Limits::default(), o.ts_ms) {
                Err(rejection) => {
                    shapes.insert(rejection.reason.as_str());
                }
                Ok(parsed) => {
                    assert!(parsed.samples.is_empty(), "accepted: {}", o.payload);
                    shapes.insert(parsed.rejected[0].reason.as_str());
                }
            }
        }
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            ["bad_ts", "bad_value", "malformed_json"],
            "{scenario:?}"
        );
    }
}

#[test]
fn dropouts_silence_devices() {
    // Probability 1: every device drops out at every chance, nothing is ever sent.
    let cfg = FleetConfig {
        dropout_probability: 1.0,
        ..config(3, 10.0)
    };
    let mut fleet = Fleet::new(cfg, 4);
    assert!(run(&mut fleet, 120_000, 100).is_empty());
    assert!(fleet.dropouts() >= 3);

    // Some: fewer messages than the schedule, with gaps of at least 5 s.
    let cfg = FleetConfig {
        dropout_probability: 0.01,
        ..config(3, 10.0)
    };
    let mut fleet = Fleet::new(cfg, 4);
    let out = run(&mut fleet, 300_000, 100);
    assert!(fleet.dropouts() > 0);
    assert!(out.len() < 3 * 3_000 - 3 * 5 * 10, "{}", out.len());
    let longest_gap = by_device(&out)
        .values()
        .flat_map(|msgs| msgs.windows(2).map(|p| p[1].ts_ms - p[0].ts_ms))
        .max()
        .unwrap_or(0);
    assert!(longest_gap >= 5_000, "{longest_gap}");
}

#[test]
fn dropouts_do_not_count_against_the_message_limit() {
    let cfg = FleetConfig {
        dropout_probability: 0.05,
        messages_per_device: Some(50),
        ..config(2, 10.0)
    };
    let mut fleet = Fleet::new(cfg, 6);
    let out = run(&mut fleet, 3_600_000, 100);
    assert!(fleet.is_done());
    assert_eq!(out.len(), 100);
}

#[test]
fn a_stalled_caller_catches_up_within_a_bound() {
    let mut fleet = Fleet::new(config(2, 1000.0), 1);
    assert_eq!(fleet.step(T0).len(), 1);
    // An hour later: at most MAX_CATCH_UP per device, then the schedule resumes after now.
    let burst = fleet.step(T0 + 3_600_000);
    assert!(burst.len() as u64 <= 2 * MAX_CATCH_UP, "{}", burst.len());
    assert!(fleet.next_due_ms().is_some_and(|due| due > T0 + 3_600_000));
}

#[test]
fn odd_configurations_do_not_panic() {
    let cases = [
        FleetConfig {
            devices: 0,
            ..FleetConfig::default()
        },
        FleetConfig {
            rate_per_s: 0.0,
            ..FleetConfig::default()
        },
        FleetConfig {
            rate_per_s: f64::NAN,
            speed_kmh: -5.0,
            ..FleetConfig::default()
        },
        FleetConfig {
            rate_per_s: 1e9,
            speed_kmh: 1e6,
            ..FleetConfig::default()
        },
    ];
    for cfg in cases {
        let mut fleet = Fleet::new(cfg.clone(), 0);
        let out = run(&mut fleet, 10_000, 500);
        for o in &out {
            assert!(pos(o).is_valid(), "{cfg:?}");
        }
    }
}
