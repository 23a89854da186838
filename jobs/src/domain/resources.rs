//! Resource samples reported by nodes: their components and bounds, and the
//! metrics they feed.
//! Thresholds and alerts, and the bucket arithmetic, are in submodules
//! re-exported here.

mod alerts;
mod buckets;

pub use alerts::*;
pub use buckets::*;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Check, ValidationErrors, node::MAX_BYTES};

/// Samples accepted in one report.
pub const MAX_SAMPLES_PER_REPORT: usize = 1000;
/// How far ahead of the server clock a sample may be (clock skew), in seconds.
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;
/// Earliest accepted sample time: 2000-01-01T00:00:00Z, in ms since the epoch.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
/// Most points one component series returns.
pub const MAX_SERIES_POINTS: i64 = 1000;

/// CPU usage at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuSample {
    /// Utilisation, 0–100 %.
    pub usage_percent: f64,
    /// Logical cores, 1–1024.
    pub cores: u32,
    /// Current clock, 0–10000 MHz.
    pub frequency_mhz: f64,
    /// The 1, 5 and 15 minute load averages: at most 3 values, each ≥ 0.
    pub load_average: Vec<f64>,
    /// Temperature, −50–150 °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// Memory usage in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySample {
    /// Installed memory, at least 1.
    pub total: u64,
    /// In use, at most `total`.
    pub used: u64,
    /// Free, at most `total`.
    pub free: u64,
    /// Page cache, at most `total`.
    pub cached: u64,
    /// Swap space.
    pub swap_total: u64,
    /// Swap in use, at most `swap_total`.
    pub swap_used: u64,
}

/// Disk usage (bytes) and activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSample {
    /// Capacity, at least 1.
    pub total: u64,
    /// In use, at most `total`.
    pub used: u64,
    /// Free, at most `total`.
    pub free: u64,
    /// Reads per second, 0–10^9.
    pub read_iops: f64,
    /// Writes per second, 0–10^9.
    pub write_iops: f64,
    /// Read throughput, 0–10^6 MB/s.
    pub read_throughput_mbps: f64,
    /// Write throughput, 0–10^6 MB/s.
    pub write_throughput_mbps: f64,
}

/// Network counters since boot (monotonic until the node restarts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSample {
    /// Bytes received.
    pub total_bytes_in: u64,
    /// Bytes sent.
    pub total_bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Receive errors.
    pub errors_in: u64,
    /// Send errors.
    pub errors_out: u64,
}

/// GPU usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    /// Utilisation, 0–100 %.
    pub usage_percent: f64,
    /// Memory in use, at most `memory_total_bytes`.
    pub memory_used_bytes: u64,
    /// Memory installed.
    pub memory_total_bytes: u64,
    /// Temperature, −50–150 °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// One validated-shape sample of a node's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSample {
    /// When it was taken.
    pub timestamp: DateTime<Utc>,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory.
    pub memory: MemorySample,
    /// Disk.
    pub disk: DiskSample,
    /// Network.
    pub network: NetworkSample,
    /// GPU, if the node has one.
    pub gpu: Option<GpuSample>,
}

/// A resource a node reports, as watched by thresholds and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// CPU utilisation %.
    Cpu,
    /// Memory used / total %.
    Memory,
    /// Disk used / total %.
    Disk,
    /// Network throughput relative to the node's `network_mbps` limit, %.
    Network,
}

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 4] = [Self::Cpu, Self::Memory, Self::Disk, Self::Network];

    /// The stored name, which is also the sample's field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Network => "network",
        }
    }
}

fn percent_of(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // Same operation order as the aggregation pipeline: (part / whole) * 100.
        part as f64 / whole as f64 * 100.0
    }
}

impl MemorySample {
    /// `used / total` in %.
    pub fn used_percent(&self) -> f64 {
        percent_of(self.used, self.total)
    }
}

impl DiskSample {
    /// `used / total` in %.
    pub fn used_percent(&self) -> f64 {
        percent_of(self.used, self.total)
    }
}

fn percent(c: &mut Check, field: &str, v: f64) {
    c.ensure(
        v.is_finite() && (0.0..=100.0).contains(&v),
        field,
        "must be between 0 and 100",
    );
}

fn bounded(c: &mut Check, field: &str, v: f64, max: f64) {
    c.ensure(
        v.is_finite() && (0.0..=max).contains(&v),
        field,
        format!("must be between 0 and {max}"),
    );
}

fn temperature(c: &mut Check, field: &str, v: Option<f64>) {
    if let Some(t) = v {
        c.ensure(
            t.is_finite() && (-50.0..=150.0).contains(&t),
            field,
            "must be between -50 and 150",
        );
    }
}

fn bytes(c: &mut Check, field: &str, v: u64) {
    c.range(field, v, 0, MAX_BYTES);
}

fn at_most(c: &mut Check, field: &str, v: u64, limit: u64, limit_name: &str) {
    c.ensure(v <= limit, field, format!("must not exceed {limit_name}"));
}

