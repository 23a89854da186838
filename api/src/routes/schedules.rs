//! The scheduler's schedules: list, trigger by hand, pause and resume
//! (state in Redis, honoured by every scheduler replica).

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use lucid_jobs::schedule::{Schedule, ScheduleName, actions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::ValidPath,
    state::AppState,
};

/// A schedule and its state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleOut {
    /// Name.
    pub name: ScheduleName,
    /// Cron expression (seconds first, UTC).
    pub cron: String,
    /// Enabled in the configuration.
    pub enabled: bool,
    /// Paused at run time.
    pub paused: bool,
    /// Catch-up window after an outage, seconds.
    pub catch_up_secs: i64,
    /// Next tick (none when disabled).
    pub next_fire: Option<DateTime<Utc>>,
    /// Last tick handled by the scheduler.
    pub last_tick: Option<DateTime<Utc>>,
    /// Last fire, by the scheduler or by hand.
    pub last_fire: Option<DateTime<Utc>>,
    /// Batch or job id of the last fire.
    pub last_job_id: Option<String>,
    /// Who fired it last: a scheduler replica, or `api`.
    pub last_fired_by: Option<String>,
    /// The scheduler replica holding the lease, if any.
    pub leader: Option<String>,
}

/// Every schedule.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    /// The schedules.
    pub items: Vec<ScheduleOut>,
    /// The current leader, if any.
    pub leader: Option<String>,
}

/// Answer of a manual trigger.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TriggerOut {
    /// Schedule.
    pub name: ScheduleName,
    /// Batch or job enqueued.
    pub job_id: String,
    /// When.
    pub triggered_at: DateTime<Utc>,
}

fn find<'a>(state: &'a AppState, raw: &str) -> Result<&'a Schedule, ApiError> {
    ScheduleName::parse(raw)
        .and_then(|n| state.schedules.iter().find(|s| s.name == n))
        .ok_or_else(|| ApiError::not_found(codes::NOT_FOUND, format!("no schedule named {raw:?}")))
}

async fn view(
    state: &AppState,
    s: &Schedule,
    leader: Option<String>,
) -> Result<ScheduleOut, ApiError> {
    let st = state.schedule_store.state(s.name).await?;
    Ok(ScheduleOut {
        name: s.name,
        cron: s.cron.clone(),
        enabled: s.enabled,
        paused: st.paused,
        catch_up_secs: s.catch_up.num_seconds(),
        next_fire: s.enabled.then(|| s.next_after(Utc::now())).flatten(),
        last_tick: st.last_tick,
        last_fire: st.last_fired_at,
        last_job_id: st.last_job_id,
        last_fired_by: st.last_by,
        leader,
    })
}

/// Lists the schedules with their state and the current leader.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_schedules(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let leader = state.schedule_store.leader().await?;
    let mut items = Vec::with_capacity(state.schedules.len());
    for s in state.schedules.iter() {
        items.push(view(&state, s, leader.clone()).await?);
    }
    Ok(Json(ScheduleList { items, leader }))
}

/// Fires a schedule now (a fresh run, outside its ticks).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/trigger", tag = "schedules", params(("name" = String, Path)),
    responses((status = 202, body = TriggerOut), (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<(StatusCode, Json<TriggerOut>), ApiError> {
    let name = find(&state, &raw)?.name;
    let job_id = actions::fire(&state.jobs, name, None).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), schedule = name.as_str(), "manual trigger failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::BATCH_FAILED,
            "the schedule's work could not be queued; retry later",
        )
    })?;
    state.schedule_store.record_manual(name, &job_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerOut {
            name,
            job_id,
            triggered_at: Utc::now(),
        }),
    ))
}

async fn set_paused(
    state: AppState,
    raw: String,
    paused: bool,
) -> Result<Json<ScheduleOut>, ApiError> {
    let schedule = find(&state, &raw)?;
    state
        .schedule_store
        .set_paused(schedule.name, paused)
        .await?;
    let leader = state.schedule_store.leader().await?;
    Ok(Json(view(&state, schedule, leader).await?))
}

/// Pauses a schedule: every replica skips its ticks until resumed.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    set_paused(state, raw, true).await
}

/// Resumes a paused schedule (ticks skipped while paused do not fire).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    set_paused(state, raw, false).await
}
