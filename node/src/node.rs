//! Wires the layers into a running node: `run(listeners, config, shutdown)`.
//!
//! Start order: store → control plane → device router → gRPC and HTTP servers → MQTT ingest.
//! Stop order is the reverse, so nothing is acknowledged that is not stored: ingest stops
//! taking messages and drains its in-flight acks first, then the servers stop, then actors,
//! then the store closes and Raft shuts down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::{self, ApiState};
use crate::config::NodeConfig;
use crate::device::{DeviceRouter, DeviceSettings};
use crate::ingest::{self, PointSink, SinkError};
use crate::model::{DeviceKey, Sample};
use crate::raft::ControlPlane;
use crate::storage::TelemetryStore;
use crate::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::{certs, tls};

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("control plane: {0}")]
    Control(#[from] crate::raft::ControlError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("certificates: {0}")]
    Certs(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("ingest: {0}")]
    Ingest(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// Longest wait for ingest to drain at shutdown.
const INGEST_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The sockets a node serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// Public gRPC API (TLS, client certificates required).
    pub grpc: TcpListener,
    /// Admin HTTP: /metrics, /healthz, /readyz.
    pub http: TcpListener,
}

/// Runs a node until `shutdown` resolves, then stops gracefully.
pub async fn run(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    config.validate()?;
    tls::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir).map_err(io("create data dir"))?;

    let store: Arc<dyn TelemetryStore> =
        EmbeddedStore::open(&config.data_dir.join("store"), EmbeddedOptions::default())?;
    let peer_addr = listeners
        .grpc
        .local_addr()
        .map_err(io("grpc listener address"))?
        .to_string();
    let control = ControlPlane::open_single(
        &config.data_dir.join("raft"),
        config.node_id,
        &peer_addr,
        config.shards,
    )
    .await?;
    let router = DeviceRouter::new(
        store.clone(),
        control.clone(),
        DeviceSettings {
            idle_timeout: config.idle_timeout,
            shards: config.shards,
        },
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let server_tls = tls::server_tls_from_files(&config.tls_ca, &config.tls_cert, &config.tls_key)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let state = ApiState {
        router: router.clone(),
        store: store.clone(),
        control: control.clone(),
        limits: ingest::payload::Limits {
            max_ts_future_ms: config.max_ts_future.map(duration_ms),
            max_ts_age_ms: config.max_ts_age.map(duration_ms),
            ..Default::default()
        },
    };
    let grpc = tonic::transport::Server::builder()
        .tls_config(server_tls)?
        .add_routes(api::routes(state))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(listeners.grpc),
            stopped(stop_rx.clone()),
        );
    let grpc = tokio::spawn(grpc);
    let (host, port) = split_host_port(&config.broker)?;
    let mqtt_cfg = ingest::mqtt::MqttIngestConfig {
        max_in_flight: config.mqtt_in_flight,
        max_payload_bytes: config.max_payload_bytes,
        filters: config.mqtt_filters.clone(),
        max_ts_future: config.max_ts_future,
        max_ts_age: config.max_ts_age,
        ..ingest::mqtt::MqttIngestConfig::new(host, port, config.mqtt_client_id.clone())
    };
    let http = tokio::spawn(crate::http::serve(
        listeners.http,
        control.clone(),
        mqtt_cfg.health.clone(),
        stopped(stop_rx.clone()),
    ));
    let sink: Arc<dyn PointSink> = Arc::new(RouterSink(router.clone()));
    let ingest = tokio::spawn(ingest::mqtt::run(mqtt_cfg, sink, stop_rx.clone()));

    tracing::info!(node = config.node_id, "node running");
    shutdown.await;
    tracing::info!("shutting down: draining ingest");
    let _ = stop_tx.send(true);

    let mut result = Ok(());
    // Ingest finishes its in-flight messages and acks them; a store that hangs must not hang
    // the stop forever (what is not acked is redelivered by the broker).
    match tokio::time::timeout(INGEST_DRAIN_TIMEOUT, ingest).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => result = Err(NodeError::Ingest(e.to_string())),
        Ok(Err(e)) => result = Err(NodeError::Ingest(format!("ingest task failed: {e}"))),
        Err(_) => tracing::warn!(
            "ingest did not drain in {INGEST_DRAIN_TIMEOUT:?}; unacked messages will be redelivered"
        ),
    }
    if let Ok(Err(e)) = grpc.await {
        tracing::warn!(error = %e, "grpc server stopped with an error");
    }
    if let Ok(Err(e)) = http.await {
        tracing::warn!(error = %e, "http server stopped with an error");
    }
    router.stop_all();
    store.close().await;
    control.shutdown().await;
    tracing::info!("stopped");
    result
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn split_host_port(addr: &str) -> Result<(String, u16), NodeError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| NodeError::Ingest(format!("broker address {addr:?} is not host:port")))?;
    let port = port
        .parse()
        .map_err(|_| NodeError::Ingest(format!("broker port in {addr:?} is not a number")))?;
    Ok((host.to_owned(), port))
}

