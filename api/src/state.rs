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
    /// PoOT proofs.
    pub poot: lucid_jobs::poot::repo::PootRepo,
    /// The PostgreSQL ledger pool (connects lazily).
    pub pg: PgPool,
}
