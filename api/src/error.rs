//! The one API error type and its JSON envelope:
//! `{"error":{"code","message","details?","request_id","timestamp","service","version"}}`.
//!
//! Driver and internal error text is logged, never returned.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_id::current_request_id;

/// Service name in error envelopes.
pub const SERVICE: &str = "lucid-node-management";

/// Stable error codes.
pub mod codes {
    /// Malformed request (bad JSON syntax, bad query).
    pub const BAD_REQUEST: &str = "LUCID_ERR_4000";
    /// Route or resource not found.
    pub const NOT_FOUND: &str = "LUCID_ERR_4040";
    /// Method not allowed on a known route.
    pub const METHOD_NOT_ALLOWED: &str = "LUCID_ERR_4050";
    /// State conflict.
    pub const CONFLICT: &str = "LUCID_ERR_4090";
    /// Body too large.
    pub const PAYLOAD_TOO_LARGE: &str = "LUCID_ERR_4130";
    /// Body is not JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "LUCID_ERR_4150";
    /// Field validation failed.
    pub const VALIDATION: &str = "LUCID_ERR_4220";
    /// Internal error.
    pub const INTERNAL: &str = "LUCID_ERR_5000";
    /// Node not found.
    pub const NODE_NOT_FOUND: &str = "LUCID_ERR_5001";
    /// Pool not found.
    pub const POOL_NOT_FOUND: &str = "LUCID_ERR_5002";
    /// The node's status does not allow the operation.
    pub const INVALID_NODE_STATUS: &str = "LUCID_ERR_5003";
    /// A resource limit would be exceeded.
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "LUCID_ERR_5004";
    /// PoOT validation failed (bad signature, bad output).
    pub const POOT_VALIDATION_FAILED: &str = "LUCID_ERR_5005";
    /// A node with this id exists.
    pub const NODE_EXISTS: &str = "LUCID_ERR_5007";
    /// A payout is not in a status that allows the operation.
    pub const PAYOUT_STATUS: &str = "LUCID_ERR_5006";
    /// An `Idempotency-Key` reused with a different request.
    pub const IDEMPOTENCY_MISMATCH: &str = "LUCID_ERR_4221";
    /// A pool with this id exists.
    pub const POOL_EXISTS: &str = "LUCID_ERR_5008";
    /// The allocation is not possible (full pool, node in another pool, ...).
    pub const INVALID_ALLOCATION: &str = "LUCID_ERR_5009";
    /// Batch operation failed.
    pub const BATCH_FAILED: &str = "LUCID_ERR_5010";
    /// A dependency (Redis, MongoDB, PostgreSQL) is unavailable.
    pub const UNAVAILABLE: &str = "LUCID_ERR_5030";
    /// No bearer token on an endpoint that needs one.
    pub const UNAUTHORIZED: &str = "LUCID_ERR_4010";
    /// The token is expired, not yet valid, badly signed, of the wrong
    /// algorithm or issuer, or malformed.
    pub const TOKEN_INVALID: &str = "LUCID_ERR_4011";
    /// The token lacks the endpoint's scope.
    pub const FORBIDDEN: &str = "LUCID_ERR_4030";
    /// A node token acting for another node.
    pub const NODE_MISMATCH: &str = "LUCID_ERR_4031";
    /// Rate limit reached.
    pub const RATE_LIMITED: &str = "LUCID_ERR_4291";
    /// The request took longer than `LUCID_REQUEST_TIMEOUT_SECS`.
    pub const TIMEOUT: &str = "LUCID_ERR_5040";
}

/// One offending field of a validation error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `validations[3].timestamp`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An API error: status, code, message and optional per-field details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

/// The error envelope (for the OpenAPI document).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// Body of the error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, `LUCID_ERR_XXXX`.
    pub code: String,
    /// Human readable message.
    pub message: String,
    /// Per-field errors or other context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The request's `x-request-id`.
    pub request_id: String,
    /// When the error happened (RFC 3339).
    pub timestamp: String,
    /// Service name.
    pub service: String,
    /// Service version.
    pub version: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
    /// Adds details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    /// 404 with a code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 503 `LUCID_ERR_5010`: a batch could not be queued.
    pub fn batch_failed() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::BATCH_FAILED,
            "the batch could not be queued; retry later",
        )
    }
    /// 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 422 listing the offending fields.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("invalid field {}: {}", one.field, one.message),
            many => format!("{} invalid fields", many.len()),
        };
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, codes::VALIDATION, message)
            .with_details(serde_json::json!({ "fields": fields }))
    }
    /// 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
    /// 500; the cause is logged, not returned.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error",
        )
    }
    /// 503 when a dependency is down; the cause is logged, not returned.
    pub fn unavailable(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, dependency = what, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            format!("{what} is unavailable; retry later"),
        )
    }
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
                request_id: current_request_id(),
                timestamp: chrono::Utc::now().to_rfc3339(),
                service: SERVICE.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<lucid_jobs::domain::ValidationErrors> for ApiError {
    fn from(e: lucid_jobs::domain::ValidationErrors) -> Self {
        Self::validation(
            e.0.into_iter()
                .map(|(field, message)| FieldError { field, message })
                .collect(),
        )
    }
}

impl From<lucid_jobs::storage::StorageError> for ApiError {
    fn from(e: lucid_jobs::storage::StorageError) -> Self {
        Self::unavailable("MongoDB", e)
    }
}

impl From<lucid_jobs::queue::QueueError> for ApiError {
    fn from(e: lucid_jobs::queue::QueueError) -> Self {
        match e {
            lucid_jobs::queue::QueueError::Redis(e) => Self::unavailable("Redis", e),
            other => Self::internal(other),
        }
    }
}

/// The offending field and message of a JSON body that does not fit its type,
/// from the deserializer's path (a missing field is named in full).
fn json_field_error(e: &axum::extract::rejection::JsonDataError) -> FieldError {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(p) = err.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = p.path().to_string();
            let inner = p.inner().to_string();
            let message = inner
                .split(" at line ")
                .next()
                .unwrap_or(&inner)
                .to_string();
            let parent = if path == "." { String::new() } else { path };
            let field = match message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                Some(missing) if parent.is_empty() => missing.to_string(),
                Some(missing) => format!("{parent}.{missing}"),
                None if parent.is_empty() => "body".to_string(),
                None => parent,
            };
            return FieldError { field, message };
        }
        source = err.source();
    }
    FieldError {
        field: "body".into(),
        message: "does not match the expected shape".into(),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Self::validation(vec![json_field_error(&e)]),
            JsonRejection::JsonSyntaxError(_) => Self::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "request body is not valid JSON",
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    "request body too large",
                )
            }
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_REQUEST,
                "could not read the request body",
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "invalid path parameter",
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("invalid query: {}", r.body_text()),
        )
    }
}
