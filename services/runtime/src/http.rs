//! The plaintext HTTP port for kubelet probes and Prometheus: `/livez`, `/readyz` and
//! `/metrics`. It carries no API data.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::health::Readiness;

#[derive(Clone)]
struct HttpState {
    readiness: Arc<Readiness>,
    registry: Arc<Registry>,
}

/// Serves the port on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    registry: Arc<Registry>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let served = axum::serve(listener, router(readiness, registry))
        .with_graceful_shutdown(stop)
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "HTTP server failed");
    }
}

fn router(readiness: Arc<Readiness>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HttpState {
            readiness,
            registry,
        })
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let problems = state.readiness.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
