//! MongoDB repository of node pools (`_id` = pool id). Membership lives on
//! the node (`pool_id`), so a pool's node count is always derived; changes
//! that depend on the count run in a transaction that also bumps the pool's
//! `version`, so concurrent ones conflict and retry instead of overfilling.

use mongodb::{
    ClientSession, Collection,
    bson::{self, Document, doc},
    error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
};
use serde::{Deserialize, Serialize};

use super::{Db, StorageError, collections, nodes::NodeDoc};
use crate::domain::{node::ResourceLimits, pool::AutoScaling};

/// Transaction attempts before a conflict is reported as an error.
const MAX_TXN_ATTEMPTS: u64 = 40;

/// A conflict that a retry of the whole transaction resolves: labelled
/// `TransientTransactionError`, or a bare `WriteConflict` (112).
fn is_transient(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 112 || c.code == 251)
        || matches!(e.kind.as_ref(), ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 112)
}

/// A pool as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolDoc {
    /// Pool id.
    #[serde(rename = "_id")]
    pub pool_id: String,
    /// Name.
    pub name: String,
    /// Description, at most 500 characters.
    pub description: Option<String>,
    /// Capacity, 1–1000.
    pub max_nodes: u32,
    /// Limits for the pool's nodes.
    pub resource_limits: Option<ResourceLimits>,
    /// Auto-scaling settings.
    pub auto_scaling: AutoScaling,
    /// Called with every scaling event of the pool (POST, JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Bumped by membership changes (conflict detection).
    #[serde(default)]
    pub version: i64,
    /// Creation time.
    pub created_at: bson::DateTime,
    /// Last change.
    pub updated_at: bson::DateTime,
}

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No such pool.
    #[error("pool not found")]
    PoolNotFound,
    /// No such node.
    #[error("node not found")]
    NodeNotFound,
    /// The pool is at `max_nodes`.
    #[error("pool is full ({0} nodes)")]
    PoolFull(u32),
    /// The node is in another pool.
    #[error("node is already in pool {0}")]
    InOtherPool(String),
    /// The node is not in this pool.
    #[error("node is not in this pool")]
    NotMember,
    /// The pool still has nodes.
    #[error("pool has {0} nodes")]
    HasNodes(u64),
    /// The new capacity is below the current node count.
    #[error("pool has {0} nodes")]
    BelowCount(u64),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<mongodb::error::Error> for MembershipError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Storage(e.into())
    }
}

/// Pools.
#[derive(Debug, Clone)]
pub struct PoolRepo {
    db: Db,
    pools: Collection<PoolDoc>,
    nodes: Collection<NodeDoc>,
}

