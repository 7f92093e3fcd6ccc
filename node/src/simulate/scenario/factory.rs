//! Factory: machines. Each machine reports spindle vibration (RMS velocity), spindle
//! temperature and spindle speed. The temperature drifts up by [`DRIFT_C_PER_H`] per hour of
//! running (wall-clock time) as the spindle wears, and vibration grows a little with it; at
//! [`MAINTENANCE_AT_C`] the machine is serviced and both return to their starting levels.
//!
//! Faults, for a run of messages, one kind picked at random:
//! - a **vibration burst**: [`BURST_MM_S`] added to the vibration for 3 to 6 messages (normal
//!   readings stay at or below [`VIBRATION_NORMAL_MAX_MM_S`], so a `vibration > 7` rule fires
//!   on bursts only);
//! - a **stuck sensor**: the spindle temperature repeats its last reading exactly for 5 to 20
//!   messages while the machine goes on.
//!
//! Sample: `{"ts", "seq", "vibration", "spindle_temp", "rpm"}`.

use fastrand::Rng;

use super::{Model, gaussian, round};
use crate::simulate::fleet::FleetConfig;

/// Spindle temperature drift while running, °C per hour.
pub const DRIFT_C_PER_H: f64 = 6.0;
/// Spindle temperature at which the machine is serviced, °C.
pub const MAINTENANCE_AT_C: f64 = 75.0;
/// Starting (serviced) spindle temperatures are drawn from this range, °C.
pub const START_TEMP_C: (f64, f64) = (30.0, 40.0);
/// Serviced vibration levels are drawn from this range, mm/s.
pub const BASE_VIBRATION_MM_S: (f64, f64) = (1.0, 2.5);
/// Normal vibration readings stay at or below this, mm/s.
pub const VIBRATION_NORMAL_MAX_MM_S: f64 = 4.0;
/// Added to the vibration during a burst, mm/s.
pub const BURST_MM_S: (f64, f64) = (10.0, 20.0);
/// The metrics of a sample, in payload order.
pub const METRICS: &[&str] = &["vibration", "spindle_temp", "rpm"];

const BURST_MESSAGES: (u32, u32) = (3, 6);
const STUCK_MESSAGES: (u32, u32) = (5, 20);
/// Worn out (at maintenance), vibration is this fraction higher than serviced.
const WEAR_VIBRATION: f64 = 0.3;

/// The fault a machine is in (or was last in).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Burst { extra_mm_s: f64 },
    Stuck { spindle_c: f64 },
}

/// One machine.
#[derive(Clone, Debug)]
pub struct Machine {
    start_c: f64,
    base_mm_s: f64,
    nominal_rpm: f64,
    /// Temperature gained since the last service, °C.
    drift_c: f64,
    /// Readings: noise included.
    vibration_mm_s: f64,
    spindle_c: f64,
    rpm: f64,
    fault: Option<Fault>,
}

impl Machine {
    /// A freshly serviced machine with its own levels, drawn from `rng`.
    pub fn new(rng: &mut Rng) -> Machine {
        let between = |rng: &mut Rng, (lo, hi): (f64, f64)| lo + rng.f64() * (hi - lo);
        let start_c = between(rng, START_TEMP_C);
        let base_mm_s = between(rng, BASE_VIBRATION_MM_S);
        let nominal_rpm = f64::from(rng.u32(12..=24)) * 500.0;
        Machine {
            start_c,
            base_mm_s,
            nominal_rpm,
            drift_c: 0.0,
            vibration_mm_s: base_mm_s,
            spindle_c: start_c,
            rpm: nominal_rpm,
            fault: None,
        }
    }

    /// Wear since the last service, 0 (serviced) to 1 (due).
    fn wear(&self) -> f64 {
        (self.drift_c / (MAINTENANCE_AT_C - self.start_c)).clamp(0.0, 1.0)
    }
}

impl Model for Machine {
    /// Drift; service at [`MAINTENANCE_AT_C`].
    fn advance(&mut self, _config: &FleetConfig, _rng: &mut Rng, dt_s: f64, _to_ms: i64) {
        self.drift_c += DRIFT_C_PER_H * dt_s / 3600.0;
        if self.start_c + self.drift_c >= MAINTENANCE_AT_C {
            self.drift_c = 0.0;
        }
    }

    fn sense(&mut self, rng: &mut Rng, _to_ms: i64) {
        let level = self.base_mm_s * (1.0 + WEAR_VIBRATION * self.wear());
        self.vibration_mm_s = level * (1.0 + 0.05 * gaussian(rng).clamp(-3.0, 3.0));
        self.spindle_c = self.start_c + self.drift_c + 0.3 * gaussian(rng).clamp(-3.0, 3.0);
        self.rpm = self.nominal_rpm * (1.0 + 0.002 * gaussian(rng).clamp(-3.0, 3.0));
    }

    fn start_fault(&mut self, rng: &mut Rng) -> u32 {
        if rng.bool() {
            let extra_mm_s = BURST_MM_S.0 + rng.f64() * (BURST_MM_S.1 - BURST_MM_S.0);
            self.fault = Some(Fault::Burst { extra_mm_s });
            rng.u32(BURST_MESSAGES.0..=BURST_MESSAGES.1)
        } else {
            self.fault = Some(Fault::Stuck {
                spindle_c: self.spindle_c,
            });
            rng.u32(STUCK_MESSAGES.0..=STUCK_MESSAGES.1)
        }
    }

