//! MongoDB access: the connection and the collections with their indexes.
//!
//! Only standard MongoDB 7 features are used (the local SecantusDB surrogate
//! and production's replica set both accept them).

pub mod coalesce;
pub mod nodes;
pub mod pools;
pub mod resources;

use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::{Document, doc},
};

/// Collection names.
pub mod collections {
    /// Nodes (`_id` = node_id).
    pub const NODES: &str = "nodes";
    /// Node pools (`_id` = pool_id).
    pub const POOLS: &str = "node_pools";
    /// Batch records (`_id` = batch_id).
    pub const BATCHES: &str = "batches";
    /// Per-item PoOT validation results (`_id` = `{batch_id}:{index}`).
    pub const POOT_VALIDATIONS: &str = "poot_validations";
    /// Results of finished jobs (`_id` = job_id), kept beyond the queue's retention.
    pub const JOBS: &str = "jobs";
    /// Resource samples reported by nodes (TTL-expired).
    pub const RESOURCE_SAMPLES: &str = "resource_samples";
    /// Per-node resource thresholds (`_id` = node_id).
    pub const RESOURCE_THRESHOLDS: &str = "resource_thresholds";
    /// Resource alerts (`_id` = alert_id).
    pub const RESOURCE_ALERTS: &str = "resource_alerts";
}

/// A storage call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The driver reported an error (its text is for logs, never for clients).
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A document could not be (de)serialized.
    #[error("bson: {0}")]
    Bson(String),
    /// The task carrying the call ended before it answered (see [`coalesce`]).
    #[error("storage call interrupted")]
    Interrupted,
}

impl From<mongodb::bson::ser::Error> for StorageError {
    fn from(e: mongodb::bson::ser::Error) -> Self {
        Self::Bson(e.to_string())
    }
}
impl From<mongodb::bson::de::Error> for StorageError {
    fn from(e: mongodb::bson::de::Error) -> Self {
        Self::Bson(e.to_string())
    }
}

/// How long a pooled MongoDB connection may sit idle before it is closed
/// rather than reused: below the 300-350 s after which load balancers and
/// NAT commonly drop idle connections.
pub const MAX_IDLE_TIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Handle on the platform's MongoDB database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    db: Database,
    resource_retention_days: Option<u32>,
}

impl Db {
    /// Connects (lazily: the driver connects on first use) to `database`.
    pub async fn connect(url: &str, database: &str) -> Result<Self, StorageError> {
        use mongodb::event::{EventHandler, command::CommandEvent};
        let mut options = mongodb::options::ClientOptions::parse(url).await?;
        // A pooled connection idle longer than this is closed instead of
        // reused: load balancers, NAT and some servers cut idle TCP
        // connections at 300-350 s, and a cut connection answers its next
        // command with "unexpected end of file". A `maxIdleTimeMS` in the
        // URL wins.
        options.max_idle_time.get_or_insert(MAX_IDLE_TIME);
        // Every command's latency, by command name (find, insert, aggregate...).
        options.command_event_handler = Some(EventHandler::callback(|e: CommandEvent| {
            if let CommandEvent::Succeeded(s) = e {
                crate::metrics::store_call("mongodb", &s.command_name, s.duration);
            }
        }));
        let client = Client::with_options(options)?;
        Ok(Self {
            db: client.database(database),
            resource_retention_days: None,
        })
    }

    /// Sets the retention of resource samples (`LUCID_RESOURCE_RETENTION_DAYS`)
    /// that [`Db::ensure_indexes`] applies to their TTL index; without it an
    /// existing TTL index is left as it is (30 days when created).
    pub fn with_resource_retention_days(mut self, days: u32) -> Self {
        self.resource_retention_days = Some(days);
        self
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// A typed collection.
    pub fn collection<T: Send + Sync>(&self, name: &str) -> Collection<T> {
        self.db.collection(name)
    }

    /// Checks the connection (readiness probes). A network error is tried
    /// once more: the driver drops the broken connection and the second
    /// attempt opens a new one, so a connection cut while idle does not
    /// make a healthy store look down.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let ping = || self.db.run_command(doc! { "ping": 1 });
        match ping().await {
            Err(e) if is_network_error(&e) => {
                tracing::debug!(error = %e, "mongodb ping: network error, trying once more");
                ping().await?;
            }
            r => {
                r?;
            }
        }
        Ok(())
    }

    /// The server's version and replica set name (`None` for a standalone),
    /// for `lucid-api store ping`.
    pub async fn server_info(&self) -> Result<(String, Option<String>), StorageError> {
        let admin = self.db.client().database("admin");
        let build = admin.run_command(doc! { "buildInfo": 1 }).await?;
        let hello = admin.run_command(doc! { "hello": 1 }).await?;
        Ok((
            build.get_str("version").unwrap_or("unknown").to_string(),
            hello.get_str("setName").ok().map(String::from),
        ))
    }

