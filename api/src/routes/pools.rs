//! Node pools and their membership.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use lucid_jobs::{
    domain::{
        Check,
        node::{NodeId, ResourceLimits, check_name},
        pool::{AutoScaling, PoolId, check_limits},
    },
    storage::pools::{MembershipError, PoolDoc},
};
use mongodb::bson::{self, Document};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    routes::nodes::{node_not_found, to_bson},
    state::AppState,
};

/// Body of `POST /api/v1/nodes/pools/`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolIn {
    /// `^pool_[A-Za-z0-9_-]+$`; generated when absent.
    pub pool_id: Option<String>,
    /// 3–100 characters of `[A-Za-z0-9 _-]`.
    pub name: String,
    /// At most 500 characters.
    pub description: Option<String>,
    /// Capacity, 1–1000.
    pub max_nodes: u32,
    /// Limits for the pool's nodes.
    pub resource_limits: Option<ResourceLimits>,
    /// Auto-scaling (disabled by default).
    #[serde(default)]
    pub auto_scaling: AutoScaling,
    /// http(s) URL that receives every scaling event of the pool (POST, JSON).
    pub webhook_url: Option<String>,
}

/// Body of `PUT /api/v1/nodes/pools/{pool_id}`: the fields given are replaced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolUpdateIn {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New capacity (not below the current node count).
    pub max_nodes: Option<u32>,
    /// New limits.
    pub resource_limits: Option<ResourceLimits>,
    /// New auto-scaling settings.
    pub auto_scaling: Option<AutoScaling>,
    /// New scaling webhook URL.
    pub webhook_url: Option<String>,
}

/// A pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolOut {
    /// Pool id.
    pub pool_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Nodes in the pool (derived from membership).
    pub node_count: u64,
    /// Capacity.
    pub max_nodes: u32,
    /// Limits.
    pub resource_limits: Option<ResourceLimits>,
    /// Auto-scaling.
    pub auto_scaling: AutoScaling,
    /// Scaling webhook.
    pub webhook_url: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

fn out(p: PoolDoc, node_count: u64) -> PoolOut {
    PoolOut {
        pool_id: p.pool_id,
        name: p.name,
        description: p.description,
        node_count,
        max_nodes: p.max_nodes,
        resource_limits: p.resource_limits,
        auto_scaling: p.auto_scaling,
        webhook_url: p.webhook_url,
        created_at: p.created_at.to_chrono(),
        updated_at: p.updated_at.to_chrono(),
    }
}

/// A page of pools.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PoolPage {
    /// Pools, oldest first.
    pub items: Vec<PoolOut>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// All pools.
    pub total: u64,
}

/// Body of `POST /api/v1/nodes/pools/{pool_id}/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNodeIn {
    /// The node to add.
    pub node_id: String,
}

/// `?force=true` detaches the pool's nodes on delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Detach the pool's nodes instead of refusing.
    pub force: Option<bool>,
}

pub(crate) fn pool_id(raw: &str) -> Result<PoolId, ApiError> {
    PoolId::parse(raw).map_err(|m| ApiError::field("pool_id", m))
}

pub(crate) fn pool_not_found(id: &str) -> ApiError {
    ApiError::not_found(codes::POOL_NOT_FOUND, format!("pool {id} not found"))
}

pub(crate) fn membership_error(e: MembershipError, pool: &str, node: &str) -> ApiError {
    match e {
        MembershipError::PoolNotFound => pool_not_found(pool),
        MembershipError::NodeNotFound => node_not_found(node),
        MembershipError::PoolFull(max) => ApiError::conflict(
            codes::INVALID_ALLOCATION,
            format!("pool {pool} is full ({max} nodes)"),
        ),
        MembershipError::InOtherPool(other) => ApiError::conflict(
            codes::INVALID_ALLOCATION,
            format!("node {node} is already in pool {other}"),
        ),
        MembershipError::NotMember => ApiError::not_found(
            codes::NODE_NOT_FOUND,
            format!("node {node} is not in pool {pool}"),
        ),
        MembershipError::HasNodes(n) => ApiError::conflict(
            codes::INVALID_ALLOCATION,
            format!("pool {pool} has {n} nodes; remove them first or delete with ?force=true"),
        ),
        MembershipError::BelowCount(n) => ApiError::conflict(
            codes::INVALID_ALLOCATION,
            format!("max_nodes cannot be below the pool's {n} nodes"),
        ),
        MembershipError::Storage(s) => s.into(),
    }
}