    fn sample(&self, ts_ms: i64, seq: u64, fault: bool) -> String {
        let (mut vibration, mut spindle) = (self.vibration_mm_s, self.spindle_c);
        match self.fault.filter(|_| fault) {
            Some(Fault::Burst { extra_mm_s }) => vibration += extra_mm_s,
            Some(Fault::Stuck { spindle_c }) => spindle = spindle_c,
            None => {}
        }
        format!(
            r#"{{"ts":{ts_ms},"seq":{seq},"vibration":{},"spindle_temp":{},"rpm":{}}}"#,
            round(vibration, 3),
            round(spindle, 2),
            round(self.rpm, 0),
        )
    }

    fn primary(&self) -> (&'static str, f64) {
        ("vibration", self.vibration_mm_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    const T0: i64 = 1_732_200_000_000;

    /// (vibration, spindle_temp, rpm) of a sample.
    fn read(machine: &Machine, fault: bool) -> (f64, f64, f64) {
        let v: Json = serde_json::from_str(&machine.sample(T0, 0, fault)).expect("JSON");
        let f = |k: &str| v[k].as_f64().expect(k);
        (f("vibration"), f("spindle_temp"), f("rpm"))
    }

    /// Runs `machine` for `seconds`, one reading a second; returns the normal readings.
    fn run(machine: &mut Machine, rng: &mut Rng, seconds: i64) -> Vec<(f64, f64, f64)> {
        let config = FleetConfig::default();
        (1..=seconds)
            .map(|s| {
                machine.advance(&config, rng, 1.0, T0 + s * 1000);
                machine.sense(rng, T0 + s * 1000);
                read(machine, false)
            })
            .collect()
    }

    #[test]
    fn spindle_temperature_drifts_up_until_maintenance() {
        for seed in 0..10 {
            let mut rng = Rng::with_seed(seed);
            let mut machine = Machine::new(&mut rng);
            let nominal = machine.nominal_rpm;
            let hour = run(&mut machine, &mut rng, 3600);
            let avg = |r: &[(f64, f64, f64)]| r.iter().map(|x| x.1).sum::<f64>() / r.len() as f64;
            let drift = avg(&hour[3500..]) - avg(&hour[..100]);
            // 6 °C in an hour (the averaged windows are 100 s apart from the ends).
            assert!(
                (drift - DRIFT_C_PER_H * 3400.0 / 3600.0).abs() < 0.3,
                "seed {seed}: {drift}"
            );
            // Ten more hours: serviced at least once, never far above the service limit.
            let more = run(&mut machine, &mut rng, 36_000);
            let serviced = more.windows(2).any(|w| w[1].1 < w[0].1 - 20.0);
            assert!(serviced, "seed {seed}: never serviced");
            for (vibration, spindle, rpm) in hour.iter().chain(&more) {
                assert!(*spindle < MAINTENANCE_AT_C + 1.0, "seed {seed}: {spindle}");
                assert!(*spindle > START_TEMP_C.0 - 1.0, "seed {seed}: {spindle}");
                assert!(
                    (0.5..=VIBRATION_NORMAL_MAX_MM_S).contains(vibration),
                    "seed {seed}: {vibration}"
                );
                assert!((rpm / nominal - 1.0).abs() < 0.01, "seed {seed}: {rpm}");
            }
        }
    }

    #[test]
    fn faults_are_vibration_bursts_or_a_stuck_sensor() {
        let (mut bursts, mut stuck) = (0, 0);
        for seed in 0..40 {
            let mut rng = Rng::with_seed(seed);
            let mut machine = Machine::new(&mut rng);
            run(&mut machine, &mut rng, 600);
            let before = read(&machine, false);
            let length = machine.start_fault(&mut rng);
            let faulty = read(&machine, true);
            if faulty.0 > 7.0 {
                bursts += 1;
                assert!((BURST_MESSAGES.0..=BURST_MESSAGES.1).contains(&length));
                assert!(
                    faulty.0 >= before.0 + BURST_MM_S.0 - 0.01,
                    "{before:?} {faulty:?}"
                );
                assert_eq!((faulty.1, faulty.2), (before.1, before.2));
            } else {
                stuck += 1;
                assert!((STUCK_MESSAGES.0..=STUCK_MESSAGES.1).contains(&length));
                // The machine goes on (drifting, noisy); the sensor repeats its last reading.
                let live = run(&mut machine, &mut rng, 20);
                let repeated: Vec<f64> = (0..20).map(|_| read(&machine, true).1).collect();
                assert!(repeated.iter().all(|t| *t == before.1), "{repeated:?}");
                assert!(live.iter().any(|r| r.1 != before.1));
            }
            // After the fault, readings are normal again.
            assert!(read(&machine, false).0 <= VIBRATION_NORMAL_MAX_MM_S);
        }
        assert!(bursts > 5 && stuck > 5, "{bursts} bursts, {stuck} stuck");
    }
}
