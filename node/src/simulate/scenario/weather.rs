//! Weather: stations. Temperature follows a daily cycle (warmest at [`PEAK_HOUR`], coldest
//! twelve hours later) around each station's own mean and amplitude, plus slowly varying noise;
//! relative humidity moves the other way (high at night, low in the afternoon); air pressure
//! is a slow mean-reverting random walk around 1013 hPa.
//!
//! Time is compressed [`TIME_SCALE`] times, so a run of minutes shows whole days: one
//! wall-clock minute is one simulated hour, a day lasts 24 minutes. The simulated hour is
//! `(unix_ms × TIME_SCALE) mod 24 h`, the same for every station.
//!
//! Fault: a passing storm for 3 to 6 messages (temperature [`STORM_DROP_C`] lower, humidity at
//! least [`STORM_HUMIDITY_PCT`], pressure [`STORM_PRESSURE_DROP_HPA`] lower). Sample: `{"ts",
//! "seq", "temp", "humidity", "pressure"}`.

use fastrand::Rng;

use super::{Model, gaussian, round};
use crate::simulate::fleet::FleetConfig;

/// Simulated time runs this many times faster than the wall clock.
pub const TIME_SCALE: f64 = 60.0;
/// The warmest hour of the simulated day.
pub const PEAK_HOUR: f64 = 15.0;
/// Station mean temperatures are drawn from this range, °C.
pub const MEAN_TEMP_C: (f64, f64) = (5.0, 20.0);
/// Half the day–night temperature swing is drawn from this range, °C.
pub const AMPLITUDE_C: (f64, f64) = (3.0, 8.0);
/// The temperature noise stays within ± this, °C.
pub const NOISE_MAX_C: f64 = 1.5;
/// Humidity falls this much per degree above the station's mean, percentage points.
pub const HUMIDITY_PER_C: f64 = 3.0;
/// Relative humidity stays in this range, %.
pub const HUMIDITY_RANGE_PCT: (f64, f64) = (5.0, 100.0);
/// Pressure stays in this range, hPa.
pub const PRESSURE_RANGE_HPA: (f64, f64) = (960.0, 1050.0);
/// During a storm: temperature this much lower, °C …
pub const STORM_DROP_C: f64 = 6.0;
/// … humidity at least this, % …
pub const STORM_HUMIDITY_PCT: f64 = 95.0;
/// … and pressure this much lower, hPa.
pub const STORM_PRESSURE_DROP_HPA: f64 = 15.0;
/// The metrics of a sample, in payload order.
pub const METRICS: &[&str] = &["temp", "humidity", "pressure"];

const STORM_MESSAGES: (u32, u32) = (3, 6);
const SIMULATED_DAY_MS: f64 = 86_400_000.0;
const MEAN_PRESSURE_HPA: f64 = 1013.0;

/// One weather station.
#[derive(Clone, Debug)]
pub struct Station {
    mean_c: f64,
    amplitude_c: f64,
    humidity_mean_pct: f64,
    /// Slowly varying temperature noise (AR(1)), °C.
    noise_c: f64,
    /// Humidity noise, percentage points.
    noise_pct: f64,
    pressure_hpa: f64,
    /// The simulated hour of the day at the last reading, [0, 24).
    hour: f64,
}

impl Station {
    /// A station with its own climate, drawn from `rng`.
    pub fn new(rng: &mut Rng) -> Station {
        let between = |rng: &mut Rng, (lo, hi): (f64, f64)| lo + rng.f64() * (hi - lo);
        Station {
            mean_c: between(rng, MEAN_TEMP_C),
            amplitude_c: between(rng, AMPLITUDE_C),
            humidity_mean_pct: between(rng, (55.0, 75.0)),
            noise_c: 0.0,
            noise_pct: 0.0,
            pressure_hpa: MEAN_PRESSURE_HPA + (rng.f64() - 0.5) * 16.0,
            hour: 0.0,
        }
    }

    /// Position in the daily cycle: 1 at [`PEAK_HOUR`], -1 twelve hours later.
    fn cycle(&self) -> f64 {
        (std::f64::consts::TAU * (self.hour - PEAK_HOUR) / 24.0).cos()
    }

    fn temp_c(&self) -> f64 {
        self.mean_c + self.amplitude_c * self.cycle() + self.noise_c
    }

    fn humidity_pct(&self) -> f64 {
        let dry = HUMIDITY_PER_C * self.amplitude_c * self.cycle();
        (self.humidity_mean_pct - dry + self.noise_pct)
            .clamp(HUMIDITY_RANGE_PCT.0, HUMIDITY_RANGE_PCT.1)
    }
}

/// The simulated hour of the day at Unix time `unix_ms`, [0, 24).
pub fn simulated_hour(unix_ms: i64) -> f64 {
    (unix_ms as f64 * TIME_SCALE).rem_euclid(SIMULATED_DAY_MS) / 3_600_000.0
}

impl Model for Station {
    /// Stations do not move; the cycle is read off the clock at each reading.
    fn advance(&mut self, _config: &FleetConfig, _rng: &mut Rng, _dt_s: f64, _to_ms: i64) {}