    /// Creates the indexes the queries need; safe to run on every start.
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        let validations = self.collection::<Document>(collections::POOT_VALIDATIONS);
        // Batch records need no index of their own: their ids
        // (`{batch_id}:{item_index:06}`) make every batch and chunk an `_id`
        // range, and each secondary index slows the batch path's inserts.
        validations
            .create_index(index(doc! { "node_id": 1, "validated_at": -1 }))
            .await?;
        let jobs = self.collection::<Document>(collections::JOBS);
        jobs.create_index(index(doc! { "batch_id": 1, "chunk_index": 1 }))
            .await?;
        let batches = self.collection::<Document>(collections::BATCHES);
        batches
            .create_index(index(doc! { "created_at": -1 }))
            .await?;
        let nodes = self.collection::<Document>(collections::NODES);
        nodes
            .create_index(index(doc! { "status": 1, "node_type": 1, "created_at": 1 }))
            .await?;
        nodes
            .create_index(index(doc! { "pool_id": 1, "created_at": 1 }))
            .await?;
        nodes
            .create_index(index(doc! { "created_at": 1, "_id": 1 }))
            .await?;
        let pools = self.collection::<Document>(collections::POOLS);
        pools
            .create_index(index(doc! { "created_at": 1, "_id": 1 }))
            .await?;
        resources::ensure_indexes(self, self.resource_retention_days).await?;
        Ok(())
    }
}

/// A broken or closed connection (as opposed to an answer from the server).
fn is_network_error(e: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        e.kind.as_ref(),
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    )
}

/// Inserts `doc`; `Ok(false)` when its `_id` already exists (decided by the
/// unique index, never by a racy pre-check).
pub async fn insert_new<T: serde::Serialize + Send + Sync>(
    collection: &Collection<T>,
    doc: &T,
) -> Result<bool, StorageError> {
    match collection.insert_one(doc).await {
        Ok(_) => Ok(true),
        Err(e) if is_duplicate_key(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One page of `filter`'s matches in `sort` order (pages from 1), and the total.
pub async fn find_page<T>(
    collection: &Collection<T>,
    filter: mongodb::bson::Document,
    sort: mongodb::bson::Document,
    page: u64,
    page_size: u64,
) -> Result<(u64, Vec<T>), StorageError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    use futures::TryStreamExt as _;
    let total = collection.count_documents(filter.clone()).await?;
    let items = collection
        .find(filter)
        .sort(sort)
        .skip(page.saturating_sub(1) * page_size)
        .limit(page_size as i64)
        .await?
        .try_collect()
        .await?;
    Ok((total, items))
}

/// Which of `ids` are stored in `collection` (by `_id`).
pub async fn existing_ids<T: Send + Sync>(
    collection: &Collection<T>,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, StorageError> {
    use futures::TryStreamExt as _;
    let docs: Vec<mongodb::bson::Document> = collection
        .clone_with_type::<mongodb::bson::Document>()
        .find(mongodb::bson::doc! { "_id": { "$in": ids } })
        .projection(mongodb::bson::doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .iter()
        .filter_map(|d| d.get_str("_id").ok().map(String::from))
        .collect())
}

/// A numeric BSON value (aggregation results may be int32, int64 or double).
pub fn number(value: Option<&mongodb::bson::Bson>) -> Option<f64> {
    use mongodb::bson::Bson;
    match value? {
        Bson::Double(v) => Some(*v),
        Bson::Int32(v) => Some(f64::from(*v)),
        Bson::Int64(v) => Some(*v as f64),
        _ => None,
    }
}

/// Inserts `docs` unordered, each at most once: returns the positions the
/// server refused as duplicates (a unique key already stored), empty when
/// every document was new. Any other failure is an error.
pub async fn insert_many_new<T>(
    collection: &mongodb::Collection<T>,
    docs: &[T],
) -> Result<Vec<usize>, StorageError>
where
    T: serde::Serialize + Send + Sync,
{
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    match collection.insert_many(docs).ordered(false).await {
        Ok(_) => Ok(Vec::new()),
        Err(e) if is_duplicate_key(&e) => match e.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(m) => Ok(m
                .write_errors
                .as_ref()
                .map(|w| w.iter().map(|e| e.index).collect())
                .unwrap_or_default()),
            _ => Ok((0..docs.len()).collect()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Whether a write failed only because the document already exists
/// (duplicate key, code 11000): the idempotent "already done" case.
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == 11000))
        }
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}
