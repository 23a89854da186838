//! Nodes: create, list, read, update, delete, start/stop and status.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use lucid_jobs::{
    domain::{
        Check,
        node::{
            HardwareInfo, Location, NodeConfiguration, NodeId, NodeStatus, NodeType,
            StatusTransition, Transition, check_name,
        },
    },
    storage::nodes::{NodeDoc, NodeFilter, TransitionOutcome},
};
use mongodb::bson::{self, Document};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, ErrorEnvelope, codes},
    extract::{Pagination, ValidJson, ValidPath, ValidQuery},
    state::AppState,
};

/// Body of `POST /api/v1/nodes/`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeIn {
    /// `^node_[A-Za-z0-9_-]+$`; generated when absent.
    pub node_id: Option<String>,
    /// 3–100 characters of `[A-Za-z0-9 _-]`.
    pub name: String,
    /// Type.
    pub node_type: NodeType,
    /// Initial status (default `inactive`).
    pub status: Option<NodeStatus>,
    /// Hardware.
    pub hardware_info: HardwareInfo,
    /// Location.
    pub location: Location,
    /// Configuration.
    pub configuration: NodeConfiguration,
}

/// Body of `PUT /api/v1/nodes/{node_id}`: the fields given are replaced.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdateIn {
    /// New name.
    pub name: Option<String>,
    /// New type.
    pub node_type: Option<NodeType>,
    /// New hardware description.
    pub hardware_info: Option<HardwareInfo>,
    /// New location.
    pub location: Option<Location>,
    /// New configuration.
    pub configuration: Option<NodeConfiguration>,
}

/// A node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeOut {
    /// Node id.
    pub node_id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: NodeStatus,
    /// Type.
    pub node_type: NodeType,
    /// Pool, if any.
    pub pool_id: Option<String>,
    /// Hardware.
    pub hardware_info: HardwareInfo,
    /// Location.
    pub location: Location,
    /// Configuration.
    pub configuration: NodeConfiguration,
    /// Latest PoOT score, 0–100.
    pub poot_score: Option<f64>,
    /// Last report.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<NodeDoc> for NodeOut {
    fn from(n: NodeDoc) -> Self {
        Self {
            node_id: n.node_id,
            name: n.name,
            status: n.status,
            node_type: n.node_type,
            pool_id: n.pool_id,
            hardware_info: n.hardware_info,
            location: n.location,
            configuration: n.configuration,
            poot_score: n.poot_score,
            last_heartbeat: n.last_heartbeat.map(|t| t.to_chrono()),
            created_at: n.created_at.to_chrono(),
            updated_at: n.updated_at.to_chrono(),
        }
    }
}

/// Answer of a node registration: the node and, this once, its proof secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeCreatedOut {
    /// The node.
    #[serde(flatten)]
    pub node: NodeOut,
    /// Hex secret for signing work proofs (HMAC-SHA256). Shown only here.
    pub secret: String,
}

/// A node's status and its recent transitions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeStatusOut {
    /// Node id.
    pub node_id: String,
    /// Status.
    pub status: NodeStatus,
    /// Last report.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The latest transitions, oldest first (at most 100).
    pub transitions: Vec<StatusTransition>,
}

impl From<&NodeDoc> for NodeStatusOut {
    fn from(n: &NodeDoc) -> Self {
        Self {
            node_id: n.node_id.clone(),
            status: n.status,
            last_heartbeat: n.last_heartbeat.map(|t| t.to_chrono()),
            updated_at: n.updated_at.to_chrono(),
            transitions: n.transitions.iter().map(StatusTransition::from).collect(),
        }
    }
}

/// A page of nodes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodePage {
    /// Nodes, oldest first.
    pub items: Vec<NodeOut>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// Nodes matching the filters.
    pub total: u64,
}

/// Filters and pagination of the node listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NodeQuery {
    /// Status.
    pub status: Option<NodeStatus>,
    /// Type.
    pub node_type: Option<NodeType>,
    /// Pool id.
    pub pool_id: Option<String>,
    /// Page from 1.
    pub page: Option<u64>,
    /// Page size, 1–100 (default 20).
    pub page_size: Option<u64>,
}

/// Parses a node id from a path, 422 when malformed.
pub(crate) fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(raw).map_err(|m| ApiError::field("node_id", m))
}

pub(crate) fn node_not_found(id: &str) -> ApiError {
    ApiError::not_found(codes::NODE_NOT_FOUND, format!("node {id} not found"))
}

/// Loads a node or answers 404 LUCID_ERR_5001.
pub(crate) async fn load_node(state: &AppState, raw_id: &str) -> Result<NodeDoc, ApiError> {
    let id = node_id(raw_id)?;
    state
        .nodes
        .get(id.as_str())
        .await?
        .ok_or_else(|| node_not_found(id.as_str()))
}

pub(crate) fn to_bson<T: Serialize>(v: &T) -> Result<bson::Bson, ApiError> {
    bson::to_bson(v).map_err(ApiError::internal)
}

