//! Job handlers and what they share.

pub mod callback;

pub use callback::{CallbackJob, deliver_callback};

use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    batch::{BatchRecord, BatchRepo},
    config::Settings,
    queue::Queue,
    storage::Db,
};

/// What every handler (and the API's submission path) needs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// MongoDB.
    pub db: Db,
    /// The queue.
    pub queue: Queue,
    /// Batch repository.
    pub batches: BatchRepo,
    /// Settings.
    pub settings: Arc<Settings>,
    /// HTTP client for callbacks.
    pub http: reqwest::Client,
    /// PoOT scoring and validation records.
    pub validator: crate::poot::validation::Validator,
    /// Per-batch node snapshots (scores computed once per batch and node).
    pub snapshots: crate::poot::snapshot::Snapshots,
    /// Payout documents.
    pub payouts: crate::payouts::repo::PayoutRepo,
    /// The payout ledger (PostgreSQL).
    pub ledger: crate::ledger::Ledger,
    /// Scaling evaluations and events.
    pub scaling: crate::scaling::repo::ScalingRepo,
    /// The payment rail.
    pub gateway: Arc<dyn crate::payouts::gateway::PayoutGateway>,
}

impl JobContext {
    /// Creates the indexes of the PoOT collections the handlers write.
    pub async fn ensure_indexes(&self) -> Result<(), crate::storage::StorageError> {
        self.validator.ensure_indexes().await?;
        self.payouts.ensure_indexes().await?;
        self.scaling.ensure_indexes().await?;
        self.snapshots.ensure_indexes().await
    }

    /// Builds the context from its connections.
    pub fn new(
        db: Db,
        queue: Queue,
        ledger: crate::ledger::Ledger,
        settings: Arc<Settings>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let poot = crate::poot::repo::PootRepo::new(&db, settings.poot.clone());
        let validator = crate::poot::validation::Validator::new(&db, poot);
        let rail = &settings.payouts;
        let gateway = Arc::new(crate::payouts::gateway::SimulatedRail::new(
            ledger.pool().clone(),
            rail.rail_failure_rate,
            std::time::Duration::from_millis(rail.rail_delay_ms),
        ));
        Self {
            payouts: crate::payouts::repo::PayoutRepo::new(&db),
            scaling: crate::scaling::repo::ScalingRepo::new(&db),
            ledger,
            gateway,
            batches: BatchRepo::new(&db),
            snapshots: crate::poot::snapshot::Snapshots::new(&db, validator.clone()),
            validator,
            db,
            queue,
            settings,
            http,
        }
    }
}

/// Finalizes a batch whose chunks have all finished and, if this call made
/// the transition and the batch has a callback, enqueues its delivery (one
/// job per batch: the job id is deterministic).
pub async fn finalize_batch(ctx: &JobContext, batch: &BatchRecord) -> anyhow::Result<()> {
    let Some(status) = ctx
        .batches
        .finalize_if_done(batch)
        .await
        .context("finalize batch")?
    else {
        return Ok(());
    };
    tracing::info!(batch_id = %batch.batch_id, status = status.as_str(), "batch finished");
    enqueue_callback(ctx, batch).await
}

/// Enqueues the delivery of a finished batch's callback, if it has one (one
/// job per batch: the job id is deterministic).
pub async fn enqueue_callback(ctx: &JobContext, batch: &BatchRecord) -> anyhow::Result<()> {
    let Some(url) = &batch.callback_url else {
        return Ok(());
    };
    let job = CallbackJob::V1 {
        batch_id: batch.batch_id.clone(),
        url: url.clone(),
    };
    callback::enqueue_delivery(
        ctx,
        &job,
        format!("callback-{}", batch.batch_id),
        Some(batch.batch_id.clone()),
    )
    .await
}
