//! `starling simulate`: a fleet of simulated devices publishing telemetry over MQTT.
//!
//! - [`fleet`]: the pure fleet model (routes, sensors, faults, schedule): what is due when.
//! - [`geo`]: the small spherical geometry the routes need, pure.
//! - this module, the shell: one MQTT 3.1.1 connection per device (rumqttc, client id
//!   `sim-{prefix}{i}`, as real devices connect), all connected before the first message; a
//!   tick loop on tokio time that asks the fleet what is due and publishes it at QoS 1; then a
//!   bounded wait for the broker's PUBACKs and a one-line summary (text or JSON) on stdout.
//!
//! What it does not do: talk to anything but the one broker given, use TLS or authentication,
//! or check what Starling stored (the integration test does that through the SDK). Ctrl-C or
//! SIGTERM stops publishing early; the acknowledgement wait and the summary still happen.

pub mod fleet;
pub mod geo;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::{Format, SimulateArgs};
use fleet::{Fleet, FleetConfig, Kind, Outgoing};

/// Bound on one device's TCP connect + CONNECT/CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Devices connecting at the same time.
const CONNECT_CONCURRENCY: usize = 64;
/// Bound on handing one message to its client (waits only when the client's queue is full).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for the broker's PUBACKs once publishing stopped.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the clean MQTT disconnect at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before rumqttc reconnects after a connection error.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// Requests a client queues before `publish` waits.
const CLIENT_QUEUE: usize = 1000;
/// Run length without `--duration` or `--messages`.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);

/// What a run did; printed as one line or one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Messages handed to the MQTT clients.
    pub published: u64,
    /// PUBACKs received from the broker.
    pub acked: u64,
    /// Messages sent during temperature spikes.
    pub spikes: u64,
    /// Invalid messages sent on purpose.
    pub malformed: u64,
    /// Dropouts (silent periods) started.
    pub dropouts: u64,
    pub devices: u64,
    /// From the first publish to the end of the acknowledgement wait.
    pub seconds: f64,
    /// Stopped early by Ctrl-C or SIGTERM.
    pub interrupted: bool,
}

impl Summary {
    /// The human-readable line.
    pub fn line(&self) -> String {
        format!(
            "simulated {} devices for {:.2} s{}: published {}, acked {}, spikes {}, malformed {}, dropouts {}",
            self.devices,
            self.seconds,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.published,
            self.acked,
            self.spikes,
            self.malformed,
            self.dropouts,
        )
    }
}