async fn with_count(state: &AppState, pool: PoolDoc) -> Result<PoolOut, ApiError> {
    let counts = state
        .nodes
        .count_by_pool(std::slice::from_ref(&pool.pool_id))
        .await?;
    let n = counts.get(&pool.pool_id).copied().unwrap_or(0);
    Ok(out(pool, n))
}

fn validate_pool_fields(
    c: &mut Check,
    name: Option<&str>,
    description: Option<&str>,
    max: Option<u32>,
    limits: Option<&ResourceLimits>,
    auto: Option<&AutoScaling>,
    webhook: Option<&str>,
) {
    if let Some(url) = webhook {
        c.ensure(
            (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2048,
            "webhook_url",
            "must be an http:// or https:// URL of at most 2048 characters",
        );
    }
    if let Some(name) = name {
        check_name(c, "name", name);
    }
    if let Some(d) = description {
        c.ensure(
            d.chars().count() <= 500,
            "description",
            "must be at most 500 characters",
        );
    }
    if let Some(max) = max {
        c.range("max_nodes", max, 1, 1000);
    }
    if let Some(l) = limits {
        check_limits(c, l);
    }
    if let Some(a) = auto {
        c.nested("auto_scaling", a.validate());
    }
}

/// Lists pools with their node counts.
#[utoipa::path(get, path = "/api/v1/nodes/pools/", tag = "pools", params(Pagination),
    responses((status = 200, body = PoolPage), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_pools(
    State(state): State<AppState>,
    ValidQuery(p): ValidQuery<Pagination>,
) -> Result<Json<PoolPage>, ApiError> {
    let (page, page_size) = p.resolve()?;
    let (total, pools) = state.pools.list(page, page_size).await?;
    let ids: Vec<String> = pools.iter().map(|p| p.pool_id.clone()).collect();
    let counts = state.nodes.count_by_pool(&ids).await?;
    let items = pools
        .into_iter()
        .map(|p| {
            let n = counts.get(&p.pool_id).copied().unwrap_or(0);
            out(p, n)
        })
        .collect();
    Ok(Json(PoolPage {
        items,
        page,
        page_size,
        total,
    }))
}

/// Creates a pool.
#[utoipa::path(post, path = "/api/v1/nodes/pools/", tag = "pools", request_body = PoolIn,
    responses((status = 201, body = PoolOut), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn create_pool(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<PoolIn>,
) -> Result<(StatusCode, Json<PoolOut>), ApiError> {
    let mut c = Check::new();
    let id = match &body.pool_id {
        Some(raw) => PoolId::parse(raw)
            .map_err(|m| c.ensure(false, "pool_id", m))
            .ok(),
        None => Some(PoolId::generate()),
    };
    validate_pool_fields(
        &mut c,
        Some(&body.name),
        body.description.as_deref(),
        Some(body.max_nodes),
        body.resource_limits.as_ref(),
        Some(&body.auto_scaling),
        body.webhook_url.as_deref(),
    );
    c.finish()?;
    let Some(id) = id else {
        return Err(ApiError::internal("pool id missing after validation"));
    };
    let now = bson::DateTime::now();
    let doc = PoolDoc {
        pool_id: id.as_str().to_string(),
        name: body.name,
        description: body.description,
        max_nodes: body.max_nodes,
        resource_limits: body.resource_limits,
        auto_scaling: body.auto_scaling,
        webhook_url: body.webhook_url,
        version: 0,
        created_at: now,
        updated_at: now,
    };
    if !state.pools.insert(&doc).await? {
        return Err(ApiError::conflict(
            codes::POOL_EXISTS,
            format!("pool {} already exists", doc.pool_id),
        ));
    }
    Ok((StatusCode::CREATED, Json(out(doc, 0))))
}

/// A pool.
#[utoipa::path(get, path = "/api/v1/nodes/pools/{pool_id}", tag = "pools", params(("pool_id" = String, Path)),
    responses((status = 200, body = PoolOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_pool(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<PoolOut>, ApiError> {
    let id = pool_id(&raw)?;
    let pool = state
        .pools
        .get(id.as_str())
        .await?
        .ok_or_else(|| pool_not_found(id.as_str()))?;
    Ok(Json(with_count(&state, pool).await?))
}

/// Replaces the given fields of a pool.
#[utoipa::path(put, path = "/api/v1/nodes/pools/{pool_id}", tag = "pools", params(("pool_id" = String, Path)), request_body = PoolUpdateIn,
    responses((status = 200, body = PoolOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn update_pool(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<PoolUpdateIn>,
) -> Result<Json<PoolOut>, ApiError> {
    let id = pool_id(&raw)?;
    let mut c = Check::new();
    validate_pool_fields(
        &mut c,
        body.name.as_deref(),
        body.description.as_deref(),
        body.max_nodes,
        body.resource_limits.as_ref(),
        body.auto_scaling.as_ref(),
        body.webhook_url.as_deref(),
    );
    let mut set = Document::new();
    if let Some(v) = &body.name {
        set.insert("name", v);
    }
    if let Some(v) = &body.description {
        set.insert("description", v);
    }
    if let Some(v) = body.max_nodes {
        set.insert("max_nodes", i64::from(v));
    }
    if let Some(v) = &body.resource_limits {
        set.insert("resource_limits", to_bson(v)?);
    }
    if let Some(v) = &body.auto_scaling {
        set.insert("auto_scaling", to_bson(v)?);
    }
    if let Some(v) = &body.webhook_url {
        set.insert("webhook_url", v);
    }
    c.ensure(!set.is_empty(), "body", "must change at least one field");
    c.finish()?;
    let pool = state
        .pools
        .update(id.as_str(), set)
        .await
        .map_err(|e| membership_error(e, id.as_str(), ""))?;
    Ok(Json(with_count(&state, pool).await?))
}

/// Deletes a pool: 409 while it has nodes, unless `?force=true` detaches them.
#[utoipa::path(delete, path = "/api/v1/nodes/pools/{pool_id}", tag = "pools", params(("pool_id" = String, Path), DeleteQuery),
    responses((status = 204), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn delete_pool(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let id = pool_id(&raw)?;
    state
        .pools
        .delete(id.as_str(), q.force.unwrap_or(false))
        .await
        .map_err(|e| membership_error(e, id.as_str(), ""))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a node to a pool (409 LUCID_ERR_5009 when full or in another pool).
#[utoipa::path(post, path = "/api/v1/nodes/pools/{pool_id}/nodes", tag = "pools", params(("pool_id" = String, Path)), request_body = AddNodeIn,
    responses((status = 200, body = PoolOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn add_pool_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<AddNodeIn>,
) -> Result<Json<PoolOut>, ApiError> {
    let id = pool_id(&raw)?;
    let node = NodeId::parse(&body.node_id).map_err(|m| ApiError::field("node_id", m))?;
    state
        .pools
        .add_node(id.as_str(), node.as_str())
        .await
        .map_err(|e| membership_error(e, id.as_str(), node.as_str()))?;
    let pool = state
        .pools
        .get(id.as_str())
        .await?
        .ok_or_else(|| pool_not_found(id.as_str()))?;
    Ok(Json(with_count(&state, pool).await?))
}

/// Removes a node from a pool.
#[utoipa::path(delete, path = "/api/v1/nodes/pools/{pool_id}/nodes/{node_id}", tag = "pools",
    params(("pool_id" = String, Path), ("node_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn remove_pool_node(
    State(state): State<AppState>,
    ValidPath((raw_pool, raw_node)): ValidPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = pool_id(&raw_pool)?;
    let node = NodeId::parse(&raw_node).map_err(|m| ApiError::field("node_id", m))?;
    state
        .pools
        .remove_node(id.as_str(), node.as_str())
        .await
        .map_err(|e| membership_error(e, id.as_str(), node.as_str()))?;
    Ok(StatusCode::NO_CONTENT)
}
