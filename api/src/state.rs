//! Shared request state.

use lucid_jobs::{
    handlers::JobContext,
    storage::{nodes::NodeRepo, pools::PoolRepo},
};
use sqlx::PgPool;

/// What handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// MongoDB, queue, batches and settings.
    pub jobs: JobContext,
    /// Nodes.
    pub nodes: NodeRepo,
    /// Node pools.
    pub pools: PoolRepo,
    /// Resource samples, thresholds and alerts.
    pub resources: lucid_jobs::storage::resources::ResourceRepo,
    /// PoOT proofs, scores and validations.
    pub validator: lucid_jobs::poot::validation::Validator,
    /// The scheduler's schedules (from configuration).
    pub schedules: std::sync::Arc<Vec<lucid_jobs::schedule::Schedule>>,
    /// The scheduler's state in Redis.
    pub schedule_store: lucid_jobs::schedule::store::ScheduleStore,
    /// The PostgreSQL ledger pool (connects lazily).
    pub pg: PgPool,
}
