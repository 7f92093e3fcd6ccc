//! The admin HTTP port: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (the control plane has a leader and MQTT ingest is subscribed, so a point
//! published now is received). No user data is served here.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::ingest::IngestHealth;
use crate::raft::ControlPlane;

/// What readiness looks at.
#[derive(Clone)]
struct Ready {
    control: ControlPlane,
    ingest: IngestHealth,
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: ControlPlane,
    ingest: IngestHealth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Ready { control, ingest });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics() -> String {
    crate::telemetry::prometheus().render()
}

async fn ready(State(r): State<Ready>) -> (StatusCode, &'static str) {
    if r.control.status().leader.is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no raft leader\n")
    } else if !r.ingest.is_subscribed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "mqtt ingest not subscribed\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}
