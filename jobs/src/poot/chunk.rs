//! The `poot-validation` chunk job: payload, submission and handler.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use super::{
    ERR_POOT_VALIDATION, ItemOutcome, ValidationItem, check_item,
    validation::{MAX_CLOCK_SKEW_SECS, RecordBase, ValidationRecord, Validator},
};
use crate::{
    batch::{BatchRecord, BatchStatus, ChunkResult, chunk_job_id},
    handlers::JobContext,
    queue::{EnqueueOptions, JobLease, NewJob, POOT_VALIDATION_QUEUE},
    storage::collections,
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

/// The nodes of a chunk: id → (node_type, pool_id).
async fn chunk_nodes(
    ctx: &JobContext,
    items: &[ValidationItem],
) -> anyhow::Result<HashMap<String, (Option<String>, Option<String>)>> {
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i.node_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let docs: Vec<Document> = ctx
        .db
        .collection::<Document>(collections::NODES)
        .find(doc! { "_id": { "$in": &ids } })
        .projection(doc! { "_id": 1, "node_type": 1, "pool_id": 1 })
        .await
        .context("look up nodes")?
        .try_collect()
        .await
        .context("read nodes")?;
    Ok(docs
        .into_iter()
        .filter_map(|d| {
            let id = d.get_str("_id").ok()?.to_string();
            Some((
                id,
                (
                    d.get_str("node_type").ok().map(String::from),
                    d.get_str("pool_id").ok().map(String::from),
                ),
            ))
        })
        .collect())
}

/// Runs one chunk with the PoOT model: checks each item (node, output,
/// timestamp against the batch's submission time, nonce), scores its node
/// (cached per node), writes each record once (deterministic ids), then the
/// chunk summary, then finalizes the batch if this was its last chunk.
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
        anyhow::bail!(crate::queue::PermanentError(format!(
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
    let nodes = chunk_nodes(ctx, &items).await?;
    let known: HashSet<String> = nodes.keys().cloned().collect();
    let submitted = batch.created_at.to_chrono();
    let started = std::time::Instant::now();

    // 1. Input checks; 2. nonce claims for the items that passed; 3. scores.
    let mut pending: Vec<(RecordBase, Option<(&'static str, String)>)> = items
        .iter()
        .enumerate()
        .map(|(offset, item)| {
            let item_index = first_index + offset as u64;
            let (node_type, pool_id) = nodes.get(&item.node_id).cloned().unwrap_or_default();
            let mut failure = None;
            let output_hash = match check_item(item, &known, ctx.settings.max_output_bytes) {
                ItemOutcome::Valid { output_hash } => output_hash,
                ItemOutcome::Invalid { code, message } => {
                    failure = Some((code, message));
                    String::new()
                }
            };
            if failure.is_none()
                && (item.timestamp - submitted).num_seconds().abs() > MAX_CLOCK_SKEW_SECS
            {
                failure = Some((
                    ERR_POOT_VALIDATION,
                    format!(
                        "timestamp is more than {MAX_CLOCK_SKEW_SECS} s from the submission time"
                    ),
                ));
            }
            let base = RecordBase {
                validation_id: format!("{batch_id}:{item_index:06}"),
                node_id: item.node_id.clone(),
                output_hash,
                timestamp: bson::DateTime::from_chrono(item.timestamp),
                nonce: item.nonce.clone(),
                node_type,
                pool_id,
                batch_id: Some(batch_id.clone()),
                chunk_index: Some(chunk_index),
                item_index: Some(item_index),
            };
            (base, failure)
        })
        .collect();
    let claims: Vec<(String, String, String)> = pending
        .iter()
        .filter(|(_, f)| f.is_none())
        .map(|(b, _)| (b.node_id.clone(), b.nonce.clone(), b.validation_id.clone()))
        .collect();
    let owned = ctx
        .validator
        .claim_nonces(&claims)
        .await
        .context("claim nonces")?;
    let mut owned = owned.into_iter();
    for (_, failure) in pending.iter_mut().filter(|(_, f)| f.is_none()) {
        if !owned.next().unwrap_or(false) {
            *failure = Some((
                ERR_POOT_VALIDATION,
                "nonce already used by this node".into(),
            ));
        }
    }
    let now = chrono::Utc::now();
    let mut records: Vec<ValidationRecord> = Vec::with_capacity(pending.len());
    let mut scores = HashMap::new();
    for (base, failure) in pending {
        match failure {
            Some((code, message)) => records.push(Validator::failed(base, code, message)),
            None => {
                // Score each node once per chunk (its items share the score).
                if !scores.contains_key(&base.node_id) {
                    let scored = ctx
                        .validator
                        .score_and_history(&base.node_id, now)
                        .await
                        .context("score node")?;
                    scores.insert(base.node_id.clone(), scored);
                }
                let Some((breakdown, history)) = scores.get(&base.node_id) else {
                    continue;
                };
                records.push(ctx.validator.record(base, breakdown, history, started));
            }
        }
    }
    ctx.validator
        .store(&records)
        .await
        .context("store validation records")?;

    // Count what is stored (the first run's records win on a re-run).
    let stored = ctx.db.collection::<Document>(collections::POOT_VALIDATIONS);
    let filter = doc! { "batch_id": &batch_id, "chunk_index": chunk_index as i64 };
    let total = stored
        .count_documents(filter.clone())
        .await
        .context("count items")?;
    let mut failed_filter = filter;
    failed_filter.insert("status", "failed");
    let failed = stored
        .count_documents(failed_filter)
        .await
        .context("count failed items")?;
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

/// Runs a chunk; when the attempt fails for good (last attempt, or a
/// permanent error) records the chunk as dead — its unprocessed items count
/// as failed — and finalizes the batch, so the batch never waits forever.
pub async fn handle_chunk(
    ctx: &JobContext,
    job: PootValidationJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let PootValidationJob::ChunkV1 {
        batch_id,
        chunk_index,
        items,
        ..
    } = &job;
    let (batch_id, chunk_index, len) = (batch_id.clone(), *chunk_index, items.len() as u64);
    let Err(e) = run_chunk(ctx, job, lease).await else {
        return Ok(());
    };
    let permanent = e.downcast_ref::<crate::queue::PermanentError>().is_some();
    if permanent || lease.attempt >= lease.max_attempts {
        if let Err(record) = record_dead_chunk(
            ctx,
            &batch_id,
            chunk_index,
            len,
            lease.attempt,
            &format!("{e:#}"),
        )
        .await
        {
            tracing::error!(error = %format!("{record:#}"), %batch_id, chunk_index, "could not record a dead chunk");
        }
    }
    Err(e)
}

/// Dead chunks the handler never saw (undecodable payload, worker lost on
/// the last attempt) are recorded from the dead letters: called periodically
/// by every worker; idempotent. Returns how many chunks it recorded.
pub async fn sweep_dead_chunks(ctx: &JobContext) -> anyhow::Result<usize> {
    let (_, dead) = ctx
        .queue
        .dead_jobs(POOT_VALIDATION_QUEUE, 0, 500)
        .await
        .context("list dead chunks")?;
    let mut recorded = 0;
    for job in dead {
        let Some(batch_id) = job.batch_id.as_deref() else {
            continue;
        };
        let Some(index) = job
            .job_id
            .rsplit_once("-c")
            .and_then(|(_, i)| i.parse::<u64>().ok())
        else {
            continue;
        };
        if job.job_id != chunk_job_id(batch_id, index) {
            continue;
        }
        let Some(batch) = ctx.batches.get(batch_id).await.context("load batch")? else {
            continue;
        };
        if batch.status.is_final() {
            continue;
        }
        let error = job
            .last_error
            .clone()
            .unwrap_or_else(|| "chunk job is dead".into());
        record_dead_chunk(
            ctx,
            batch_id,
            index,
            batch.chunk_len(index),
            job.attempts,
            &error,
        )
        .await?;
        recorded += 1;
    }
    Ok(recorded)
}

async fn record_dead_chunk(
    ctx: &JobContext,
    batch_id: &str,
    chunk_index: u64,
    len: u64,
    attempt: u32,
    error: &str,
) -> anyhow::Result<()> {
    let Some(batch) = ctx.batches.get(batch_id).await.context("load batch")? else {
        return Ok(());
    };
    let stored = ctx.db.collection::<Document>(collections::POOT_VALIDATIONS);
    let succeeded = stored
        .count_documents(
            doc! { "batch_id": batch_id, "chunk_index": chunk_index as i64, "status": "succeeded" },
        )
        .await
        .context("count stored items")?;
    ctx.batches
        .save_chunk(&ChunkResult {
            job_id: chunk_job_id(batch_id, chunk_index),
            batch_id: batch_id.to_string(),
            chunk_index,
            kind: JOB_NAME.into(),
            status: "dead".into(),
            succeeded,
            failed: len.saturating_sub(succeeded),
            attempt,
            error: Some(error.chars().take(1000).collect()),
            finished_at: bson::DateTime::now(),
        })
        .await
        .context("store dead chunk summary")?;
    crate::handlers::finalize_batch(ctx, &batch).await
}
