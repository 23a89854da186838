//! Jobs, queues and dead letters.

use axum::{Json, extract::State, http::StatusCode};
use lucid_jobs::{
    batch::ChunkResult,
    queue::{ALL_QUEUES, JobState, JobStatus, QueueCounts, TransitionResult, WorkerInfo},
    storage::collections,
};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidPath, ValidQuery},
    state::AppState,
};

/// One job's state.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "queues",
    params(("job_id" = String, Path)),
    responses((status = 200, body = JobState), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_job(
    State(state): State<AppState>,
    ValidPath(job_id): ValidPath<String>,
) -> Result<Json<JobState>, ApiError> {
    if let Some(job) = state.jobs.queue.job(&job_id).await? {
        return Ok(Json(job));
    }
    // The queue's record expired (retention); a finished chunk keeps its summary in MongoDB.
    let chunk = state
        .jobs
        .db
        .collection::<ChunkResult>(collections::JOBS)
        .find_one(doc! { "_id": &job_id })
        .await
        .map_err(lucid_jobs::storage::StorageError::from)?;
    let Some(chunk) = chunk else {
        return Err(ApiError::not_found(
            codes::NOT_FOUND,
            format!("job {job_id} not found"),
        ));
    };
    Ok(Json(JobState {
        job_id,
        queue: lucid_jobs::queue::POOT_VALIDATION_QUEUE.into(),
        kind: chunk.kind,
        status: if chunk.status == "dead" {
            JobStatus::Dead
        } else {
            JobStatus::Succeeded
        },
        attempts: chunk.attempt,
        max_attempts: chunk.attempt,
        priority: Default::default(),
        last_error: chunk.error,
        worker: None,
        batch_id: Some(chunk.batch_id),
        created_at: None,
        started_at: None,
        finished_at: Some(chunk.finished_at.to_chrono().to_rfc3339()),
        run_at: None,
    }))
}

/// Answer of a dead-job requeue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetryOut {
    /// Job id.
    pub job_id: String,
    /// `queued`.
    pub status: JobStatus,
}

/// Requeues a dead job with fresh attempts.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/retry", tag = "queues",
    params(("job_id" = String, Path)),
    responses((status = 202, body = RetryOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn retry_job(
    State(state): State<AppState>,
    ValidPath(job_id): ValidPath<String>,
) -> Result<(StatusCode, Json<RetryOut>), ApiError> {
    match state.jobs.queue.retry_dead(&job_id).await? {
        TransitionResult::Done => Ok((
            StatusCode::ACCEPTED,
            Json(RetryOut {
                job_id,
                status: JobStatus::Queued,
            }),
        )),
        TransitionResult::WrongState(s) => Err(ApiError::conflict(
            codes::CONFLICT,
            "only dead jobs can be retried",
        )
        .with_details(serde_json::json!({ "status": s }))),
        TransitionResult::NotFound => Err(ApiError::not_found(
            codes::NOT_FOUND,
            format!("job {job_id} not found"),
        )),
    }
}

/// Queues and live workers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuesOut {
    /// Counts per queue.
    pub queues: Vec<QueueCounts>,
    /// Workers with a live heartbeat.
    pub workers: Vec<WorkerInfo>,
}

/// Per-queue counts and live workers.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues", responses((status = 200, body = QueuesOut)))]
#[tracing::instrument(skip(state))]
pub async fn list_queues(State(state): State<AppState>) -> Result<Json<QueuesOut>, ApiError> {
    let mut queues = Vec::new();
    let mut workers = state.jobs.queue.live_workers().await?;
    for q in ALL_QUEUES {
        queues.push(state.jobs.queue.counts(q).await?);
        for (job, worker) in state.jobs.queue.running_jobs(q).await? {
            if let Some(w) = workers.iter_mut().find(|w| w.name == worker) {
                w.current_jobs.push(job);
            }
        }
    }
    Ok(Json(QueuesOut { queues, workers }))
}

/// A page of dead jobs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadOut {
    /// Queue name.
    pub queue: String,
    /// Dead jobs in the queue.
    pub total: u64,
    /// This page, newest first.
    pub jobs: Vec<JobState>,
}

/// Dead letters of a queue, with their last error.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/dead", tag = "queues",
    params(("queue" = String, Path), Pagination),
    responses((status = 200, body = DeadOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_dead(
    State(state): State<AppState>,
    ValidPath(queue): ValidPath<String>,
    ValidQuery(p): ValidQuery<Pagination>,
) -> Result<Json<DeadOut>, ApiError> {
    if !ALL_QUEUES.contains(&queue.as_str()) {
        return Err(ApiError::not_found(
            codes::NOT_FOUND,
            format!("queue {queue} not found"),
        ));
    }
    let (page, size) = p.resolve()?;
    let (total, jobs) = state
        .jobs
        .queue
        .dead_jobs(&queue, ((page - 1) * size) as usize, size as usize)
        .await?;
    Ok(Json(DeadOut { queue, total, jobs }))
}
