//! Payouts: single (with `Idempotency-Key`) and batch submission through the
//! `payouts` queue, status, cancel, statistics and the queue view.

mod types;

pub use types::*;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use lucid_jobs::{
    domain::Check,
    payouts::{
        NewPayout, PayoutDoc, PayoutSource, PayoutStatus,
        job::{enqueue_payouts, new_payout_id},
        repo::{PayoutBatchDoc, PayoutFilter},
        stats::{PayoutBatchView, PayoutQueueView, PayoutStats, batch_view, queue_view, stats},
    },
    queue::PAYOUTS_QUEUE,
};
use mongodb::bson::doc;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    routes::nodes::{load_node, node_id},
    state::AppState,
};

/// Most payouts in one batch.
pub const MAX_BATCH_PAYOUTS: usize = 1000;
/// Most retries a payout may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 5;

fn queue_down(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("Redis", e)
}

/// Checks one payout request under `prefix`; the new payout when valid.
fn check_payout(
    state: &AppState,
    c: &mut Check,
    prefix: &str,
    node_id: &str,
    body: &PayoutIn,
) -> Option<NewPayout> {
    let settings = &state.jobs.settings.payouts;
    let field = |f: &str| format!("{prefix}{f}");
    let charges = match Decimal::from_str_exact(body.amount.trim()) {
        Ok(amount) => match settings.fees.charges(body.currency, amount) {
            Ok(c) => Some(c),
            Err(m) => {
                c.ensure(false, field("amount"), m);
                None
            }
        },
        Err(_) => {
            c.ensure(
                false,
                field("amount"),
                "must be a decimal string such as \"12.50\"",
            );
            None
        }
    };
    let wallet_ok = body.currency.check_wallet(&body.wallet_address);
    if let Err(m) = &wallet_ok {
        c.ensure(false, field("wallet_address"), m.clone());
    }
    let max_retries = body.max_retries.unwrap_or(settings.max_retries);
    c.ensure(
        max_retries <= MAX_RETRIES_LIMIT,
        field("max_retries"),
        format!("must be at most {MAX_RETRIES_LIMIT}"),
    );
    let charges = charges?;
    if wallet_ok.is_err() || max_retries > MAX_RETRIES_LIMIT {
        return None;
    }
    Some(NewPayout {
        payout_id: new_payout_id(),
        node_id: node_id.to_string(),
        currency: body.currency,
        charges,
        wallet_address: body.wallet_address.clone(),
        priority: body.priority.unwrap_or_default(),
        max_retries,
        source: PayoutSource::Manual,
        batch_id: None,
        idempotency: None,
        rail: settings.rail.clone(),
    })
}

/// sha256 of what identifies a payout request (idempotent replays).
fn request_hash(n: &NewPayout) -> String {
    hex::encode(Sha256::digest(
        format!(
            "{}|{}|{}|{}|{:?}|{}",
            n.node_id,
            n.charges.amount.normalize(),
            n.currency,
            n.wallet_address,
            n.priority,
            n.max_retries
        )
        .as_bytes(),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) => Ok(Some(k.to_string())),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Requests a payout for a node; it runs on the `payouts` queue. With an
/// `Idempotency-Key`, the same key and body return the same payout (200,
/// `Idempotent-Replayed: true`); the same key with another body is 422.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/payouts", tag = "payouts", params(("node_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    request_body = PayoutIn,
    responses((status = 201, body = PayoutOut), (status = 200, body = PayoutOut, description = "idempotent replay"),
              (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, headers, body))]
pub async fn create_payout(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<PayoutIn>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let node = load_node(&state, &raw).await?;
    let mut c = Check::new();
    let new = check_payout(&state, &mut c, "", &node.node_id, &body);
    c.finish()?;
    let Some(mut new) = new else {
        return Err(ApiError::internal("payout missing after validation"));
    };
    if let Some(key) = key {
        let hash = request_hash(&new);
        let digest = Sha256::digest(format!("{}\n{key}", node.node_id).as_bytes());
        new.payout_id = format!("pay_{}", &hex::encode(digest)[..32]);
        new.idempotency = Some((key, hash));
    }
    let doc: PayoutDoc = new.into();
    let repo = &state.jobs.payouts;
    if !repo.insert(&doc).await? {
        let Some(existing) = repo.get(&doc.payout_id).await? else {
            return Err(ApiError::internal("idempotent payout vanished"));
        };
        if existing.request_hash != doc.request_hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::IDEMPOTENCY_MISMATCH,
                "this Idempotency-Key was used with a different request",
            ));
        }
        if existing.status == PayoutStatus::Pending {
            // The first request may have stored the payout but failed to queue it.
            enqueue_payouts(&state.jobs, std::slice::from_ref(&existing))
                .await
                .map_err(queue_down)?;
        }
        let mut r = (StatusCode::OK, Json(PayoutOut::from(existing))).into_response();
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(r);
    }
    enqueue_payouts(&state.jobs, std::slice::from_ref(&doc))
        .await
        .map_err(queue_down)?;
    Ok((StatusCode::CREATED, Json(PayoutOut::from(doc))).into_response())
}

