//! Batch records and their status view.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A batch's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// No chunk has started.
    Queued,
    /// At least one chunk started.
    Running,
    /// Every item succeeded.
    Completed,
    /// Every chunk finished; some items failed.
    CompletedWithErrors,
    /// A chunk job ran out of attempts: its items were not processed.
    Failed,
    /// Cancelled; chunks not yet started will not run.
    Cancelled,
}

impl BatchStatus {
    /// Whether the batch will not change any more (callbacks fire on these).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
    /// The name stored in MongoDB.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::CompletedWithErrors => "completed_with_errors",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A batch as stored in MongoDB (`batches`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Batch id (`batch_` + uuid).
    #[serde(rename = "_id")]
    pub batch_id: String,
    /// What the batch does, e.g. `poot_validation`.
    pub kind: String,
    /// Stored status (counts are derived).
    pub status: BatchStatus,
    /// Items in the batch.
    pub total: u64,
    /// Items per chunk job.
    pub chunk_size: u64,
    /// Number of chunk jobs.
    pub chunk_count: u64,
    /// Queue the chunks run on.
    pub queue: String,
    /// Where to POST the final status, if anywhere.
    pub callback_url: Option<String>,
    /// When the callback was delivered (at most once).
    pub callback_delivered_at: Option<mongodb::bson::DateTime>,
    /// Creation time.
    pub created_at: mongodb::bson::DateTime,
    /// When the first chunk started.
    pub started_at: Option<mongodb::bson::DateTime>,
    /// When the batch reached a final status.
    pub finished_at: Option<mongodb::bson::DateTime>,
}

impl BatchRecord {
    /// Deterministic id of chunk `index`'s job, so enqueueing twice stores one job.
    pub fn chunk_job_id(&self, index: u64) -> String {
        chunk_job_id(&self.batch_id, index)
    }
    /// Filter on the validation records of chunk `index`: their ids
    /// (`{batch_id}:{item_index:06}`) are one contiguous `_id` range.
    pub fn chunk_records(&self, index: u64) -> mongodb::bson::Document {
        let first = index * self.chunk_size;
        let end = first + self.chunk_len(index);
        mongodb::bson::doc! { "_id": {
            "$gte": item_record_id(&self.batch_id, first),
            "$lt": item_record_id(&self.batch_id, end),
        } }
    }

    /// Items in chunk `index`.
    pub fn chunk_len(&self, index: u64) -> u64 {
        self.total
            .saturating_sub(index * self.chunk_size)
            .min(self.chunk_size)
    }
}

/// Deterministic id of a batch's chunk job.
/// The id of the validation record of item `index` of a batch: ids sort in item order.
pub fn item_record_id(batch_id: &str, index: u64) -> String {
    format!("{batch_id}:{index:06}")
}

/// Filter on every validation record of a batch (an `_id` prefix range, in item order).
pub fn batch_records(batch_id: &str) -> mongodb::bson::Document {
    // ';' follows ':' in ASCII: the range is exactly the ids starting "{batch_id}:".
    mongodb::bson::doc! { "_id": { "$gte": format!("{batch_id}:"), "$lt": format!("{batch_id};") } }
}

/// Job id of chunk `index` of a batch.
pub fn chunk_job_id(batch_id: &str, index: u64) -> String {
    format!("{batch_id}-c{index:05}")
}

/// Summary a chunk job writes when it finishes (`jobs` collection).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkResult {
    /// Job id.
    #[serde(rename = "_id")]
    pub job_id: String,
    /// Batch id.
    pub batch_id: String,
    /// Chunk number.
    pub chunk_index: u64,
    /// Job name.
    pub kind: String,
    /// `succeeded` or `dead`.
    pub status: String,
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that failed.
    pub failed: u64,
    /// Attempt that wrote this summary.
    pub attempt: u32,
    /// Error of a dead chunk.
    pub error: Option<String>,
    /// When the chunk finished.
    pub finished_at: mongodb::bson::DateTime,
}

/// A batch's status as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    /// Batch id.
    pub batch_id: String,
    /// What the batch does.
    pub kind: String,
    /// Status.
    pub status: BatchStatus,
    /// Items in the batch.
    pub total: u64,
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that failed.
    pub failed: u64,
    /// Items not processed yet.
    pub pending: u64,
    /// (succeeded + failed) / total.
    pub progress: f64,
    /// Number of chunk jobs.
    pub chunk_count: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When the first chunk started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the batch reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
}
