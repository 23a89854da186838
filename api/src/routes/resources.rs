//! Node resources: reports of samples, the latest snapshot, aggregated
//! metrics, per-component series, thresholds and alerts.

mod types;

pub use types::*;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use lucid_jobs::{
    domain::{
        Check,
        resources::{
            CpuSample, DiskSample, Granularity, MAX_SAMPLES_PER_REPORT, MAX_SERIES_POINTS,
            MemorySample, Metric, NetworkSample, ResourceSample, check_metrics_range,
        },
    },
    storage::resources::ResourceSampleDoc,
};
use serde::de::DeserializeOwned;

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    routes::nodes::load_node,
    state::AppState,
};

fn no_samples(node_id: &str) -> ApiError {
    ApiError::not_found(
        codes::NOT_FOUND,
        format!("node {node_id} has not reported any resource samples yet"),
    )
}

/// Parses an RFC 3339 query time; a `+` decoded to a space is put back.
fn parse_time(c: &mut Check, field: &str, raw: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(&raw.replace(' ', "+"))
        .ok()
        .map(|t| t.with_timezone(&Utc));
    c.ensure(
        parsed.is_some(),
        field,
        "must be an RFC 3339 date-time, e.g. 2025-01-31T12:00:00Z",
    );
    parsed
}

/// `[start, end)`: end defaults to now, start to one hour before end.
fn window(c: &mut Check, start: Option<&str>, end: Option<&str>) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = end
        .and_then(|raw| parse_time(c, "end", raw))
        .unwrap_or_else(Utc::now);
    let start = start
        .and_then(|raw| parse_time(c, "start", raw))
        .unwrap_or(end - TimeDelta::hours(1));
    (start, end)
}

