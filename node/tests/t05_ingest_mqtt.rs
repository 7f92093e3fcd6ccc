//! MQTT ingest against real brokers: the embedded rumqttd and a Mosquitto 2 spawned per test
//! (skipped, with a message, when `/usr/sbin/mosquitto` is absent).
//!
//! The sink is a recording test double (the node's real sink is outside the unit under test).
//! Messages carry their number as `seq`, so deliveries can be counted per message.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use starling_node::ingest::{self, MqttIngestConfig, PointSink, SinkError};
use starling_node::model::{DeviceKey, Sample};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const WAIT: Duration = Duration::from_secs(20);
/// Device whose messages only probe that the subscription is live.
const PROBE: &str = "probe";

/// Logs to the test output when `RUST_LOG` is set.
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// A broker for one test.
enum Broker {
    Embedded {
        port: u16,
    },
    Mosquitto {
        port: u16,
        child: Child,
        _dir: tempfile::TempDir,
    },
}

impl Broker {
    fn embedded() -> Broker {
        let v4: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let v5: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        ingest::broker::start_embedded_broker(v4, v5).expect("embedded broker starts");
        Broker::Embedded { port: v5.port() }
    }

    /// `None` (after saying so) when Mosquitto is not installed.
    fn mosquitto() -> Option<Broker> {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} not found: the tests run a real Mosquitto (`make test` installs it)"
        );
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mosquitto");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Broker::Mosquitto {
            port,
            child,
            _dir: dir,
        })
    }

    fn port(&self) -> u16 {
        match self {
            Broker::Embedded { port } | Broker::Mosquitto { port, .. } => *port,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Mosquitto { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Records every delivered sample; can hold one message forever and fail the first calls.
#[derive(Default)]
struct RecordingSink {
    stored: Mutex<Vec<(DeviceKey, Sample)>>,
    /// A message (by seq) whose store never completes.
    hold_seq: Option<u64>,
    /// This many first calls fail (retryable).
    fail_first: AtomicUsize,
    /// Extra latency of every call.
    delay: Duration,
}

#[async_trait]
impl PointSink for RecordingSink {
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        _received_at_ms: i64,
    ) -> Result<(), SinkError> {
        if device.device != PROBE {
            let failing = self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(SinkError::retryable("injected failure"));
            }
            if samples
                .iter()
                .any(|s| s.seq.is_some() && s.seq == self.hold_seq)
            {
                futures::future::pending::<()>().await;
            }
            tokio::time::sleep(self.delay).await;
        }
        let mut stored = self.stored.lock().unwrap();
        stored.extend(samples.iter().map(|s| (device.clone(), s.clone())));
        Ok(())
    }
}

impl RecordingSink {
    /// How many times each seq of `device` was stored.
    fn counts(&self, device: &str) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (key, sample) in self.stored.lock().unwrap().iter() {
            if key.device == device {
                *counts.entry(sample.seq.unwrap_or(u64::MAX)).or_default() += 1;
            }
        }
        counts
    }

    fn devices(&self) -> Vec<String> {
        let stored = self.stored.lock().unwrap();
        let mut devices: Vec<_> = stored.iter().map(|(k, _)| k.device.clone()).collect();
        devices.dedup();
        devices
    }
}

/// A running ingress.
struct Ingress {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ingest::IngestError>>,
}

impl Ingress {
    fn start(broker: &Broker, client_id: &str, sink: Arc<RecordingSink>) -> Ingress {
        let port = broker.port();
        let filters = match broker {
            Broker::Embedded { .. } => Some(ingest::broker::INGEST_FILTERS),
            Broker::Mosquitto { .. } => None,
        };
        init_tracing();
        let mut config = MqttIngestConfig::new("127.0.0.1", port, client_id);
        if let Some(filters) = filters {
            config.filters = filters.iter().map(|f| (*f).to_owned()).collect();
        }
        config.keep_alive = Duration::from_secs(5);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(ingest::mqtt::run(config, sink, stopped));
        Ingress { stop, task }
    }

    /// Graceful: drain, ack, disconnect.
    async fn shutdown(self) {
        self.stop.send_replace(true);
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("ingest stops in time")
            .expect("ingest task");
        result.expect("ingest returns Ok");
    }

