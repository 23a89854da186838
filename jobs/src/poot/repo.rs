//! Storage of work proofs and refusals, and the window the score is computed over.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};

use super::{
    proof::{ProofIn, ProofKind},
    score::{ScoringConfig, WindowInputs},
};
use crate::storage::{Db, StorageError};

/// Stored proofs (`_id` = `{node_id}:{slot}:{type}`: one per node, slot and type).
pub const PROOFS: &str = "poot_proofs";
/// Refused proofs (bad signature): only counted, never stored.
pub const REFUSALS: &str = "poot_refusals";

/// A stored proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofDoc {
    /// `{node_id}:{slot}:{type}`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Node id.
    pub node_id: String,
    /// Slot number.
    pub slot: i64,
    /// Type and value.
    #[serde(flatten)]
    pub kind: ProofKind,
    /// Start of the slot.
    pub slot_time: bson::DateTime,
    /// When it was received.
    pub received_at: bson::DateTime,
}

/// Proofs and refusals.
#[derive(Debug, Clone)]
pub struct PootRepo {
    proofs: Collection<ProofDoc>,
    refusals: Collection<Document>,
    config: ScoringConfig,
}

impl PootRepo {
    /// The repository over `db`.
    pub fn new(db: &Db, config: ScoringConfig) -> Self {
        Self {
            proofs: db.collection(PROOFS),
            refusals: db.collection(REFUSALS),
            config,
        }
    }

    /// The scoring constants.
    pub fn config(&self) -> &ScoringConfig {
        &self.config
    }

    /// Creates the indexes (refusals expire after two windows).
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        self.proofs
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "node_id": 1, "slot": 1 })
                    .build(),
            )
            .await?;
        let ttl = std::time::Duration::from_secs(2 * self.config.window_seconds);
        self.refusals
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(IndexOptions::builder().expire_after(ttl).build())
                    .build(),
            )
            .await?;
        self.refusals
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "node_id": 1, "at": 1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Stores proofs (each at most once); returns the indexes that were duplicates.
    pub async fn insert(
        &self,
        node_id: &str,
        proofs: &[ProofIn],
    ) -> Result<Vec<usize>, StorageError> {
        let now = bson::DateTime::now();
        let docs: Vec<ProofDoc> = proofs
            .iter()
            .map(|p| ProofDoc {
                id: format!("{node_id}:{}:{}", p.slot, p.kind.type_name()),
                node_id: node_id.to_string(),
                slot: p.slot as i64,
                kind: p.kind.clone(),
                slot_time: bson::DateTime::from_millis(
                    (p.slot * self.config.slot_seconds * 1000) as i64,
                ),
                received_at: now,
            })
            .collect();
        crate::storage::insert_many_new(&self.proofs, &docs).await
    }

    /// Counts refused proofs of a node (for trust).
    pub async fn record_refusals(&self, node_id: &str, n: usize) -> Result<(), StorageError> {
        let now = bson::DateTime::now();
        let docs: Vec<Document> = (0..n)
            .map(|_| doc! { "node_id": node_id, "at": now })
            .collect();
        if !docs.is_empty() {
            self.refusals.insert_many(docs).await?;
        }
        Ok(())
    }

    /// The window's proofs and refusals of a node, summed for scoring.
    /// CPU and network averages come from the caller (resource samples).
    pub async fn window(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<WindowInputs, StorageError> {
        let c = &self.config;
        let now_slot = now.timestamp().max(0) as u64 / c.slot_seconds;
        let from_slot = now_slot.saturating_sub(c.window_seconds / c.slot_seconds);
        let proofs: Vec<ProofDoc> = self
            .proofs
            .find(doc! { "node_id": node_id, "slot": { "$gt": from_slot as i64, "$lte": now_slot as i64 } })
            .await?
            .try_collect()
            .await?;
        let mut w = WindowInputs::default();
        let mut slots = std::collections::HashSet::new();
        for p in &proofs {
            slots.insert(p.slot);
            match &p.kind {
                ProofKind::RelayBandwidth {
                    bytes,
                    sessions,
                    duration_seconds,
                } => w.relays.push((*bytes, *sessions, *duration_seconds)),
                ProofKind::StorageAvailability { gb, chunks } => w.storage.push((*gb, *chunks)),
                ProofKind::ValidationSignature { validated_sessions } => {
                    w.validated_sessions += validated_sessions
                }
                ProofKind::UptimeBeacon { seconds } => {
                    w.uptime_seconds += (*seconds).min(c.slot_seconds)
                }
            }
        }
        w.slots_with_proof = slots.len() as u64;
        w.accepted_proofs = proofs.len() as u64;
        let since = bson::DateTime::from_millis(
            (now.timestamp_millis() - (c.window_seconds * 1000) as i64).max(0),
        );
        w.refused_proofs = self
            .refusals
            .count_documents(doc! { "node_id": node_id, "at": { "$gt": since } })
            .await?;
        Ok(w)
    }
}
