//! Pool scaling: evaluations (queued), events, manual scaling.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use lucid_jobs::scaling::{
    ScalingEventView,
    job::{enqueue_apply, enqueue_evaluation, submit_all},
    repo::ManualScale,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    routes::pools::{membership_error, pool_id, pool_not_found},
    state::AppState,
};

/// Answer of `POST .../scaling/evaluate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationAcceptedOut {
    /// The evaluation job (its id is also the evaluation id).
    pub job_id: String,
    /// Pool.
    pub pool_id: String,
    /// Where to poll the job.
    pub status_url: String,
}

/// Answer of `POST /api/v1/nodes/pools/scaling/evaluate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluateAllOut {
    /// Batch id.
    pub batch_id: String,
    /// Pools evaluated (those with auto-scaling enabled).
    pub total: u64,
    /// Where to poll the batch.
    pub status_url: String,
}

/// A page of scaling events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScalingEventPage {
    /// Events, newest first.
    pub items: Vec<ScalingEventView>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// All events of the pool.
    pub total: u64,
}

/// Body of `POST /api/v1/nodes/pools/{pool_id}/scale`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleIn {
    /// Active nodes wanted, at most the pool's `max_nodes`.
    pub target_nodes: u32,
}

/// Answer of a manual scale.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScaleOut {
    /// `pending` (an event was created and a job applies it) or `unchanged`.
    pub status: String,
    /// Active nodes now.
    pub current_nodes: u32,
    /// Active nodes wanted.
    pub target_nodes: u32,
    /// The event, when one was created.
    pub event: Option<ScalingEventView>,
    /// The job applying it.
    pub job_id: Option<String>,
}

fn queue_failed(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "scaling submission failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        codes::BATCH_FAILED,
        "the work could not be queued; retry later",
    )
}

/// Queues the scaling evaluation of one pool.
#[utoipa::path(post, path = "/api/v1/nodes/pools/{pool_id}/scaling/evaluate", tag = "scaling", params(("pool_id" = String, Path)),
    responses((status = 202, body = EvaluationAcceptedOut), (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn evaluate_pool(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<(StatusCode, Json<EvaluationAcceptedOut>), ApiError> {
    let id = pool_id(&raw)?;
    if state.pools.get(id.as_str()).await?.is_none() {
        return Err(pool_not_found(id.as_str()));
    }
    let job_id = enqueue_evaluation(&state.jobs, id.as_str())
        .await
        .map_err(queue_failed)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EvaluationAcceptedOut {
            status_url: format!("/api/v1/jobs/{job_id}"),
            job_id,
            pool_id: id.as_str().to_string(),
        }),
    ))
}

/// Queues one batch evaluating every pool with auto-scaling enabled.
#[utoipa::path(post, path = "/api/v1/nodes/pools/scaling/evaluate", tag = "scaling",
    responses((status = 202, body = EvaluateAllOut), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn evaluate_all(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<EvaluateAllOut>), ApiError> {
    let batch = submit_all(&state.jobs, None).await.map_err(queue_failed)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EvaluateAllOut {
            status_url: format!("/api/v1/batches/{}", batch.batch_id),
            batch_id: batch.batch_id,
            total: batch.total,
        }),
    ))
}

/// A pool's scaling events, newest first.
#[utoipa::path(get, path = "/api/v1/nodes/pools/{pool_id}/scaling/events", tag = "scaling",
    params(("pool_id" = String, Path), Pagination),
    responses((status = 200, body = ScalingEventPage), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn scaling_events(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(p): ValidQuery<Pagination>,
) -> Result<Json<ScalingEventPage>, ApiError> {
    let id = pool_id(&raw)?;
    let (page, page_size) = p.resolve()?;
    if state.pools.get(id.as_str()).await?.is_none() {
        return Err(pool_not_found(id.as_str()));
    }
    let (total, events) = state
        .jobs
        .scaling
        .events_page(id.as_str(), page, page_size)
        .await?;
    Ok(Json(ScalingEventPage {
        items: events.iter().map(ScalingEventView::from).collect(),
        page,
        page_size,
        total,
    }))
}

/// Scales a pool by hand to `target_nodes` active nodes (409 LUCID_ERR_5009
/// above its `max_nodes`); a job starts or stops the nodes.
#[utoipa::path(post, path = "/api/v1/nodes/pools/{pool_id}/scale", tag = "scaling", params(("pool_id" = String, Path)), request_body = ScaleIn,
    responses((status = 202, body = ScaleOut), (status = 200, body = ScaleOut), (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn scale_pool(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<ScaleIn>,
) -> Result<axum::response::Response, ApiError> {
    let id = pool_id(&raw)?;
    if body.target_nodes > 1000 {
        return Err(ApiError::field("target_nodes", "must be 0 to 1000"));
    }
    let outcome = state
        .jobs
        .scaling
        .manual(id.as_str(), body.target_nodes)
        .await
        .map_err(|e| match e {
            lucid_jobs::storage::pools::MembershipError::PoolFull(max) => ApiError::conflict(
                codes::INVALID_ALLOCATION,
                format!(
                    "target_nodes {} is above pool {}'s max_nodes {max}",
                    body.target_nodes,
                    id.as_str()
                ),
            ),
            other => membership_error(other, id.as_str(), ""),
        })?;
    Ok(match outcome {
        ManualScale::Unchanged(n) => Json(ScaleOut {
            status: "unchanged".into(),
            current_nodes: n,
            target_nodes: n,
            event: None,
            job_id: None,
        })
        .into_response(),
        ManualScale::Created(event) => {
            let job_id = enqueue_apply(&state.jobs, &event.event_id)
                .await
                .map_err(queue_failed)?;
            (
                StatusCode::ACCEPTED,
                Json(ScaleOut {
                    status: "pending".into(),
                    current_nodes: event.current_nodes,
                    target_nodes: event.target_nodes,
                    event: Some(ScalingEventView::from(event.as_ref())),
                    job_id: Some(job_id),
                }),
            )
                .into_response()
        }
    })
}
