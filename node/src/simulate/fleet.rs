//! The simulated fleet, pure: which devices publish what at a given time.
//!
//! The fleet is the scheduler; what a device measures is its scenario's model
//! ([`super::scenario`]). Device `i` publishes on a fixed schedule: its slot `k` is due at
//! `origin + phase_i + k / rate`, with phases spread evenly over one interval so the fleet's
//! load is smooth. The origin is the time of the first [`Fleet::step`].
//!
//! Per due slot, with each device's own seeded generator: the model moves on to the slot's
//! time; then the faults are rolled:
//! - **dropout**: the device stays silent for 5 to 30 s (its model keeps moving; its slots
//!   pass unused and do not count as messages);
//! - **malformed**: the message is invalid telemetry (broken JSON, or a value or `ts` of the
//!   wrong type), which Starling must acknowledge, count and not store;
//! - **fault**: the scenario's fault (a temperature spike, a storm, a vibration burst or a
//!   stuck sensor) starts and lasts for a few messages, which are still valid telemetry.
//!
//! Determinism: given the same configuration, seed and sequence of `step` times, the output is
//! the same. Each device has its own generator derived from (seed, index), so one device's
//! randomness does not depend on what the others do.
//!
//! What it does not do: I/O, clocks, MQTT. The shell (`simulate/mod.rs`) asks it what is due
//! and publishes.

use super::geo::LatLon;
use super::scenario::{self, Model, Scenario};

/// The largest rate accepted, messages per second per device (timestamps are milliseconds).
pub const MAX_RATE: f64 = 1000.0;
/// The smallest rate accepted, messages per second per device.
pub const MIN_RATE: f64 = 0.001;
/// Most slots one device catches up in one `step`; a caller that stalls longer skips the rest.
pub const MAX_CATCH_UP: u64 = 10_000;

const DROPOUT_MS: (i64, i64) = (5_000, 30_000);

/// What to simulate. Defaults match `starling simulate`'s flags.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// What the devices are.
    pub scenario: Scenario,
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
    pub fault_probability: f64,
    pub dropout_probability: f64,
    pub malformed_probability: f64,
    /// Where the trucks' box is centred (logistics).
    pub center: LatLon,
    /// Driving speed, km/h (logistics).
    pub speed_kmh: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            scenario: Scenario::Logistics,
            devices: 10,
            rate_per_s: 1.0,
            messages_per_device: None,
            prefix: "truck-".to_owned(),
            tenant: String::new(),
            fault_probability: 0.01,
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
    /// A valid sample during one of the scenario's faults.
    Fault,
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

/// One simulated device: its schedule and faults here, its physics in `model`.
#[derive(Debug)]
struct Device {
    /// Its own generator: the device's behaviour does not depend on the others.
    rng: fastrand::Rng,
    topic: String,
    phase_ms: f64,
    /// Index of the next schedule slot.
    next_slot: u64,
    /// Messages published so far (the next message's `seq`).
    sent: u64,
    last_ts: Option<i64>,
    /// Time the model was last advanced to.
    state_ms: Option<i64>,
    /// Messages of the current fault still to send.
    fault_left: u32,
    /// Silent (dropout) before this time.
    silent_until_ms: i64,
    model: Box<dyn Model>,
}

/// The fleet: devices, their schedules and their state.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    devices: Vec<Device>,
    origin_ms: Option<i64>,
    interval_ms: f64,
    dropouts: u64,
}

