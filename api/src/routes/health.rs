//! Liveness, readiness and metrics.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    /// Service name.
    pub service: &'static str,
    /// Version.
    pub version: &'static str,
}

/// Readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `up` or `down` per dependency.
    pub checks: ReadinessChecks,
}

/// Per-dependency state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// Redis (queues).
    pub redis: &'static str,
    /// MongoDB (documents).
    pub mongodb: &'static str,
    /// PostgreSQL (ledger).
    pub postgres: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        service: crate::error::SERVICE,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Redis, MongoDB and PostgreSQL all answer.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)))]
#[tracing::instrument(skip(state))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (redis, mongo, pg) = tokio::join!(
        state.jobs.queue.ping(),
        state.jobs.db.ping(),
        sqlx::query("SELECT 1").execute(&state.pg)
    );
    let up = |ok: bool| if ok { "up" } else { "down" };
    let all = redis.is_ok() && mongo.is_ok() && pg.is_ok();
    let checks = ReadinessChecks {
        redis: up(redis.is_ok()),
        mongodb: up(mongo.is_ok()),
        postgres: up(pg.is_ok()),
    };
    if let Err(e) = &redis {
        tracing::warn!(error = %e, "readiness: Redis down");
    }
    if let Err(e) = &mongo {
        tracing::warn!(error = %e, "readiness: MongoDB down");
    }
    if let Err(e) = &pg {
        tracing::warn!(error = %e, "readiness: PostgreSQL down");
    }
    let code = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            status: if all { "ready" } else { "not_ready" },
            checks,
        }),
    )
}

/// Prometheus metrics: HTTP, jobs, queues, batches, payouts, stores (see `lucid_jobs::metrics`).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let out = lucid_jobs::metrics::render(&state.jobs.queue).await;
    ([("content-type", "text/plain; version=0.0.4")], out)
}