/// Reads one sample or a batch `{"samples": [...]}` and validates every field.
fn parse_report(
    body: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Vec<ResourceSample>, ApiError> {
    let is_batch = body.as_object().is_some_and(|o| o.contains_key("samples"));
    let bytes = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    if !is_batch {
        let Json(one) = Json::<ResourceSampleIn>::from_bytes(&bytes)?;
        let sample = one.into_sample(now);
        sample.validate(now)?;
        return Ok(vec![sample]);
    }
    let Json(batch) = Json::<ResourceBatchIn>::from_bytes(&bytes)?;
    if !(1..=MAX_SAMPLES_PER_REPORT).contains(&batch.samples.len()) {
        return Err(ApiError::field(
            "samples",
            format!("must hold 1 to {MAX_SAMPLES_PER_REPORT} samples"),
        ));
    }
    let samples: Vec<ResourceSample> = batch
        .samples
        .into_iter()
        .map(|s| s.into_sample(now))
        .collect();
    let mut c = Check::new();
    for (i, s) in samples.iter().enumerate() {
        c.nested(&format!("samples[{i}]"), s.validate(now));
    }
    c.finish()?;
    Ok(samples)
}

/// Stores one sample or a batch of up to 1000, updates the node's
/// heartbeat and applies the alert rules.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/resources", tag = "resources",
    params(("node_id" = String, Path)), request_body = ResourceReportIn,
    responses((status = 201, body = ResourceReportOut), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn report_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<serde_json::Value>,
) -> Result<(StatusCode, Json<ResourceReportOut>), ApiError> {
    let node = load_node(&state, &raw).await?;
    let now = Utc::now();
    let samples = parse_report(body, now)?;
    let alerts = state
        .resources
        .report(
            &node.node_id,
            node.configuration.resource_limits.network_mbps,
            &samples,
        )
        .await?;
    state.nodes.touch_heartbeat(&node.node_id, now).await?;
    Ok((
        StatusCode::CREATED,
        Json(ResourceReportOut {
            accepted: samples.len(),
            alerts: alerts.into_iter().map(AlertOut::from).collect(),
        }),
    ))
}

/// The node's newest sample.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources", tag = "resources",
    params(("node_id" = String, Path)),
    responses((status = 200, body = ResourceSampleOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn latest_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<ResourceSampleOut>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let latest = state
        .resources
        .latest(&node.node_id)
        .await?
        .ok_or_else(|| no_samples(&node.node_id))?;
    Ok(Json(latest.into()))
}

/// Samples in `[start, end)` aggregated per bucket (mean and maximum).
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/metrics", tag = "resources",
    params(("node_id" = String, Path), ResourceMetricsQuery),
    responses((status = 200, body = ResourceMetricsOut), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn resource_metrics(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<ResourceMetricsQuery>,
) -> Result<Json<ResourceMetricsOut>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let mut c = Check::new();
    let (start, end) = window(&mut c, q.start.as_deref(), q.end.as_deref());
    let granularity = match q.granularity.as_deref() {
        None => Some(Granularity::OneMinute),
        Some(raw) => {
            let g = Granularity::parse(raw);
            c.ensure(g.is_some(), "granularity", "must be one of 1m, 5m, 1h, 1d");
            g
        }
    };
    c.finish()?;
    let granularity = granularity.unwrap_or(Granularity::OneMinute);
    check_metrics_range(start, end, granularity)?;
    let buckets = state
        .resources
        .metrics(&node.node_id, start, end, granularity.bucket_ms())
        .await?;
    Ok(Json(ResourceMetricsOut {
        node_id: node.node_id,
        start,
        end,
        granularity,
        buckets: buckets.into_iter().map(MetricBucketOut::from).collect(),
    }))
}

async fn component<T: DeserializeOwned>(
    state: &AppState,
    raw: &str,
    q: ResourceRangeQuery,
    metric: Metric,
    pick: fn(ResourceSampleDoc) -> T,
) -> Result<Json<ComponentSeriesOut<T>>, ApiError> {
    let node = load_node(state, raw).await?;
    let mut c = Check::new();
    let (start, end) = window(&mut c, q.start.as_deref(), q.end.as_deref());
    c.finish()?;
    if start >= end {
        return Err(ApiError::field("start", "must be before end"));
    }
    let latest = state
        .resources
        .latest(&node.node_id)
        .await?
        .ok_or_else(|| no_samples(&node.node_id))?;
    let series = state
        .resources
        .series::<T>(&node.node_id, metric, start, end, MAX_SERIES_POINTS)
        .await?;
    Ok(Json(ComponentSeriesOut {
        node_id: node.node_id,
        component: metric,
        latest: ComponentPoint {
            timestamp: latest.timestamp.to_chrono(),
            value: pick(latest),
        },
        series: series
            .into_iter()
            .map(|(timestamp, value)| ComponentPoint { timestamp, value })
            .collect(),
    }))
}

/// The latest CPU values and their series over `[start, end)` (default the last hour).
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/cpu", tag = "resources",
    params(("node_id" = String, Path), ResourceRangeQuery),
    responses((status = 200, body = ComponentSeriesOut<CpuSample>), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn cpu_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<ResourceRangeQuery>,
) -> Result<Json<ComponentSeriesOut<CpuSample>>, ApiError> {
    component(&state, &raw, q, Metric::Cpu, |d| d.cpu).await
}

/// The latest memory values and their series over `[start, end)` (default the last hour).
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/memory", tag = "resources",
    params(("node_id" = String, Path), ResourceRangeQuery),
    responses((status = 200, body = ComponentSeriesOut<MemorySample>), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn memory_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<ResourceRangeQuery>,
) -> Result<Json<ComponentSeriesOut<MemorySample>>, ApiError> {
    component(&state, &raw, q, Metric::Memory, |d| d.memory).await
}

/// The latest disk values and their series over `[start, end)` (default the last hour).
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/disk", tag = "resources",
    params(("node_id" = String, Path), ResourceRangeQuery),
    responses((status = 200, body = ComponentSeriesOut<DiskSample>), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn disk_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<ResourceRangeQuery>,
) -> Result<Json<ComponentSeriesOut<DiskSample>>, ApiError> {
    component(&state, &raw, q, Metric::Disk, |d| d.disk).await
}

/// The latest network counters and their series over `[start, end)` (default the last hour).
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/network", tag = "resources",
    params(("node_id" = String, Path), ResourceRangeQuery),
    responses((status = 200, body = ComponentSeriesOut<NetworkSample>), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn network_resources(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<ResourceRangeQuery>,
) -> Result<Json<ComponentSeriesOut<NetworkSample>>, ApiError> {
    component(&state, &raw, q, Metric::Network, |d| d.network).await
}

/// Sets some or all of the node's warning/critical pairs; returns the
/// effective thresholds.
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/resources/thresholds", tag = "resources",
    params(("node_id" = String, Path)), request_body = ThresholdsIn,
    responses((status = 200, body = ThresholdsOut), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn set_thresholds(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<ThresholdsIn>,
) -> Result<Json<ThresholdsOut>, ApiError> {
    let node = load_node(&state, &raw).await?;
    let mut c = Check::new();
    let mut changes = Vec::new();
    for (metric, pair) in [
        (Metric::Cpu, body.cpu),
        (Metric::Memory, body.memory),
        (Metric::Disk, body.disk),
        (Metric::Network, body.network),
    ] {
        if let Some(pair) = pair {
            c.nested(metric.as_str(), pair.validate());
            changes.push((metric, pair));
        }
    }
    c.ensure(
        !changes.is_empty(),
        "body",
        "must set at least one of cpu, memory, disk, network",
    );
    c.finish()?;
    let thresholds = state
        .resources
        .update_thresholds(&node.node_id, &changes)
        .await?;
    Ok(Json(ThresholdsOut::new(node.node_id, thresholds)))
}

/// The node's alerts, newest first, optionally only active or resolved ones.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/resources/alerts", tag = "resources",
    params(("node_id" = String, Path), AlertQuery),
    responses((status = 200, body = AlertPage), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_alerts(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let (page, page_size) = Pagination {
        page: q.page,
        page_size: q.page_size,
    }
    .resolve()?;
    let node = load_node(&state, &raw).await?;
    let (total, items) = state
        .resources
        .list_alerts(&node.node_id, q.state, page, page_size)
        .await?;
    Ok(Json(AlertPage {
        items: items.into_iter().map(AlertOut::from).collect(),
        page,
        page_size,
        total,
    }))
}
