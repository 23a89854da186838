//! MongoDB repository of resource samples (`resource_samples`, TTL-expired),
//! per-node thresholds (`resource_thresholds`, `_id` = node id) and alerts
//! (`resource_alerts`). Thresholds, alerts and the report flow are in
//! [`alerts`].

mod alerts;

pub use alerts::AlertDoc;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{self, Bson, Document, doc},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Db, StorageError, collections};
use crate::domain::resources::{
    CpuSample, DiskSample, GpuSample, MemorySample, Metric, NetworkSample, ResourceSample,
};

/// Name of the TTL index on `resource_samples.timestamp`.
pub const SAMPLE_TTL_INDEX: &str = "resource_samples_ttl";
/// Retention of resource samples when none is configured.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// A resource sample as stored: the time both as a date (for the TTL index
/// and range queries) and as epoch milliseconds (for bucketing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSampleDoc {
    /// Reporting node.
    pub node_id: String,
    /// When the sample was taken.
    pub timestamp: bson::DateTime,
    /// `timestamp` in ms since the epoch.
    pub ts_ms: i64,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory.
    pub memory: MemorySample,
    /// Disk.
    pub disk: DiskSample,
    /// Network.
    pub network: NetworkSample,
    /// GPU, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSample>,
}

impl ResourceSampleDoc {
    /// The stored form of `sample` (millisecond precision).
    pub fn new(node_id: &str, sample: &ResourceSample) -> Self {
        let timestamp = bson::DateTime::from_chrono(sample.timestamp);
        Self {
            node_id: node_id.to_string(),
            timestamp,
            ts_ms: timestamp.timestamp_millis(),
            cpu: sample.cpu.clone(),
            memory: sample.memory.clone(),
            disk: sample.disk.clone(),
            network: sample.network.clone(),
            gpu: sample.gpu.clone(),
        }
    }

    /// The sample.
    pub fn to_sample(&self) -> ResourceSample {
        ResourceSample {
            timestamp: self.timestamp.to_chrono(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            disk: self.disk.clone(),
            network: self.network.clone(),
            gpu: self.gpu.clone(),
        }
    }
}

/// Mean and maximum of a value over a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    /// Mean.
    pub avg: f64,
    /// Maximum.
    pub max: f64,
}

/// One bucket of the metrics aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricBucket {
    /// Start of the bucket, ms since the epoch.
    pub start_ms: i64,
    /// Samples in the bucket.
    pub count: u64,
    /// CPU utilisation %.
    pub cpu_usage_percent: Stat,
    /// Memory used %.
    pub memory_used_percent: Stat,
    /// Disk used %.
    pub disk_used_percent: Stat,
    /// Network bytes received (counter).
    pub network_bytes_in: Stat,
    /// Network bytes sent (counter).
    pub network_bytes_out: Stat,
}

/// Resource samples, thresholds and alerts.
#[derive(Debug, Clone)]
pub struct ResourceRepo {
    samples: Collection<ResourceSampleDoc>,
    thresholds: Collection<Document>,
    alerts: Collection<AlertDoc>,
}

