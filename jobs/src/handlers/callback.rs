//! Batch completion callbacks: POST the final batch status to the batch's
//! `callback_url`, retried by the queue, delivered at most once per batch.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::JobContext;
use crate::queue::JobLease;

/// Stable job name.
pub const JOB_NAME: &str = "batch.callback";

/// Payload of a `callbacks` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum CallbackJob {
    /// Deliver a batch's final status.
    #[serde(rename = "v1")]
    V1 {
        /// Batch id.
        batch_id: String,
        /// Target URL.
        url: String,
    },
    /// Deliver a pool scaling event to the pool's webhook.
    #[serde(rename = "scaling-event-v1")]
    ScalingEventV1 {
        /// Event id.
        event_id: String,
        /// Target URL.
        url: String,
    },
}

/// Delivers the callback unless it was already delivered. The request
/// carries `Idempotency-Key: <batch_id>` so a receiver can drop the rare
/// duplicate caused by a worker dying between the POST and recording it.
#[tracing::instrument(skip(ctx, job, lease), fields(job_id = %lease.job_id))]
pub async fn deliver_callback(
    ctx: &JobContext,
    job: CallbackJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let (batch_id, url) = match job {
        CallbackJob::V1 { batch_id, url } => (batch_id, url),
        CallbackJob::ScalingEventV1 { event_id, url } => {
            return deliver_scaling_event(ctx, &event_id, &url).await;
        }
    };
    let Some(batch) = ctx.batches.get(&batch_id).await.context("load batch")? else {
        return Ok(());
    };
    if batch.callback_delivered_at.is_some() {
        return Ok(());
    }
    let view = ctx.batches.view(&batch).await.context("batch view")?;
    post(ctx, &url, &batch_id, &view).await?;
    ctx.batches
        .mark_callback_delivered(&batch_id)
        .await
        .context("record delivery")?;
    Ok(())
}

/// POSTs a scaling event to its pool's webhook, at most once per event
/// (`Idempotency-Key: <event_id>`).
async fn deliver_scaling_event(ctx: &JobContext, event_id: &str, url: &str) -> anyhow::Result<()> {
    let Some(event) = ctx.scaling.event(event_id).await.context("load event")? else {
        return Ok(());
    };
    if event.webhook_delivered_at.is_some() {
        return Ok(());
    }
    let view = crate::scaling::ScalingEventView::from(&event);
    post(ctx, url, event_id, &view).await?;
    ctx.scaling
        .mark_webhook_delivered(event_id)
        .await
        .context("record delivery")?;
    Ok(())
}

/// POSTs `body` as JSON with `Idempotency-Key: key`; any non-2xx answer is an
/// error (the queue retries).
async fn post(ctx: &JobContext, url: &str, key: &str, body: &impl Serialize) -> anyhow::Result<()> {
    let response = ctx
        .http
        .post(url)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .context("webhook request")?;
    anyhow::ensure!(
        response.status().is_success(),
        "webhook answered {}",
        response.status()
    );
    Ok(())
}

/// Enqueues a delivery under `job_id` (deterministic: one delivery per subject).
pub async fn enqueue_delivery(
    ctx: &JobContext,
    delivery: &CallbackJob,
    job_id: String,
    batch_id: Option<String>,
) -> anyhow::Result<()> {
    ctx.queue
        .enqueue(
            crate::queue::CALLBACKS_QUEUE,
            crate::queue::NewJob {
                kind: JOB_NAME.into(),
                payload: serde_json::to_string(delivery).context("serialize delivery")?,
                options: crate::queue::EnqueueOptions {
                    job_id: Some(job_id),
                    batch_id,
                    ..crate::queue::EnqueueOptions::default()
                },
            },
        )
        .await
        .context("enqueue delivery")?;
    Ok(())
}