    fn sense(&mut self, rng: &mut Rng, to_ms: i64) {
        self.hour = simulated_hour(to_ms);
        self.noise_c = (0.8 * self.noise_c + 0.3 * gaussian(rng)).clamp(-NOISE_MAX_C, NOISE_MAX_C);
        self.noise_pct = (0.8 * self.noise_pct + gaussian(rng)).clamp(-5.0, 5.0);
        let reversion = 0.01 * (MEAN_PRESSURE_HPA - self.pressure_hpa);
        self.pressure_hpa = (self.pressure_hpa + reversion + 0.1 * gaussian(rng))
            .clamp(PRESSURE_RANGE_HPA.0, PRESSURE_RANGE_HPA.1);
    }

    fn start_fault(&mut self, rng: &mut Rng) -> u32 {
        rng.u32(STORM_MESSAGES.0..=STORM_MESSAGES.1)
    }

    fn sample(&self, ts_ms: i64, seq: u64, fault: bool) -> String {
        let (temp, humidity, pressure) = if fault {
            (
                self.temp_c() - STORM_DROP_C,
                self.humidity_pct().max(STORM_HUMIDITY_PCT),
                self.pressure_hpa - STORM_PRESSURE_DROP_HPA,
            )
        } else {
            (self.temp_c(), self.humidity_pct(), self.pressure_hpa)
        };
        format!(
            r#"{{"ts":{ts_ms},"seq":{seq},"temp":{},"humidity":{},"pressure":{}}}"#,
            round(temp, 2),
            round(humidity, 1),
            round(pressure, 1),
        )
    }

    fn primary(&self) -> (&'static str, f64) {
        ("temp", self.temp_c())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    const T0: i64 = 1_732_200_000_000;

    fn read(station: &Station, fault: bool) -> (f64, f64, f64) {
        let v: Json = serde_json::from_str(&station.sample(T0, 0, fault)).expect("JSON");
        let f = |k: &str| v[k].as_f64().expect(k);
        (f("temp"), f("humidity"), f("pressure"))
    }

    #[test]
    fn simulated_hours() {
        // (Unix ms, simulated hour): one wall-clock minute is one simulated hour.
        let cases = [
            (0, 0.0),
            (60_000, 1.0),
            (900_000, 15.0),
            (1_440_000, 0.0),
            (1_470_000, 0.5),
            (-60_000, 23.0),
        ];
        for (ms, hour) in cases {
            assert!(
                (simulated_hour(ms) - hour).abs() < 1e-9,
                "{ms}: {}",
                simulated_hour(ms)
            );
        }
    }

    #[test]
    fn temperature_and_humidity_follow_the_day() {
        let config = FleetConfig::default();
        for seed in 0..20 {
            let mut rng = Rng::with_seed(seed);
            let mut station = Station::new(&mut rng);
            // Three simulated days, a reading every 10 s (10 simulated minutes).
            let (mut afternoon, mut night) = (Vec::new(), Vec::new());
            let start = T0 - T0.rem_euclid(1_440_000);
            for k in 1..=3 * 144 {
                let t = start + k * 10_000;
                station.advance(&config, &mut rng, 10.0, t);
                station.sense(&mut rng, t);
                let (temp, humidity, pressure) = read(&station, false);
                let lo = MEAN_TEMP_C.0 - AMPLITUDE_C.1 - NOISE_MAX_C - 0.01;
                let hi = MEAN_TEMP_C.1 + AMPLITUDE_C.1 + NOISE_MAX_C + 0.01;
                assert!((lo..=hi).contains(&temp), "seed {seed}: {temp}");
                assert!((HUMIDITY_RANGE_PCT.0..=HUMIDITY_RANGE_PCT.1).contains(&humidity));
                assert!((PRESSURE_RANGE_HPA.0..=PRESSURE_RANGE_HPA.1).contains(&pressure));
                match simulated_hour(t) {
                    h if (14.0..=16.0).contains(&h) => afternoon.push((temp, humidity)),
                    h if (2.0..=4.0).contains(&h) => night.push((temp, humidity)),
                    _ => {}
                }
            }
            let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
                v.iter().map(f).sum::<f64>() / v.len() as f64
            };
            let (day_t, night_t) = (mean(&afternoon, |r| r.0), mean(&night, |r| r.0));
            let (day_h, night_h) = (mean(&afternoon, |r| r.1), mean(&night, |r| r.1));
            // The swing is twice the amplitude (≥ 6 °C), give or take the noise.
            assert!(
                day_t - night_t > 2.0 * AMPLITUDE_C.0 - 2.0 * NOISE_MAX_C,
                "seed {seed}: {day_t} vs {night_t}"
            );
            assert!(
                night_h > day_h + 5.0,
                "seed {seed}: humidity {night_h} at night vs {day_h}"
            );
        }
    }

    #[test]
    fn a_storm_is_colder_wetter_and_lower() {
        let mut rng = Rng::with_seed(4);
        let mut station = Station::new(&mut rng);
        station.sense(&mut rng, T0);
        let (calm, storm) = (read(&station, false), read(&station, true));
        assert!(
            (calm.0 - storm.0 - STORM_DROP_C).abs() < 0.02,
            "{calm:?} {storm:?}"
        );
        assert!(storm.1 >= STORM_HUMIDITY_PCT);
        assert!(
            (calm.2 - storm.2 - STORM_PRESSURE_DROP_HPA).abs() < 0.2,
            "{calm:?} {storm:?}"
        );
        let runs: Vec<u32> = (0..100).map(|_| station.start_fault(&mut rng)).collect();
        assert!(
            runs.iter()
                .all(|n| (STORM_MESSAGES.0..=STORM_MESSAGES.1).contains(n))
        );
    }
}
