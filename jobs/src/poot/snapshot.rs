//! Per-batch node snapshots: a batch judges each node as it stood when the
//! batch first reached it.
//!
//! The first chunk (on any worker) that needs a node computes its score and
//! history once and stores them in `poot_batch_nodes` (`_id` =
//! `{batch_id}:{node_id}`, first writer wins). Every other chunk and worker
//! reuses that snapshot, through a bounded in-process cache. So a
//! 100,000-item batch over 1,000 nodes scores 1,000 times rather than
//! 100,000, every item of a node in a batch gets the same score, and a chunk
//! re-run after a crash scores exactly as its first run did. The process
//! that computes a snapshot also moves the node's `poot_score` to it, so a
//! batch writes each node once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};

use super::{assess::ScoreHistory, score::ScoreBreakdown, validation::Validator};
use crate::storage::{Db, StorageError, collections, insert_many_new};

/// Snapshots of the nodes a batch touched.
pub const SNAPSHOTS: &str = "poot_batch_nodes";
/// Snapshots computed and stored together (see [`Snapshots::get_many`]).
const TAKE_GROUP: usize = 50;
/// Snapshots are dropped a week after they were taken (TTL index).
const SNAPSHOT_TTL_SECS: u64 = 7 * 24 * 3600;
/// Cached snapshots per process (about 300 bytes each); the cache is emptied when full.
const CACHE_CAPACITY: usize = 20_000;

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

/// Loads, computes and caches node snapshots.
#[derive(Debug, Clone)]
pub struct Snapshots {
    snapshots: Collection<NodeSnapshot>,
    nodes: Collection<Document>,
    validator: Validator,
    cache: Arc<Mutex<HashMap<String, Arc<NodeSnapshot>>>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<NodeSnapshot>>> {
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
                        out.insert(node.to_string(), c.clone());
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
                    out.insert(node.clone(), c.clone());
                    false
                }
                None => true,
            });
        }
        let loaded = self.load_or_take(batch_id, &missing, now).await?;
        let mut cache = self.lock();
        if cache.len() + loaded.len() > CACHE_CAPACITY {
            cache.clear();
        }
        for s in loaded {
            out.insert(s.node_id.clone(), s.clone());
            cache.entry(s.id.clone()).or_insert(s);
        }
        Ok(out)
    }

    /// The snapshots of `node_ids` in `batch_id`: the ones already taken
    /// (by any process), and the rest computed as of `now` and stored, first
    /// writer wins. Nodes not yet taken are computed and stored
    /// [`TAKE_GROUP`] at a time (a lookup of the nodes, the scoring reads of
    /// each, one score update and one insert per group), so a worker killed
    /// mid-chunk keeps the groups it finished; each group after the first is
    /// looked up again first, and each call starts at a random group.
    async fn load_or_take(
        &self,
        batch_id: &str,
        node_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<Arc<NodeSnapshot>>, StorageError> {
        let keys: Vec<String> = node_ids.iter().map(|n| key(batch_id, n)).collect();
        let mut out: Vec<Arc<NodeSnapshot>> = self.find(&keys).await?;
        let taken: HashSet<&str> = out.iter().map(|s| s.node_id.as_str()).collect();
        let rest: Vec<&str> = node_ids
            .iter()
            .map(String::as_str)
            .filter(|n| !taken.contains(n))
            .collect();
        let mut groups: Vec<&[&str]> = rest.chunks(TAKE_GROUP).collect();
        // Processes that need the same nodes at once take the groups in
        // different random orders and skip what another stored meanwhile,
        // so they split the work instead of each scoring every node. (A
        // common order with random starts made two processes that met walk
        // on in step, both scoring every later group.)
        rand::seq::SliceRandom::shuffle(groups.as_mut_slice(), &mut rand::thread_rng());
        for (i, group) in groups.into_iter().enumerate() {
            let mut group = group.to_vec();
            if i > 0 {
                let keys: Vec<String> = group.iter().map(|n| key(batch_id, n)).collect();
                let stored = self.find(&keys).await?;
                let done: HashSet<&str> = stored.iter().map(|s| s.node_id.as_str()).collect();
                group.retain(|n| !done.contains(n));
                out.extend(stored);
            }
            if !group.is_empty() {
                out.extend(self.take(batch_id, &group, now).await?);
            }
        }
        Ok(out)
    }

    /// Computes, publishes and stores the snapshots of `group` (first writer
    /// wins: where another process stored one first, theirs is returned).
    async fn take(
        &self,
        batch_id: &str,
        group: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<Arc<NodeSnapshot>>, StorageError> {
        let mut nodes: HashMap<String, Document> = HashMap::new();
        let mut cursor = self
            .nodes
            .find(doc! { "_id": { "$in": group } })
            .projection(doc! { "node_type": 1, "pool_id": 1 })
            .await?;
        while let Some(node) = cursor.try_next().await? {
            if let Ok(id) = node.get_str("_id") {
                nodes.insert(id.to_string(), node);
            }
        }
        let known: Vec<&str> = group
            .iter()
            .copied()
            .filter(|n| nodes.contains_key(*n))
            .collect();
        let mut scored = self.validator.score_and_history_many(&known, now).await?;
        let fresh: Vec<NodeSnapshot> = group
            .iter()
            .map(|&node_id| {
                let node = nodes.get(node_id);
                let scored = scored.remove(node_id);
                NodeSnapshot {
                    id: key(batch_id, node_id),
                    batch_id: batch_id.to_string(),
                    node_id: node_id.to_string(),
                    known: node.is_some(),
                    node_type: node.and_then(|n| n.get_str("node_type").ok().map(String::from)),
                    pool_id: node.and_then(|n| n.get_str("pool_id").ok().map(String::from)),
                    breakdown: scored.as_ref().map(|(b, _)| b.clone()),
                    history: scored.map(|(_, h)| h).unwrap_or_default(),
                    at: bson::DateTime::from_chrono(now),
                }
            })
            .collect();
        // The batch moves each node's `poot_score` to its snapshot's score,
        // once: here, before the snapshot is stored, so a crash in between
        // leaves the snapshot to be computed, and published, again.
        let scores: Vec<(&str, f64, bson::DateTime)> = fresh
            .iter()
            .filter_map(|s| Some((s.node_id.as_str(), s.breakdown.as_ref()?.score, s.at)))
            .collect();
        self.validator.publish_scores(&scores).await?;
        // Another worker may have taken some first: use theirs, so the batch sees one score per node.
        let mut taken = Vec::with_capacity(fresh.len());
        let refused: HashSet<usize> = insert_many_new(&self.snapshots, &fresh)
            .await?
            .into_iter()
            .collect();
        let theirs: Vec<String> = refused.iter().map(|&i| fresh[i].id.clone()).collect();
        let mut theirs: HashMap<String, Arc<NodeSnapshot>> = self
            .find(&theirs)
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        for (i, mine) in fresh.into_iter().enumerate() {
            let stored = refused
                .contains(&i)
                .then(|| theirs.remove(&mine.id))
                .flatten();
            taken.push(stored.unwrap_or_else(|| Arc::new(mine)));
        }
        Ok(taken)
    }

    async fn find(&self, ids: &[String]) -> Result<Vec<Arc<NodeSnapshot>>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<NodeSnapshot> = self
            .snapshots
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Arc::new).collect())
    }
}
