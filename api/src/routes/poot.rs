//! PoOT: work proofs and score calculation.

use axum::{Json, extract::State, http::StatusCode};
use lucid_jobs::{
    domain::Check,
    poot::{
        proof::{ProofIn, ProofKind, verify},
        score::{ScoreBreakdown, score},
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
    let cfg = state.poot.config();
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
        state.poot.record_refusals(&node.node_id, bad.len()).await?;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::POOT_VALIDATION_FAILED,
            "proof signature is not valid",
        )
        .with_details(serde_json::json!({ "refused": bad })));
    }
    let duplicates = state.poot.insert(&node.node_id, &proofs).await?;
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
    let inputs = state.poot.window(&node.node_id, chrono::Utc::now()).await?;
    Ok(Json(score(&inputs, state.poot.config())))
}
