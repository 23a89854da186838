//! MongoDB repository of batches and chunk results.

use futures::TryStreamExt;
use mongodb::{
    Collection,
    bson::{self, Document, doc},
};

use super::{BatchRecord, BatchStatus, BatchView, ChunkResult};
use crate::storage::{Db, StorageError, coalesce::InsertCoalescer, collections};

/// Batches and their chunk summaries.
#[derive(Debug, Clone)]
pub struct BatchRepo {
    batches: Collection<BatchRecord>,
    /// New batch records, grouped across concurrent submissions.
    new_batches: InsertCoalescer<BatchRecord>,
    chunks: Collection<ChunkResult>,
}

/// Sums over a batch's finished chunks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkTotals {
    /// Chunks with a summary.
    pub finished: u64,
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that failed (including every item of a dead chunk).
    pub failed: u64,
    /// Chunks that ran out of attempts.
    pub dead: u64,
}

fn bson_to_chrono(t: bson::DateTime) -> chrono::DateTime<chrono::Utc> {
    t.to_chrono()
}

impl BatchRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            batches: db.collection(collections::BATCHES),
            new_batches: InsertCoalescer::new(db.collection(collections::BATCHES)),
            chunks: db.collection(collections::JOBS),
        }
    }

    /// Stores a new batch; false when its id exists (idempotent
    /// submissions). Concurrent submissions share one `insert_many`.
    pub async fn insert_if_absent(&self, record: &BatchRecord) -> Result<bool, StorageError> {
        self.new_batches.insert_new(record.clone()).await
    }

    /// A page of batches, newest first, and the total.
    pub async fn list(
        &self,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<BatchRecord>), StorageError> {
        crate::storage::find_page(
            &self.batches,
            doc! {},
            doc! { "created_at": -1, "_id": -1 },
            page,
            page_size,
        )
        .await
    }

    /// A batch by id.
    pub async fn get(&self, batch_id: &str) -> Result<Option<BatchRecord>, StorageError> {
        Ok(self.batches.find_one(doc! { "_id": batch_id }).await?)
    }

    /// Records that a chunk started: queued becomes running, once.
    pub async fn mark_started(&self, batch_id: &str) -> Result<(), StorageError> {
        self.batches
            .update_one(
                doc! { "_id": batch_id, "status": "queued" },
                doc! { "$set": { "status": "running", "started_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(())
    }

    /// Stores (or overwrites with identical counts) a chunk's summary.
    pub async fn save_chunk(&self, result: &ChunkResult) -> Result<(), StorageError> {
        for (outcome, n) in [("succeeded", result.succeeded), ("failed", result.failed)] {
            metrics::counter!(crate::metrics::BATCH_ITEMS, "kind" => result.kind.clone(), "outcome" => outcome)
                .increment(n);
        }
        self.chunks
            .replace_one(doc! { "_id": &result.job_id }, result)
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Sums the chunk summaries of a batch (server-side aggregation).
    pub async fn totals(&self, batch_id: &str) -> Result<ChunkTotals, StorageError> {
        let pipeline = vec![
            doc! { "$match": { "batch_id": batch_id } },
            doc! { "$group": {
                "_id": mongodb::bson::Bson::Null,
                "finished": { "$sum": 1 },
                "succeeded": { "$sum": "$succeeded" },
                "failed": { "$sum": "$failed" },
                "dead": { "$sum": { "$cond": [{ "$eq": ["$status", "dead"] }, 1, 0] } },
            } },
        ];
        let mut cursor = self
            .chunks
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await?;
        let Some(row) = cursor.try_next().await? else {
            return Ok(ChunkTotals::default());
        };
        let n = |k: &str| crate::storage::number(row.get(k)).unwrap_or(0.0) as u64;
        Ok(ChunkTotals {
            finished: n("finished"),
            succeeded: n("succeeded"),
            failed: n("failed"),
            dead: n("dead"),
        })
    }

    /// The status view of a batch, counts derived from chunk summaries.
    pub async fn view(&self, record: &BatchRecord) -> Result<BatchView, StorageError> {
        let t = self.totals(&record.batch_id).await?;
        let done = (t.succeeded + t.failed).min(record.total);
        Ok(BatchView {
            batch_id: record.batch_id.clone(),
            kind: record.kind.clone(),
            status: record.status,
            total: record.total,
            succeeded: t.succeeded,
            failed: t.failed,
            pending: record.total - done,
            progress: if record.total == 0 {
                1.0
            } else {
                done as f64 / record.total as f64
            },
            chunk_count: record.chunk_count,
            created_at: bson_to_chrono(record.created_at),
            started_at: record.started_at.map(bson_to_chrono),
            finished_at: record.finished_at.map(bson_to_chrono),
        })
    }

    /// If every chunk has finished, moves the batch to its final status.
    /// Returns the status when *this* call made the transition (exactly one
    /// caller wins, so the completion callback is enqueued once). `record`
    /// may have been read earlier (when a chunk started): only its id and
    /// chunk count are trusted, and only a batch still queued or running moves.
    pub async fn finalize_if_done(
        &self,
        record: &BatchRecord,
    ) -> Result<Option<BatchStatus>, StorageError> {
        let batch_id = record.batch_id.as_str();
        if record.status.is_final() {
            return Ok(None);
        }
        let t = self.totals(batch_id).await?;
        if t.finished < record.chunk_count {
            return Ok(None);
        }
        let status = if t.dead > 0 {
            BatchStatus::Failed
        } else if t.failed > 0 {
            BatchStatus::CompletedWithErrors
        } else {
            BatchStatus::Completed
        };
        let now = bson::DateTime::now();
        let r = self
            .batches
            .update_one(
                doc! { "_id": batch_id, "status": { "$in": ["queued", "running"] } },
                doc! { "$set": { "status": status.as_str(), "finished_at": now } },
            )
            .await?;
        Ok((r.modified_count == 1).then_some(status))
    }

    /// Cancels a batch that has not finished. Returns the batch after the
    /// attempt, and whether this call cancelled it.
    pub async fn cancel(
        &self,
        batch_id: &str,
    ) -> Result<Option<(BatchRecord, bool)>, StorageError> {
        let r = self
            .batches
            .update_one(
                doc! { "_id": batch_id, "status": { "$in": ["queued", "running"] } },
                doc! { "$set": { "status": "cancelled", "finished_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(self
            .get(batch_id)
            .await?
            .map(|b| (b, r.modified_count == 1)))
    }

    /// Marks the completion callback delivered; false if it already was.
    pub async fn mark_callback_delivered(&self, batch_id: &str) -> Result<bool, StorageError> {
        let r = self
            .batches
            .update_one(
                doc! { "_id": batch_id, "callback_delivered_at": mongodb::bson::Bson::Null },
                doc! { "$set": { "callback_delivered_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(r.modified_count == 1)
    }
}