/// Lists nodes, filtered and paginated.
#[utoipa::path(get, path = "/api/v1/nodes/", tag = "nodes", params(NodeQuery),
    responses((status = 200, body = NodePage), (status = 400, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn list_nodes(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<NodeQuery>,
) -> Result<Json<NodePage>, ApiError> {
    let (page, page_size) = Pagination {
        page: q.page,
        page_size: q.page_size,
    }
    .resolve()?;
    let filter = NodeFilter {
        status: q.status,
        node_type: q.node_type,
        pool_id: q.pool_id,
    };
    let (total, items) = state.nodes.list(&filter, page, page_size).await?;
    Ok(Json(NodePage {
        items: items.into_iter().map(NodeOut::from).collect(),
        page,
        page_size,
        total,
    }))
}

/// Registers a node.
#[utoipa::path(post, path = "/api/v1/nodes/", tag = "nodes", request_body = NodeIn,
    responses((status = 201, body = NodeCreatedOut), (status = 409, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn create_node(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<NodeIn>,
) -> Result<(StatusCode, Json<NodeCreatedOut>), ApiError> {
    let mut c = Check::new();
    let id = match &body.node_id {
        Some(raw) => match NodeId::parse(raw) {
            Ok(id) => Some(id),
            Err(m) => {
                c.ensure(false, "node_id", m);
                None
            }
        },
        None => Some(NodeId::generate()),
    };
    check_name(&mut c, "name", &body.name);
    c.nested("hardware_info", body.hardware_info.validate())
        .nested("location", body.location.validate())
        .nested("configuration", body.configuration.validate());
    c.finish()?;
    let Some(id) = id else {
        return Err(ApiError::internal("node id missing after validation"));
    };
    let now = bson::DateTime::now();
    let doc = NodeDoc {
        node_id: id.as_str().to_string(),
        name: body.name,
        status: body.status.unwrap_or(NodeStatus::Inactive),
        node_type: body.node_type,
        pool_id: None,
        hardware_info: body.hardware_info,
        location: body.location,
        configuration: body.configuration,
        poot_score: None,
        last_heartbeat: None,
        transitions: Vec::new(),
        secret: Some(hex::encode(rand::random::<[u8; 32]>())),
        created_at: now,
        updated_at: now,
    };
    if !state.nodes.insert(&doc).await? {
        return Err(ApiError::conflict(
            codes::NODE_EXISTS,
            format!("node {id} already exists"),
        ));
    }
    let secret = doc.secret.clone().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(NodeCreatedOut {
            node: doc.into(),
            secret,
        }),
    ))
}

/// A node.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}", tag = "nodes", params(("node_id" = String, Path)),
    responses((status = 200, body = NodeOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn get_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<NodeOut>, ApiError> {
    Ok(Json(load_node(&state, &raw).await?.into()))
}

/// Replaces the given fields of a node.
#[utoipa::path(put, path = "/api/v1/nodes/{node_id}", tag = "nodes", params(("node_id" = String, Path)), request_body = NodeUpdateIn,
    responses((status = 200, body = NodeOut), (status = 404, body = ErrorEnvelope), (status = 422, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state, body))]
pub async fn update_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidJson(body): ValidJson<NodeUpdateIn>,
) -> Result<Json<NodeOut>, ApiError> {
    let id = node_id(&raw)?;
    let mut c = Check::new();
    let mut set = Document::new();
    if let Some(name) = &body.name {
        check_name(&mut c, "name", name);
        set.insert("name", name);
    }
    if let Some(t) = &body.node_type {
        set.insert("node_type", to_bson(t)?);
    }
    if let Some(h) = &body.hardware_info {
        c.nested("hardware_info", h.validate());
        set.insert("hardware_info", to_bson(h)?);
    }
    if let Some(l) = &body.location {
        c.nested("location", l.validate());
        set.insert("location", to_bson(l)?);
    }
    if let Some(cfg) = &body.configuration {
        c.nested("configuration", cfg.validate());
        set.insert("configuration", to_bson(cfg)?);
    }
    c.ensure(!set.is_empty(), "body", "must change at least one field");
    c.finish()?;
    let node = state
        .nodes
        .update(id.as_str(), set)
        .await?
        .ok_or_else(|| node_not_found(id.as_str()))?;
    Ok(Json(node.into()))
}

/// Deletes a node (it leaves its pool).
#[utoipa::path(delete, path = "/api/v1/nodes/{node_id}", tag = "nodes", params(("node_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn delete_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = node_id(&raw)?;
    if state.nodes.delete(id.as_str()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(node_not_found(id.as_str()))
    }
}

async fn transition(
    state: &AppState,
    raw: &str,
    t: Transition,
) -> Result<Json<NodeStatusOut>, ApiError> {
    let id = node_id(raw)?;
    match state.nodes.transition(id.as_str(), t).await? {
        TransitionOutcome::Done(node) => Ok(Json(NodeStatusOut::from(node.as_ref()))),
        TransitionOutcome::Refused(current) => Err(ApiError::conflict(
            codes::INVALID_NODE_STATUS,
            format!(
                "cannot {} a node that is {}",
                if t == Transition::Start {
                    "start"
                } else {
                    "stop"
                },
                current.as_str()
            ),
        )
        .with_details(serde_json::json!({ "status": current }))),
        TransitionOutcome::NotFound => Err(node_not_found(id.as_str())),
    }
}

/// Starts a node (to `active`).
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/start", tag = "nodes", params(("node_id" = String, Path)),
    responses((status = 200, body = NodeStatusOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn start_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<NodeStatusOut>, ApiError> {
    transition(&state, &raw, Transition::Start).await
}

/// Stops a node (to `inactive`).
#[utoipa::path(post, path = "/api/v1/nodes/{node_id}/stop", tag = "nodes", params(("node_id" = String, Path)),
    responses((status = 200, body = NodeStatusOut), (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn stop_node(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<NodeStatusOut>, ApiError> {
    transition(&state, &raw, Transition::Stop).await
}

/// A node's status and recent transitions.
#[utoipa::path(get, path = "/api/v1/nodes/{node_id}/status", tag = "nodes", params(("node_id" = String, Path)),
    responses((status = 200, body = NodeStatusOut), (status = 404, body = ErrorEnvelope)))]
#[tracing::instrument(skip(state))]
pub async fn node_status(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<NodeStatusOut>, ApiError> {
    Ok(Json(NodeStatusOut::from(&load_node(&state, &raw).await?)))
}
