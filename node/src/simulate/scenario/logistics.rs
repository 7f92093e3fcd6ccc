//! Logistics: trucks. Each truck drives at constant speed on a slowly turning heading inside a
//! box of ±[`BOX_HALF_M`] around the centre (turning back at its edge), carries cargo whose
//! temperature is a mean-reverting random walk within [`TEMP_RANGE_C`], burns fuel with
//! distance (refilled when nearly empty) and opens its door rarely.
//!
//! Fault: a temperature spike, [`SPIKE_DELTA_C`] above normal for 3 to 6 messages, enough to
//! trip a `temp > 30` rule. Sample: `{"ts", "seq", "temp", "fuel", "door", "pos": {"lat",
//! "lon"}}`.

use fastrand::Rng;

use super::{Model, round};
use crate::simulate::fleet::FleetConfig;
use crate::simulate::geo::{self, LatLon};

/// Half the side of the box devices drive in, metres (the box is ~20 km wide).
pub const BOX_HALF_M: f64 = 10_000.0;
/// Devices start within this distance of the centre, metres.
pub const START_RADIUS_M: f64 = 2_000.0;
/// The longest distance covered between two slots, metres: a device whose slots are further
/// apart than this at its speed is taken to have waited (at a depot, a light) for the rest.
pub const MAX_LEG_M: f64 = 5_000.0;
/// Most heading change between two slots, degrees either way.
pub const HEADING_JITTER_DEG: f64 = 4.0;
/// Normal temperatures stay in this range, °C.
pub const TEMP_RANGE_C: (f64, f64) = (12.0, 28.0);
/// The temperature normal values revert to, °C.
pub const TEMP_MEAN_C: f64 = 20.0;
/// Added to the temperature during a spike, °C.
pub const SPIKE_DELTA_C: f64 = 25.0;
/// Fuel used per kilometre, percent of the tank.
pub const FUEL_PER_KM: f64 = 0.075;
/// Probability that the door changes state at a message.
pub const DOOR_FLIP_PROBABILITY: f64 = 0.01;
/// The metrics of a sample, in payload order.
pub const METRICS: &[&str] = &["temp", "fuel", "door", "pos"];

const SPIKE_MESSAGES: (u32, u32) = (3, 6);
const REFUEL_BELOW: f64 = 5.0;

/// One truck.
#[derive(Clone, Debug)]
pub struct Truck {
    pos: LatLon,
    heading_deg: f64,
    temp_c: f64,
    fuel_pct: f64,
    door_open: bool,
}

impl Truck {
    /// A truck near the centre, heading anywhere, with a half to full tank.
    pub fn new(config: &FleetConfig, rng: &mut Rng) -> Truck {
        let pos = geo::destination(
            config.center,
            rng.f64() * 360.0,
            rng.f64().sqrt() * START_RADIUS_M,
        );
        Truck {
            pos,
            heading_deg: rng.f64() * 360.0,
            temp_c: TEMP_MEAN_C + (rng.f64() - 0.5) * 4.0,
            fuel_pct: 50.0 + rng.f64() * 50.0,
            door_open: false,
        }
    }
}

impl Model for Truck {
    /// Turn a little, drive, burn fuel.
    fn advance(&mut self, config: &FleetConfig, rng: &mut Rng, dt_s: f64, _to_ms: i64) {
        let speed_m_s = config.speed_kmh.max(0.0) / 3.6;
        let leg_m = (speed_m_s * dt_s).min(MAX_LEG_M);
        self.heading_deg =
            (self.heading_deg + (rng.f64() * 2.0 - 1.0) * HEADING_JITTER_DEG).rem_euclid(360.0);
        let mut next = geo::destination(self.pos, self.heading_deg, leg_m);
        if !inside_box(config.center, next) {
            // Turn back towards the centre (give or take 30°): from anywhere in the box, a leg
            // of at most MAX_LEG_M in that direction stays inside.
            let back = geo::bearing_deg(self.pos, config.center);
            self.heading_deg = (back + (rng.f64() * 2.0 - 1.0) * 30.0).rem_euclid(360.0);
            next = geo::destination(self.pos, self.heading_deg, leg_m);
        }
        self.pos = next;
        self.fuel_pct -= leg_m / 1000.0 * FUEL_PER_KM;
        if self.fuel_pct < REFUEL_BELOW {
            self.fuel_pct = 100.0;
        }
    }

    fn sense(&mut self, rng: &mut Rng, _to_ms: i64) {
        let reversion = 0.1 * (TEMP_MEAN_C - self.temp_c);
        self.temp_c =
            (self.temp_c + reversion + (rng.f64() - 0.5)).clamp(TEMP_RANGE_C.0, TEMP_RANGE_C.1);
        if rng.f64() < DOOR_FLIP_PROBABILITY {
            self.door_open = !self.door_open;
        }
    }

    fn start_fault(&mut self, rng: &mut Rng) -> u32 {
        rng.u32(SPIKE_MESSAGES.0..=SPIKE_MESSAGES.1)
    }

    fn sample(&self, ts_ms: i64, seq: u64, fault: bool) -> String {
        let temp = self.temp_c + if fault { SPIKE_DELTA_C } else { 0.0 };
        format!(
            r#"{{"ts":{ts_ms},"seq":{seq},"temp":{},"fuel":{},"door":{},"pos":{{"lat":{},"lon":{}}}}}"#,
            round(temp, 2),
            round(self.fuel_pct, 2),
            self.door_open,
            self.pos.lat,
            self.pos.lon,
        )
    }

    fn primary(&self) -> (&'static str, f64) {
        ("temp", self.temp_c)
    }
}

/// Whether `p` is within the box around `center`.
pub fn inside_box(center: LatLon, p: LatLon) -> bool {
    let (north, east) = geo::offset_m(center, p);
    north.abs() <= BOX_HALF_M && east.abs() <= BOX_HALF_M
}
