//! The OpenAPI 3 document, generated from the handlers, and the docs UI.

use axum::{Json, Router, routing::get};
use utoipa::OpenApi;
use utoipa_scalar::{Scalar, Servable};

use crate::{error, routes, state::AppState};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lucid Node Management API",
        description = "Nodes, PoOT validation batches, queues and jobs."
    ),
    paths(
        routes::health,
        routes::ready,
        routes::metrics,
        routes::batch_validate,
        routes::get_batch,
        routes::list_items,
        routes::cancel_batch,
        routes::get_job,
        routes::retry_job,
        routes::list_queues,
        routes::list_dead,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::FieldError))
)]
pub struct ApiDoc;

/// `/openapi.json` and `/docs`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
}
