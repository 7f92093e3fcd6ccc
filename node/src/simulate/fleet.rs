//! The simulated fleet, pure: which devices publish what at a given time.
//!
//! Each device is a truck with a GPS position driving at constant speed on a slowly turning
//! heading inside a box of ±[`BOX_HALF_M`] around the centre, a mean-reverting temperature
//! random walk, a fuel level that falls with distance (and is refilled when nearly empty), and a
//! door that opens and closes rarely. Device `i` publishes on a fixed schedule: its slot `k` is
//! due at `origin + phase_i + k / rate`, with phases spread evenly over one interval so the
//! fleet's load is smooth. The origin is the time of the first [`Fleet::step`].
//!
//! Faults, rolled per due slot with each device's own seeded generator:
//! - **dropout**: the device stays silent for 5 to 30 s (it keeps driving; its slots pass
//!   unused and do not count as messages);
//! - **malformed**: the message is invalid telemetry (broken JSON, or a value or `ts` of the
//!   wrong type), which Starling must acknowledge, count and not store;
//! - **spike**: temperature is [`SPIKE_DELTA_C`] above normal for 3 to 6 messages, enough to
//!   trip a `temp > 30` rule (normal temperatures stay within [`TEMP_RANGE_C`]).
//!
//! Determinism: given the same configuration, seed and sequence of `step` times, the output is
//! the same. Each device has its own generator derived from (seed, index), so one device's
//! randomness does not depend on what the others do.
//!
//! What it does not do: I/O, clocks, MQTT. The shell (`simulate/mod.rs`) asks it what is due
//! and publishes.

use serde_json::json;

use super::geo::{self, LatLon};

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
/// The largest rate accepted, messages per second per device (timestamps are milliseconds).
pub const MAX_RATE: f64 = 1000.0;
/// The smallest rate accepted, messages per second per device.
pub const MIN_RATE: f64 = 0.001;
/// Most slots one device catches up in one `step`; a caller that stalls longer skips the rest.
pub const MAX_CATCH_UP: u64 = 10_000;

const DROPOUT_MS: (i64, i64) = (5_000, 30_000);
const SPIKE_MESSAGES: (u32, u32) = (3, 6);
const REFUEL_BELOW: f64 = 5.0;

/// What to simulate. Defaults match `starling simulate`'s flags.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// Number of devices, `{prefix}0` … `{prefix}{devices-1}`.
    pub devices: usize,
    /// Messages per second per device, clamped to [`MIN_RATE`]..=[`MAX_RATE`].
    pub rate_per_s: f64,
    /// Stop each device after this many messages (None: no limit; the caller stops).
    pub messages_per_device: Option<u64>,
    /// Device id prefix.
    pub prefix: String,
    /// Tenant of the devices; empty means the default tenant (`devices/{id}/telemetry`).
    pub tenant: String,
    /// Per-message probabilities of the faults, in [0, 1].
    pub spike_probability: f64,
    pub dropout_probability: f64,
    pub malformed_probability: f64,
    /// Where the box is centred.
    pub center: LatLon,
    /// Driving speed, km/h.
    pub speed_kmh: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            devices: 10,
            rate_per_s: 1.0,
            messages_per_device: None,
            prefix: "sim-".to_owned(),
            tenant: String::new(),
            spike_probability: 0.01,
            dropout_probability: 0.0,
            malformed_probability: 0.0,
            center: LatLon {
                lat: 48.137,
                lon: 11.575,
            },
            speed_kmh: 60.0,
        }
    }
}

