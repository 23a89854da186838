//! Validating a node's PoOT output: the score from its window, judged against
//! its history, recorded once as a [`ValidationRecord`].

use std::time::Instant;

use chrono::{DateTime, Utc};
use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    assess::{ScoreHistory, assess},
    repo::PootRepo,
    score::ScoreBreakdown,
};
use crate::storage::{Db, StorageError, collections};

/// Resource samples reported by nodes.
const SAMPLES: &str = "resource_samples";
/// Largest distance between a validation's timestamp and server time.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// One PoOT validation (single or batch item), `poot_validations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationRecord {
    /// Validation id (`{batch_id}:{index}` for batch items, so re-runs write it once).
    #[serde(rename = "_id")]
    pub validation_id: String,
    /// Node id.
    pub node_id: String,
    /// Score within 0.1–100.
    pub is_valid: bool,
    /// PoOT score.
    pub score: f64,
    /// 0.1–1.
    pub confidence: f64,
    /// Flagged for review.
    pub suspicious: bool,
    /// sha256 of the decoded output, hex.
    pub output_hash: Option<String>,
    /// Client timestamp.
    #[schema(value_type = String)]
    pub timestamp: bson::DateTime,
    /// Client nonce.
    pub nonce: String,
    /// The node's type when validated.
    pub node_type: Option<String>,
    /// The node's pool when validated.
    pub pool_id: Option<String>,
    /// Time spent validating.
    pub validation_time_ms: f64,
    /// Why it failed, if it did.
    pub errors: Vec<String>,
    /// `succeeded` (scored; see `is_valid`) or `failed` (could not be validated).
    pub status: String,
    /// `LUCID_ERR_` code of a failed validation.
    pub error_code: Option<String>,
    /// When it was validated.
    #[schema(value_type = String)]
    pub validated_at: bson::DateTime,
    /// Batch, for batch items.
    pub batch_id: Option<String>,
    /// Chunk, for batch items.
    pub chunk_index: Option<u64>,
    /// Position in the batch, for batch items.
    pub item_index: Option<u64>,
    /// `{node_id}:{nonce}` on scored records: a unique (sparse) index makes a
    /// nonce usable once per node, claimed by the record's own insert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_key: Option<String>,
}

/// Scores, history and records of PoOT validations.
#[derive(Debug, Clone)]
pub struct Validator {
    pub(super) poot: PootRepo,
    pub(super) records: Collection<ValidationRecord>,
    pub(super) samples: Collection<Document>,
    nodes: Collection<Document>,
}

impl Validator {
    /// A validator over `db`.
    pub fn new(db: &Db, poot: PootRepo) -> Self {
        Self {
            poot,
            records: db.collection(collections::POOT_VALIDATIONS),
            samples: db.collection(SAMPLES),
            nodes: db.collection(collections::NODES),
        }
    }

    /// The proofs repository.
    pub fn poot(&self) -> &PootRepo {
        &self.poot
    }