impl ResourceSample {
    /// Checks every bound; `now` is the server's clock (timestamps may be at
    /// most 5 minutes ahead of it).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        c.ensure(
            self.timestamp <= now + TimeDelta::seconds(MAX_FUTURE_SKEW_SECS),
            "timestamp",
            "must not be more than 5 minutes in the future",
        )
        .ensure(
            self.timestamp.timestamp_millis() >= MIN_TIMESTAMP_MS,
            "timestamp",
            "must not be before 2000-01-01T00:00:00Z",
        );

        let cpu = &self.cpu;
        percent(&mut c, "cpu.usage_percent", cpu.usage_percent);
        c.range("cpu.cores", cpu.cores, 1, 1024);
        bounded(&mut c, "cpu.frequency_mhz", cpu.frequency_mhz, 10_000.0);
        c.ensure(
            cpu.load_average.len() <= 3,
            "cpu.load_average",
            "must hold at most 3 values",
        );
        for (i, l) in cpu.load_average.iter().enumerate() {
            bounded(&mut c, &format!("cpu.load_average[{i}]"), *l, 1e6);
        }
        temperature(&mut c, "cpu.temperature", cpu.temperature);

        let m = &self.memory;
        c.range("memory.total", m.total, 1, MAX_BYTES);
        at_most(&mut c, "memory.used", m.used, m.total, "memory.total");
        at_most(&mut c, "memory.free", m.free, m.total, "memory.total");
        at_most(&mut c, "memory.cached", m.cached, m.total, "memory.total");
        bytes(&mut c, "memory.swap_total", m.swap_total);
        at_most(
            &mut c,
            "memory.swap_used",
            m.swap_used,
            m.swap_total,
            "memory.swap_total",
        );

        let d = &self.disk;
        c.range("disk.total", d.total, 1, MAX_BYTES);
        at_most(&mut c, "disk.used", d.used, d.total, "disk.total");
        at_most(&mut c, "disk.free", d.free, d.total, "disk.total");
        bounded(&mut c, "disk.read_iops", d.read_iops, 1e9);
        bounded(&mut c, "disk.write_iops", d.write_iops, 1e9);
        bounded(
            &mut c,
            "disk.read_throughput_mbps",
            d.read_throughput_mbps,
            1e6,
        );
        bounded(
            &mut c,
            "disk.write_throughput_mbps",
            d.write_throughput_mbps,
            1e6,
        );

        let n = &self.network;
        for (field, v) in [
            ("network.total_bytes_in", n.total_bytes_in),
            ("network.total_bytes_out", n.total_bytes_out),
            ("network.packets_in", n.packets_in),
            ("network.packets_out", n.packets_out),
            ("network.errors_in", n.errors_in),
            ("network.errors_out", n.errors_out),
        ] {
            bytes(&mut c, field, v);
        }

        if let Some(g) = &self.gpu {
            percent(&mut c, "gpu.usage_percent", g.usage_percent);
            bytes(&mut c, "gpu.memory_total_bytes", g.memory_total_bytes);
            at_most(
                &mut c,
                "gpu.memory_used_bytes",
                g.memory_used_bytes,
                g.memory_total_bytes,
                "gpu.memory_total_bytes",
            );
            temperature(&mut c, "gpu.temperature", g.temperature);
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample(at_ms: i64) -> ResourceSample {
        ResourceSample {
            timestamp: DateTime::from_timestamp_millis(at_ms).expect("time"),
            cpu: CpuSample {
                usage_percent: 10.0,
                cores: 4,
                frequency_mhz: 2400.0,
                load_average: vec![0.5, 0.4, 0.3],
                temperature: Some(50.0),
            },
            memory: MemorySample {
                total: 1000,
                used: 100,
                free: 900,
                cached: 0,
                swap_total: 0,
                swap_used: 0,
            },
            disk: DiskSample {
                total: 1000,
                used: 100,
                free: 900,
                read_iops: 1.0,
                write_iops: 1.0,
                read_throughput_mbps: 1.0,
                write_throughput_mbps: 1.0,
            },
            network: NetworkSample {
                total_bytes_in: 0,
                total_bytes_out: 0,
                packets_in: 0,
                packets_out: 0,
                errors_in: 0,
                errors_out: 0,
            },
            gpu: None,
        }
    }

    fn fields(r: Result<(), ValidationErrors>) -> Vec<String> {
        r.err()
            .map(|e| e.0.into_iter().map(|(f, _)| f).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_sane_sample_is_valid() {
        let now = Utc::now();
        let mut s = sample(now.timestamp_millis());
        assert_eq!(fields(s.validate(now)), Vec::<String>::new());
        s.gpu = Some(GpuSample {
            usage_percent: 5.0,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            temperature: None,
        });
        assert!(s.validate(now).is_ok());
    }

    #[test]
    fn every_offending_field_is_named() {
        let now = Utc::now();
        let mut s = sample(now.timestamp_millis() + 301_000);
        s.cpu.usage_percent = 100.5;
        s.cpu.cores = 0;
        s.cpu.load_average = vec![1.0, 1.0, 1.0, 1.0];
        s.memory.used = 1001;
        s.disk.free = 2000;
        s.disk.read_iops = -1.0;
        s.memory.swap_used = 1;
        s.gpu = Some(GpuSample {
            usage_percent: 101.0,
            memory_used_bytes: 3,
            memory_total_bytes: 2,
            temperature: Some(400.0),
        });
        assert_eq!(
            fields(s.validate(now)),
            [
                "timestamp",
                "cpu.usage_percent",
                "cpu.cores",
                "cpu.load_average",
                "memory.used",
                "memory.swap_used",
                "disk.free",
                "disk.read_iops",
                "gpu.usage_percent",
                "gpu.memory_used_bytes",
                "gpu.temperature",
            ]
        );
    }

    #[test]
    fn timestamps_up_to_five_minutes_ahead_are_accepted() {
        let now = Utc::now();
        assert!(
            sample(now.timestamp_millis() + 299_000)
                .validate(now)
                .is_ok()
        );
        assert_eq!(
            fields(sample(MIN_TIMESTAMP_MS - 1).validate(now)),
            ["timestamp"]
        );
    }

    #[test]
    fn used_percent_is_used_over_total() {
        let s = sample(MIN_TIMESTAMP_MS);
        assert_eq!(s.memory.used_percent(), 10.0);
        assert_eq!(s.disk.used_percent(), 10.0);
        assert_eq!(percent_of(1, 0), 0.0);
    }
}
