//! Per-node thresholds and the alert rules: when a sample raises, escalates
//! or resolves an alert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Metric, ResourceSample};
use crate::domain::{Check, ValidationErrors};

/// A warning/critical pair, each 0–100 %, warning below critical.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdPair {
    /// Level at which a warning is raised, 0–100.
    pub warning: f64,
    /// Level at which the alert becomes critical, 0–100, above `warning`.
    pub critical: f64,
}

impl ThresholdPair {
    /// A pair.
    pub const fn new(warning: f64, critical: f64) -> Self {
        Self { warning, critical }
    }

    /// Checks the bounds and the order.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        for (field, v) in [("warning", self.warning), ("critical", self.critical)] {
            c.ensure(
                v.is_finite() && (0.0..=100.0).contains(&v),
                field,
                "must be between 0 and 100",
            );
        }
        c.ensure(
            self.warning < self.critical,
            "warning",
            "must be below critical",
        );
        c.finish()
    }

    /// The level `value` reaches, if any (thresholds are inclusive).
    pub fn level(&self, value: f64) -> Option<AlertLevel> {
        if value >= self.critical {
            Some(AlertLevel::Critical)
        } else if value >= self.warning {
            Some(AlertLevel::Warning)
        } else {
            None
        }
    }

    /// The threshold of `level`.
    pub fn threshold(&self, level: AlertLevel) -> f64 {
        match level {
            AlertLevel::Warning => self.warning,
            AlertLevel::Critical => self.critical,
        }
    }
}

/// A node's thresholds, one pair per metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// CPU utilisation (default 70/90).
    pub cpu: ThresholdPair,
    /// Memory used % (default 70/90).
    pub memory: ThresholdPair,
    /// Disk used % (default 80/95).
    pub disk: ThresholdPair,
    /// Network % of the node's limit (default 80/95).
    pub network: ThresholdPair,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu: ThresholdPair::new(70.0, 90.0),
            memory: ThresholdPair::new(70.0, 90.0),
            disk: ThresholdPair::new(80.0, 95.0),
            network: ThresholdPair::new(80.0, 95.0),
        }
    }
}

impl Thresholds {
    /// The pair of `metric`.
    pub fn get(&self, metric: Metric) -> ThresholdPair {
        match metric {
            Metric::Cpu => self.cpu,
            Metric::Memory => self.memory,
            Metric::Disk => self.disk,
            Metric::Network => self.network,
        }
    }

    /// Replaces the pair of `metric`.
    pub fn set(&mut self, metric: Metric, pair: ThresholdPair) {
        match metric {
            Metric::Cpu => self.cpu = pair,
            Metric::Memory => self.memory = pair,
            Metric::Disk => self.disk = pair,
            Metric::Network => self.network = pair,
        }
    }
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// At or above the warning threshold.
    Warning,
    /// At or above the critical threshold.
    Critical,
}

/// Lifecycle of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Active,
    /// A later sample fell back below the warning threshold.
    Resolved,
}

impl AlertState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Resolved => "resolved",
        }
    }
}

/// What a sample does to the alert of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// Open a new alert at this level.
    Raise(AlertLevel),
    /// Turn the active warning into a critical alert (same alert).
    Escalate,
    /// Close the active alert.
    Resolve,
}

/// The change for a metric whose active alert is at `active` (if any) when
/// a sample reaches `reached` (if any). A critical alert is not lowered to a
/// warning: it stays critical until resolved.
pub fn decide(active: Option<AlertLevel>, reached: Option<AlertLevel>) -> Option<AlertChange> {
    match (active, reached) {
        (None, Some(level)) => Some(AlertChange::Raise(level)),
        (Some(AlertLevel::Warning), Some(AlertLevel::Critical)) => Some(AlertChange::Escalate),
        (Some(_), None) => Some(AlertChange::Resolve),
        _ => None,
    }
}

/// One alert change caused by one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// The metric.
    pub metric: Metric,
    /// The change.
    pub change: AlertChange,
    /// The metric's value in the sample.
    pub value: f64,
    /// The threshold crossed (the warning threshold for a resolution).
    pub threshold: f64,
    /// The sample's time.
    pub at: DateTime<Utc>,
}

/// Network throughput (bytes in + out) between `previous` and `current` in
/// Mbps, as % of `limit_mbps`; `None` without a limit, when no time passed,
/// or when the counters went backwards (the node restarted).
pub fn network_percent(
    previous: &ResourceSample,
    current: &ResourceSample,
    limit_mbps: u64,
) -> Option<f64> {
    if limit_mbps == 0 {
        return None;
    }
    let elapsed_ms = (current.timestamp - previous.timestamp).num_milliseconds();
    let total = |s: &ResourceSample| {
        u128::from(s.network.total_bytes_in) + u128::from(s.network.total_bytes_out)
    };
    let (before, after) = (total(previous), total(current));
    if elapsed_ms <= 0 || after < before {
        return None;
    }
    // bits / µs = Mbit/s
    let mbps = (after - before) as f64 * 8.0 / (elapsed_ms as f64 * 1000.0);
    Some(mbps * 100.0 / limit_mbps as f64)
}

/// The value of `metric` in `sample`; network needs the previous sample.
pub fn metric_value(
    metric: Metric,
    sample: &ResourceSample,
    previous: Option<&ResourceSample>,
    network_limit_mbps: u64,
) -> Option<f64> {
    match metric {
        Metric::Cpu => Some(sample.cpu.usage_percent),
        Metric::Memory => Some(sample.memory.used_percent()),
        Metric::Disk => Some(sample.disk.used_percent()),
        Metric::Network => previous.and_then(|p| network_percent(p, sample, network_limit_mbps)),
    }
}

