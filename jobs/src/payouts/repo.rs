//! MongoDB repository of payouts and payout batches. Every status change is
//! a conditional update on the current status, so a cancel racing a worker
//! has exactly one winner.

use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    options::ReturnDocument,
};
use serde::{Deserialize, Serialize};

use super::{PAYOUT_BATCHES, PAYOUTS, PayoutDoc, PayoutStatus};
use crate::storage::{Db, StorageError, insert_new, is_duplicate_key};

/// A payout batch as stored (its counts are derived from its payouts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutBatchDoc {
    /// `batch_...`.
    #[serde(rename = "_id")]
    pub batch_id: String,
    /// Payouts in it.
    pub total: u64,
    /// sha256 of the request (a resubmission of the same batch is a replay).
    pub request_hash: String,
    /// Created.
    pub created_at: bson::DateTime,
}

/// Filters of a node's payout listing.
#[derive(Debug, Clone, Default)]
pub struct PayoutFilter {
    /// Status.
    pub status: Option<PayoutStatus>,
    /// Currency.
    pub currency: Option<crate::domain::payout::Currency>,
    /// Batch.
    pub batch_id: Option<String>,
}

/// Payouts and batches.
#[derive(Debug, Clone)]
pub struct PayoutRepo {
    payouts: Collection<PayoutDoc>,
    batches: Collection<PayoutBatchDoc>,
}

