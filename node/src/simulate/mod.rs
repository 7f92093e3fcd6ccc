//! `starling simulate`: a fleet of simulated devices publishing telemetry over MQTT.
//!
//! - [`scenario`]: what the devices are (trucks, weather stations, machines), one pure model
//!   per scenario behind [`scenario::Model`].
//! - [`fleet`]: the pure scheduler (schedule, dropouts, malformed messages, fault runs): what
//!   is due when.
//! - [`geo`]: the small spherical geometry the trucks' routes need, pure.
//! - [`connection`]: one MQTT 3.1.1 connection per device (rumqttc, client id
//!   `sim-{prefix}{i}`, as real devices connect), publish→PUBACK latency by packet id.
//! - [`summary`], [`progress`]: the summary (text or JSON, stdout) and the progress line
//!   (stderr, terminals only).
//! - this module, the shell: all devices connected before the first message; a tick loop on
//!   tokio time that asks the fleet what is due and publishes it at QoS 1; then a bounded wait
//!   for the broker's PUBACKs and the summary.
//!
//! What it does not do: talk to anything but the one broker given, use TLS or authentication,
//! register devices with a type (they are auto-provisioned; the type is in the id prefix), or
//! check what Starling stored (the integration test does that through the SDK). Ctrl-C or
//! SIGTERM stops publishing early; the acknowledgement wait and the summary still happen.

pub mod connection;
pub mod fleet;
pub mod geo;
pub mod progress;
pub mod scenario;
pub mod summary;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use tokio::time::Instant;

use crate::cli::{Format, SimulateArgs};
use connection::Connection;
use fleet::{Fleet, FleetConfig, Kind};
use progress::Progress;
use summary::Summary;