impl PoolRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            pools: db.collection(collections::POOLS),
            nodes: db.collection(collections::NODES),
        }
    }

    /// Inserts a pool; `Ok(false)` when the id exists.
    pub async fn insert(&self, pool: &PoolDoc) -> Result<bool, StorageError> {
        super::insert_new(&self.pools, pool).await
    }

    /// A pool by id.
    pub async fn get(&self, pool_id: &str) -> Result<Option<PoolDoc>, StorageError> {
        Ok(self.pools.find_one(doc! { "_id": pool_id }).await?)
    }

    /// A page of pools (oldest first) and the total.
    pub async fn list(
        &self,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<PoolDoc>), StorageError> {
        super::find_page(
            &self.pools,
            doc! {},
            doc! { "created_at": 1, "_id": 1 },
            page,
            page_size,
        )
        .await
    }

    /// Runs `op` in a transaction, retrying transient conflicts (write
    /// conflicts with a concurrent membership change) with jittered backoff.
    pub(crate) async fn in_transaction<T, F>(&self, mut op: F) -> Result<T, MembershipError>
    where
        F: for<'s> FnMut(
            &'s mut ClientSession,
            Self,
        ) -> futures::future::BoxFuture<'s, Result<T, MembershipError>>,
    {
        let mut session = self.db.database().client().start_session().await?;
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            session.start_transaction().await?;
            match op(&mut session, self.clone()).await {
                Ok(v) => loop {
                    match session.commit_transaction().await {
                        Ok(()) => return Ok(v),
                        Err(e)
                            if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                                && attempt < MAX_TXN_ATTEMPTS =>
                        {
                            continue;
                        }
                        Err(e) if is_transient(&e) && attempt < MAX_TXN_ATTEMPTS => {
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                },
                Err(MembershipError::Storage(StorageError::Mongo(e)))
                    if is_transient(&e) && attempt < MAX_TXN_ATTEMPTS =>
                {
                    let _ = session.abort_transaction().await;
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    return Err(e);
                }
            }
            let jitter = rand::random::<u64>() % (5 * attempt + 1);
            tokio::time::sleep(std::time::Duration::from_millis(2 * attempt + jitter)).await;
        }
    }

    /// Locks the pool for this transaction (a write conflict for concurrent ones).
    pub(crate) async fn bump(
        &self,
        s: &mut ClientSession,
        pool_id: &str,
    ) -> Result<PoolDoc, MembershipError> {
        self.pools
            .find_one_and_update(doc! { "_id": pool_id }, doc! { "$inc": { "version": 1 } })
            .return_document(mongodb::options::ReturnDocument::After)
            .session(s)
            .await?
            .ok_or(MembershipError::PoolNotFound)
    }

    async fn member_count(
        &self,
        s: &mut ClientSession,
        pool_id: &str,
    ) -> Result<u64, MembershipError> {
        Ok(self
            .nodes
            .count_documents(doc! { "pool_id": pool_id })
            .session(s)
            .await?)
    }

    /// Adds a node to a pool unless the pool is full or the node is in another pool.
    pub async fn add_node(&self, pool_id: &str, node_id: &str) -> Result<(), MembershipError> {
        let (pool_id, node_id) = (pool_id.to_string(), node_id.to_string());
        self.in_transaction(move |s, repo| {
            let (pool_id, node_id) = (pool_id.clone(), node_id.clone());
            Box::pin(async move {
                let pool = repo.bump(s, &pool_id).await?;
                let node = repo.nodes.find_one(doc! { "_id": &node_id }).session(&mut *s).await?.ok_or(MembershipError::NodeNotFound)?;
                match node.pool_id.as_deref() {
                    Some(p) if p == pool_id => return Ok(()),
                    Some(other) => return Err(MembershipError::InOtherPool(other.to_string())),
                    None => {}
                }
                if repo.member_count(s, &pool_id).await? >= u64::from(pool.max_nodes) {
                    return Err(MembershipError::PoolFull(pool.max_nodes));
                }
                repo.nodes
                    .update_one(
                        doc! { "_id": &node_id, "pool_id": bson::Bson::Null },
                        doc! { "$set": { "pool_id": &pool_id, "updated_at": bson::DateTime::now() } },
                    )
                    .session(&mut *s)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Removes a node from a pool.
    pub async fn remove_node(&self, pool_id: &str, node_id: &str) -> Result<(), MembershipError> {
        if self.get(pool_id).await?.is_none() {
            return Err(MembershipError::PoolNotFound);
        }
        let r = self
            .nodes
            .update_one(
                doc! { "_id": node_id, "pool_id": pool_id },
                doc! { "$set": { "pool_id": bson::Bson::Null, "updated_at": bson::DateTime::now() } },
            )
            .await?;
        if r.matched_count == 1 {
            return Ok(());
        }
        match self.nodes.find_one(doc! { "_id": node_id }).await? {
            Some(_) => Err(MembershipError::NotMember),
            None => Err(MembershipError::NodeNotFound),
        }
    }

    /// Updates a pool; a new `max_nodes` below the current count is refused.
    pub async fn update(&self, pool_id: &str, set: Document) -> Result<PoolDoc, MembershipError> {
        let pool_id = pool_id.to_string();
        self.in_transaction(move |s, repo| {
            let (pool_id, mut set) = (pool_id.clone(), set.clone());
            Box::pin(async move {
                repo.bump(s, &pool_id).await?;
                if let Ok(max) = set.get_i64("max_nodes") {
                    let count = repo.member_count(s, &pool_id).await?;
                    if count > max as u64 {
                        return Err(MembershipError::BelowCount(count));
                    }
                }
                set.insert("updated_at", bson::DateTime::now());
                repo.pools
                    .find_one_and_update(doc! { "_id": &pool_id }, doc! { "$set": set })
                    .return_document(mongodb::options::ReturnDocument::After)
                    .session(&mut *s)
                    .await?
                    .ok_or(MembershipError::PoolNotFound)
            })
        })
        .await
    }

    /// Deletes a pool; with nodes only when `force` (they are detached).
    pub async fn delete(&self, pool_id: &str, force: bool) -> Result<u64, MembershipError> {
        let pool_id = pool_id.to_string();
        self.in_transaction(move |s, repo| {
            let pool_id = pool_id.clone();
            Box::pin(async move {
                repo.bump(s, &pool_id).await?;
                let count = repo.member_count(s, &pool_id).await?;
                if count > 0 && !force {
                    return Err(MembershipError::HasNodes(count));
                }
                repo.nodes
                    .update_many(doc! { "pool_id": &pool_id }, doc! { "$set": { "pool_id": bson::Bson::Null, "updated_at": bson::DateTime::now() } })
                    .session(&mut *s)
                    .await?;
                repo.pools.delete_one(doc! { "_id": &pool_id }).session(&mut *s).await?;
                Ok(count)
            })
        })
        .await
    }
}