impl PayoutRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            payouts: db.collection(PAYOUTS),
            batches: db.collection(PAYOUT_BATCHES),
        }
    }

    /// Creates the indexes.
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        self.payouts
            .create_index(index(doc! { "node_id": 1, "created_at": -1 }))
            .await?;
        self.payouts
            .create_index(index(doc! { "batch_id": 1 }))
            .await?;
        self.payouts
            .create_index(index(doc! { "status": 1, "created_at": 1 }))
            .await?;
        Ok(())
    }

    /// Stores a payout; false when its id exists.
    pub async fn insert(&self, payout: &PayoutDoc) -> Result<bool, StorageError> {
        insert_new(&self.payouts, payout).await
    }

    /// Stores many payouts, each at most once (ids are deterministic).
    pub async fn insert_many(&self, payouts: &[PayoutDoc]) -> Result<(), StorageError> {
        if payouts.is_empty() {
            return Ok(());
        }
        match self.payouts.insert_many(payouts).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A payout.
    pub async fn get(&self, payout_id: &str) -> Result<Option<PayoutDoc>, StorageError> {
        Ok(self.payouts.find_one(doc! { "_id": payout_id }).await?)
    }

    /// A page of a node's payouts, newest first, and the total.
    pub async fn list(
        &self,
        node_id: &str,
        filter: &PayoutFilter,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<PayoutDoc>), StorageError> {
        let mut f = doc! { "node_id": node_id };
        if let Some(s) = filter.status {
            f.insert("status", s.as_str());
        }
        if let Some(c) = filter.currency {
            f.insert("currency", c.as_str());
        }
        if let Some(b) = &filter.batch_id {
            f.insert("batch_id", b);
        }
        crate::storage::find_page(
            &self.payouts,
            f,
            doc! { "created_at": -1, "_id": 1 },
            page,
            page_size,
        )
        .await
    }

    /// Every payout matching `filter` (stats, batch views), streamed into memory.
    pub async fn find_all(&self, filter: Document) -> Result<Vec<PayoutDoc>, StorageError> {
        Ok(self.payouts.find(filter).await?.try_collect().await?)
    }

    /// Payouts that completed or failed since `since`.
    pub async fn count_finished_since(&self, since: bson::DateTime) -> Result<u64, StorageError> {
        Ok(self
            .payouts
            .count_documents(doc! { "status": { "$in": ["completed", "failed"] }, "finished_at": { "$gte": since } })
            .await?)
    }

    /// Moves `from` → `to` with `set`; the payout after the change, or None
    /// when it was not in `from` (another transition won).
    async fn transition(
        &self,
        payout_id: &str,
        from: PayoutStatus,
        to: PayoutStatus,
        mut set: Document,
    ) -> Result<Option<PayoutDoc>, StorageError> {
        set.insert("status", to.as_str());
        set.insert("updated_at", bson::DateTime::now());
        Ok(self
            .payouts
            .find_one_and_update(
                doc! { "_id": payout_id, "status": from.as_str() },
                doc! { "$set": set },
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Cancels a pending payout: `Ok(Ok(payout))`, or `Ok(Err(status))` with
    /// the status that refused it (None: no such payout).
    pub async fn cancel(
        &self,
        payout_id: &str,
    ) -> Result<Result<PayoutDoc, Option<PayoutStatus>>, StorageError> {
        let now = bson::DateTime::now();
        if let Some(p) = self
            .transition(
                payout_id,
                PayoutStatus::Pending,
                PayoutStatus::Cancelled,
                doc! { "finished_at": now },
            )
            .await?
        {
            return Ok(Ok(p));
        }
        Ok(Err(self.get(payout_id).await?.map(|p| p.status)))
    }

    /// Takes a payout for processing: pending → processing, or the payout
    /// already processing (a re-run after a crash). None when it is final.
    pub async fn begin_processing(
        &self,
        payout_id: &str,
    ) -> Result<Option<PayoutDoc>, StorageError> {
        let now = bson::DateTime::now();
        if let Some(p) = self
            .transition(
                payout_id,
                PayoutStatus::Pending,
                PayoutStatus::Processing,
                doc! { "started_at": now },
            )
            .await?
        {
            return Ok(Some(p));
        }
        Ok(self
            .get(payout_id)
            .await?
            .filter(|p| p.status == PayoutStatus::Processing))
    }

    /// Records a rail failure of queue attempt `attempt` once: retry_count + 1.
    pub async fn record_failure(
        &self,
        p: &PayoutDoc,
        attempt: u32,
        error: &str,
    ) -> Result<(), StorageError> {
        self.payouts
            .update_one(
                doc! { "_id": &p.payout_id, "status": "processing",
                       "retry_count": p.retry_count as i64, "last_failed_attempt": { "$lt": attempt as i64 } },
                doc! { "$inc": { "retry_count": 1 },
                       "$set": { "last_failed_attempt": attempt as i64, "last_error": error,
                                 "updated_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(())
    }

    /// processing → completed with the rail's transaction hash.
    pub async fn complete(
        &self,
        p: &PayoutDoc,
        tx_hash: &str,
    ) -> Result<Option<PayoutDoc>, StorageError> {
        let now = bson::DateTime::now();
        let ms = p
            .started_at
            .map(|s| now.timestamp_millis() - s.timestamp_millis());
        self.transition(
            &p.payout_id,
            PayoutStatus::Processing,
            PayoutStatus::Completed,
            doc! { "tx_hash": tx_hash, "finished_at": now, "processing_ms": ms },
        )
        .await
    }

    /// processing → failed.
    pub async fn fail(&self, p: &PayoutDoc, error: &str) -> Result<(), StorageError> {
        self.transition(
            &p.payout_id,
            PayoutStatus::Processing,
            PayoutStatus::Failed,
            doc! { "last_error": error, "finished_at": bson::DateTime::now() },
        )
        .await?;
        Ok(())
    }

    /// Stores a batch; false when its id exists.
    pub async fn insert_batch(&self, batch: &PayoutBatchDoc) -> Result<bool, StorageError> {
        insert_new(&self.batches, batch).await
    }

    /// A batch.
    pub async fn batch(&self, batch_id: &str) -> Result<Option<PayoutBatchDoc>, StorageError> {
        Ok(self.batches.find_one(doc! { "_id": batch_id }).await?)
    }

    /// The payouts of a batch.
    pub async fn batch_payouts(&self, batch_id: &str) -> Result<Vec<PayoutDoc>, StorageError> {
        self.find_all(doc! { "batch_id": batch_id }).await
    }
}