/// Devices connecting at the same time.
const CONNECT_CONCURRENCY: usize = 64;
/// Bound on waiting for the broker's PUBACKs once publishing stopped.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Run length without `--duration` or `--messages`.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// Runs `starling simulate` until done, or until Ctrl-C/SIGTERM, and prints the summary. Fails
/// (after printing) when a connection failed or messages failed (not acknowledged in time, or
/// not published).
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let format = args.format;
    let (summary, result) = simulate(&args, crate::node::shutdown_signal()).await?;
    match format {
        Format::Table => println!("{}", summary.line()),
        Format::Json => println!("{}", serde_json::to_string(&summary)?),
    }
    result?;
    if summary.failed > 0 {
        bail!(
            "{} messages failed (sent {}, acked {}): not acknowledged by the broker within {} s, or not published",
            summary.failed,
            summary.sent,
            summary.acked,
            ACK_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// The fleet configuration the arguments describe.
pub fn fleet_config(args: &SimulateArgs) -> FleetConfig {
    FleetConfig {
        scenario: args.scenario,
        devices: args.devices as usize,
        rate_per_s: args.rate,
        messages_per_device: args.messages,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("{}-", args.scenario.device_type())),
        tenant: args.tenant.clone(),
        fault_probability: args.fault_probability,
        dropout_probability: args.dropout_probability,
        malformed_probability: args.malformed_probability,
        center: args.center,
        speed_kmh: args.speed_kmh,
    }
}

/// How long the run may publish: `--duration`, else a cap derived from `--messages` (see the
/// flag's help), else `DEFAULT_DURATION`.
pub fn time_limit(args: &SimulateArgs) -> Duration {
    if let Some(d) = args.duration {
        return *d;
    }
    let Some(n) = args.messages else {
        return DEFAULT_DURATION;
    };
    let n = n as f64;
    let secs = 2.0 * n / args.rate + n * args.dropout_probability * 30.0 + 60.0;
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// Connects, publishes and waits for acknowledgements. Returns the summary with the first
/// error that ended the run early (a connection error is returned as `Err`: nothing ran).
pub async fn simulate(
    args: &SimulateArgs,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<(Summary, anyhow::Result<()>)> {
    let config = fleet_config(args);
    let (host, port) = &args.broker;
    tracing::info!(
        broker = %format!("{host}:{port}"),
        scenario = ?config.scenario,
        devices = config.devices,
        rate = config.rate_per_s,
        "connecting simulated devices"
    );
    let mut connections = Vec::with_capacity(config.devices);
    let ids: Vec<String> = (0..config.devices).map(|i| config.device_id(i)).collect();
    for chunk in ids.chunks(CONNECT_CONCURRENCY) {
        let batch = chunk.iter().map(|id| Connection::connect(host, *port, id));
        connections.extend(futures::future::try_join_all(batch).await?);
    }
    let acks: Vec<_> = connections.iter().map(|c| c.acks().clone()).collect();
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        progress::visible(args.format == Format::Json),
        sent.clone(),
        acks.clone(),
    );

    let limit = time_limit(args);
    let mut fleet = Fleet::new(config, args.seed);
    let mut summary = Summary {
        scenario: args.scenario,
        devices: connections.len() as u64,
        sent: 0,
        acked: 0,
        failed: 0,
        ack_p50_ms: None,
        ack_p99_ms: None,
        faults: 0,
        malformed: 0,
        dropouts: 0,
        seconds: 0.0,
        interrupted: false,
    };
    let start = Instant::now();
    let start_ms = unix_ms();
    let deadline = start.checked_add(limit).unwrap_or(start + DEFAULT_DURATION);
    let mut result = Ok(());
    let mut publish_errors = 0;
    tokio::pin!(stop);
    // Bounded by `deadline`; every turn publishes what is due or sleeps until the next slot.
    'run: while Instant::now() < deadline {
        let now_ms = start_ms + millis(start.elapsed());
        for message in fleet.step(now_ms) {
            let Some(connection) = connections.get(message.device) else {
                continue;
            };
            if let Err(e) = connection.publish(&message).await {
                publish_errors += 1;
                result = Err(e);
                break 'run;
            }
            summary.sent += 1;
            sent.store(summary.sent, Ordering::Relaxed);
            match message.kind {
                Kind::Normal => {}
                Kind::Fault => summary.faults += 1,
                Kind::Malformed => summary.malformed += 1,
            }
        }
        if fleet.is_done() {
            break;
        }
        let wake = fleet
            .next_due_ms()
            .map_or(deadline, |due| {
                start + Duration::from_millis(u64::try_from(due - start_ms).unwrap_or(0))
            })
            .min(deadline);
        tokio::select! {
            // The next slot of some device is due, or the run's time is up.
            _ = tokio::time::sleep_until(wake) => {}
            // Ctrl-C or SIGTERM: stop publishing; still wait for acks and report.
            _ = &mut stop => {
                summary.interrupted = true;
                break;
            }
        }
    }
    summary.dropouts = fleet.dropouts();

    let acked = || acks.iter().map(|a| a.acked()).sum::<u64>();
    let ack_deadline = Instant::now() + ACK_TIMEOUT;
    // Bounded by ACK_TIMEOUT.
    while acked() < summary.sent && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    summary.acked = acked();
    summary.failed = summary.sent.saturating_sub(summary.acked) + publish_errors;
    summary.seconds = start.elapsed().as_secs_f64();
    progress.finish();
    futures::future::join_all(connections.into_iter().map(Connection::close)).await;
    let mut latency = connection::latency_histogram();
    for a in &acks {
        a.add_latencies_to(&mut latency);
    }
    summary.set_latencies(&latency);
    Ok((summary, result))
}

/// Wall-clock Unix milliseconds: the time base of the samples' `ts`.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use scenario::Scenario;

    fn args(extra: &[&str]) -> SimulateArgs {
        let argv = ["starling", "simulate"]
            .into_iter()
            .chain(extra.iter().copied());
        match crate::cli::Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::cli::TopCommand::Simulate(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn time_limits() {
        let cases: &[(&[&str], u64)] = &[
            (&[], 60),
            (&["--duration", "5m"], 300),
            (&["--messages", "20", "--rate", "20"], 62),
            (&["--messages", "100", "--rate", "1"], 260),
            (
                &[
                    "--messages",
                    "100",
                    "--rate",
                    "1",
                    "--dropout-probability",
                    "0.1",
                ],
                560,
            ),
        ];
        for (extra, secs) in cases {
            assert_eq!(time_limit(&args(extra)).as_secs(), *secs, "{extra:?}");
        }
    }

    #[test]
    fn scenarios_name_their_devices() {
        // (arguments, scenario, id of device 3)
        let cases: &[(&[&str], Scenario, &str)] = &[
            (&[], Scenario::Logistics, "truck-3"),
            (&["--scenario", "logistics"], Scenario::Logistics, "truck-3"),
            (&["--scenario", "weather"], Scenario::Weather, "station-3"),
            (&["--scenario", "factory"], Scenario::Factory, "machine-3"),
            (
                &["--scenario", "factory", "--prefix", "m"],
                Scenario::Factory,
                "m3",
            ),
        ];
        for (extra, scenario, id) in cases {
            let c = fleet_config(&args(extra));
            assert_eq!(
                (c.scenario, c.device_id(3).as_str()),
                (*scenario, *id),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn arguments_become_the_fleet_config() {
        let a = args(&[
            "--devices",
            "3",
            "--messages",
            "4",
            "--tenant",
            "acme",
            "--prefix",
            "t-",
            "--center",
            "1.5,-2.5",
        ]);
        let c = fleet_config(&a);
        assert_eq!((c.devices, c.messages_per_device), (3, Some(4)));
        assert_eq!(c.topic(2), "tenants/acme/devices/t-2/telemetry");
        assert_eq!(c.scenario, Scenario::Logistics);
        assert_eq!((c.center.lat, c.center.lon), (1.5, -2.5));
    }

    /// Connection refused fails fast and names the device and broker.
    #[tokio::test]
    async fn unreachable_broker_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let port = port.to_string();
        let broker = format!("127.0.0.1:{port}");
        let a = args(&["--broker", &broker, "--devices", "1", "--messages", "1"]);
        let err = simulate(&a, std::future::pending())
            .await
            .expect_err("must fail");
        let text = format!("{err:#}");
        assert!(text.contains("truck-0") && text.contains(&broker), "{text}");
    }
}
