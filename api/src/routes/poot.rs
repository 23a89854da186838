//! PoOT: work proofs and score calculation.

use axum::{Json, extract::State, http::StatusCode};
use lucid_jobs::{
    domain::Check,
    poot::{
        proof::{ProofIn, ProofKind, verify},
        score::ScoreBreakdown,
        validation::{MAX_CLOCK_SKEW_SECS, RecordBase, ValidationOut},
    },
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{ValidJson, ValidPath},
    routes::nodes::load_node,
    state::AppState,
};

/// Most proofs in one request.
pub const MAX_PROOFS: usize = 1000;

/// One proof, or many.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ProofsIn {
    /// `{"proofs": [...]}`.
    Many {
        /// The proofs.
        proofs: Vec<ProofIn>,
    },
    /// A single proof.
    One(ProofIn),
}

/// Answer of a proof submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProofsOut {
    /// Proofs stored by this request.
    pub accepted: usize,
    /// Indexes (in the request) of proofs already stored for their (node, slot, type).
    pub duplicates: Vec<usize>,
}

fn check_values(c: &mut Check, i: usize, p: &ProofIn, slot_seconds: u64, now_slot: u64) {
    const MAX: u64 = 1 << 53;
    let f = |name: &str| format!("proofs[{i}].{name}");
    c.ensure(p.slot <= now_slot + 1, f("slot"), "is in the future");
    match &p.kind {
        ProofKind::RelayBandwidth {
            bytes,
            sessions,
            duration_seconds,
        } => {
            c.range(&f("value.bytes"), *bytes, 0, MAX)
                .range(&f("value.sessions"), *sessions, 0, 1_000_000)
                .range(
                    &f("value.duration_seconds"),
                    duration_seconds.unwrap_or(0),
                    0,
                    MAX,
                );
        }
        ProofKind::StorageAvailability { gb, chunks } => {
            c.ensure(
                gb.is_finite() && (0.0..=1e9).contains(gb),
                f("value.gb"),
                "must be between 0 and 1e9",
            )
            .range(&f("value.chunks"), *chunks, 0, MAX);
        }
        ProofKind::ValidationSignature { validated_sessions } => {
            c.range(
                &f("value.validated_sessions"),
                *validated_sessions,
                0,
                1_000_000,
            );
        }
        ProofKind::UptimeBeacon { seconds } => {
            c.range(&f("value.seconds"), *seconds, 0, slot_seconds);
        }
    }
}

/// Submits signed work proofs. A bad signature refuses the request (nothing
/// stored, 422 LUCID_ERR_5005); a proof already stored for its (node, slot,
/// type) is reported as a duplicate (409 when every proof was a duplicate or
/// the request held one proof) and stored once.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/poot/proofs", tag = "poot", params(("node_id" = String, Path)),
    request_body = ProofsIn,
    responses((status = 201, body = ProofsOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn submit_proofs(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<ProofsIn>,
) -> Result<(StatusCode, Json<ProofsOut>), ApiError> {
    let node = load_node(&state, &raw).await?;
    let proofs = match body {
        ProofsIn::Many { proofs } => proofs,
        ProofsIn::One(p) => vec![p],
    };
    if proofs.is_empty() || proofs.len() > MAX_PROOFS {
        return Err(ApiError::field(
            "proofs",
            format!("must contain 1 to {MAX_PROOFS} proofs"),
        ));
    }
    let cfg = state.validator.poot().config();
    let now_slot = chrono::Utc::now().timestamp().max(0) as u64 / cfg.slot_seconds;
    let mut c = Check::new();
    for (i, p) in proofs.iter().enumerate() {
        check_values(&mut c, i, p, cfg.slot_seconds, now_slot);
    }
    c.finish()?;
    let secret = node.secret.as_deref().unwrap_or_default();
    let bad: Vec<usize> = proofs
        .iter()
        .enumerate()
        .filter(|(_, p)| secret.is_empty() || !verify(secret, p))
        .map(|(i, _)| i)
        .collect();
    if !bad.is_empty() {
        state
            .validator
            .poot()
            .record_refusals(&node.node_id, bad.len())
            .await?;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::POOT_VALIDATION_FAILED,
            "proof signature is not valid",
        )
        .with_details(serde_json::json!({ "refused": bad })));
    }
    let duplicates = state
        .validator
        .poot()
        .insert(&node.node_id, &proofs)
        .await?;
    let accepted = proofs.len() - duplicates.len();
    if accepted == 0 {
        return Err(ApiError::conflict(
            codes::CONFLICT,
            "proof already submitted for this node, slot and type",
        )
        .with_details(serde_json::json!({ "duplicates": duplicates })));
    }
    Ok((
        StatusCode::CREATED,
        Json(ProofsOut {
            accepted,
            duplicates,
        }),
    ))
}