    /// Creates the indexes (one use of a nonce per node).
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        self.poot.ensure_indexes().await?;
        self.records
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "nonce_key": 1 })
                    .options(IndexOptions::builder().unique(true).sparse(true).build())
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Builds the record of a validation whose output hashed to `output_hash`.
    pub fn record(
        &self,
        base: RecordBase,
        breakdown: &ScoreBreakdown,
        history: &ScoreHistory,
        started: Instant,
    ) -> ValidationRecord {
        let a = assess(breakdown.score, history);
        let nonce_key = format!("{}:{}", base.node_id, base.nonce);
        ValidationRecord {
            validation_id: base.validation_id,
            node_id: base.node_id,
            is_valid: a.is_valid,
            score: breakdown.score,
            confidence: a.confidence,
            suspicious: a.suspicious,
            output_hash: Some(base.output_hash),
            timestamp: base.timestamp,
            nonce: base.nonce,
            node_type: base.node_type,
            pool_id: base.pool_id,
            validation_time_ms: started.elapsed().as_secs_f64() * 1000.0,
            status: "succeeded".into(),
            error_code: None,
            errors: a.errors,
            validated_at: bson::DateTime::now(),
            nonce_key: Some(nonce_key),
            batch_id: base.batch_id,
            chunk_index: base.chunk_index,
            item_index: base.item_index,
        }
    }

    /// The record of an item that could not be validated (unknown node, bad input, replay).
    pub fn failed(base: RecordBase, code: &str, message: String) -> ValidationRecord {
        ValidationRecord {
            validation_id: base.validation_id,
            node_id: base.node_id,
            is_valid: false,
            score: 0.0,
            confidence: 0.0,
            suspicious: false,
            output_hash: None,
            timestamp: base.timestamp,
            nonce: base.nonce,
            node_type: base.node_type,
            pool_id: base.pool_id,
            validation_time_ms: 0.0,
            errors: vec![message],
            status: "failed".into(),
            error_code: Some(code.to_string()),
            validated_at: bson::DateTime::now(),
            nonce_key: None,
            batch_id: base.batch_id,
            chunk_index: base.chunk_index,
            item_index: base.item_index,
        }
    }

    /// The record of a scored item whose nonce another validation used first.
    pub fn replayed(r: &ValidationRecord) -> ValidationRecord {
        ValidationRecord {
            is_valid: false,
            score: 0.0,
            confidence: 0.0,
            suspicious: false,
            output_hash: None,
            validation_time_ms: 0.0,
            errors: vec!["nonce already used by this node".into()],
            status: "failed".into(),
            error_code: Some(super::ERR_POOT_VALIDATION.into()),
            nonce_key: None,
            ..r.clone()
        }
    }

    /// Of `ids`, those stored.
    pub async fn existing_ids(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StorageError> {
        crate::storage::existing_ids(&self.records, ids).await
    }

    /// Stores a single validation and moves the node's `poot_score`;
    /// false when its nonce was already used by this node (nothing stored).
    pub async fn store(&self, record: &ValidationRecord) -> Result<bool, StorageError> {
        if !self.insert(std::slice::from_ref(record)).await?.is_empty() {
            return Ok(false);
        }
        if record.output_hash.is_some() {
            self.publish_scores(&[(&record.node_id, record.score, record.validated_at)])
                .await?;
        }
        Ok(true)
    }

    /// Stores records, each at most once; returns the positions refused as
    /// duplicates (an `_id` already stored by an earlier run, or a
    /// `nonce_key` already used), empty when every record was new.
    pub async fn insert(&self, records: &[ValidationRecord]) -> Result<Vec<usize>, StorageError> {
        crate::storage::insert_many_new(&self.records, records).await
    }

    /// Moves each node's `poot_score` to `(score, as of)`, never backwards
    /// in time (a later value already stored wins).
    pub async fn publish_scores(
        &self,
        scores: &[(&str, f64, bson::DateTime)],
    ) -> Result<(), StorageError> {
        // One `update` command with a statement per node (standard since
        // MongoDB 2.6): one round trip and one commit instead of one per node.
        // `$not: {$gte}` also matches a node never scored, and keeps each
        // statement routed by `_id` (an `$or` would not be).
        let statements: Vec<Document> = scores
            .iter()
            .map(|&(node, score, at)| {
                doc! {
                    "q": { "_id": node, "poot_scored_at": { "$not": { "$gte": at } } },
                    "u": { "$set": { "poot_score": score, "poot_scored_at": at } },
                }
            })
            .collect();
        for part in statements.chunks(1000) {
            self.nodes
                .client()
                .database(&self.nodes.namespace().db)
                .run_command(doc! {
                    "update": self.nodes.name(),
                    "updates": part,
                    "ordered": false,
                })
                .await?;
        }
        Ok(())
    }

    /// The node's latest validation.
    pub async fn latest(&self, node_id: &str) -> Result<Option<ValidationRecord>, StorageError> {
        Ok(self
            .records
            .find_one(doc! { "node_id": node_id, "output_hash": { "$ne": bson::Bson::Null } })
            .sort(doc! { "validated_at": -1 })
            .await?)
    }

    /// A page of a node's validations in `[start, end)`, newest first, and the total.
    pub async fn history_page(
        &self,
        node_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<ValidationRecord>), StorageError> {
        let filter = doc! { "node_id": node_id, "validated_at": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) } };
        crate::storage::find_page(
            &self.records,
            filter,
            doc! { "validated_at": -1, "_id": 1 },
            page,
            page_size,
        )
        .await
    }
}

/// The identity of a validation, before it is scored.
#[derive(Debug, Clone)]
pub struct RecordBase {
    /// Validation id.
    pub validation_id: String,
    /// Node id.
    pub node_id: String,
    /// sha256 hex of the decoded output.
    pub output_hash: String,
    /// Client timestamp.
    pub timestamp: bson::DateTime,
    /// Client nonce.
    pub nonce: String,
    /// The node's type.
    pub node_type: Option<String>,
    /// The node's pool.
    pub pool_id: Option<String>,
    /// Batch context.
    pub batch_id: Option<String>,
    /// Batch context.
    pub chunk_index: Option<u64>,
    /// Batch context.
    pub item_index: Option<u64>,
}

/// A validation as the API shows it (RFC 3339 times, `validation_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationOut {
    /// Validation id.
    pub validation_id: String,
    /// Node id.
    pub node_id: String,
    /// Score within 0.1–100.
    pub is_valid: bool,
    /// PoOT score.
    pub score: f64,
    /// 0.1–1.
    pub confidence: f64,
    /// Flagged for review.
    pub suspicious: bool,
    /// sha256 of the decoded output, hex.
    pub output_hash: Option<String>,
    /// Client timestamp.
    pub timestamp: DateTime<Utc>,
    /// Client nonce.
    pub nonce: String,
    /// The node's type when validated.
    pub node_type: Option<String>,
    /// The node's pool when validated.
    pub pool_id: Option<String>,
    /// Time spent validating.
    pub validation_time_ms: f64,
    /// Why it failed or is invalid.
    pub errors: Vec<String>,
    /// `succeeded` (scored; see `is_valid`) or `failed` (could not be validated).
    pub status: String,
    /// `LUCID_ERR_` code of a failed validation.
    pub error_code: Option<String>,
    /// When it was validated.
    pub validated_at: DateTime<Utc>,
    /// Batch, for batch items.
    pub batch_id: Option<String>,
    /// Chunk, for batch items.
    pub chunk_index: Option<u64>,
    /// Position in the batch, for batch items.
    pub item_index: Option<u64>,
}

impl From<ValidationRecord> for ValidationOut {
    fn from(r: ValidationRecord) -> Self {
        Self {
            validation_id: r.validation_id,
            node_id: r.node_id,
            is_valid: r.is_valid,
            score: r.score,
            confidence: r.confidence,
            suspicious: r.suspicious,
            output_hash: r.output_hash,
            timestamp: r.timestamp.to_chrono(),
            nonce: r.nonce,
            node_type: r.node_type,
            pool_id: r.pool_id,
            validation_time_ms: r.validation_time_ms,
            errors: r.errors,
            status: r.status,
            error_code: r.error_code,
            validated_at: r.validated_at.to_chrono(),
            batch_id: r.batch_id,
            chunk_index: r.chunk_index,
            item_index: r.item_index,
        }
    }
}
