//! The `poot-validation` chunk job: payload, submission and handler.

use std::collections::HashSet;

use anyhow::Context as _;
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use super::{ItemOutcome, ItemResult, ValidationItem, check_item};
use crate::{
    batch::{BatchRecord, BatchStatus, ChunkResult, chunk_job_id},
    handlers::JobContext,
    queue::{EnqueueOptions, JobLease, NewJob, POOT_VALIDATION_QUEUE},
    storage::{collections, is_duplicate_key},
};

/// Stable job name of a chunk job.
pub const JOB_NAME: &str = "poot.validate_chunk";
/// Batch kind.
pub const BATCH_KIND: &str = "poot_validation";

/// Payload of a `poot-validation` job. Versioned: jobs queued before a deploy still parse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum PootValidationJob {
    /// A chunk of a batch validation.
    #[serde(rename = "v1")]
    ChunkV1 {
        /// Batch id.
        batch_id: String,
        /// Chunk number.
        chunk_index: u64,
        /// Index in the batch of the chunk's first item.
        first_index: u64,
        /// The items.
        items: Vec<ValidationItem>,
    },
}

/// Stores a batch record and enqueues its chunk jobs. Chunk job ids are
/// deterministic, so a retried submission cannot duplicate a chunk.
#[tracing::instrument(skip(ctx, items, callback_url), fields(items = items.len()))]
pub async fn submit_batch(
    ctx: &JobContext,
    items: Vec<ValidationItem>,
    callback_url: Option<String>,
) -> anyhow::Result<BatchRecord> {
    let chunk_size = ctx.settings.batch_chunk_size as u64;
    let total = items.len() as u64;
    let record = BatchRecord {
        batch_id: format!("batch_{}", uuid::Uuid::now_v7().simple()),
        kind: BATCH_KIND.into(),
        status: BatchStatus::Queued,
        total,
        chunk_size,
        chunk_count: total.div_ceil(chunk_size),
        queue: POOT_VALIDATION_QUEUE.into(),
        callback_url,
        callback_delivered_at: None,
        created_at: bson::DateTime::now(),
        started_at: None,
        finished_at: None,
    };
    let mut jobs = Vec::with_capacity(record.chunk_count as usize);
    for (i, chunk) in items.chunks(chunk_size as usize).enumerate() {
        let i = i as u64;
        let payload = PootValidationJob::ChunkV1 {
            batch_id: record.batch_id.clone(),
            chunk_index: i,
            first_index: i * chunk_size,
            items: chunk.to_vec(),
        };
        jobs.push(NewJob {
            kind: JOB_NAME.into(),
            payload: serde_json::to_string(&payload).context("serialize chunk")?,
            options: EnqueueOptions {
                job_id: Some(record.chunk_job_id(i)),
                batch_id: Some(record.batch_id.clone()),
                ..EnqueueOptions::default()
            },
        });
    }
    ctx.batches
        .create(&record)
        .await
        .context("store batch record")?;
    if let Err(e) = ctx.queue.enqueue_many(POOT_VALIDATION_QUEUE, jobs).await {
        // Do not leave a batch that waits forever for chunks that were never queued.
        let _ = ctx.batches.cancel(&record.batch_id).await;
        return Err(e).context("enqueue chunk jobs");
    }
    Ok(record)
}

/// Runs one chunk: checks every item, writes each result once (deterministic
/// `_id`, duplicates ignored), then the chunk summary, then finalizes the
/// batch if this was its last chunk.
#[tracing::instrument(skip(ctx, job, lease), fields(job_id = %lease.job_id, attempt = lease.attempt))]
pub async fn run_chunk(
    ctx: &JobContext,
    job: PootValidationJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let PootValidationJob::ChunkV1 {
        batch_id,
        chunk_index,
        first_index,
        items,
    } = job;
    let Some(batch) = ctx.batches.get(&batch_id).await.context("load batch")? else {
        anyhow::bail!(crate::queue::backend::PermanentError(format!(
            "batch {batch_id} does not exist"
        )));
    };
    if batch.status == BatchStatus::Cancelled {
        tracing::info!(%batch_id, chunk_index, "batch cancelled; chunk skipped");
        return Ok(());
    }
    ctx.batches
        .mark_started(&batch_id)
        .await
        .context("mark batch started")?;

    let node_ids: Vec<&str> = items
        .iter()
        .map(|i| i.node_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let known: HashSet<String> = ctx
        .db
        .collection::<Document>(collections::NODES)
        .find(doc! { "_id": { "$in": &node_ids } })
        .projection(doc! { "_id": 1 })
        .await
        .context("look up nodes")?
        .try_collect::<Vec<Document>>()
        .await
        .context("read nodes")?
        .into_iter()
        .filter_map(|d| d.get_str("_id").ok().map(String::from))
        .collect();

    let now = bson::DateTime::now();
    let max = ctx.settings.max_output_bytes;
    let results: Vec<ItemResult> = items
        .iter()
        .enumerate()
        .map(|(offset, item)| {
            let item_index = first_index + offset as u64;
            let (status, output_hash, error_code, error) = match check_item(item, &known, max) {
                ItemOutcome::Valid { output_hash } => ("succeeded", Some(output_hash), None, None),
                ItemOutcome::Invalid { code, message } => {
                    ("failed", None, Some(code.to_string()), Some(message))
                }
            };
            ItemResult {
                id: format!("{batch_id}:{item_index:06}"),
                batch_id: batch_id.clone(),
                chunk_index,
                item_index,
                node_id: item.node_id.clone(),
                status: status.into(),
                output_hash,
                error_code,
                error,
                nonce: item.nonce.clone(),
                timestamp: bson::DateTime::from_chrono(item.timestamp),
                validated_at: now,
            }
        })
        .collect();

    let collection = ctx
        .db
        .collection::<ItemResult>(collections::POOT_VALIDATIONS);
    if !results.is_empty() {
        match collection.insert_many(&results).ordered(false).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {
                tracing::info!("chunk re-run: results already stored")
            }
            Err(e) => return Err(e).context("store item results"),
        }
    }
    // Count what is stored (the first run's results win on a re-run).
    let stored = collection.clone_with_type::<Document>();
    let failed = stored
        .count_documents(
            doc! { "batch_id": &batch_id, "chunk_index": chunk_index as i64, "status": "failed" },
        )
        .await
        .context("count failed items")?;
    let total = stored
        .count_documents(doc! { "batch_id": &batch_id, "chunk_index": chunk_index as i64 })
        .await
        .context("count items")?;
    ctx.batches
        .save_chunk(&ChunkResult {
            job_id: chunk_job_id(&batch_id, chunk_index),
            batch_id: batch_id.clone(),
            chunk_index,
            kind: JOB_NAME.into(),
            status: "succeeded".into(),
            succeeded: total - failed,
            failed,
            attempt: lease.attempt,
            error: None,
            finished_at: bson::DateTime::now(),
        })
        .await
        .context("store chunk summary")?;
    crate::handlers::finalize_batch(ctx, &batch).await
}
