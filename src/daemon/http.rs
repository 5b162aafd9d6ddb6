//! The daemon's optional HTTP listener: `GET /healthz` for liveness probes, `GET /metrics`
//! for Prometheus, and the status page for people (`GET /`, `GET /jobs/NAME`, see
//! [`crate::status::page`]).
//!
//! It shares the daemon's process, threads and file descriptors with scheduling, so no client
//! can take more than its share: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed as they arrive), request headers bounded in size ([`MAX_HEADER_BYTES`]) and in time
//! ([`HEADER_TIMEOUT`]: a client trickling a header byte every few seconds is cut off), request
//! bodies refused unread, and each connection closed after [`CONNECTION_LIFETIME`]. That is why
//! it serves connections with hyper itself: `axum::serve` sets no timer (so hyper's header
//! timeout never fires) and accepts without limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::ConfigError;
use crate::status::page::CONTENT_SECURITY_POLICY_HEADER;
use crate::status::pages::Pages;

/// Connections served at once; more are closed as they are accepted.
const MAX_CONNECTIONS: usize = 512;
/// The time a client has to send a request's whole header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a request's header may hold (hyper's smallest buffer).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The longest a connection stays open, however busy (a scraper simply connects again).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What the handlers read: whether the scheduler is running, the metrics text, and the status
/// page's makings.
pub trait Status: Send + Sync + 'static {
    fn healthy(&self) -> bool;
    fn metrics(&self) -> String;
    /// `None` where the daemon has no page to serve (its tests).
    fn pages(&self) -> Option<&Pages>;
}

/// Serve until `stop` resolves. Binding happens before this returns, so a bad address is an
/// error at start, not a log line later.
pub async fn serve<S: Status>(
    addr: SocketAddr,
    status: Arc<S>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::Daemon(format!("cannot listen on {addr}: {e}")))?;
    // The bound address: with port 0 the system picked one, and this says which.
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving the status page, /healthz and /metrics");
    let app = Router::new()
        .route("/", get(overview::<S>))
        .route("/jobs/{name}", get(job::<S>))
        .route("/jobs/{name}/shards/{index}", get(shard::<S>))
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics::<S>))
        .fallback(not_found)
        .layer(middleware::from_fn(refuse_bodies))
        .with_state(status);
    Ok(tokio::spawn(accept(listener, app, stop)))
}

/// Accept connections until `stop`, each served on a task of its own within the limits above;
/// at `stop`, the open ones are closed.
async fn accept(listener: TcpListener, app: Router, stop: impl std::future::Future<Output = ()>) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let socket = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            tracing::debug!("too many HTTP connections: closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES);
            let served = http.serve_connection(TokioIo::new(socket), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, served).await;
        });
    }
    connections.shutdown().await;
}

/// Every route is a GET without a body: a request that sends one is refused unread, and its
/// connection closed, so no client makes the daemon read or hold a body.
async fn refuse_bodies(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "request bodies are not accepted\n",
        )
            .into_response();
    }
    next.run(request).await
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

/// `?refresh=SECONDS`: how often a page reloads itself (0: never); every 30 s by default.
#[derive(serde::Deserialize)]
struct PageQuery {
    refresh: Option<u32>,
}

const DEFAULT_REFRESH: u32 = 30;

async fn overview<S: Status>(
    State(status): State<Arc<S>>,
    Query(query): Query<PageQuery>,
) -> Response {
    let refresh = query.refresh.unwrap_or(DEFAULT_REFRESH);
    match status.pages() {
        Some(pages) => html(pages.overview(refresh).await.map(Some)),
        None => html(Ok(None)),
    }
}

async fn job<S: Status>(
    State(status): State<Arc<S>>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let refresh = query.refresh.unwrap_or(DEFAULT_REFRESH);
    match status.pages() {
        Some(pages) => html(pages.job(&name, None, refresh).await),
        None => html(Ok(None)),
    }
}

async fn shard<S: Status>(
    State(status): State<Arc<S>>,
    Path((name, index)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    // Not a shard's number: no such page, like a number past the job's shards.
    let Ok(index) = index.parse::<u32>() else {
        return not_found().await.into_response();
    };
    let refresh = query.refresh.unwrap_or(DEFAULT_REFRESH);
    match status.pages() {
        Some(pages) => html(pages.job(&name, Some(index), refresh).await),
        None => html(Ok(None)),
    }
}

/// A page, with headers that keep it to itself: nothing fetched, framed, sniffed or cached.
fn html(page: anyhow::Result<Option<String>>) -> Response {
    match page {
        Ok(Some(page)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    CONTENT_SECURITY_POLICY_HEADER,
                ),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            page,
        )
            .into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            "no such job or shard in the jobs directory\n",
        )
            .into_response(),
        Err(err) => {
            // The reason goes to the log, not to whoever asked.
            tracing::warn!(error = %format!("{err:#}"), "could not make the status page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the status page could not be made; the daemon's log says why\n",
            )
                .into_response()
        }
    }
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
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
