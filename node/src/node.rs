//! Wires the layers into a running node: `run(listeners, config, shutdown)`.
//!
//! Start order: store → control plane → peer server → cluster loops (join, register,
//! leases) → device router → gRPC and HTTP servers → MQTT ingest. Stop order is the reverse,
//! so nothing is acknowledged that is not stored: ingest stops taking messages and drains its
//! in-flight acks first, then the servers and cluster loops stop, then actors, then the store
//! closes and Raft shuts down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::api::{self, ApiState};
use crate::cluster::forward::{ClusterSink, Forwarder};
use crate::cluster::peers::Peers;
use crate::cluster::service::{ControlService, DataService};
use crate::cluster::{Cluster, ClusterSettings};
use crate::config::NodeConfig;
use crate::device::{DeviceRouter, DeviceSettings};
use crate::ingest::{self, PointSink};
use crate::raft::network::NetworkFactory;
use crate::raft::{ControlPlane, OpenOptions, Start};
use crate::storage::TelemetryStore;
use crate::storage::embedded::EmbeddedOptions;
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
    #[error("notify: {0}")]
    Notify(String),
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
    /// Peer gRPC (Raft, forwarding; mTLS with node certificates). `None` for a cluster of
    /// one, which has no peers.
    pub peer: Option<TcpListener>,
}

/// How this node takes part in the cluster.
pub struct ClusterOptions {
    pub start: Start,
    pub settings: ClusterSettings,
    /// The node certificate and cluster CA for the peer port; required unless
    /// `start` is [`Start::Single`].
    pub peer_tls: Option<tls::PeerTls>,
    /// Rescue the broker sessions of nodes marked down when named rescuer (DESIGN.md §5).
    pub rescue_sessions: bool,
}

