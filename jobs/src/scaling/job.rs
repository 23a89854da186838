//! The `scaling-evaluation` job: evaluate a pool (alone or as one item of an
//! all-pools batch) or apply a manual event; then call the pool's webhook.

use anyhow::Context as _;
use chrono::Utc;
use mongodb::bson::{self, doc};
use serde::{Deserialize, Serialize};

use super::{BATCH_KIND, Decision, EvaluationDoc, EventStatus};
use crate::{
    batch::{BatchRecord, BatchStatus, ChunkResult, chunk_job_id},
    handlers::{CallbackJob, JobContext, callback},
    queue::{EnqueueOptions, JobLease, NewJob, SCALING_QUEUE},
    storage::pools::MembershipError,
};

/// Stable job name.
pub const JOB_NAME: &str = "scaling.evaluate";

/// Payload of a `scaling-evaluation` job. Versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum ScalingJob {
    /// Evaluate one pool.
    #[serde(rename = "v1")]
    EvaluateV1 {
        /// Pool.
        pool_id: String,
        /// Evaluation id (stored once).
        evaluation_id: String,
        /// The all-pools batch this belongs to, and its index there.
        batch: Option<(String, u64)>,
    },
    /// Apply a pending (manual) event.
    #[serde(rename = "apply-v1")]
    ApplyV1 {
        /// Event.
        event_id: String,
    },
}

fn job(payload: &ScalingJob, job_id: String, batch_id: Option<String>) -> anyhow::Result<NewJob> {
    Ok(NewJob {
        kind: JOB_NAME.into(),
        payload: serde_json::to_string(payload).context("serialize scaling job")?,
        options: EnqueueOptions {
            job_id: Some(job_id),
            batch_id,
            ..EnqueueOptions::default()
        },
    })
}

/// Enqueues the evaluation of one pool; returns the job (= evaluation) id.
pub async fn enqueue_evaluation(ctx: &JobContext, pool_id: &str) -> anyhow::Result<String> {
    let id = format!("seval_{}", uuid::Uuid::now_v7().simple());
    let payload = ScalingJob::EvaluateV1 {
        pool_id: pool_id.to_string(),
        evaluation_id: id.clone(),
        batch: None,
    };
    ctx.queue
        .enqueue(SCALING_QUEUE, job(&payload, id, None)?)
        .await
        .context("enqueue scaling evaluation")
}

/// Enqueues the application of a pending event (one job per event).
pub async fn enqueue_apply(ctx: &JobContext, event_id: &str) -> anyhow::Result<String> {
    let payload = ScalingJob::ApplyV1 {
        event_id: event_id.to_string(),
    };
    ctx.queue
        .enqueue(
            SCALING_QUEUE,
            job(&payload, format!("scaling-apply-{event_id}"), None)?,
        )
        .await
        .context("enqueue scaling apply")
}

