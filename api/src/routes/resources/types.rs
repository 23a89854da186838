//! Request (`...In`) and response (`...Out`) bodies of the resource endpoints.

use chrono::{DateTime, Utc};
use lucid_jobs::{
    domain::resources::{
        AlertLevel, AlertState, CpuSample, DiskSample, GpuSample, Granularity, MemorySample,
        Metric, NetworkSample, ResourceSample, ThresholdPair, Thresholds,
    },
    storage::resources::{AlertDoc, MetricBucket, ResourceSampleDoc, Stat},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One sample of a node's resources.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSampleIn {
    /// When it was taken (RFC 3339); default now; at most 5 minutes ahead of the server clock.
    pub timestamp: Option<DateTime<Utc>>,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory.
    pub memory: MemorySample,
    /// Disk.
    pub disk: DiskSample,
    /// Network counters.
    pub network: NetworkSample,
    /// GPU, if the node has one.
    pub gpu: Option<GpuSample>,
}

impl ResourceSampleIn {
    /// The sample, taken `now` unless it says otherwise.
    pub fn into_sample(self, now: DateTime<Utc>) -> ResourceSample {
        ResourceSample {
            timestamp: self.timestamp.unwrap_or(now),
            cpu: self.cpu,
            memory: self.memory,
            disk: self.disk,
            network: self.network,
            gpu: self.gpu,
        }
    }
}

/// A batch of samples.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceBatchIn {
    /// 1–1000 samples.
    pub samples: Vec<ResourceSampleIn>,
}

/// Body of `POST /api/v1/nodes/{node_id}/resources`: one sample, or a batch
/// `{"samples": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResourceReportIn {
    /// A batch.
    Batch(ResourceBatchIn),
    /// One sample.
    One(Box<ResourceSampleIn>),
}

/// An alert on a node's resource.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlertOut {
    /// Alert id.
    pub alert_id: String,
    /// Node.
    pub node_id: String,
    /// Metric.
    pub metric: Metric,
    /// Level.
    pub level: AlertLevel,
    /// Active or resolved.
    pub state: AlertState,
    /// The value (%) that raised or escalated it.
    pub value: f64,
    /// The threshold (%) it crossed.
    pub threshold: f64,
    /// Time of the sample that raised it.
    pub raised_at: DateTime<Utc>,
    /// Time of the sample that made it critical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<DateTime<Utc>>,
    /// Time of the sample that resolved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<AlertDoc> for AlertOut {
    fn from(a: AlertDoc) -> Self {
        Self {
            alert_id: a.alert_id,
            node_id: a.node_id,
            metric: a.metric,
            level: a.level,
            state: a.state,
            value: a.value,
            threshold: a.threshold,
            raised_at: a.raised_at.to_chrono(),
            escalated_at: a.escalated_at.map(|t| t.to_chrono()),
            resolved_at: a.resolved_at.map(|t| t.to_chrono()),
        }
    }
}

/// Outcome of a report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceReportOut {
    /// Samples stored.
    pub accepted: usize,
    /// Alerts this report raised, escalated or resolved, in their final state.
    pub alerts: Vec<AlertOut>,
}

/// A stored sample.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceSampleOut {
    /// Node.
    pub node_id: String,
    /// When it was taken (millisecond precision).
    pub timestamp: DateTime<Utc>,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory.
    pub memory: MemorySample,
    /// Disk.
    pub disk: DiskSample,
    /// Network counters.
    pub network: NetworkSample,
    /// GPU, if reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSample>,
}

impl From<ResourceSampleDoc> for ResourceSampleOut {
    fn from(d: ResourceSampleDoc) -> Self {
        Self {
            node_id: d.node_id,
            timestamp: d.timestamp.to_chrono(),
            cpu: d.cpu,
            memory: d.memory,
            disk: d.disk,
            network: d.network,
            gpu: d.gpu,
        }
    }
}

/// A time range, `[start, end)`; default the last hour.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResourceRangeQuery {
    /// RFC 3339; default `end` − 1 h.
    pub start: Option<String>,
    /// RFC 3339; default now.
    pub end: Option<String>,
}