impl FleetConfig {
    /// Device `i`'s id.
    pub fn device_id(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// Device `i`'s telemetry topic (DESIGN §5).
    pub fn topic(&self, i: usize) -> String {
        let id = self.device_id(i);
        if self.tenant.is_empty() {
            format!("devices/{id}/telemetry")
        } else {
            format!("tenants/{}/devices/{id}/telemetry", self.tenant)
        }
    }

    /// Milliseconds between two slots of one device.
    pub fn interval_ms(&self) -> f64 {
        let rate = if self.rate_per_s.is_finite() {
            self.rate_per_s.clamp(MIN_RATE, MAX_RATE)
        } else {
            MIN_RATE
        };
        1000.0 / rate
    }
}

/// What kind of message an [`Outgoing`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A valid sample.
    Normal,
    /// A valid sample during a temperature spike.
    Spike,
    /// Not valid telemetry.
    Malformed,
}

/// One message to publish (QoS 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// Index of the device in the fleet.
    pub device: usize,
    pub topic: String,
    pub payload: String,
    pub kind: Kind,
    /// The sample's `ts` (also for malformed messages, where it may not be in the payload).
    pub ts_ms: i64,
    /// The device's message counter: 0 for its first message.
    pub seq: u64,
}

/// One simulated device.
#[derive(Clone, Debug)]
struct Truck {
    /// Its own generator: the device's behaviour does not depend on the others.
    rng: fastrand::Rng,
    topic: String,
    phase_ms: f64,
    /// Index of the next schedule slot.
    next_slot: u64,
    /// Messages published so far (the next message's `seq`).
    sent: u64,
    last_ts: Option<i64>,
    /// Time the physical state below was last advanced to.
    state_ms: Option<i64>,
    pos: LatLon,
    heading_deg: f64,
    temp_c: f64,
    fuel_pct: f64,
    door_open: bool,
    /// Messages of the current spike still to send.
    spike_left: u32,
    /// Silent (dropout) before this time.
    silent_until_ms: i64,
}

/// The fleet: devices, their schedules and their state.
#[derive(Clone, Debug)]
pub struct Fleet {
    config: FleetConfig,
    trucks: Vec<Truck>,
    origin_ms: Option<i64>,
    interval_ms: f64,
    dropouts: u64,
}

