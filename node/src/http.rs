//! The admin HTTP port: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (the control plane has a leader). No user data is served here.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::raft::ControlPlane;

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: ControlPlane,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(control);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics() -> String {
    crate::telemetry::prometheus().render()
}

async fn ready(State(control): State<ControlPlane>) -> (StatusCode, &'static str) {
    if control.status().leader.is_some() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no raft leader\n")
    }
}