/// A metrics query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResourceMetricsQuery {
    /// RFC 3339, inclusive; default `end` − 1 h.
    pub start: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub end: Option<String>,
    /// Bucket width: `1m` (default), `5m`, `1h` or `1d`; at most 10,000 buckets.
    pub granularity: Option<String>,
}

/// Mean and maximum over a bucket.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct StatOut {
    /// Mean.
    pub avg: f64,
    /// Maximum.
    pub max: f64,
}

impl From<Stat> for StatOut {
    fn from(s: Stat) -> Self {
        Self {
            avg: s.avg,
            max: s.max,
        }
    }
}

/// One bucket of aggregated samples.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricBucketOut {
    /// Start of the bucket.
    pub timestamp: DateTime<Utc>,
    /// Samples in the bucket.
    pub count: u64,
    /// CPU utilisation %.
    pub cpu_usage_percent: StatOut,
    /// Memory used / total %.
    pub memory_used_percent: StatOut,
    /// Disk used / total %.
    pub disk_used_percent: StatOut,
    /// Bytes received (counter since boot).
    pub network_bytes_in: StatOut,
    /// Bytes sent (counter since boot).
    pub network_bytes_out: StatOut,
}

impl From<MetricBucket> for MetricBucketOut {
    fn from(b: MetricBucket) -> Self {
        Self {
            timestamp: DateTime::from_timestamp_millis(b.start_ms).unwrap_or_default(),
            count: b.count,
            cpu_usage_percent: b.cpu_usage_percent.into(),
            memory_used_percent: b.memory_used_percent.into(),
            disk_used_percent: b.disk_used_percent.into(),
            network_bytes_in: b.network_bytes_in.into(),
            network_bytes_out: b.network_bytes_out.into(),
        }
    }
}

/// Aggregated metrics of a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceMetricsOut {
    /// Node.
    pub node_id: String,
    /// Start of the range (inclusive).
    pub start: DateTime<Utc>,
    /// End of the range (exclusive).
    pub end: DateTime<Utc>,
    /// Bucket width.
    pub granularity: Granularity,
    /// Buckets holding samples, oldest first (empty buckets are left out).
    pub buckets: Vec<MetricBucketOut>,
}

/// One value of a component.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentPoint<T> {
    /// When it was taken.
    pub timestamp: DateTime<Utc>,
    /// The component's fields.
    #[serde(flatten)]
    pub value: T,
}

/// The latest value of one component and its recent series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentSeriesOut<T> {
    /// Node.
    pub node_id: String,
    /// The component.
    pub component: Metric,
    /// The newest sample's value.
    pub latest: ComponentPoint<T>,
    /// Values in the range: the newest 1000 at most, oldest first.
    pub series: Vec<ComponentPoint<T>>,
}

/// Body of `POST /api/v1/nodes/{node_id}/resources/thresholds`: the pairs
/// given replace the node's; the others stay as they are.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsIn {
    /// CPU utilisation % (default 70/90).
    pub cpu: Option<ThresholdPair>,
    /// Memory used % (default 70/90).
    pub memory: Option<ThresholdPair>,
    /// Disk used % (default 80/95).
    pub disk: Option<ThresholdPair>,
    /// Network % of the node's `network_mbps` limit (default 80/95).
    pub network: Option<ThresholdPair>,
}

/// A node's effective thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ThresholdsOut {
    /// Node.
    pub node_id: String,
    /// CPU utilisation %.
    pub cpu: ThresholdPair,
    /// Memory used %.
    pub memory: ThresholdPair,
    /// Disk used %.
    pub disk: ThresholdPair,
    /// Network % of the node's limit.
    pub network: ThresholdPair,
}

impl ThresholdsOut {
    /// The thresholds of `node_id`.
    pub fn new(node_id: String, t: Thresholds) -> Self {
        Self {
            node_id,
            cpu: t.cpu,
            memory: t.memory,
            disk: t.disk,
            network: t.network,
        }
    }
}

/// Filter and pagination of the alert listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `active` or `resolved`; both when absent.
    pub state: Option<AlertState>,
    /// Page from 1.
    pub page: Option<u64>,
    /// Page size, 1–100 (default 20).
    pub page_size: Option<u64>,
}

/// A page of alerts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertPage {
    /// Alerts, newest first.
    pub items: Vec<AlertOut>,
    /// Page.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// Alerts matching the filter.
    pub total: u64,
}