    /// A crash: the connection drops with whatever is un-acked.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A device-side QoS 1 publisher.
struct Publisher {
    client: AsyncClient,
    acks: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<(String, String)>>>,
    _task: JoinHandle<()>,
}

impl Publisher {
    async fn connect(port: u16, id: &str) -> Publisher {
        let options = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let acks = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (acks.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let body = String::from_utf8_lossy(&p.payload).into_owned();
                        r.lock().unwrap().push((topic, body));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Publisher {
            client,
            acks,
            received,
            _task: task,
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue publish");
    }

    async fn wait_acks(&self, n: usize) {
        wait_until("broker PUBACKs", || self.acks.load(Ordering::SeqCst) >= n).await;
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes probes until the sink sees one: the ingress's subscription is then live.
async fn wait_subscribed(publisher: &Publisher, sink: &RecordingSink) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !sink.devices().iter().any(|d| d == PROBE) {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        let topic = format!("devices/{PROBE}/telemetry");
        publisher.publish(&topic, r#"{"probe": 1}"#).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn msg(seq: u64) -> String {
    format!(
        r#"{{"ts": {}, "seq": {seq}, "v": {seq}}}"#,
        1_700_000_000_000u64 + seq
    )
}

// ---- scenarios -----------------------------------------------------------------------

/// Valid messages reach the sink once each, invalid ones never; the device hears why; nothing
/// (poison included) is redelivered after a graceful restart.
async fn valid_and_invalid(broker: &Broker, client_id: &str) {
    let port = broker.port();
    let sink = Arc::new(RecordingSink::default());
    let ingress = Ingress::start(broker, client_id, sink.clone());
    let device = Publisher::connect(port, &format!("{client_id}-dev")).await;
    wait_subscribed(&device, &sink).await;
    device
        .client
        .subscribe("devices/d1/errors", QoS::AtMostOnce)
        .await
        .expect("subscribe errors");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let n = 50;
    for seq in 0..n {
        device.publish("devices/d1/telemetry", msg(seq)).await;
    }
    let invalid: [&[u8]; 4] = [
        b"{not json",
        b"42",
        br#"{"ts": "x", "v": 1}"#,
        &[b' '; 70_000],
    ];
    for payload in invalid {
        device.publish("devices/d1/telemetry", payload).await;
    }
    // A batch with one bad sample: the good one is kept.
    device
        .publish(
            "devices/d1/telemetry",
            format!(r#"[{}, {{"seq": 999, "v": null}}]"#, msg(n)),
        )
        .await;
    device.wait_acks(n as usize + 5).await;
    wait_until("all valid samples stored", || {
        sink.counts("d1").len() > n as usize
    })
    .await;
    wait_until("error reports", || {
        device.received.lock().unwrap().len() >= 5
    })
    .await;
    ingress.shutdown().await;

    let counts = sink.counts("d1");
    let want: BTreeMap<u64, usize> = (0..=n).map(|s| (s, 1)).collect();
    assert_eq!(counts, want, "each valid sample exactly once, nothing else");
    let reports = device.received.lock().unwrap().clone();
    for (reason, sample) in [
        ("malformed_json", None),
        ("not_an_object", None),
        ("bad_ts", Some(0)),
        ("oversized", None),
        ("bad_value", Some(1)),
    ] {
        let hit = reports.iter().any(|(topic, body)| {
            let v: serde_json::Value = serde_json::from_str(body).expect("report is JSON");
            topic == "devices/d1/errors"
                && v["reason"] == reason
                && v["sample"] == serde_json::json!(sample)
                && v["message"].as_str().is_some_and(|m| !m.is_empty())
        });
        assert!(hit, "report {reason} missing in {reports:?}");
    }

    // Everything was acknowledged: a restart with the same session gets nothing again.
    let sink2 = Arc::new(RecordingSink::default());
    let ingress = Ingress::start(broker, client_id, sink2.clone());
    wait_subscribed(&device, &sink2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink2.counts("d1"), BTreeMap::new(), "no redelivery");
    ingress.shutdown().await;
}

/// Message k never becomes durable: its ack and those of k+1.. are held, so after a crash and
/// a restart under the same client id the broker redelivers k.. and nothing before k.
async fn held_ack_redelivered_after_crash(broker: &Broker, client_id: &str) {
    let port = broker.port();
    let (n, k) = (30u64, 10u64);
    let sink = Arc::new(RecordingSink {
        hold_seq: Some(k),
        ..RecordingSink::default()
    });
    let ingress = Ingress::start(broker, client_id, sink.clone());
    let device = Publisher::connect(port, &format!("{client_id}-dev")).await;
    wait_subscribed(&device, &sink).await;
    for seq in 0..n {
        device.publish("devices/d2/telemetry", msg(seq)).await;
    }
    wait_until("all but the held message stored", || {
        sink.counts("d2").len() == n as usize - 1
    })
    .await;
    // Let the acks of 0..k reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ingress.kill().await;

    let sink2 = Arc::new(RecordingSink::default());
    let ingress = Ingress::start(broker, client_id, sink2.clone());
    wait_until("redelivery", || {
        sink2.counts("d2").len() >= (n - k) as usize
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redelivered: Vec<u64> = sink2.counts("d2").into_keys().collect();
    assert_eq!(
        redelivered,
        (k..n).collect::<Vec<_>>(),
        "exactly the held message and those after it come back"
    );
    ingress.shutdown().await;
}

/// A failing sink is retried until it succeeds; nothing is lost or acknowledged early.
async fn sink_failures_are_retried(broker: &Broker, client_id: &str) {
    let port = broker.port();
    let sink = Arc::new(RecordingSink {
        fail_first: AtomicUsize::new(5),
        ..RecordingSink::default()
    });
    let ingress = Ingress::start(broker, client_id, sink.clone());
    let device = Publisher::connect(port, &format!("{client_id}-dev")).await;
    wait_subscribed(&device, &sink).await;
    for seq in 0..20 {
        device
            .publish("tenants/acme/devices/d3/telemetry", msg(seq))
            .await;
    }
    wait_until("all stored", || sink.counts("d3").len() == 20).await;
    assert!(sink.counts("d3").values().all(|c| *c == 1));
    assert!(
        sink.stored
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.device == "d3")
            .all(|(k, _)| k.tenant == "acme")
    );
    ingress.shutdown().await;
}

/// Graceful shutdown while the store is slow: in-flight messages finish and are acked, the
/// rest come back on restart; no message is lost.
async fn graceful_shutdown_loses_nothing(broker: &Broker, client_id: &str) {
    let port = broker.port();
    let n = 40u64;
    let sink = Arc::new(RecordingSink {
        delay: Duration::from_millis(50),
        ..RecordingSink::default()
    });
    let ingress = Ingress::start(broker, client_id, sink.clone());
    let device = Publisher::connect(port, &format!("{client_id}-dev")).await;
    wait_subscribed(&device, &sink).await;
    for seq in 0..n {
        device.publish("devices/d4/telemetry", msg(seq)).await;
    }
    wait_until("some stored", || !sink.counts("d4").is_empty()).await;
    ingress.shutdown().await;
    let first = sink.counts("d4");

    let sink2 = Arc::new(RecordingSink::default());
    let ingress = Ingress::start(broker, client_id, sink2.clone());
    wait_until("the rest", || {
        let second = sink2.counts("d4");
        (0..n).all(|s| first.contains_key(&s) || second.contains_key(&s))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = sink2.counts("d4");
    // Acked in the first run means not redelivered in the second.
    let twice: Vec<_> = first.keys().filter(|s| second.contains_key(s)).collect();
    assert!(
        twice.is_empty(),
        "acked before shutdown yet redelivered: {twice:?}"
    );
    ingress.shutdown().await;
}

// ---- tests -----------------------------------------------------------------------------

macro_rules! against_both {
    ($scenario:ident, $embedded:ident, $mosquitto:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            let broker = Broker::embedded();
            $scenario(&broker, concat!("t05-", stringify!($embedded))).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $mosquitto() {
            let Some(broker) = Broker::mosquitto() else {
                return;
            };
            $scenario(&broker, concat!("t05-", stringify!($mosquitto))).await;
        }
    };
}

against_both!(
    valid_and_invalid,
    embedded_valid_and_invalid,
    mosquitto_valid_and_invalid
);
against_both!(
    held_ack_redelivered_after_crash,
    embedded_held_ack_redelivered_after_crash,
    mosquitto_held_ack_redelivered_after_crash
);
against_both!(
    sink_failures_are_retried,
    embedded_sink_failures_are_retried,
    mosquitto_sink_failures_are_retried
);
against_both!(
    graceful_shutdown_loses_nothing,
    embedded_graceful_shutdown_loses_nothing,
    mosquitto_graceful_shutdown_loses_nothing
);
