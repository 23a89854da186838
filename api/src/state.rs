//! Shared request state.

use lucid_jobs::handlers::JobContext;
use sqlx::PgPool;

/// What handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// MongoDB, queue, batches and settings.
    pub jobs: JobContext,
    /// The PostgreSQL ledger pool (connects lazily).
    pub pg: PgPool,
}
