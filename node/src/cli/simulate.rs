//! Arguments of `starling simulate` and their parsers (validation at the command line, so a
//! bad flag is refused with usage before anything connects).

use clap::Args;

use super::Format;

use crate::simulate::geo::LatLon;
use crate::simulate::scenario::Scenario;

/// Arguments of `starling simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// What the devices are: trucks (GPS, cargo temperature, fuel, door), weather stations
    /// (temperature and humidity on a daily cycle 60× faster than real time, pressure) or
    /// machines (vibration, spindle temperature drifting up until maintenance, speed).
    #[arg(long, value_enum, default_value_t = Scenario::Logistics)]
    pub scenario: Scenario,
    /// MQTT broker to publish to (MQTT 3.1.1, plain TCP): one connection per device, client
    /// id `sim-{prefix}{i}`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883", value_parser = parse_broker)]
    pub broker: (String, u16),
    /// Number of devices, `{prefix}0` to `{prefix}{N-1}`.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub devices: u32,
    /// Messages per second per device (0.001 to 1000).
    #[arg(long, value_name = "PER_S", default_value_t = 1.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Publish for this long (e.g. 60s, 5m). Default: 60s without --messages.
    #[arg(long, conflicts_with = "messages")]
    pub duration: Option<humantime::Duration>,
    /// Publish this many messages per device, then stop (dropped-out slots do not count). The
    /// run is still capped at 2 × N / rate, plus 30 s per expected dropout, plus 60 s.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Seed of every random choice: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Device id prefix. Default: the scenario's device type and a dash (`truck-`, `station-`,
    /// `machine-`).
    #[arg(long, value_parser = parse_prefix)]
    pub prefix: Option<String>,
    /// Tenant of the devices (empty: the default tenant, topic `devices/{id}/telemetry`).
    #[arg(long, value_name = "T", default_value = "", value_parser = parse_tenant)]
    pub tenant: String,
    /// Per-message probability that a fault starts: a temperature spike (+25 °C, 3 to 6
    /// messages), a storm (3 to 6 messages), or a vibration burst (3 to 6) or stuck
    /// temperature sensor (5 to 20), by scenario.
    #[arg(long, visible_alias = "spike-probability", value_name = "P", default_value_t = 0.01, value_parser = parse_probability)]
    pub fault_probability: f64,
    /// Per-message probability that the device goes silent for 5 to 30 s.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub dropout_probability: f64,
    /// Per-message probability that the message is invalid telemetry (broken JSON, wrong type).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub malformed_probability: f64,
    /// Centre of the ~20 km box the trucks drive in, degrees (logistics).
    #[arg(long, value_name = "LAT,LON", default_value = "48.137,11.575", value_parser = parse_center, allow_hyphen_values = true)]
    pub center: LatLon,
    /// Driving speed of the trucks, km/h (0 to 1000; logistics).
    #[arg(long, value_name = "KMH", default_value_t = 60.0, value_parser = parse_speed)]
    pub speed_kmh: f64,
    /// Summary: one line of text, or one JSON object. With `json` (or when stderr is not a
    /// terminal) there is no progress line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `--broker`: `host:port` or `[v6]:port`.
fn parse_broker(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("{s:?}: bad port: {e}"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    Ok((host.to_owned(), port))
}

/// A finite number in `range`.
fn parse_in(s: &str, range: std::ops::RangeInclusive<f64>) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if x.is_finite() && range.contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "{s} is outside {}..={}",
            range.start(),
            range.end()
        ))
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    parse_in(s, 0.0..=1.0)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    parse_in(
        s,
        crate::simulate::fleet::MIN_RATE..=crate::simulate::fleet::MAX_RATE,
    )
}

fn parse_speed(s: &str) -> Result<f64, String> {
    parse_in(s, 0.0..=1000.0)
}

/// `--center LAT,LON`; latitudes beyond ±85° are refused (the box would be degenerate).
fn parse_center(s: &str) -> Result<LatLon, String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?} is not LAT,LON"))?;
    Ok(LatLon {
        lat: parse_in(lat.trim(), -85.0..=85.0)?,
        lon: parse_in(lon.trim(), -180.0..=180.0)?,
    })
}

/// `--prefix`: `{prefix}{i}` must be a valid device id.
fn parse_prefix(s: &str) -> Result<String, String> {
    crate::ingest::payload::validate_device_id(&format!("{s}10000"))
        .map(|()| s.to_owned())
        .map_err(|e| format!("prefix {s:?}: {e}"))
}

/// `--tenant`: empty, or a valid id.
fn parse_tenant(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    crate::ingest::payload::validate_device_id(s)
        .map(|()| s.to_owned())
        .map_err(|e| format!("tenant {s:?}: {e}"))
}