impl Fleet {
    /// A fleet of `config.devices` devices; everything random derives from `seed`.
    pub fn new(config: FleetConfig, seed: u64) -> Fleet {
        let interval_ms = config.interval_ms();
        let count = config.devices;
        let devices = (0..count)
            .map(|i| {
                let device_seed = seed
                    ^ (i as u64)
                        .wrapping_add(1)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = fastrand::Rng::with_seed(device_seed);
                let model = config.scenario.device(&config, &mut rng);
                Device {
                    topic: config.topic(i),
                    phase_ms: interval_ms * i as f64 / count as f64,
                    next_slot: 0,
                    sent: 0,
                    last_ts: None,
                    state_ms: None,
                    fault_left: 0,
                    silent_until_ms: i64::MIN,
                    model,
                    rng,
                }
            })
            .collect();
        Fleet {
            config,
            devices,
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
        self.devices.get(i).map_or(0, |d| d.sent)
    }

    /// True when every device has sent `messages_per_device` (never without that limit).
    pub fn is_done(&self) -> bool {
        match self.config.messages_per_device {
            Some(limit) => self.devices.iter().all(|d| d.sent >= limit),
            None => false,
        }
    }

    /// When the next slot of any unfinished device is due (Unix ms, rounded up); `None` before
    /// the first `step` or when done.
    pub fn next_due_ms(&self) -> Option<i64> {
        let origin = self.origin_ms?;
        self.devices
            .iter()
            .filter(|d| !self.finished(d))
            .map(|d| self.due_ms(origin, d, d.next_slot).ceil() as i64)
            .min()
    }

    /// Everything due at or before `now_ms` (Unix ms) that has not been produced yet, in
    /// device order, each device's messages in time order. The first call sets the origin.
    pub fn step(&mut self, now_ms: i64) -> Vec<Outgoing> {
        let origin = *self.origin_ms.get_or_insert(now_ms);
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            for _ in 0..MAX_CATCH_UP {
                let device = &self.devices[i];
                if self.finished(device) {
                    break;
                }
                let due = self.due_ms(origin, device, device.next_slot);
                if due > now_ms as f64 {
                    break;
                }
                let (config, dropouts) = (&self.config, &mut self.dropouts);
                let device = &mut self.devices[i];
                device.next_slot += 1;
                if let Some(message) = slot(config, device, i, due.floor() as i64, dropouts) {
                    out.push(message);
                }
            }
            // A caller that stalled beyond the catch-up bound skips the slots in between.
            let device = &self.devices[i];
            if !self.finished(device)
                && self.due_ms(origin, device, device.next_slot) <= now_ms as f64
            {
                let behind = (now_ms as f64 - origin as f64 - device.phase_ms) / self.interval_ms;
                self.devices[i].next_slot = behind.max(0.0).floor() as u64 + 1;
            }
        }
        out
    }

    fn due_ms(&self, origin: i64, device: &Device, slot: u64) -> f64 {
        origin as f64 + device.phase_ms + slot as f64 * self.interval_ms
    }

    fn finished(&self, device: &Device) -> bool {
        self.config
            .messages_per_device
            .is_some_and(|limit| device.sent >= limit)
    }
}

/// One due slot of one device: advance its model to `due_ms`, roll the faults, maybe produce
/// a message.
fn slot(
    config: &FleetConfig,
    device: &mut Device,
    index: usize,
    due_ms: i64,
    dropouts: &mut u64,
) -> Option<Outgoing> {
    let from_ms = device.state_ms.replace(due_ms).unwrap_or(due_ms);
    let dt_s = (due_ms - from_ms).max(0) as f64 / 1000.0;
    if dt_s > 0.0 {
        device.model.advance(config, &mut device.rng, dt_s, due_ms);
    }
    if due_ms < device.silent_until_ms {
        return None;
    }
    if device.rng.f64() < config.dropout_probability {
        device.silent_until_ms = due_ms + device.rng.i64(DROPOUT_MS.0..=DROPOUT_MS.1);
        device.fault_left = 0;
        *dropouts += 1;
        return None;
    }
    // Sensors move on whether or not the message gets through intact.
    device.model.sense(&mut device.rng, due_ms);
    let ts_ms = device.last_ts.map_or(due_ms, |last| due_ms.max(last + 1));
    device.last_ts = Some(ts_ms);
    let seq = device.sent;
    device.sent += 1;

    let (kind, payload) = if device.rng.f64() < config.malformed_probability {
        let payload = scenario::malformed(device.model.as_ref(), &mut device.rng, ts_ms, seq);
        (Kind::Malformed, payload)
    } else {
        if device.fault_left == 0 && device.rng.f64() < config.fault_probability {
            device.fault_left = device.model.start_fault(&mut device.rng);
        }
        let kind = if device.fault_left > 0 {
            device.fault_left -= 1;
            Kind::Fault
        } else {
            Kind::Normal
        };
        let payload = device.model.sample(ts_ms, seq, kind == Kind::Fault);
        (kind, payload)
    };
    Some(Outgoing {
        device: index,
        topic: device.topic.clone(),
        payload,
        kind,
        ts_ms,
        seq,
    })
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
