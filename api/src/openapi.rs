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
        description = "Nodes, pools and their scaling, resources, PoOT validation batches, payouts, schedules, queues and jobs."
    ),
    paths(
        routes::health,
        routes::ready,
        routes::metrics,
        routes::batch_validate,
        routes::list_batches,
        routes::get_batch,
        routes::list_items,
        routes::cancel_batch,
        routes::get_job,
        routes::retry_job,
        routes::list_queues,
        routes::list_dead,
        routes::list_nodes,
        routes::create_node,
        routes::get_node,
        routes::update_node,
        routes::delete_node,
        routes::start_node,
        routes::stop_node,
        routes::node_status,
        routes::list_pools,
        routes::create_pool,
        routes::get_pool,
        routes::update_pool,
        routes::delete_pool,
        routes::add_pool_node,
        routes::remove_pool_node,
        routes::report_resources,
        routes::latest_resources,
        routes::resource_metrics,
        routes::cpu_resources,
        routes::memory_resources,
        routes::disk_resources,
        routes::network_resources,
        routes::set_thresholds,
        routes::list_alerts,
        routes::submit_proofs,
        routes::rotate_secret,
        routes::calculate,
        routes::validate,
        routes::latest_score,
        routes::history,
        routes::statistics,
        routes::create_payout,
        routes::list_payouts,
        routes::submit_payout_batch,
        routes::get_payout_batch,
        routes::get_payout,
        routes::cancel_payout,
        routes::payout_stats,
        routes::payout_queue,
        routes::evaluate_pool,
        routes::evaluate_all,
        routes::scaling_events,
        routes::scale_pool,
        routes::list_schedules,
        routes::trigger_schedule,
        routes::pause_schedule,
        routes::resume_schedule,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::FieldError)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer JWT scheme every `/api/v1` operation uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token from `lucid-api token`; scopes per endpoint are listed in the README."))
                    .build(),
            ),
        );
    }
}

/// `/openapi.json` and `/docs`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
}

/// Every documented operation as (method, path template), for checks that
/// must cover the whole API (the scope table, for one).
pub fn operations() -> Vec<(axum::http::Method, String)> {
    let doc = ApiDoc::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            (axum::http::Method::GET, &item.get),
            (axum::http::Method::POST, &item.post),
            (axum::http::Method::PUT, &item.put),
            (axum::http::Method::DELETE, &item.delete),
        ] {
            if op.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}
