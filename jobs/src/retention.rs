//! The retention job (`maintenance` queue): deletes what outlived its
//! retention — finished batches and their chunk summaries
//! (`LUCID_JOB_RETENTION_SECS`), scaling evaluations (same retention),
//! resource samples (`LUCID_RESOURCE_RETENTION_DAYS`, in case the TTL monitor
//! lags) — and drops expired dead letters from every queue. Deleting what is
//! already gone is a no-op, so re-runs are harmless.

use anyhow::Context as _;
use chrono::{Duration, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use crate::{
    handlers::JobContext,
    queue::{ALL_QUEUES, EnqueueOptions, JobLease, MAINTENANCE_QUEUE, NewJob, Priority},
    storage::collections,
};

/// Stable job name.
pub const JOB_NAME: &str = "maintenance.retention";
/// Batches deleted per round (each round is a few bounded commands).
const ROUND: i64 = 500;

/// Payload of a retention job. Versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum RetentionJob {
    /// Clean up with the configured retentions.
    #[serde(rename = "v1")]
    V1,
}

/// What a clean-up deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Finished batches.
    pub batches: u64,
    /// Chunk summaries of those batches.
    pub chunk_results: u64,
    /// Scaling evaluations.
    pub evaluations: u64,
    /// Resource samples.
    pub samples: u64,
}

/// Enqueues a clean-up under `job_id`.
pub async fn enqueue(ctx: &JobContext, job_id: String) -> anyhow::Result<String> {
    ctx.queue
        .enqueue(
            MAINTENANCE_QUEUE,
            NewJob {
                kind: JOB_NAME.into(),
                payload: serde_json::to_string(&RetentionJob::V1)?,
                options: EnqueueOptions {
                    job_id: Some(job_id),
                    priority: Priority::Low,
                    ..EnqueueOptions::default()
                },
            },
        )
        .await
        .context("enqueue retention")
}

/// Runs the retention job.
#[tracing::instrument(skip(ctx, _job, lease), fields(job_id = %lease.job_id))]
pub async fn handle_retention(
    ctx: &JobContext,
    _job: RetentionJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let report = clean_up(ctx).await?;
    tracing::info!(?report, "retention clean-up done");
    Ok(())
}

/// Deletes everything past its retention.
pub async fn clean_up(ctx: &JobContext) -> anyhow::Result<RetentionReport> {
    let now = Utc::now();
    let jobs_cutoff = bson::DateTime::from_chrono(
        now - Duration::seconds(ctx.settings.job_retention_secs.min(i64::MAX as u64) as i64),
    );
    let samples_cutoff = bson::DateTime::from_chrono(
        now - Duration::days(i64::from(ctx.settings.resource_retention_days)),
    );
    let mut report = RetentionReport::default();
    let batches = ctx.db.collection::<Document>(collections::BATCHES);
    let chunks = ctx.db.collection::<Document>(collections::JOBS);
    loop {
        let old: Vec<Document> = batches
            .find(doc! { "finished_at": { "$lt": jobs_cutoff } })
            .projection(doc! { "_id": 1 })
            .limit(ROUND)
            .await
            .context("find old batches")?
            .try_collect()
            .await
            .context("read old batches")?;
        if old.is_empty() {
            break;
        }
        for batch in &old {
            let Ok(id) = batch.get_str("_id") else {
                continue;
            };
            report.chunk_results += chunks
                .delete_many(doc! { "batch_id": id })
                .await
                .context("delete chunk summaries")?
                .deleted_count;
            report.batches += batches
                .delete_one(doc! { "_id": id })
                .await
                .context("delete batch")?
                .deleted_count;
        }
    }
    report.evaluations = ctx
        .db
        .collection::<Document>(crate::scaling::EVALUATIONS)
        .delete_many(doc! { "evaluated_at": { "$lt": jobs_cutoff } })
        .await
        .context("delete old evaluations")?
        .deleted_count;
    report.samples = ctx
        .db
        .collection::<Document>(collections::RESOURCE_SAMPLES)
        .delete_many(doc! { "timestamp": { "$lt": samples_cutoff } })
        .await
        .context("delete old samples")?
        .deleted_count;
    for queue in ALL_QUEUES {
        ctx.queue.reap(queue).await.context("reap queue")?;
    }
    Ok(report)
}