/// Runs a node until `shutdown` resolves, then stops gracefully.
pub async fn run(
    listeners: Listeners,
    config: NodeConfig,
    cluster: ClusterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    config.validate()?;
    tls::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir).map_err(io("create data dir"))?;
    let ClusterOptions {
        start,
        settings,
        peer_tls,
        rescue_sessions,
    } = cluster;
    let client_tls = match (&peer_tls, &start) {
        (Some(t), _) => t.client_config(),
        (None, Start::Single) => tonic::transport::ClientTlsConfig::new(),
        (None, _) => return Err(NodeError::Tls("a cluster node needs peer TLS".into())),
    };

    let store = open_store(&config).await?;
    let joining = matches!(start, Start::Join);
    let control = ControlPlane::open(OpenOptions {
        dir: config.data_dir.join("raft"),
        node_id: config.node_id,
        peer_addr: settings.peer_addr.clone(),
        shards: config.shards,
        network: NetworkFactory::new(client_tls.clone()),
        start,
    })
    .await?;
    let peers = Peers::new(client_tls);
    let cluster =
        Cluster::new(control.clone(), settings, peers.clone()).map_err(io("open the lease log"))?;
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

    // The peer port first: Raft, joins and forwarded points arrive there.
    let peer_server = match (listeners.peer, &peer_tls) {
        (Some(listener), Some(t)) => {
            let check = tls::require_node_cert as crate::raft::network::server::NodeCertCheck;
            let control_svc =
                starling_proto::peer::control_server::ControlServer::new(ControlService {
                    cluster: cluster.clone(),
                });
            let data_svc = starling_proto::peer::data_server::DataServer::new(DataService {
                cluster: cluster.clone(),
                router: router.clone(),
                store: store.clone(),
            })
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
            let server = tonic::transport::Server::builder()
                .tls_config(t.server_config())?
                .add_service(crate::raft::network::server::raft_routes(
                    control.raft().clone(),
                    control.contact().clone(),
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    control_svc,
                    check,
                ))
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    data_svc, check,
                ))
                .serve_with_incoming_shutdown(incoming(listener), stopped(stop_rx.clone()));
            Some(tokio::spawn(server))
        }
        (None, _) => None,
        (Some(_), None) => return Err(NodeError::Tls("the peer port needs peer TLS".into())),
    };
    if joining && !control.raft().is_initialized().await.unwrap_or(false) {
        cluster
            .join(stop_rx.clone())
            .await
            .map_err(NodeError::Ingest)?;
    }
    let mut background = cluster.start(stop_rx.clone());
    background.push(tokio::spawn(stop_released_actors(
        cluster.clone(),
        router.clone(),
        stop_rx.clone(),
    )));
    // Actors for recorded timers of gained shards, and for open alarms of changed rules.
    let route_cluster = cluster.clone();
    let route: crate::device::wake::RouteFn = Arc::new(move |d| match route_cluster.route(d) {
        crate::cluster::Route::Local { epoch } => Some(epoch),
        _ => None,
    });
    background.push(tokio::spawn(crate::device::wake::run(
        router.clone(),
        control.clone(),
        route,
        cluster.me(),
        config.shards,
        stop_rx.clone(),
    )));

    let cluster_sink: Arc<dyn PointSink> = Arc::new(ClusterSink {
        cluster: cluster.clone(),
        router: router.clone(),
        forwarder: Forwarder::new(peers),
    });
    // Only registered devices pass (or are provisioned): MQTT, gRPC publish and rescued
    // sessions alike. Forwarded batches were checked by the node that received them.
    let sink: Arc<dyn PointSink> = Arc::new(crate::cluster::provision::ProvisionSink::new(
        cluster_sink,
        control.clone(),
        config.auto_provision,
    ));
    let server_tls = tls::server_tls_from_files(&config.tls_ca, &config.tls_cert, &config.tls_key)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    let state = ApiState {
        router: router.clone(),
        sink: sink.clone(),
        cluster: cluster.clone(),
        reads: crate::cluster::reads::Reads {
            cluster: cluster.clone(),
            store: store.clone(),
            // A replicated store holds every node's writes: reads stay local.
            routed: config.storage.engine == crate::config::storage::Engine::Embedded,
        },
        store: store.clone(),
        control: control.clone(),
        limits: ingest::payload::Limits {
            max_ts_future_ms: config.max_ts_future.map(duration_ms),
            max_ts_age_ms: config.max_ts_age.map(duration_ms),
            ..Default::default()
        },
        stop: stop_rx.clone(),
    };
    let grpc = tonic::transport::Server::builder()
        .tls_config(server_tls)?
        .add_routes(api::routes(state))
        .serve_with_incoming_shutdown(incoming(listeners.grpc), stopped(stop_rx.clone()));
    let grpc = tokio::spawn(grpc);
    let (host, port) = split_host_port(&config.broker)?;
    let mqtt_cfg = ingest::mqtt::MqttIngestConfig {
        max_in_flight: config.mqtt_in_flight,
        max_payload_bytes: config.max_payload_bytes,
        filters: config.mqtt_filters.clone(),
        max_ts_future: config.max_ts_future,
        max_ts_age: config.max_ts_age,
        credentials: config.mqtt_credentials.clone(),
        ..ingest::mqtt::MqttIngestConfig::new(host, port, config.mqtt_client_id.clone())
    };
    // Only for the node's own ingest: a rescue (below) drains another node's session.
    let own_ingest = ingest::mqtt::MqttIngestConfig {
        unsubscribe: Some(crate::cluster::leave::unsubscribe_when_removed(
            cluster.clone(),
            stop_rx.clone(),
        )),
        ..mqtt_cfg.clone()
    };
    let http = tokio::spawn(crate::http::serve(
        listeners.http,
        control.clone(),
        mqtt_cfg.health.clone(),
        stopped(stop_rx.clone()),
    ));
    if rescue_sessions {
        background.push(tokio::spawn(crate::cluster::rescue::run(
            cluster.clone(),
            sink.clone(),
            mqtt_cfg.clone(),
            stop_rx.clone(),
        )));
    }
    let notify = crate::notify::start(
        crate::notify::NotifyOptions {
            control: control.clone(),
            node_id: config.node_id,
            shards: config.shards,
            config: config.notify.clone(),
            mqtt: crate::notify::mqtt::PublisherConfig {
                host: mqtt_cfg.host.clone(),
                port: mqtt_cfg.port,
                client_id: format!("{}-notify", config.mqtt_client_id),
                credentials: config.mqtt_credentials.clone(),
            },
        },
        stop_rx.clone(),
    )
    .map_err(|e| NodeError::Notify(e.to_string()))?;
    background.extend(notify);
    if config.retention.deletes_anything() {
        background.push(tokio::spawn(crate::storage::sweeper::run(
            store.clone(),
            config.retention.policy(),
            config.retention.interval,
            stop_rx.clone(),
        )));
    }
    let ingest = tokio::spawn(ingest::mqtt::run(own_ingest, sink, stop_rx.clone()));

    tracing::info!(node = config.node_id, "node running");
    let failed = tokio::select! {
        // Asked to stop.
        _ = shutdown => None,
        // The control plane stopped on an error (a full disk, say): without it this node can
        // neither serve nor follow rule changes, so it stops and exits non-zero, and its
        // supervisor restarts it once the cause is fixed.
        reason = control_plane_failed(control.clone()) => Some(reason),
    };
    match &failed {
        None => tracing::info!("shutting down: draining ingest"),
        Some(reason) => tracing::error!(%reason, "control plane stopped: shutting the node down"),
    }
    let _ = stop_tx.send(true);
    // Live subscriptions end now: open streams would hold up the servers' graceful stop.
    router.live().close();

    let mut result = match failed {
        None => Ok(()),
        Some(reason) => Err(NodeError::Control(crate::raft::ControlError::fatal(reason))),
    };
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
    for task in background {
        let _ = task.await;
    }
    if let Some(peer) = peer_server
        && let Ok(Err(e)) = peer.await
    {
        tracing::warn!(error = %e, "peer server stopped with an error");
    }
    router.stop_all();
    store.close().await;
    control.shutdown().await;
    tracing::info!("stopped");
    result
}

