//! The device models of `starling simulate`, one file per scenario, all pure:
//!
//! - [`logistics`]: trucks driving in a box with GPS, cargo temperature, fuel and door;
//! - [`weather`]: stations with temperature and humidity on a (compressed) daily cycle, and
//!   air pressure;
//! - [`factory`]: machines with vibration, spindle temperature drifting slowly up until
//!   maintenance, and spindle speed.
//!
//! Each model implements [`Model`]; the scheduler (`fleet.rs`) owns the schedule, the dropouts,
//! the choice of malformed messages and the length of fault runs, and asks the model to move
//! on, read its sensors and write a sample. What this module does not do: I/O, clocks (times
//! come in as arguments), randomness of its own (every call takes the device's generator).

pub mod factory;
pub mod logistics;
pub mod weather;

use std::fmt::Debug;

use fastrand::Rng;
use serde::Serialize;
use serde_json::json;

use super::fleet::FleetConfig;

/// What the fleet is made of (`--scenario`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Trucks: GPS position, cargo temperature, fuel, door; faults are temperature spikes.
    #[default]
    Logistics,
    /// Weather stations: temperature, humidity, pressure; faults are passing storms.
    Weather,
    /// Machines: vibration, spindle temperature, spindle speed; faults are vibration bursts
    /// and a stuck temperature sensor.
    Factory,
}

impl Scenario {
    /// The kind of device, also the default id prefix (`truck-0`, `station-0`, `machine-0`).
    pub fn device_type(self) -> &'static str {
        match self {
            Scenario::Logistics => "truck",
            Scenario::Weather => "station",
            Scenario::Factory => "machine",
        }
    }

    /// The metrics of a valid sample, in payload order.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Scenario::Logistics => logistics::METRICS,
            Scenario::Weather => weather::METRICS,
            Scenario::Factory => factory::METRICS,
        }
    }

    /// A new device of this scenario, its initial state drawn from `rng`.
    pub fn device(self, config: &FleetConfig, rng: &mut Rng) -> Box<dyn Model> {
        match self {
            Scenario::Logistics => Box::new(logistics::Truck::new(config, rng)),
            Scenario::Weather => Box::new(weather::Station::new(rng)),
            Scenario::Factory => Box::new(factory::Machine::new(rng)),
        }
    }
}

/// One simulated device's physics and sensors. The scheduler calls, per due slot: `advance`,
/// then (unless the device is silent) `sense`, maybe `start_fault`, then `sample` or
/// [`malformed`].
pub trait Model: Debug + Send {
    /// Moves the device's physical state on by `dt_s` seconds (> 0), to Unix time `to_ms`.
    fn advance(&mut self, config: &FleetConfig, rng: &mut Rng, dt_s: f64, to_ms: i64);
    /// The sensors take a new reading (noise, slow random walks): once per message, whether
    /// or not the message gets through intact.
    fn sense(&mut self, rng: &mut Rng, to_ms: i64);
    /// A fault starts now (the model picks its kind); returns how many messages it lasts.
    fn start_fault(&mut self, rng: &mut Rng) -> u32;
    /// A valid sample as JSON, `ts` and `seq` first; `fault` is true while a fault lasts.
    /// Every number is finite, so Rust's shortest round-trip formatting is valid JSON.
    fn sample(&self, ts_ms: i64, seq: u64, fault: bool) -> String;
    /// The metric that malformed messages break, and its current value.
    fn primary(&self) -> (&'static str, f64);
}

/// Invalid telemetry of one of several kinds (broken JSON, a value or `ts` of the wrong type),
/// chosen by `rng`.
pub fn malformed(model: &dyn Model, rng: &mut Rng, ts_ms: i64, seq: u64) -> String {
    let (metric, value) = model.primary();
    let value = round(value, 2);
    match rng.u8(0..5) {
        // Broken JSON: a sample cut short.
        0 => {
            let full = model.sample(ts_ms, seq, false);
            full[..full.len() / 2].to_owned()
        }
        1 => json!({"ts": ts_ms, "seq": seq, metric: null}).to_string(),
        2 => json!({"ts": ts_ms, "seq": seq, metric: [value, value]}).to_string(),
        3 => json!({"ts": format!("{ts_ms}ms"), "seq": seq, metric: value}).to_string(),
        // An object that is not a position.
        _ => json!({"ts": ts_ms, "seq": seq, metric: {"value": value}}).to_string(),
    }
}

/// `x` rounded to `decimals` places.
pub fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A sample of the standard normal distribution (Box–Muller), from `rng`.
pub fn gaussian(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln is finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
