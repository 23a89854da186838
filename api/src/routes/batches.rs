//! Batch submission and status polling.

use axum::{Json, extract::State, http::StatusCode};
use futures::TryStreamExt;
use lucid_jobs::{
    batch::{BatchRecord, BatchView},
    poot::{
        ValidationItem, submit_batch,
        validation::{ValidationOut, ValidationRecord},
    },
    queue::TransitionResult,
    storage::collections,
};
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    state::AppState,
};

/// Body of `POST /api/v1/nodes/poot/batch-validate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchValidateIn {
    /// 1 to 100,000 items.
    pub validations: Vec<ValidationItem>,
    /// Optional http(s) URL that receives the final batch status (POST, once).
    pub callback_url: Option<String>,
}

/// Answer of a batch submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAcceptedOut {
    /// Batch id.
    pub batch_id: String,
    /// Where to poll the status.
    pub status_url: String,
    /// Items accepted.
    pub total: u64,
    /// Chunk jobs enqueued.
    pub chunk_count: u64,
}

/// Submits a batch of PoOT validations; the work runs on the `poot-validation` queue.
#[utoipa::path(post, path = "/api/v1/nodes/poot/batch-validate", tag = "batches", request_body = BatchValidateIn,
    responses((status = 202, body = BatchAcceptedOut), (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body), fields(items = body.validations.len()))]
pub async fn batch_validate(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<BatchValidateIn>,
) -> Result<(StatusCode, Json<BatchAcceptedOut>), ApiError> {
    let max = state.jobs.settings.batch_max_items;
    if body.validations.is_empty() || body.validations.len() > max {
        return Err(ApiError::field(
            "validations",
            format!("must contain 1 to {max} items"),
        ));
    }
    // Times MongoDB deployments (and the local surrogate) can all store.
    let bad_times: Vec<crate::error::FieldError> = body
        .validations
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let time =
                (!(1970..=9999).contains(&chrono::Datelike::year(&v.timestamp))).then(|| {
                    crate::error::FieldError {
                        field: format!("validations[{i}].timestamp"),
                        message: "must be between 1970 and 9999".into(),
                    }
                });
            let nonce = (!(1..=128).contains(&v.nonce.len())).then(|| crate::error::FieldError {
                field: format!("validations[{i}].nonce"),
                message: "must be 1 to 128 characters".into(),
            });
            time.into_iter().chain(nonce)
        })
        .take(20)
        .collect();
    if !bad_times.is_empty() {
        return Err(ApiError::validation(bad_times));
    }
    if let Some(url) = &body.callback_url {
        let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2048;
        if !ok {
            return Err(ApiError::field(
                "callback_url",
                "must be an http:// or https:// URL of at most 2048 characters",
            ));
        }
    }
    // A client that hangs up mid-submission must not leave a stored batch
    // with no chunks queued.
    let jobs = state.jobs.clone();
    let record = crate::request_id::run_to_completion(async move {
        submit_batch(&jobs, body.validations, body.callback_url).await
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "batch submission failed");
        ApiError::batch_failed()
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAcceptedOut {
            status_url: format!("/api/v1/batches/{}", record.batch_id),
            batch_id: record.batch_id,
            total: record.total,
            chunk_count: record.chunk_count,
        }),
    ))
}

async fn load(state: &AppState, batch_id: &str) -> Result<BatchRecord, ApiError> {
    state
        .jobs
        .batches
        .get(batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(codes::NOT_FOUND, format!("batch {batch_id} not found")))
}

/// A page of batches.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchPage {
    /// Batches, newest first.
    pub items: Vec<BatchView>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// All batches.
    pub total: u64,
}

/// Recent batches of every kind, newest first, with their counts and progress.
#[utoipa::path(get, path = "/api/v1/batches", tag = "batches", params(Pagination),
    responses((status = 200, body = BatchPage), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_batches(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<Pagination>,
) -> Result<Json<BatchPage>, ApiError> {
    let (page, page_size) = p.resolve()?;
    let (total, records) = state.jobs.batches.list(page, page_size).await?;
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        items.push(state.jobs.batches.view(r).await?);
    }
    Ok(Json(BatchPage {
        items,
        page,
        page_size,
        total,
    }))
}

