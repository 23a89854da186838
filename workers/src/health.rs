//! The worker's health server: `/health` (alive), `/ready` (Redis and MongoDB
//! reachable, not draining) and `/metrics` (Prometheus text).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use lucid_jobs::handlers::JobContext;

#[derive(Clone)]
pub(crate) struct HealthState {
    pub ctx: JobContext,
    pub worker: String,
    pub draining: Arc<AtomicBool>,
}

pub(crate) fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(s): State<HealthState>) -> impl IntoResponse {
    if s.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining".to_string());
    }
    let redis = s.ctx.queue.ping().await.is_ok();
    let mongo = s.ctx.db.ping().await.is_ok();
    let body = format!(
        "worker={} redis={} mongodb={}",
        s.worker,
        up(redis),
        up(mongo)
    );
    let code = if redis && mongo {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn up(ok: bool) -> &'static str {
    if ok { "up" } else { "down" }
}

async fn metrics(State(s): State<HealthState>) -> impl IntoResponse {
    let out = lucid_jobs::metrics::render(&s.ctx.queue).await;
    ([("content-type", "text/plain; version=0.0.4")], out)
}

/// `lucid-worker healthcheck`: exit 0 when the local worker is ready.
pub(crate) async fn probe(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "not ready: {response}"
    );
    Ok(())
}