/// Runs `samples` (in time order) through the rules. `previous` is the
/// newest stored sample before this report: samples not newer than it are
/// late arrivals and change no alert. `active` holds the level of each
/// metric's active alert and is updated as events happen.
pub fn evaluate(
    thresholds: &Thresholds,
    network_limit_mbps: u64,
    previous: Option<&ResourceSample>,
    samples: &[ResourceSample],
    active: &mut HashMap<Metric, AlertLevel>,
) -> Vec<AlertEvent> {
    let mut ordered: Vec<&ResourceSample> = samples
        .iter()
        .filter(|s| previous.is_none_or(|p| s.timestamp > p.timestamp))
        .collect();
    ordered.sort_by_key(|s| s.timestamp);
    let mut events = Vec::new();
    let mut prev = previous;
    for sample in ordered {
        for metric in Metric::ALL {
            let Some(value) = metric_value(metric, sample, prev, network_limit_mbps) else {
                continue;
            };
            let pair = thresholds.get(metric);
            let Some(change) = decide(active.get(&metric).copied(), pair.level(value)) else {
                continue;
            };
            let threshold = match change {
                AlertChange::Raise(level) => {
                    active.insert(metric, level);
                    pair.threshold(level)
                }
                AlertChange::Escalate => {
                    active.insert(metric, AlertLevel::Critical);
                    pair.critical
                }
                AlertChange::Resolve => {
                    active.remove(&metric);
                    pair.warning
                }
            };
            events.push(AlertEvent {
                metric,
                change,
                value,
                threshold,
                at: sample.timestamp,
            });
        }
        prev = Some(sample);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::resources::tests::sample;

    fn cpu_at(at_s: i64, usage: f64) -> ResourceSample {
        let mut s = sample(1_700_000_000_000 + at_s * 1000);
        s.cpu.usage_percent = usage;
        s
    }

    #[test]
    fn pairs_must_be_ordered_percentages() {
        assert!(ThresholdPair::new(70.0, 90.0).validate().is_ok());
        let fields = |p: ThresholdPair| -> Vec<String> {
            p.validate()
                .err()
                .map(|e| e.0.into_iter().map(|(f, _)| f).collect())
                .unwrap_or_default()
        };
        assert_eq!(fields(ThresholdPair::new(90.0, 90.0)), ["warning"]);
        assert_eq!(
            fields(ThresholdPair::new(-1.0, 101.0)),
            ["warning", "critical"]
        );
    }

    #[test]
    fn levels_are_inclusive() {
        let p = ThresholdPair::new(70.0, 90.0);
        assert_eq!(p.level(69.9), None);
        assert_eq!(p.level(70.0), Some(AlertLevel::Warning));
        assert_eq!(p.level(90.0), Some(AlertLevel::Critical));
    }

    #[test]
    fn critical_is_not_lowered_to_warning() {
        use AlertLevel::*;
        assert_eq!(decide(Some(Critical), Some(Warning)), None);
        assert_eq!(decide(Some(Warning), Some(Warning)), None);
        assert_eq!(
            decide(Some(Warning), Some(Critical)),
            Some(AlertChange::Escalate)
        );
        assert_eq!(decide(Some(Critical), None), Some(AlertChange::Resolve));
        assert_eq!(decide(None, None), None);
    }

    #[test]
    fn a_cpu_alert_is_raised_escalated_and_resolved() {
        let mut active = HashMap::new();
        let samples = [
            cpu_at(0, 75.0),
            cpu_at(10, 95.0),
            cpu_at(20, 80.0),
            cpu_at(30, 10.0),
        ];
        let events = evaluate(&Thresholds::default(), 0, None, &samples, &mut active);
        let changes: Vec<_> = events.iter().map(|e| (e.change, e.threshold)).collect();
        assert_eq!(
            changes,
            [
                (AlertChange::Raise(AlertLevel::Warning), 70.0),
                (AlertChange::Escalate, 90.0),
                (AlertChange::Resolve, 70.0),
            ]
        );
        assert!(active.is_empty());
        assert_eq!(events[2].value, 10.0);
    }

    #[test]
    fn samples_older_than_the_stored_one_change_nothing() {
        let mut active = HashMap::from([(Metric::Cpu, AlertLevel::Warning)]);
        let prev = cpu_at(100, 80.0);
        let events = evaluate(
            &Thresholds::default(),
            0,
            Some(&prev),
            &[cpu_at(50, 10.0)],
            &mut active,
        );
        assert!(events.is_empty());
    }

    #[test]
    fn network_percent_is_throughput_over_the_limit() {
        let a = cpu_at(0, 0.0);
        let mut b = cpu_at(10, 0.0);
        // 85 Mbps for 10 s = 106,250,000 bytes, split over in and out.
        b.network.total_bytes_in = 100_000_000;
        b.network.total_bytes_out = 6_250_000;
        assert_eq!(network_percent(&a, &b, 100), Some(85.0));
        assert_eq!(network_percent(&a, &b, 0), None);
        assert_eq!(network_percent(&b, &a, 100), None);
        let mut active = HashMap::new();
        let events = evaluate(&Thresholds::default(), 100, Some(&a), &[b], &mut active);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].metric, Metric::Network);
        assert_eq!(events[0].change, AlertChange::Raise(AlertLevel::Warning));
    }
}
