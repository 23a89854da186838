//! HTTP routes.

mod batches;
mod health;
mod jobs;
mod nodes;
mod payouts;
mod pools;
mod poot;
mod resources;
mod scaling;
mod schedules;

use axum::{
    Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{
    error::{ApiError, codes},
    state::AppState,
};

pub use batches::*;
pub use health::*;
pub use jobs::*;
pub use nodes::*;
pub use payouts::*;
pub use pools::*;
pub use poot::*;
pub use resources::*;
pub use scaling::*;
pub use schedules::*;

/// Routes with the default body limit.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/batches", get(batches::list_batches))
        .route("/api/v1/batches/{batch_id}", get(batches::get_batch))
        .route("/dashboard", get(dashboard))
        .route("/dashboard/app.js", get(dashboard_js))
        .route("/api/v1/batches/{batch_id}/items", get(batches::list_items))
        .route(
            "/api/v1/batches/{batch_id}/cancel",
            post(batches::cancel_batch),
        )
        .route("/api/v1/jobs/{job_id}", get(jobs::get_job))
        .route("/api/v1/jobs/{job_id}/retry", post(jobs::retry_job))
        .route("/api/v1/queues", get(jobs::list_queues))
        .route("/api/v1/queues/{queue}/dead", get(jobs::list_dead))
        .route(
            "/api/v1/nodes",
            get(nodes::list_nodes).post(nodes::create_node),
        )
        .route(
            "/api/v1/nodes/",
            get(nodes::list_nodes).post(nodes::create_node),
        )
        .route(
            "/api/v1/nodes/{node_id}",
            get(nodes::get_node)
                .put(nodes::update_node)
                .delete(nodes::delete_node),
        )
        .route("/api/v1/nodes/{node_id}/start", post(nodes::start_node))
        .route("/api/v1/nodes/{node_id}/stop", post(nodes::stop_node))
        .route("/api/v1/nodes/{node_id}/status", get(nodes::node_status))
        .route(
            "/api/v1/nodes/{node_id}/resources",
            get(resources::latest_resources).post(resources::report_resources),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/metrics",
            get(resources::resource_metrics),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/cpu",
            get(resources::cpu_resources),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/memory",
            get(resources::memory_resources),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/disk",
            get(resources::disk_resources),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/network",
            get(resources::network_resources),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/alerts",
            get(resources::list_alerts),
        )
        .route(
            "/api/v1/nodes/{node_id}/resources/thresholds",
            post(resources::set_thresholds),
        )
        .route(
            "/api/v1/nodes/{node_id}/poot/proofs",
            post(poot::submit_proofs),
        )
        .route(
            "/api/v1/nodes/{node_id}/payouts",
            get(payouts::list_payouts).post(payouts::create_payout),
        )
        .route(
            "/api/v1/nodes/payouts/batch",
            post(payouts::submit_payout_batch),
        )
        .route(
            "/api/v1/nodes/payouts/batch/{batch_id}",
            get(payouts::get_payout_batch),
        )
        .route("/api/v1/nodes/payouts/stats", get(payouts::payout_stats))
        .route("/api/v1/nodes/payouts/queue", get(payouts::payout_queue))
        .route(
            "/api/v1/nodes/payouts/{payout_id}",
            get(payouts::get_payout),
        )
        .route(
            "/api/v1/nodes/payouts/{payout_id}/cancel",
            post(payouts::cancel_payout),
        )
        .route(
            "/api/v1/nodes/{node_id}/poot/secret/rotate",
            post(poot::rotate_secret),
        )
        .route(
            "/api/v1/nodes/{node_id}/poot/calculate",
            post(poot::calculate),
        )
        .route(
            "/api/v1/nodes/{node_id}/poot/validate",
            post(poot::validate),
        )
        .route(
            "/api/v1/nodes/{node_id}/poot/score",
            get(poot::latest_score),
        )
        .route("/api/v1/nodes/{node_id}/poot/history", get(poot::history))
        .route("/api/v1/nodes/poot/statistics", get(poot::statistics))
        .route(
            "/api/v1/nodes/pools",
            get(pools::list_pools).post(pools::create_pool),
        )
        .route(
            "/api/v1/nodes/pools/",
            get(pools::list_pools).post(pools::create_pool),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}",
            get(pools::get_pool)
                .put(pools::update_pool)
                .delete(pools::delete_pool),
        )
        .route(
            "/api/v1/nodes/pools/scaling/evaluate",
            post(scaling::evaluate_all),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}/scaling/evaluate",
            post(scaling::evaluate_pool),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}/scaling/events",
            get(scaling::scaling_events),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}/scale",
            post(scaling::scale_pool),
        )
        .route("/api/v1/schedules", get(schedules::list_schedules))
        .route(
            "/api/v1/schedules/{name}/trigger",
            post(schedules::trigger_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/pause",
            post(schedules::pause_schedule),
        )
        .route(
            "/api/v1/schedules/{name}/resume",
            post(schedules::resume_schedule),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}/nodes",
            post(pools::add_pool_node),
        )
        .route(
            "/api/v1/nodes/pools/{pool_id}/nodes/{node_id}",
            axum::routing::delete(pools::remove_pool_node),
        )
}

/// Batch submission routes (their own, larger body limit).
pub fn batch_routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/nodes/poot/batch-validate",
        post(batches::batch_validate),
    )
}

/// `GET /dashboard`: the queue dashboard (its data calls use the operator's token).
pub async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../dashboard/index.html"))
}

/// The dashboard's script.
pub async fn dashboard_js() -> impl IntoResponse {
    (
        [("content-type", "text/javascript; charset=utf-8")],
        include_str!("../dashboard/app.js"),
    )
}

/// Unknown route: 404 in the error envelope.
pub async fn not_found() -> ApiError {
    ApiError::not_found(codes::NOT_FOUND, "no such route")
}

/// Known route, wrong method: 405 in the error envelope.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// A panicking handler answers 500 in the envelope (and is logged), never a dropped connection.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}

/// `lucid-api healthcheck`: exit 0 when the local API is ready.
pub async fn probe(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "not ready"
    );
    let _ = StatusCode::OK;
    Ok(())
}