/// Recomputes a node's PoOT score over the window, without recording a
/// validation, returning every component.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/poot/calculate", tag = "poot", params(("node_id" = String, Path)),
    responses((status = 200, body = ScoreBreakdown), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn calculate(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ScoreBreakdown>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let (breakdown, _) = state
        .validator
        .score_and_history(&node.node_id, chrono::Utc::now())
        .await?;
    Ok(Json(breakdown))
}

/// Body of `POST /api/v1/nodes/{node_id}/poot/validate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    /// Base64 of the output, at most 1 MiB decoded.
    pub output_data: String,
    /// When the output was produced (within 5 minutes of server time).
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// Unique per node; a replay is refused.
    pub nonce: String,
}

/// Validates a node's output: scores the node, judges the score against its
/// history, records the validation and updates the node's `poot_score`.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/poot/validate", tag = "poot", params(("node_id" = String, Path)),
    request_body = ValidateIn,
    responses((status = 201, body = ValidationOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn validate(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<ValidateIn>,
) -> Result<(StatusCode, Json<ValidationOut>), ApiError> {
    let started = std::time::Instant::now();
    let node = load_node(&state, &raw).await?;
    let mut c = Check::new();
    c.ensure(
        (1..=128).contains(&body.nonce.len()),
        "nonce",
        "must be 1 to 128 characters",
    );
    let skew = (chrono::Utc::now() - body.timestamp).num_seconds().abs();
    c.ensure(
        skew <= MAX_CLOCK_SKEW_SECS,
        "timestamp",
        format!("must be within {MAX_CLOCK_SKEW_SECS} s of server time"),
    );
    let max = state.jobs.settings.max_output_bytes;
    let output_hash = match decode_output(&body.output_data, max) {
        Ok(h) => Some(h),
        Err(m) => {
            c.ensure(false, "output_data", m);
            None
        }
    };
    c.finish()?;
    let output_hash = output_hash.unwrap_or_default();
    let validation_id = format!("val_{}", uuid::Uuid::now_v7().simple());
    let now = chrono::Utc::now();
    let (breakdown, history) = state
        .validator
        .score_and_history(&node.node_id, now)
        .await?;
    let base = RecordBase {
        validation_id,
        node_id: node.node_id,
        output_hash,
        timestamp: mongodb::bson::DateTime::from_chrono(body.timestamp),
        nonce: body.nonce,
        node_type: mongodb::bson::to_bson(&node.node_type)
            .ok()
            .and_then(|b| b.as_str().map(String::from)),
        pool_id: node.pool_id,
        batch_id: None,
        chunk_index: None,
        item_index: None,
    };
    let record = state.validator.record(base, &breakdown, &history, started);
    // The insert claims the nonce (unique per node): a replay stores nothing.
    if !state.validator.store(&record).await? {
        return Err(ApiError::conflict(
            codes::CONFLICT,
            "nonce already used by this node",
        ));
    }
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// sha256 hex of base64 `data` decoded, or why it is not acceptable.
fn decode_output(data: &str, max: usize) -> Result<String, String> {
    use base64::Engine;
    use sha2::Digest;
    if data.len() / 4 * 3 > max + 3 {
        return Err(format!("must decode to at most {max} bytes"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "must be valid base64".to_string())?;
    if bytes.len() > max {
        return Err(format!("must decode to at most {max} bytes"));
    }
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// The node's latest validation.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/poot/score", tag = "poot", params(("node_id" = String, Path)),
    responses((status = 200, body = ValidationOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn latest_score(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ValidationOut>, ApiError> {
    let node = load_node(&state, &raw).await?;
    state
        .validator
        .latest(&node.node_id)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| {
            ApiError::not_found(
                codes::NOT_FOUND,
                format!("node {} has no validation yet", node.node_id),
            )
        })
}

/// Time range and pagination of the history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Start (default: 7 days ago).
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// End, exclusive (default: now).
    pub end: Option<chrono::DateTime<chrono::Utc>>,
    /// Page from 1.
    pub page: Option<u64>,
    /// Page size, 1–100.
    pub page_size: Option<u64>,
}

/// A page of validations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Validations, newest first.
    pub items: Vec<ValidationOut>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// Validations in the range.
    pub total: u64,
}

/// The node's validations in a time range.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/poot/history", tag = "poot", params(("node_id" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn history(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    crate::extract::ValidQuery(q): crate::extract::ValidQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let (page, page_size) = crate::extract::Pagination {
        page: q.page,
        page_size: q.page_size,
    }
    .resolve()?;
    let (start, end) = time_range(q.start, q.end)?;
    let (total, items) = state
        .validator
        .history_page(&node.node_id, start, end, page, page_size)
        .await?;
    Ok(Json(HistoryPage {
        items: items.into_iter().map(ValidationOut::from).collect(),
        page,
        page_size,
        total,
    }))
}

/// Resolves an optional `[start, end)` (default: the last 7 days).
pub(crate) fn time_range(
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ApiError> {
    let end = end.unwrap_or_else(chrono::Utc::now);
    let start = start.unwrap_or(end - chrono::Duration::days(7));
    if start >= end {
        return Err(ApiError::field("start", "must be before end"));
    }
    Ok((start, end))
}

/// Time range of the statistics.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Start (default: 7 days ago).
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// End, exclusive (default: now).
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

/// Validation statistics for a time range, overall, by pool and by node type.
#[utoipa::path(get, path = "/api/v1/nodes/poot/statistics", tag = "poot", params(RangeQuery),
    responses((status = 200, body = lucid_jobs::poot::stats::PootStatistics), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn statistics(
    State(state): State<AppState>,
    crate::extract::ValidQuery(q): crate::extract::ValidQuery<RangeQuery>,
) -> Result<Json<lucid_jobs::poot::stats::PootStatistics>, ApiError> {
    let (start, end) = time_range(q.start, q.end)?;
    Ok(Json(
        lucid_jobs::poot::stats::statistics(&state.jobs.db, start, end).await?,
    ))
}

/// Answer of a secret rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretOut {
    /// Node id.
    pub node_id: String,
    /// The new hex secret for signing work proofs. Shown only here; proofs
    /// signed with the previous secret are refused from now on.
    pub secret: String,
    /// When it was rotated.
    pub rotated_at: chrono::DateTime<chrono::Utc>,
}

/// Replaces a node's proof-signing secret and returns the new one, once.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/poot/secret/rotate", tag = "poot", params(("node_id" = String, Path)),
    responses((status = 200, body = SecretOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<SecretOut>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let updated = state
        .nodes
        .update(&node.node_id, mongodb::bson::doc! { "secret": &secret })
        .await?
        .ok_or_else(|| crate::routes::nodes::node_not_found(&node.node_id))?;
    tracing::info!(node_id = %updated.node_id, "proof secret rotated");
    Ok(Json(SecretOut {
        node_id: updated.node_id,
        secret,
        rotated_at: updated.updated_at.to_chrono(),
    }))
}
