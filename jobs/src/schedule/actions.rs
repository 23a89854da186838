//! What firing a schedule enqueues. Work fired for a tick carries ids derived
//! from the schedule and the tick, so firing a tick twice enqueues it once.

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::ScheduleName;
use crate::{
    handlers::JobContext,
    poot::{ValidationItem, submit_batch_with_id},
    storage::collections,
};

/// The id of the batch a tick of `name` submits.
pub fn tick_batch_id(name: ScheduleName, tick: DateTime<Utc>) -> String {
    format!("batch_sched_{}_{}", name.as_str(), tick.timestamp_millis())
}

/// Enqueues the work of `name` for `tick` (a scheduled tick), or a fresh run
/// when `tick` is `None` (a manual trigger). Returns the batch or job id.
#[tracing::instrument(skip(ctx))]
pub async fn fire(
    ctx: &JobContext,
    name: ScheduleName,
    tick: Option<DateTime<Utc>>,
) -> anyhow::Result<String> {
    let batch_id = match tick {
        Some(t) => tick_batch_id(name, t),
        None => format!("batch_{}", uuid::Uuid::now_v7().simple()),
    };
    let at = tick.unwrap_or_else(Utc::now);
    match name {
        ScheduleName::ScalingEvaluation => {
            let batch = crate::scaling::job::submit_all(ctx, Some(batch_id)).await?;
            Ok(batch.batch_id)
        }
        ScheduleName::PootSweep => poot_sweep(ctx, batch_id, at).await,
        ScheduleName::EarningsPayout => {
            // The epoch that ended before the tick: at 00:05 on day D, day D-1.
            let epoch = (at - Duration::days(1)).date_naive();
            crate::payouts::earnings::enqueue_accrual(ctx, epoch).await
        }
        ScheduleName::Retention => {
            let job_id = match tick {
                Some(t) => format!("retention-{}", t.timestamp_millis()),
                None => format!("retention-{}", uuid::Uuid::now_v7().simple()),
            };
            crate::retention::enqueue(ctx, job_id).await
        }
    }
}

/// One PoOT validation batch over every active node: each item's output is
/// the node's sweep record for the tick, its nonce unique per tick, so every
/// active node gets a fresh validation and score.
async fn poot_sweep(
    ctx: &JobContext,
    batch_id: String,
    tick: DateTime<Utc>,
) -> anyhow::Result<String> {
    let nodes: Vec<Document> = ctx
        .db
        .collection::<Document>(collections::NODES)
        .find(doc! { "status": "active" })
        .projection(doc! { "_id": 1 })
        .sort(doc! { "_id": 1 })
        .await
        .context("list active nodes")?
        .try_collect()
        .await
        .context("read active nodes")?;
    let now = Utc::now();
    let items: Vec<ValidationItem> = nodes
        .iter()
        .filter_map(|d| d.get_str("_id").ok())
        .take(ctx.settings.batch_max_items)
        .map(|node_id| ValidationItem {
            node_id: node_id.to_string(),
            output_data: base64::engine::general_purpose::STANDARD
                .encode(format!("poot-sweep:{node_id}:{}", tick.timestamp_millis())),
            timestamp: now,
            nonce: format!("sweep-{}", tick.timestamp_millis()),
        })
        .collect();
    let batch = submit_batch_with_id(ctx, batch_id, items, None).await?;
    Ok(batch.batch_id)
}