/// A batch's status, counts and progress.
#[utoipa::path(get, path = "/api/v1/batches/{batch_id}", tag = "batches",
    params(("batch_id" = String, Path)),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_batch(
    State(state): State<AppState>,
    ValidPath(batch_id): ValidPath<String>,
) -> Result<Json<BatchView>, ApiError> {
    let record = load(&state, &batch_id).await?;
    Ok(Json(state.jobs.batches.view(&record).await?))
}

/// Filter of the item listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// `succeeded` or `failed`.
    pub status: Option<String>,
    /// Page from 1.
    pub page: Option<u64>,
    /// Items per page (max 100).
    pub page_size: Option<u64>,
}

/// A page of per-item results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemsPage {
    /// Results in item order.
    pub items: Vec<ValidationOut>,
    /// Page number.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// Results matching the filter.
    pub total: u64,
}

/// Per-item results of a batch (items not processed yet are not listed).
#[utoipa::path(get, path = "/api/v1/batches/{batch_id}/items", tag = "batches",
    params(("batch_id" = String, Path), ItemsQuery),
    responses((status = 200, body = ItemsPage), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_items(
    State(state): State<AppState>,
    ValidPath(batch_id): ValidPath<String>,
    ValidQuery(q): ValidQuery<ItemsQuery>,
) -> Result<Json<ItemsPage>, ApiError> {
    let (page, page_size) = Pagination {
        page: q.page,
        page_size: q.page_size,
    }
    .resolve()?;
    load(&state, &batch_id).await?;
    let mut filter = lucid_jobs::batch::batch_records(&batch_id);
    if let Some(status) = &q.status {
        if status != "succeeded" && status != "failed" {
            return Err(ApiError::field("status", "must be succeeded or failed"));
        }
        filter.insert("status", status);
    }
    let coll = state
        .jobs
        .db
        .collection::<ValidationRecord>(collections::POOT_VALIDATIONS);
    let total = coll
        .count_documents(filter.clone())
        .await
        .map_err(lucid_jobs::storage::StorageError::from)?;
    let items: Vec<ValidationRecord> = coll
        .find(filter)
        .sort(doc! { "_id": 1 })
        .skip((page - 1) * page_size)
        .limit(page_size as i64)
        .await
        .map_err(lucid_jobs::storage::StorageError::from)?
        .try_collect()
        .await
        .map_err(lucid_jobs::storage::StorageError::from)?;
    Ok(Json(ItemsPage {
        items: items.into_iter().map(ValidationOut::from).collect(),
        page,
        page_size,
        total,
    }))
}

/// Cancels a batch: chunks not yet started will not run; running chunks finish.
#[utoipa::path(post, path = "/api/v1/batches/{batch_id}/cancel", tag = "batches",
    params(("batch_id" = String, Path)),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn cancel_batch(
    State(state): State<AppState>,
    ValidPath(batch_id): ValidPath<String>,
) -> Result<Json<BatchView>, ApiError> {
    let Some((record, cancelled)) = state.jobs.batches.cancel(&batch_id).await? else {
        return Err(ApiError::not_found(
            codes::NOT_FOUND,
            format!("batch {batch_id} not found"),
        ));
    };
    if !cancelled {
        return Err(ApiError::conflict(
            codes::CONFLICT,
            format!("batch is already {}", record.status.as_str()),
        )
        .with_details(serde_json::json!({ "status": record.status })));
    }
    if let Err(e) = lucid_jobs::handlers::enqueue_callback(&state.jobs, &record).await {
        tracing::error!(error = %format!("{e:#}"), "could not enqueue the cancellation callback");
    }
    for i in 0..record.chunk_count {
        match state.jobs.queue.cancel(&record.chunk_job_id(i)).await? {
            TransitionResult::Done
            | TransitionResult::WrongState(_)
            | TransitionResult::NotFound => {}
        }
    }
    Ok(Json(state.jobs.batches.view(&record).await?))
}
