//! The daemon's optional HTTP listener: `GET /healthz` for liveness probes and `GET /metrics`
//! for Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::ConfigError;

/// What the handlers read: whether the scheduler is running, and the metrics text.
pub trait Status: Send + Sync + 'static {
    fn healthy(&self) -> bool;
    fn metrics(&self) -> String;
}

/// Serve until `stop` resolves. Binding happens before this returns, so a bad address is an
/// error at start, not a log line later.
pub async fn serve<S: Status>(
    addr: SocketAddr,
    status: Arc<S>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::Daemon(format!("cannot listen on {addr}: {e}")))?;
    // The bound address: with port 0 the system picked one, and this says which.
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving /healthz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(status);
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %err, "HTTP listener failed");
        }
    }))
}

async fn healthz<S: Status>(State(status): State<Arc<S>>) -> impl IntoResponse {
    if status.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics<S: Status>(State(status): State<Arc<S>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        status.metrics(),
    )
}

/// A flag the daemon clears when it starts shutting down.
#[derive(Default)]
pub struct Health(AtomicBool);

impl Health {
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
