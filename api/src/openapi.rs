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
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::FieldError))
)]
pub struct ApiDoc;

/// `/openapi.json` and `/docs`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
}
