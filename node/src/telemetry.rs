//! Tracing and metrics setup for the process: `tracing` logs to stderr, OpenTelemetry traces
//! exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and a Prometheus recorder for
//! the `metrics` facade (rendered by the admin port's `/metrics`).
//!
//! Call [`init`] once at the start of a server process; keep the guard until exit so spans
//! are flushed.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log filter when `RUST_LOG` is unset: our own info, only warnings from the chatty
/// libraries (openraft logs every election step at info, rumqttd every connection).
const DEFAULT_FILTER: &str = "info,openraft=warn,rumqttd=warn";

/// Flushes and shuts down the OpenTelemetry pipeline when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("opentelemetry shutdown: {e}");
        }
    }
}

/// Installs the global tracing subscriber (filter from `RUST_LOG`, default `DEFAULT_FILTER`) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OTLP span exporter. Also installs the Prometheus
/// recorder. Safe to call more than once (later calls only return a guard).
pub fn init(service: &'static str) -> TelemetryGuard {
    prometheus();
    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service)
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                eprintln!("OTLP exporter not started: {e}");
                None
            }
        }
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    TelemetryGuard { provider }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already; then ours renders nothing
        // but the process keeps working.
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!("a metrics recorder was already installed");
        }
        handle
    })
}