impl Fleet {
    /// A fleet of `config.devices` devices; everything random derives from `seed`.
    pub fn new(config: FleetConfig, seed: u64) -> Fleet {
        let interval_ms = config.interval_ms();
        let count = config.devices;
        let trucks = (0..count)
            .map(|i| {
                let device_seed = seed
                    ^ (i as u64)
                        .wrapping_add(1)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = fastrand::Rng::with_seed(device_seed);
                let start = geo::destination(
                    config.center,
                    rng.f64() * 360.0,
                    rng.f64().sqrt() * START_RADIUS_M,
                );
                Truck {
                    topic: config.topic(i),
                    phase_ms: interval_ms * i as f64 / count as f64,
                    next_slot: 0,
                    sent: 0,
                    last_ts: None,
                    state_ms: None,
                    pos: start,
                    heading_deg: rng.f64() * 360.0,
                    temp_c: TEMP_MEAN_C + (rng.f64() - 0.5) * 4.0,
                    fuel_pct: 50.0 + rng.f64() * 50.0,
                    door_open: false,
                    spike_left: 0,
                    silent_until_ms: i64::MIN,
                    rng,
                }
            })
            .collect();
        Fleet {
            config,
            trucks,
            origin_ms: None,
            interval_ms,
            dropouts: 0,
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Dropouts started so far.
    pub fn dropouts(&self) -> u64 {
        self.dropouts
    }

    /// Messages device `i` has produced so far.
    pub fn sent(&self, i: usize) -> u64 {
        self.trucks.get(i).map_or(0, |t| t.sent)
    }

    /// Device `i`'s current position.
    pub fn position(&self, i: usize) -> Option<LatLon> {
        self.trucks.get(i).map(|t| t.pos)
    }

    /// True when every device has sent `messages_per_device` (never without that limit).
    pub fn is_done(&self) -> bool {
        match self.config.messages_per_device {
            Some(limit) => self.trucks.iter().all(|t| t.sent >= limit),
            None => false,
        }
    }

    /// When the next slot of any unfinished device is due (Unix ms, rounded up); `None` before
    /// the first `step` or when done.
    pub fn next_due_ms(&self) -> Option<i64> {
        let origin = self.origin_ms?;
        self.trucks
            .iter()
            .filter(|t| !self.finished(t))
            .map(|t| self.due_ms(origin, t, t.next_slot).ceil() as i64)
            .min()
    }

    /// Everything due at or before `now_ms` (Unix ms) that has not been produced yet, in
    /// device order, each device's messages in time order. The first call sets the origin.
    pub fn step(&mut self, now_ms: i64) -> Vec<Outgoing> {
        let origin = *self.origin_ms.get_or_insert(now_ms);
        let mut out = Vec::new();
        for i in 0..self.trucks.len() {
            for _ in 0..MAX_CATCH_UP {
                let truck = &self.trucks[i];
                if self.finished(truck) {
                    break;
                }
                let due = self.due_ms(origin, truck, truck.next_slot);
                if due > now_ms as f64 {
                    break;
                }
                let (config, dropouts) = (&self.config, &mut self.dropouts);
                let truck = &mut self.trucks[i];
                truck.next_slot += 1;
                if let Some(message) = slot(config, truck, i, due.floor() as i64, dropouts) {
                    out.push(message);
                }
            }
            // A caller that stalled beyond the catch-up bound skips the slots in between.
            let truck = &self.trucks[i];
            if !self.finished(truck) && self.due_ms(origin, truck, truck.next_slot) <= now_ms as f64
            {
                let behind = (now_ms as f64 - origin as f64 - truck.phase_ms) / self.interval_ms;
                self.trucks[i].next_slot = behind.max(0.0).floor() as u64 + 1;
            }
        }
        out
    }

    fn due_ms(&self, origin: i64, truck: &Truck, slot: u64) -> f64 {
        origin as f64 + truck.phase_ms + slot as f64 * self.interval_ms
    }

    fn finished(&self, truck: &Truck) -> bool {
        self.config
            .messages_per_device
            .is_some_and(|limit| truck.sent >= limit)
    }
}

/// One due slot of one device: advance its state to `due_ms`, roll the faults, maybe produce a
/// message.
fn slot(
    config: &FleetConfig,
    truck: &mut Truck,
    index: usize,
    due_ms: i64,
    dropouts: &mut u64,
) -> Option<Outgoing> {
    drive(config, truck, due_ms);
    if due_ms < truck.silent_until_ms {
        return None;
    }
    if truck.rng.f64() < config.dropout_probability {
        truck.silent_until_ms = due_ms + truck.rng.i64(DROPOUT_MS.0..=DROPOUT_MS.1);
        truck.spike_left = 0;
        *dropouts += 1;
        return None;
    }
    // Sensors move on whether or not the message gets through intact.
    let reversion = 0.1 * (TEMP_MEAN_C - truck.temp_c);
    truck.temp_c =
        (truck.temp_c + reversion + (truck.rng.f64() - 0.5)).clamp(TEMP_RANGE_C.0, TEMP_RANGE_C.1);
    if truck.rng.f64() < DOOR_FLIP_PROBABILITY {
        truck.door_open = !truck.door_open;
    }
    let ts_ms = truck.last_ts.map_or(due_ms, |last| due_ms.max(last + 1));
    truck.last_ts = Some(ts_ms);
    let seq = truck.sent;
    truck.sent += 1;

    let (kind, payload) = if truck.rng.f64() < config.malformed_probability {
        (Kind::Malformed, malformed(truck, ts_ms, seq))
    } else {
        if truck.spike_left == 0 && truck.rng.f64() < config.spike_probability {
            truck.spike_left = truck.rng.u32(SPIKE_MESSAGES.0..=SPIKE_MESSAGES.1);
        }
        let kind = if truck.spike_left > 0 {
            truck.spike_left -= 1;
            Kind::Spike
        } else {
            Kind::Normal
        };
        (kind, sample(truck, ts_ms, seq, kind == Kind::Spike))
    };
    Some(Outgoing {
        device: index,
        topic: truck.topic.clone(),
        payload,
        kind,
        ts_ms,
        seq,
    })
}

/// Moves the truck from its last state time to `to_ms`: turn a little, drive, burn fuel.
fn drive(config: &FleetConfig, truck: &mut Truck, to_ms: i64) {
    let from_ms = truck.state_ms.replace(to_ms).unwrap_or(to_ms);
    let dt_s = (to_ms - from_ms).max(0) as f64 / 1000.0;
    if dt_s <= 0.0 {
        return;
    }
    let speed_m_s = config.speed_kmh.max(0.0) / 3.6;
    let leg_m = (speed_m_s * dt_s).min(MAX_LEG_M);
    truck.heading_deg =
        (truck.heading_deg + (truck.rng.f64() * 2.0 - 1.0) * HEADING_JITTER_DEG).rem_euclid(360.0);
    let mut next = geo::destination(truck.pos, truck.heading_deg, leg_m);
    if !inside_box(config.center, next) {
        // Turn back towards the centre (give or take 30°): from anywhere in the box, a leg of
        // at most MAX_LEG_M in that direction stays inside.
        let back = geo::bearing_deg(truck.pos, config.center);
        truck.heading_deg = (back + (truck.rng.f64() * 2.0 - 1.0) * 30.0).rem_euclid(360.0);
        next = geo::destination(truck.pos, truck.heading_deg, leg_m);
    }
    truck.pos = next;
    truck.fuel_pct -= leg_m / 1000.0 * FUEL_PER_KM;
    if truck.fuel_pct < REFUEL_BELOW {
        truck.fuel_pct = 100.0;
    }
}

/// Whether `p` is within the box around `center`.
pub fn inside_box(center: LatLon, p: LatLon) -> bool {
    let (north, east) = geo::offset_m(center, p);
    north.abs() <= BOX_HALF_M && east.abs() <= BOX_HALF_M
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A valid sample, keys in this order: `{"ts", "seq", "temp", "fuel", "door", "pos": {"lat",
/// "lon"}}`. Every number is finite (temperatures and fuel are clamped, positions valid), so
/// Rust's shortest round-trip formatting is valid JSON.
fn sample(truck: &Truck, ts_ms: i64, seq: u64, spike: bool) -> String {
    let temp = truck.temp_c + if spike { SPIKE_DELTA_C } else { 0.0 };
    format!(
        r#"{{"ts":{ts_ms},"seq":{seq},"temp":{},"fuel":{},"door":{},"pos":{{"lat":{},"lon":{}}}}}"#,
        round(temp, 2),
        round(truck.fuel_pct, 2),
        truck.door_open,
        truck.pos.lat,
        truck.pos.lon,
    )
}

/// Invalid telemetry of one of several kinds, chosen by the truck's generator.
fn malformed(truck: &mut Truck, ts_ms: i64, seq: u64) -> String {
    let temp = round(truck.temp_c, 2);
    match truck.rng.u8(0..5) {
        // Broken JSON: a sample cut short.
        0 => {
            let full = sample(truck, ts_ms, seq, false);
            full[..full.len() / 2].to_owned()
        }
        1 => json!({"ts": ts_ms, "seq": seq, "temp": null}).to_string(),
        2 => json!({"ts": ts_ms, "seq": seq, "temp": [temp, temp]}).to_string(),
        3 => json!({"ts": format!("{ts_ms}ms"), "seq": seq, "temp": temp}).to_string(),
        _ => json!({
            "ts": ts_ms,
            "seq": seq,
            "pos": {"lat": truck.pos.lat.to_string(), "lon": truck.pos.lon},
        })
        .to_string(),
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