/// Submits one batch evaluating every pool with auto-scaling enabled. With
/// `batch_id` given (the scheduler derives it from its tick) a second call
/// returns the stored batch and enqueues nothing new (job ids are deterministic).
pub async fn submit_all(ctx: &JobContext, batch_id: Option<String>) -> anyhow::Result<BatchRecord> {
    let batch_id = batch_id.unwrap_or_else(|| format!("batch_{}", uuid::Uuid::now_v7().simple()));
    if let Some(existing) = ctx.batches.get(&batch_id).await.context("load batch")? {
        return Ok(existing);
    }
    let pools = ctx
        .scaling
        .auto_scaled_pools()
        .await
        .context("list pools")?;
    let record = BatchRecord {
        batch_id: batch_id.clone(),
        kind: BATCH_KIND.into(),
        status: BatchStatus::Queued,
        total: pools.len() as u64,
        chunk_size: 1,
        chunk_count: pools.len() as u64,
        queue: SCALING_QUEUE.into(),
        callback_url: None,
        callback_delivered_at: None,
        created_at: bson::DateTime::now(),
        started_at: None,
        finished_at: None,
    };
    let jobs = pools
        .iter()
        .enumerate()
        .map(|(i, pool_id)| {
            let id = chunk_job_id(&batch_id, i as u64);
            let payload = ScalingJob::EvaluateV1 {
                pool_id: pool_id.clone(),
                evaluation_id: id.clone(),
                batch: Some((batch_id.clone(), i as u64)),
            };
            job(&payload, id, Some(batch_id.clone()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !ctx
        .batches
        .insert_if_absent(&record)
        .await
        .context("store batch")?
    {
        return ctx.batches.get(&batch_id).await?.context("batch vanished");
    }
    if jobs.is_empty() {
        ctx.batches.finalize_if_done(&record).await?;
    } else {
        ctx.queue
            .enqueue_many(SCALING_QUEUE, jobs)
            .await
            .context("enqueue evaluations")?;
    }
    Ok(record)
}

/// Runs a `scaling-evaluation` job.
#[tracing::instrument(skip(ctx, job, lease), fields(job_id = %lease.job_id, attempt = lease.attempt))]
pub async fn handle_scaling(
    ctx: &JobContext,
    job: ScalingJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    match job {
        ScalingJob::ApplyV1 { event_id } => apply_and_notify(ctx, &event_id).await,
        ScalingJob::EvaluateV1 {
            pool_id,
            evaluation_id,
            batch,
        } => {
            let result = evaluate(
                ctx,
                &pool_id,
                &evaluation_id,
                batch.as_ref().map(|b| b.0.as_str()),
            )
            .await;
            let Some((batch_id, index)) = batch else {
                return result.map(|_| ());
            };
            let last = lease.attempt >= lease.max_attempts;
            let (status, error) = match &result {
                Ok(_) => ("succeeded", None),
                Err(e) if last => ("dead", Some(format!("{e:#}"))),
                Err(_) => return result.map(|_| ()),
            };
            ctx.batches
                .save_chunk(&ChunkResult {
                    job_id: chunk_job_id(&batch_id, index),
                    batch_id: batch_id.clone(),
                    chunk_index: index,
                    kind: JOB_NAME.into(),
                    status: status.into(),
                    succeeded: u64::from(result.is_ok()),
                    failed: u64::from(result.is_err()),
                    attempt: lease.attempt,
                    error,
                    finished_at: bson::DateTime::now(),
                })
                .await
                .context("store evaluation summary")?;
            if let Some(record) = ctx.batches.get(&batch_id).await? {
                crate::handlers::finalize_batch(ctx, &record).await?;
            }
            result.map(|_| ())
        }
    }
}

/// Evaluates a pool once (a re-run uses the stored evaluation) and applies
/// the event it created.
pub async fn evaluate(
    ctx: &JobContext,
    pool_id: &str,
    evaluation_id: &str,
    batch_id: Option<&str>,
) -> anyhow::Result<EvaluationDoc> {
    let repo = &ctx.scaling;
    let evaluation = match repo.evaluation(evaluation_id).await? {
        Some(done) => done,
        None => {
            let now = Utc::now();
            let window = ctx.settings.scaling.window_minutes;
            let obs = repo
                .observe(pool_id, now, window)
                .await
                .context("observe pool")?;
            match repo
                .decide_and_record(pool_id, evaluation_id, batch_id, obs, now)
                .await
            {
                Ok(e) => e,
                Err(MembershipError::PoolNotFound) => repo
                    .record_without_pool(&EvaluationDoc {
                        evaluation_id: evaluation_id.to_string(),
                        pool_id: pool_id.to_string(),
                        metrics: None,
                        decision: Decision::NoDecision {
                            reason: "pool not found".into(),
                        },
                        event_id: None,
                        batch_id: batch_id.map(String::from),
                        evaluated_at: bson::DateTime::from_chrono(now),
                    })
                    .await
                    .context("store evaluation")?,
                Err(e) => return Err(anyhow::Error::new(e).context("decide")),
            }
        }
    };
    tracing::info!(%pool_id, decision = ?evaluation.decision, "pool evaluated");
    if let Some(event_id) = &evaluation.event_id {
        apply_and_notify(ctx, event_id).await?;
    }
    Ok(evaluation)
}

/// Applies a pending event and enqueues the pool's webhook with it (one
/// delivery job per event).
pub async fn apply_and_notify(ctx: &JobContext, event_id: &str) -> anyhow::Result<()> {
    let Some(event) = ctx.scaling.event(event_id).await.context("load event")? else {
        return Ok(());
    };
    let event = ctx.scaling.apply(event).await.context("apply event")?;
    if event.status == EventStatus::Pending {
        anyhow::bail!("event {event_id} is still pending");
    }
    tracing::info!(%event_id, status = ?event.status, applied = event.applied_nodes.len(), missing = event.missing, "scaling event applied");
    let pool = crate::storage::pools::PoolRepo::new(&ctx.db)
        .get(&event.pool_id)
        .await
        .context("load pool")?;
    let Some(url) = pool.and_then(|p| p.webhook_url) else {
        return Ok(());
    };
    let delivery = CallbackJob::ScalingEventV1 {
        event_id: event.event_id.clone(),
        url,
    };
    let job_id = format!("scaling-webhook-{}", event.event_id);
    callback::enqueue_delivery(ctx, &delivery, job_id, None).await
}