/// Runs `starling simulate` until done, or until Ctrl-C/SIGTERM, and prints the summary. Fails
/// (after printing) when a connection failed or messages were not acknowledged in time.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let format = args.format;
    let (summary, result) = simulate(&args, crate::node::shutdown_signal()).await?;
    match format {
        Format::Table => println!("{}", summary.line()),
        Format::Json => println!("{}", serde_json::to_string(&summary)?),
    }
    result?;
    if summary.acked < summary.published {
        bail!(
            "{} of {} messages were not acknowledged by the broker within {} s",
            summary.published - summary.acked,
            summary.published,
            ACK_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// The fleet configuration the arguments describe.
pub fn fleet_config(args: &SimulateArgs) -> FleetConfig {
    FleetConfig {
        devices: args.devices as usize,
        rate_per_s: args.rate,
        messages_per_device: args.messages,
        prefix: args.prefix.clone(),
        tenant: args.tenant.clone(),
        spike_probability: args.spike_probability,
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
        devices = config.devices,
        rate = config.rate_per_s,
        "connecting simulated devices"
    );
    let mut connections = Vec::with_capacity(config.devices);
    let ids: Vec<String> = (0..config.devices).map(|i| config.device_id(i)).collect();
    for chunk in ids.chunks(CONNECT_CONCURRENCY) {
        let batch = chunk.iter().map(|id| connect(host, *port, id));
        connections.extend(futures::future::try_join_all(batch).await?);
    }

    let limit = time_limit(args);
    let mut fleet = Fleet::new(config, args.seed);
    let mut summary = Summary {
        published: 0,
        acked: 0,
        spikes: 0,
        malformed: 0,
        dropouts: 0,
        devices: connections.len() as u64,
        seconds: 0.0,
        interrupted: false,
    };
    let start = Instant::now();
    let start_ms = unix_ms();
    let deadline = start.checked_add(limit).unwrap_or(start + DEFAULT_DURATION);
    let mut result = Ok(());
    tokio::pin!(stop);
    // Bounded by `deadline`; every turn publishes what is due or sleeps until the next slot.
    'run: while Instant::now() < deadline {
        let now_ms = start_ms + millis(start.elapsed());
        for message in fleet.step(now_ms) {
            let Some(connection) = connections.get(message.device) else {
                continue;
            };
            if let Err(e) = publish(connection, &message).await {
                result = Err(e);
                break 'run;
            }
            summary.published += 1;
            match message.kind {
                Kind::Normal => {}
                Kind::Spike => summary.spikes += 1,
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

    let acked = || connections.iter().map(Connection::acked).sum::<u64>();
    let ack_deadline = Instant::now() + ACK_TIMEOUT;
    // Bounded by ACK_TIMEOUT.
    while acked() < summary.published && Instant::now() < ack_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    summary.acked = acked();
    summary.seconds = start.elapsed().as_secs_f64();
    futures::future::join_all(connections.into_iter().map(Connection::close)).await;
    Ok((summary, result))
}

/// One device's MQTT connection: the client, and the task driving its event loop.
struct Connection {
    client: AsyncClient,
    /// PUBACKs received, counted by the driver.
    acked: Arc<AtomicU64>,
    /// Polls the event loop; aborted when the connection is dropped, so it lives exactly as
    /// long as the run.
    driver: JoinHandle<()>,
}

impl Connection {
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Sends DISCONNECT and lets the driver flush it (bounded), then stops the driver.
    async fn close(mut self) {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            if self.client.disconnect().await.is_ok() {
                let _ = (&mut self.driver).await;
            }
        })
        .await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects device `id` (client id `sim-{id}`) and waits for the CONNACK (bounded).
async fn connect(host: &str, port: u16, id: &str) -> anyhow::Result<Connection> {
    let client_id = format!("sim-{id}");
    let mut options = MqttOptions::new(client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    let acked = Arc::new(AtomicU64::new(0));
    let (connected_tx, connected_rx) = oneshot::channel();
    let driver = tokio::spawn(drive(eventloop, connected_tx, acked.clone(), client_id));
    let connection = Connection {
        client,
        acked,
        driver,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connected_rx).await {
        Ok(Ok(Ok(()))) => Ok(connection),
        Ok(Ok(Err(e))) => Err(anyhow!("device {id}: cannot connect to {host}:{port}: {e}")),
        Ok(Err(_)) => Err(anyhow!("device {id}: connection task ended")),
        Err(_) => Err(anyhow!(
            "device {id}: no CONNACK from {host}:{port} within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Drives one client's event loop: reports the first CONNACK (or the first error, which ends
/// it), counts PUBACKs, and after a later error lets rumqttc reconnect after a pause. Ends
/// after sending DISCONNECT; otherwise runs until its [`Connection`] aborts it.
async fn drive(
    mut eventloop: EventLoop,
    connected: oneshot::Sender<Result<(), String>>,
    acked: Arc<AtomicU64>,
    client_id: String,
) {
    let mut connected = Some(connected);
    let mut errors = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
                errors += 1;
                // The first error of a device, then every hundredth: a broker outage must not
                // flood the log.
                if errors % 100 == 1 {
                    tracing::warn!(client_id, error = %e, errors, "MQTT connection error; reconnecting");
                }
                tokio::time::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}

/// Hands one message to its device's client at QoS 1 (bounded).
async fn publish(connection: &Connection, message: &Outgoing) -> anyhow::Result<()> {
    let sent = connection.client.publish(
        message.topic.as_str(),
        QoS::AtLeastOnce,
        false,
        message.payload.clone().into_bytes(),
    );
    tokio::time::timeout(PUBLISH_TIMEOUT, sent)
        .await
        .with_context(|| format!("{}: client queue full for 10 s", message.topic))?
        .with_context(|| format!("{}: publish failed", message.topic))
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
        assert_eq!((c.center.lat, c.center.lon), (1.5, -2.5));
    }

    #[test]
    fn summary_shapes() {
        let s = Summary {
            published: 100,
            acked: 99,
            spikes: 3,
            malformed: 1,
            dropouts: 0,
            devices: 5,
            seconds: 1.234,
            interrupted: false,
        };
        assert_eq!(
            s.line(),
            "simulated 5 devices for 1.23 s: published 100, acked 99, spikes 3, malformed 1, dropouts 0"
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&s).expect("serialize")).expect("json");
        assert_eq!(json["published"], 100);
        assert_eq!(json["acked"], 99);
        assert_eq!(json["seconds"], 1.234);
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
        assert!(text.contains("sim-0") && text.contains(&broker), "{text}");
    }
}
