//! The `poot-validation` chunk job: payload, submission and handler.

use std::collections::HashSet;

use anyhow::Context as _;
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use super::{
    ERR_NODE_NOT_FOUND, ERR_POOT_VALIDATION, ItemOutcome, ValidationItem, check_item,
    validation::{MAX_CLOCK_SKEW_SECS, RecordBase, ValidationRecord, Validator},
};
use crate::{
    batch::{BatchRecord, BatchStatus, ChunkResult, chunk_job_id, item_record_id},
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
    let batch_id = format!("batch_{}", uuid::Uuid::now_v7().simple());
    submit_batch_with_id(ctx, batch_id, items, callback_url).await
}

/// [`submit_batch`] under a given id: submitting the same id again (the
/// scheduler re-firing a tick it may not have finished) stores one batch,
/// and re-enqueues its chunks only if they match (chunk jobs are idempotent).
pub async fn submit_batch_with_id(
    ctx: &JobContext,
    batch_id: String,
    items: Vec<ValidationItem>,
    callback_url: Option<String>,
) -> anyhow::Result<BatchRecord> {
    let chunk_size = ctx.settings.batch_chunk_size as u64;
    let total = items.len() as u64;
    let record = BatchRecord {
        batch_id,
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
    if !ctx
        .batches
        .insert_if_absent(&record)
        .await
        .context("store batch record")?
    {
        let existing = ctx
            .batches
            .get(&record.batch_id)
            .await?
            .context("batch vanished")?;
        if existing.total != record.total || existing.chunk_size != record.chunk_size {
            return Ok(existing);
        }
    }
    if jobs.is_empty() {
        // Nothing to run (a sweep with no active node): the batch is done.
        ctx.batches
            .finalize_if_done(&record)
            .await
            .context("finalize empty batch")?;
        return Ok(record);
    }
    if let Err(e) = ctx.queue.enqueue_many(POOT_VALIDATION_QUEUE, jobs).await {
        // Do not leave a batch that waits forever for chunks that were never queued.
        let _ = ctx.batches.cancel(&record.batch_id).await;
        return Err(e).context("enqueue chunk jobs");
    }
    Ok(record)
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
    if batch.status == BatchStatus::Queued {
        ctx.batches
            .mark_started(&batch_id)
            .await
            .context("mark batch started")?;
    }
    let started = std::time::Instant::now();
    let node_ids: HashSet<&str> = items.iter().map(|i| i.node_id.as_str()).collect();
    let nodes = ctx
        .snapshots
        .get_many(&batch_id, &node_ids, chrono::Utc::now())
        .await
        .context("node snapshots")?;
    let known: HashSet<String> = nodes
        .values()
        .filter(|s| s.known)
        .map(|s| s.node_id.clone())
        .collect();
    let submitted = batch.created_at.to_chrono();

    // 1. Input checks; 2. nonce claims for the items that passed; 3. scores.
    let pending: Vec<(RecordBase, Option<(&'static str, String)>)> = items
        .iter()
        .enumerate()
        .map(|(offset, item)| {
            let item_index = first_index + offset as u64;
            let snapshot = nodes.get(&item.node_id);
            let node_type = snapshot.and_then(|s| s.node_type.clone());
            let pool_id = snapshot.and_then(|s| s.pool_id.clone());
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
                validation_id: item_record_id(&batch_id, item_index),
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
    let records: Vec<ValidationRecord> = pending
        .into_iter()
        .map(|(base, failure)| {
            let scored = nodes
                .get(&base.node_id)
                .and_then(|s| Some((s.breakdown.as_ref()?, &s.history)));
            match (failure, scored) {
                (None, Some((breakdown, history))) => {
                    ctx.validator.record(base, breakdown, history, started)
                }
                (Some((code, message)), _) => Validator::failed(base, code, message),
                (None, None) => {
                    Validator::failed(base, ERR_NODE_NOT_FOUND, "node not found".into())
                }
            }
        })
        .collect();
    // The insert claims each nonce (unique `nonce_key`). A refused record is
    // either stored already (a re-run) or a replay of a nonce another
    // validation used: the latter is stored as failed instead.
    let duplicates = ctx
        .validator
        .insert(&records)
        .await
        .context("store validation records")?;
    let all_new = duplicates.is_empty();
    if !all_new {
        let ids: Vec<&str> = duplicates
            .iter()
            .map(|&i| records[i].validation_id.as_str())
            .collect();
        let stored = ctx
            .validator
            .existing_ids(&ids)
            .await
            .context("look up stored records")?;
        let replays: Vec<ValidationRecord> = duplicates
            .iter()
            .map(|&i| &records[i])
            .filter(|r| !stored.contains(&r.validation_id))
            .map(Validator::replayed)
            .collect();
        ctx.validator
            .insert(&replays)
            .await
            .context("store replayed items")?;
    }

    // Count what is stored: the first run's records win on a re-run.
    let (total, failed) = if all_new {
        let failed = records.iter().filter(|r| r.status == "failed").count() as u64;
        (records.len() as u64, failed)
    } else {
        count_stored(ctx, &batch, chunk_index).await?
    };
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

/// (stored, failed) records of a chunk.
async fn count_stored(
    ctx: &JobContext,
    batch: &BatchRecord,
    chunk_index: u64,
) -> anyhow::Result<(u64, u64)> {
    let stored = ctx.db.collection::<Document>(collections::POOT_VALIDATIONS);
    let filter = batch.chunk_records(chunk_index);
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
    Ok((total, failed))
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
    let mut filter = batch.chunk_records(chunk_index);
    filter.insert("status", "succeeded");
    let succeeded = stored
        .count_documents(filter)
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