fn range_filter(node_id: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Document {
    doc! {
        "node_id": node_id,
        "timestamp": {
            "$gte": bson::DateTime::from_chrono(start),
            "$lt": bson::DateTime::from_chrono(end),
        },
    }
}

fn num(d: &Document, key: &str) -> f64 {
    crate::storage::number(d.get(key)).unwrap_or(0.0)
}

fn stat(d: &Document, key: &str) -> Stat {
    Stat {
        avg: num(d, &format!("{key}_avg")),
        max: num(d, &format!("{key}_max")),
    }
}

/// `(part / whole) * 100`, 0 when `whole` is 0.
fn used_percent(part: &str, whole: &str) -> Document {
    doc! {
        "$cond": [
            { "$gt": [whole, 0] },
            { "$multiply": [{ "$divide": [part, whole] }, 100] },
            0,
        ]
    }
}

impl ResourceRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            samples: db.collection(collections::RESOURCE_SAMPLES),
            thresholds: db.collection(collections::RESOURCE_THRESHOLDS),
            alerts: db.collection(collections::RESOURCE_ALERTS),
        }
    }

    /// Stores samples of `node_id`.
    pub async fn insert_samples(
        &self,
        node_id: &str,
        samples: &[ResourceSample],
    ) -> Result<(), StorageError> {
        if samples.is_empty() {
            return Ok(());
        }
        let docs: Vec<ResourceSampleDoc> = samples
            .iter()
            .map(|s| ResourceSampleDoc::new(node_id, s))
            .collect();
        self.samples.insert_many(docs).await?;
        Ok(())
    }

    /// The newest sample of a node.
    pub async fn latest(&self, node_id: &str) -> Result<Option<ResourceSampleDoc>, StorageError> {
        Ok(self
            .samples
            .find_one(doc! { "node_id": node_id })
            .sort(doc! { "timestamp": -1 })
            .await?)
    }

    /// The newest `limit` values of one component in `[start, end)`, oldest first.
    pub async fn series<T: DeserializeOwned>(
        &self,
        node_id: &str,
        metric: Metric,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, T)>, StorageError> {
        let field = metric.as_str();
        let rows: Vec<Document> = self
            .samples
            .clone_with_type::<Document>()
            .find(range_filter(node_id, start, end))
            .projection(doc! { "_id": 0, "timestamp": 1, field: 1 })
            .sort(doc! { "timestamp": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        let mut points = rows
            .into_iter()
            .map(|mut row| {
                let at = row
                    .get_datetime("timestamp")
                    .map_err(|e| StorageError::Bson(e.to_string()))?
                    .to_chrono();
                let value = row.remove(field).unwrap_or(Bson::Null);
                Ok((at, bson::from_bson(value)?))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        points.reverse();
        Ok(points)
    }

    /// Aggregates a node's samples in `[start, end)` into buckets of
    /// `bucket_ms` (aligned to the epoch), oldest first; empty buckets are absent.
    pub async fn metrics(
        &self,
        node_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        bucket_ms: i64,
    ) -> Result<Vec<MetricBucket>, StorageError> {
        let memory = used_percent("$memory.used", "$memory.total");
        let disk = used_percent("$disk.used", "$disk.total");
        let pipeline = vec![
            doc! { "$match": range_filter(node_id, start, end) },
            doc! { "$group": {
                "_id": { "$subtract": ["$ts_ms", { "$mod": ["$ts_ms", bucket_ms] }] },
                "count": { "$sum": 1 },
                "cpu_avg": { "$avg": "$cpu.usage_percent" },
                "cpu_max": { "$max": "$cpu.usage_percent" },
                "memory_avg": { "$avg": memory.clone() },
                "memory_max": { "$max": memory },
                "disk_avg": { "$avg": disk.clone() },
                "disk_max": { "$max": disk },
                "in_avg": { "$avg": "$network.total_bytes_in" },
                "in_max": { "$max": "$network.total_bytes_in" },
                "out_avg": { "$avg": "$network.total_bytes_out" },
                "out_max": { "$max": "$network.total_bytes_out" },
            } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let rows: Vec<Document> = self
            .samples
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .iter()
            .map(|d| MetricBucket {
                start_ms: num(d, "_id") as i64,
                count: num(d, "count") as u64,
                cpu_usage_percent: stat(d, "cpu"),
                memory_used_percent: stat(d, "memory"),
                disk_used_percent: stat(d, "disk"),
                network_bytes_in: stat(d, "in"),
                network_bytes_out: stat(d, "out"),
            })
            .collect())
    }
}

/// The unique index of active alerts that alert sequences replaced.
const OLD_ACTIVE_ALERT_INDEX: &str = "one_active_alert_per_metric";

/// `dropIndexes` of an index (or collection) that does not exist.
fn is_index_not_found(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 27 || c.code == 26)
}

/// Whether index creation failed because an index with the same name or
/// keys but other options exists (codes 85 and 86).
fn is_index_conflict(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 85 || c.code == 86)
}

/// Indexes of the resource collections. The TTL index expires samples after
/// `retention_days` (default 30); when it exists with another expiry, a
/// process given a retention updates it (`collMod`), one without leaves it.
pub(super) async fn ensure_indexes(
    db: &Db,
    retention_days: Option<u32>,
) -> Result<(), StorageError> {
    let index = |keys: Document| IndexModel::builder().keys(keys).build();
    let samples = db.collection::<Document>(collections::RESOURCE_SAMPLES);
    samples
        .create_index(index(doc! { "node_id": 1, "timestamp": 1 }))
        .await?;
    let expire =
        Duration::from_secs(u64::from(retention_days.unwrap_or(DEFAULT_RETENTION_DAYS)) * 86_400);
    let ttl = IndexModel::builder()
        .keys(doc! { "timestamp": 1 })
        .options(
            IndexOptions::builder()
                .name(SAMPLE_TTL_INDEX.to_string())
                .expire_after(expire)
                .build(),
        )
        .build();
    match samples.create_index(ttl).await {
        Ok(_) => {}
        Err(e) if is_index_conflict(&e) => {
            if retention_days.is_some() {
                db.database()
                    .run_command(doc! {
                        "collMod": collections::RESOURCE_SAMPLES,
                        "index": { "name": SAMPLE_TTL_INDEX, "expireAfterSeconds": expire.as_secs() as i64 },
                    })
                    .await?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    let alerts = db.collection::<Document>(collections::RESOURCE_ALERTS);
    // The latest alert of each metric (see `alerts`: alert sequences).
    alerts
        .create_index(index(doc! { "node_id": 1, "metric": 1, "seq": -1 }))
        .await?;
    // Stores made before the sequences carry a unique index of active
    // alerts; on SecantusDB it goes on refusing alerts once resolved.
    match alerts.drop_index(OLD_ACTIVE_ALERT_INDEX).await {
        Ok(()) => tracing::info!(
            index = OLD_ACTIVE_ALERT_INDEX,
            "dropped the superseded alert index"
        ),
        Err(e) if is_index_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    alerts
        .create_index(index(doc! { "node_id": 1, "state": 1, "raised_at": -1 }))
        .await?;
    alerts
        .create_index(index(doc! { "node_id": 1, "raised_at": -1 }))
        .await?;
    Ok(())
}