/// Stops the actors of shards this node no longer serves.
async fn stop_released_actors(
    cluster: Cluster,
    router: DeviceRouter,
    mut stop: watch::Receiver<bool>,
) {
    let mut released = cluster.subscribe_released();
    loop {
        tokio::select! {
            // Shards released by a move or a lost lease.
            r = released.recv() => match r {
                Ok(shards) => router.stop_shards(&shards),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            // Node shutdown.
            _ = crate::cluster::stopped(&mut stop) => break,
        }
    }
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

/// How often the node checks whether openraft stopped on a fatal error.
const CONTROL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Resolves when openraft has stopped on a fatal error, with the error; never otherwise.
async fn control_plane_failed(control: ControlPlane) -> String {
    // Polled, not woken by every metrics change: those come with every append and ack.
    let mut tick = tokio::time::interval(CONTROL_CHECK_EVERY);
    loop {
        tick.tick().await;
        if let Err(fatal) = &control.raft().metrics().borrow().running_state {
            return fatal.to_string();
        }
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
    config.storage.embedded.backend = args.store_backend;
    config.max_ts_future = args.max_ts_future.map(Into::into);
    config.max_ts_age = args.max_ts_age.map(Into::into);
    if let Some(f) = filters {
        config.mqtt_filters = f;
    }
    if let Some(path) = &args.notify_config {
        config.notify = crate::config::notify::load_file(path).map_err(|problem| {
            NodeError::Config(crate::config::ConfigError {
                field: "notify",
                problem,
            })
        })?;
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
    let cluster = ClusterOptions {
        start: Start::Single,
        settings: ClusterSettings::single(
            config.shards,
            grpc_addr.to_string(),
            grpc_addr.to_string(),
            config.mqtt_client_id.clone(),
        ),
        peer_tls: None,
        rescue_sessions: false,
    };
    run(
        Listeners {
            grpc,
            http,
            peer: None,
        },
        config,
        cluster,
        shutdown_signal(),
    )
    .await
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

/// The telemetry store `[storage]` selects: the embedded one under `data_dir/store` (on the
/// `[storage.embedded] backend` engine; refused if the other engine's files are there, or
/// for fjall in the power-loss fault mode), or a session to ScyllaDB (which creates or
/// migrates its schema before the node serves).
async fn open_store(config: &NodeConfig) -> Result<Arc<dyn TelemetryStore>, NodeError> {
    use crate::config::storage::Engine;
    let store: Arc<dyn TelemetryStore> = match config.storage.engine {
        Engine::Embedded => crate::storage::backend::open(
            &config.data_dir.join("store"),
            config.storage.embedded.backend,
            EmbeddedOptions::default(),
        )?,
        Engine::Scylla => {
            let options = config.storage.scylla.options();
            tracing::info!(nodes = ?options.nodes, keyspace = %options.keyspace, "connecting to ScyllaDB");
            crate::storage::scylla::ScyllaStore::connect(options).await?
        }
    };
    Ok(store)
}

/// Accepted connections of a gRPC listener, with Nagle's algorithm off. `serve_with_incoming`
/// ignores the server builder's `tcp_nodelay`, so it is set here; without it a small reply (a
/// Raft AppendEntries acknowledgement, a forwarded write's answer) can wait for the peer's
/// delayed ACK, tens of milliseconds on every round trip.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// `starling serve`: a production node from a validated [`ServeConfig`], in the foreground
/// until SIGINT or SIGTERM.
///
/// [`ServeConfig`]: crate::config::serve::ServeConfig
pub async fn run_serve(config: crate::config::serve::ServeConfig) -> Result<(), NodeError> {
    tls::install_crypto_provider();
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(io(format!("bind {what} port {addr}")))
    };
    let peer = bind(config.listen.peer, "peer").await?;
    let grpc = bind(config.listen.client, "client gRPC").await?;
    let http = bind(config.listen.http, "HTTP").await?;
    let peer_tls = tls::PeerTls::from_files(&config.tls.ca, &config.tls.cert, &config.tls.key)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    if config.mqtt.connections > 1 {
        return Err(NodeError::Ingest(format!(
            "mqtt.connections = {}: more than one ingest connection per node is not supported \
             yet; set it to 1",
            config.mqtt.connections
        )));
    }
    let c = &config.cluster;
    let start = if !c.bootstrap.is_empty() {
        Start::Bootstrap(c.bootstrap.iter().map(|v| (v.id, v.peer.clone())).collect())
    } else {
        Start::Join
    };
    let settings = ClusterSettings {
        heartbeat: c.heartbeat,
        lease: c.lease,
        failure_timeout: c.failure_timeout,
        drift_margin: c.drift_margin,
        max_voters: usize::from(c.max_voters),
        shards: c.shards,
        peer_addr: config.advertise_peer(),
        client_addr: config.advertise_client(),
        mqtt_client_id: config.mqtt_client_id(),
        join: c.join.clone(),
        lease_log: Some(config.data_dir.join("leases.log")),
    };
    tracing::info!(
        node = config.node_id,
        peer = %config.listen.peer,
        client = %config.listen.client,
        http = %config.listen.http,
        broker = %config.mqtt.broker,
        "starting"
    );
    run(
        Listeners {
            grpc,
            http,
            peer: Some(peer),
        },
        config.to_node_config(),
        ClusterOptions {
            start,
            settings,
            peer_tls: Some(peer_tls),
            rescue_sessions: config.mqtt.rescue,
        },
        shutdown_signal(),
    )
    .await
}