/// A node's payouts, newest first, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/payouts", tag = "payouts", params(("node_id" = String, Path), PayoutQuery),
    responses((status = 200, body = PayoutPage), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_payouts(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<PayoutQuery>,
) -> Result<Json<PayoutPage>, ApiError> {
    let (page, page_size) = Pagination {
        page: q.page,
        page_size: q.page_size,
    }
    .resolve()?;
    let node = load_node(&state, &raw).await?;
    let filter = PayoutFilter {
        status: q.status,
        currency: q.currency,
        batch_id: q.batch_id,
    };
    let (total, items) = state
        .jobs
        .payouts
        .list(&node.node_id, &filter, page, page_size)
        .await?;
    Ok(Json(PayoutPage {
        items: items.into_iter().map(PayoutOut::from).collect(),
        page,
        page_size,
        total,
    }))
}

fn payout_not_found(id: &str) -> ApiError {
    ApiError::not_found(codes::NOT_FOUND, format!("payout {id} not found"))
}

fn check_payout_id(id: &str) -> Result<(), ApiError> {
    let ok = id.starts_with("pay_")
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::field("payout_id", "must look like pay_…"))
    }
}

/// A payout.
#[utoipa::path(get, path = "/api/v1/nodes/payouts/{payout_id}", tag = "payouts", params(("payout_id" = String, Path)),
    responses((status = 200, body = PayoutOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_payout(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<PayoutOut>, ApiError> {
    check_payout_id(&id)?;
    let p = state.jobs.payouts.get(&id).await?;
    Ok(Json(p.ok_or_else(|| payout_not_found(&id))?.into()))
}

/// Cancels a pending payout. Any other status is 409 LUCID_ERR_5006 naming
/// it; against a worker taking the payout at the same moment, exactly one wins.
#[utoipa::path(post, path = "/api/v1/nodes/payouts/{payout_id}/cancel", tag = "payouts", params(("payout_id" = String, Path)),
    responses((status = 200, body = PayoutOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn cancel_payout(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<PayoutOut>, ApiError> {
    check_payout_id(&id)?;
    match state.jobs.payouts.cancel(&id).await? {
        Ok(p) => {
            // Its job finds it cancelled and does nothing; dropping it early saves a fetch.
            let _ = state.jobs.queue.cancel(&format!("payout-{id}")).await;
            tracing::info!(payout_id = %id, "payout cancelled");
            Ok(Json(p.into()))
        }
        Err(None) => Err(payout_not_found(&id)),
        Err(Some(status)) => Err(ApiError::conflict(
            codes::PAYOUT_STATUS,
            format!(
                "payout {id} is {} and can no longer be cancelled",
                status.as_str()
            ),
        )
        .with_details(serde_json::json!({ "status": status }))),
    }
}

fn check_batch_id(id: &str) -> Result<(), String> {
    let ok = id.strip_prefix("batch_").is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err("must match ^batch_[A-Za-z0-9_-]{1,64}$".into())
    }
}

/// Submits 1–1,000 payouts as one batch (202 + status URL).
#[utoipa::path(post, path = "/api/v1/nodes/payouts/batch", tag = "payouts", request_body = PayoutBatchIn,
    responses((status = 202, body = PayoutBatchAccepted), (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body), fields(payouts = body.payouts.len()))]
pub async fn submit_payout_batch(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<PayoutBatchIn>,
) -> Result<(StatusCode, Json<PayoutBatchAccepted>), ApiError> {
    let mut c = Check::new();
    c.ensure(
        (1..=MAX_BATCH_PAYOUTS).contains(&body.payouts.len()),
        "payouts",
        format!("must contain 1 to {MAX_BATCH_PAYOUTS} payouts"),
    );
    if let Some(id) = &body.batch_id
        && let Err(m) = check_batch_id(id)
    {
        c.ensure(false, "batch_id", m);
    }
    let batch_id = body
        .batch_id
        .clone()
        .unwrap_or_else(|| format!("batch_{}", uuid::Uuid::now_v7().simple()));
    let mut payouts = Vec::with_capacity(body.payouts.len());
    let mut hasher = Sha256::new();
    for (i, item) in body.payouts.into_iter().enumerate() {
        let (raw_node, payout) = item.split();
        let prefix = format!("payouts[{i}].");
        let Ok(node) = node_id(&raw_node) else {
            c.ensure(false, format!("{prefix}node_id"), "is not a valid node id");
            continue;
        };
        if let Some(mut new) = check_payout(&state, &mut c, &prefix, node.as_str(), &payout) {
            hasher.update(request_hash(&new).as_bytes());
            new.payout_id = format!("pay_{}_{i:04}", &batch_id["batch_".len()..]);
            new.batch_id = Some(batch_id.clone());
            payouts.push(PayoutDoc::from(new));
        }
    }
    c.finish()?;
    // Every node must exist.
    let mut ids: Vec<&str> = payouts.iter().map(|p| p.node_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let known = state.nodes.existing(&ids).await?;
    let mut c = Check::new();
    for (i, p) in payouts.iter().enumerate() {
        c.ensure(
            known.contains(&p.node_id),
            format!("payouts[{i}].node_id"),
            format!("node {} not found", p.node_id),
        );
    }
    c.finish()?;

    let record = PayoutBatchDoc {
        batch_id: batch_id.clone(),
        total: payouts.len() as u64,
        request_hash: hex::encode(hasher.finalize()),
        created_at: mongodb::bson::DateTime::now(),
    };
    // Every step is idempotent (deterministic ids), so a replay completes a
    // submission that was interrupted between them; and a client that hangs
    // up does not interrupt one (it runs to completion on its own task).
    let jobs = state.jobs.clone();
    let id = batch_id.clone();
    let total = record.total;
    crate::request_id::run_to_completion(async move {
        let repo = &jobs.payouts;
        if !repo.insert_batch(&record).await? {
            let same = repo
                .batch(&id)
                .await?
                .is_some_and(|b| b.request_hash == record.request_hash);
            if !same {
                return Err(ApiError::conflict(
                    codes::CONFLICT,
                    format!("batch {id} exists with other payouts"),
                ));
            }
        }
        repo.insert_many(&payouts).await?;
        enqueue_payouts(&jobs, &payouts).await.map_err(queue_down)
    })
    .await??;
    Ok((
        StatusCode::ACCEPTED,
        Json(PayoutBatchAccepted {
            status_url: format!("/api/v1/nodes/payouts/batch/{batch_id}"),
            batch_id,
            total,
        }),
    ))
}

/// A payout batch: counts, amounts per currency, status, start and finish.
#[utoipa::path(get, path = "/api/v1/nodes/payouts/batch/{batch_id}", tag = "payouts", params(("batch_id" = String, Path)),
    responses((status = 200, body = PayoutBatchView), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_payout_batch(
    State(state): State<AppState>,
    ValidPath(batch_id): ValidPath<String>,
) -> Result<Json<PayoutBatchView>, ApiError> {
    check_batch_id(&batch_id).map_err(|m| ApiError::field("batch_id", m))?;
    let repo = &state.jobs.payouts;
    let Some(batch) = repo.batch(&batch_id).await? else {
        return Err(ApiError::not_found(
            codes::NOT_FOUND,
            format!("payout batch {batch_id} not found"),
        ));
    };
    let payouts = repo.batch_payouts(&batch_id).await?;
    Ok(Json(batch_view(
        &batch_id,
        batch.created_at.to_chrono(),
        &payouts,
    )))
}

/// Exact sums by status and currency, counts, mean and p90 processing time.
#[utoipa::path(get, path = "/api/v1/nodes/payouts/stats", tag = "payouts", params(StatsQuery),
    responses((status = 200, body = PayoutStats), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn payout_stats(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<StatsQuery>,
) -> Result<Json<PayoutStats>, ApiError> {
    let mut filter = doc! {};
    if let Some(raw) = &q.node_id {
        filter.insert("node_id", node_id(raw)?.as_str());
    }
    if let Some(c) = q.currency {
        filter.insert("currency", c.as_str());
    }
    let payouts = state.jobs.payouts.find_all(filter).await?;
    Ok(Json(stats(&payouts)))
}

/// The payout queue: length, estimated wait from the measured rate,
/// capacity, priority and currency distributions, oldest and newest pending.
#[utoipa::path(get, path = "/api/v1/nodes/payouts/queue", tag = "payouts",
    responses((status = 200, body = PayoutQueueView), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn payout_queue(
    State(state): State<AppState>,
) -> Result<Json<PayoutQueueView>, ApiError> {
    let repo = &state.jobs.payouts;
    let active = repo
        .find_all(doc! { "status": { "$in": ["pending", "processing"] } })
        .await?;
    let since = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 10 * 60 * 1000,
    );
    let finished = repo.count_finished_since(since).await?;
    let workers = state
        .jobs
        .queue
        .live_workers()
        .await
        .map_err(queue_down)?
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == PAYOUTS_QUEUE))
        .count() as u64;
    let concurrency = state.jobs.settings.worker_concurrency as u64;
    Ok(Json(queue_view(&active, finished, workers, concurrency)))
}