/// Ingest's view of the device router.
struct RouterSink(DeviceRouter);

#[async_trait]
impl PointSink for RouterSink {
    async fn ingest(
        &self,
        device: DeviceKey,
        samples: Arc<[Sample]>,
        received_at_ms: i64,
    ) -> Result<(), SinkError> {
        self.0
            .ingest(device, samples, received_at_ms)
            .await
            .map(|_| ())
            .map_err(|e| SinkError {
                retryable: e.is_retryable(),
                message: e.to_string(),
            })
    }
}

/// `starling dev`: one node with an embedded broker (unless `--broker`), embedded store and
/// dev certificates, in the foreground until SIGINT or SIGTERM.
pub async fn run_dev(args: crate::cli::DevArgs) -> Result<(), NodeError> {
    let data_dir: PathBuf = args.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(io(format!("create {}", data_dir.display())))?;
    let bind = args.bind.clone();
    let grpc = TcpListener::bind((bind.as_str(), args.grpc_port))
        .await
        .map_err(io(format!("bind gRPC port {bind}:{}", args.grpc_port)))?;
    let http = TcpListener::bind((bind.as_str(), args.http_port))
        .await
        .map_err(io(format!("bind HTTP port {bind}:{}", args.http_port)))?;
    let grpc_addr = grpc.local_addr().map_err(io("gRPC address"))?;
    let http_addr = http.local_addr().map_err(io("HTTP address"))?;

    let endpoint = format!("https://127.0.0.1:{}", grpc_addr.port());
    let pki =
        certs::ensure_dev_pki(&data_dir, &endpoint).map_err(|e| NodeError::Certs(e.to_string()))?;

    // With the embedded broker the ingress subscribes without `$share` (see ingest::broker).
    let mut filters: Option<Vec<String>> = None;
    let broker_line: String;
    let broker = match &args.broker {
        Some(b) => {
            broker_line = format!("{b} (external)");
            b.clone()
        }
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let v4: SocketAddr = ([127, 0, 0, 1], args.mqtt_port).into();
                let v5: SocketAddr = ([127, 0, 0, 1], mqtt5_port(&args)).into();
                let embedded = ingest::broker::start_embedded_broker(v4, v5)
                    .map_err(|e| NodeError::Ingest(e.to_string()))?;
                filters = Some(
                    ingest::broker::INGEST_FILTERS
                        .iter()
                        .map(|f| (*f).to_owned())
                        .collect(),
                );
                broker_line = format!(
                    "{} (MQTT 3.1.1) and {} (MQTT 5), embedded",
                    embedded.v4_addr(),
                    embedded.v5_addr()
                );
                embedded.v5_addr().to_string()
            }
            #[cfg(not(feature = "embedded-broker"))]
            {
                return Err(NodeError::Ingest(
                    "this build has no embedded broker: pass --broker host:port".into(),
                ));
            }
        }
    };

    let mut config = NodeConfig::new(args.node_id, data_dir.clone(), broker.clone());
    config.idle_timeout = args.idle_timeout.into();
    config.max_ts_future = args.max_ts_future.map(Into::into);
    config.max_ts_age = args.max_ts_age.map(Into::into);
    if let Some(f) = filters {
        config.mqtt_filters = f;
    }
    println!("Starling dev node {}", env!("CARGO_PKG_VERSION"));
    println!("  data dir       {}", data_dir.display());
    println!("  MQTT broker    {broker_line}");
    println!("  gRPC (TLS)     {grpc_addr}");
    println!("  HTTP admin     http://{http_addr}/metrics  /healthz");
    println!("  client profile {}", pki.profile.display());
    println!(
        "  try: mosquitto_pub -p {} -q 1 -t devices/truck-1/telemetry -m '{{\"temp\": 21.5}}'",
        args.broker
            .as_deref()
            .and_then(|b| b.rsplit_once(':'))
            .map(|(_, p)| p.to_owned())
            .unwrap_or_else(|| args.mqtt_port.to_string())
    );
    println!(
        "       starling telemetry query --profile {} --device truck-1 --format json",
        pki.profile.display()
    );
    run(Listeners { grpc, http }, config, shutdown_signal()).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            // Ctrl-C in a terminal.
            _ = ctrl_c => {}
            // kill, systemd, docker stop.
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The embedded broker's MQTT 5 port: `--mqtt5-port`, else the MQTT 3.1.1 port + 1.
#[cfg(feature = "embedded-broker")]
fn mqtt5_port(args: &crate::cli::DevArgs) -> u16 {
    args.mqtt5_port
        .unwrap_or_else(|| args.mqtt_port.saturating_add(1))
}
