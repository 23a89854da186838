//! Per-batch node snapshots: a batch judges each node as it stood when the
//! batch first reached it.
//!
//! The first chunk (on any worker) that needs a node computes its score and
//! history once and stores them in `poot_batch_nodes` (`_id` =
//! `{batch_id}:{node_id}`, first writer wins). Every other chunk and worker
//! reuses that snapshot, through a bounded in-process cache. So a
//! 100,000-item batch over 1,000 nodes scores 1,000 times rather than
//! 100,000, every item of a node in a batch gets the same score, and a chunk
//! re-run after a crash scores exactly as its first run did.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};

use super::{assess::ScoreHistory, score::ScoreBreakdown, validation::Validator};
use crate::storage::{Db, StorageError, collections, is_duplicate_key};

/// Snapshots of the nodes a batch touched.
pub const SNAPSHOTS: &str = "poot_batch_nodes";
/// Snapshots are dropped a week after they were taken (TTL index).
const SNAPSHOT_TTL_SECS: u64 = 7 * 24 * 3600;
/// Cached snapshots per process (about 300 bytes each); the cache is emptied when full.
const CACHE_CAPACITY: usize = 20_000;
/// Snapshots computed at once by one chunk.
const LOAD_CONCURRENCY: usize = 8;

/// A node as a batch sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// `{batch_id}:{node_id}`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Batch id.
    pub batch_id: String,
    /// Node id.
    pub node_id: String,
    /// Whether the node existed.
    pub known: bool,
    /// The node's type.
    pub node_type: Option<String>,
    /// The node's pool.
    pub pool_id: Option<String>,
    /// Its score (known nodes only).
    pub breakdown: Option<ScoreBreakdown>,
    /// Its validation history.
    pub history: ScoreHistory,
    /// When it was taken.
    pub at: bson::DateTime,
}

#[derive(Debug)]
struct Cached {
    snapshot: Arc<NodeSnapshot>,
    /// Whether this process already moved the node's `poot_score` for this batch.
    score_published: bool,
}

/// Loads, computes and caches node snapshots.
#[derive(Debug, Clone)]
pub struct Snapshots {
    snapshots: Collection<NodeSnapshot>,
    nodes: Collection<Document>,
    validator: Validator,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// One chunk at a time loads missing snapshots in this process, so chunks
    /// running at once do not all compute the same nodes.
    load: Arc<tokio::sync::Mutex<()>>,
}

fn key(batch_id: &str, node_id: &str) -> String {
    format!("{batch_id}:{node_id}")
}

impl Snapshots {
    /// Snapshots over `db`, scored by `validator`.
    pub fn new(db: &Db, validator: Validator) -> Self {
        Self {
            snapshots: db.collection(SNAPSHOTS),
            nodes: db.collection(collections::NODES),
            validator,
            cache: Arc::default(),
            load: Arc::default(),
        }
    }

    /// Creates the TTL index.
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        self.snapshots
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(
                        IndexOptions::builder()
                            .expire_after(std::time::Duration::from_secs(SNAPSHOT_TTL_SECS))
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshots of `node_ids` in `batch_id`, computing (as of `now`) the ones no one took yet.
    #[tracing::instrument(skip(self, node_ids), fields(nodes = node_ids.len()))]
    pub async fn get_many(
        &self,
        batch_id: &str,
        node_ids: &HashSet<&str>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, Arc<NodeSnapshot>>, StorageError> {
        let mut out = HashMap::with_capacity(node_ids.len());
        let mut missing = Vec::new();
        {
            let cache = self.lock();
            for node in node_ids {
                match cache.get(&key(batch_id, node)) {
                    Some(c) => {
                        out.insert(node.to_string(), c.snapshot.clone());
                    }
                    None => missing.push(node.to_string()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let _loading = self.load.lock().await;
        // Another chunk may have loaded some of them while this one waited.
        {
            let cache = self.lock();
            missing.retain(|node| match cache.get(&key(batch_id, node)) {
                Some(c) => {
                    out.insert(node.clone(), c.snapshot.clone());
                    false
                }
                None => true,
            });
        }
        let loaded: Vec<Arc<NodeSnapshot>> = stream::iter(missing)
            .map(|node: String| {
                let (this, batch) = (self.clone(), batch_id.to_string());
                async move { this.load_or_take(&batch, &node, now).await }
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut cache = self.lock();
        if cache.len() + loaded.len() > CACHE_CAPACITY {
            cache.clear();
        }
        for s in loaded {
            out.insert(s.node_id.clone(), s.clone());
            cache.entry(s.id.clone()).or_insert(Cached {
                snapshot: s,
                score_published: false,
            });
        }
        Ok(out)
    }

    async fn load_or_take(
        &self,
        batch_id: &str,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<NodeSnapshot>, StorageError> {
        let id = key(batch_id, node_id);
        if let Some(s) = self.snapshots.find_one(doc! { "_id": &id }).await? {
            return Ok(Arc::new(s));
        }
        let node = self
            .nodes
            .find_one(doc! { "_id": node_id })
            .projection(doc! { "node_type": 1, "pool_id": 1 })
            .await?;
        let mut snapshot = NodeSnapshot {
            id: id.clone(),
            batch_id: batch_id.to_string(),
            node_id: node_id.to_string(),
            known: node.is_some(),
            node_type: None,
            pool_id: None,
            breakdown: None,
            history: ScoreHistory::default(),
            at: bson::DateTime::from_chrono(now),
        };
        if let Some(node) = node {
            let (breakdown, history) = self.validator.score_and_history(node_id, now).await?;
            snapshot.node_type = node.get_str("node_type").ok().map(String::from);
            snapshot.pool_id = node.get_str("pool_id").ok().map(String::from);
            snapshot.breakdown = Some(breakdown);
            snapshot.history = history;
        }
        match self.snapshots.insert_one(&snapshot).await {
            Ok(_) => Ok(Arc::new(snapshot)),
            // Another worker took it first: use theirs, so the batch sees one score per node.
            Err(e) if is_duplicate_key(&e) => Ok(Arc::new(
                self.snapshots
                    .find_one(doc! { "_id": &id })
                    .await?
                    .unwrap_or(snapshot),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Of `node_ids`, those whose `poot_score` this process has not yet moved for `batch_id`.
    pub fn unpublished<'a>(&self, batch_id: &str, node_ids: &HashSet<&'a str>) -> HashSet<&'a str> {
        let cache = self.lock();
        node_ids
            .iter()
            .filter(|n| {
                cache
                    .get(&key(batch_id, n))
                    .is_none_or(|c| !c.score_published)
            })
            .copied()
            .collect()
    }

    /// Records that this process moved the `poot_score` of `node_ids` for `batch_id`.
    pub fn mark_published(&self, batch_id: &str, node_ids: &HashSet<&str>) {
        let mut cache = self.lock();
        for n in node_ids {
            if let Some(c) = cache.get_mut(&key(batch_id, n)) {
                c.score_published = true;
            }
        }
    }
}
