//! Bucket arithmetic of the metrics aggregation: epoch-aligned buckets of
//! one granularity over a `[start, end)` range.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Check, ValidationErrors};

/// Most buckets one metrics query may produce.
pub const MAX_BUCKETS: i64 = 10_000;

/// Bucket width of a metrics query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Granularity {
    /// One minute.
    #[serde(rename = "1m")]
    OneMinute,
    /// Five minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// One hour.
    #[serde(rename = "1h")]
    OneHour,
    /// One day (UTC).
    #[serde(rename = "1d")]
    OneDay,
}

impl Granularity {
    /// Parses `1m`, `5m`, `1h` or `1d`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1m" => Some(Self::OneMinute),
            "5m" => Some(Self::FiveMinutes),
            "1h" => Some(Self::OneHour),
            "1d" => Some(Self::OneDay),
            _ => None,
        }
    }

    /// Bucket width in milliseconds.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Self::OneMinute => 60_000,
            Self::FiveMinutes => 300_000,
            Self::OneHour => 3_600_000,
            Self::OneDay => 86_400_000,
        }
    }
}

/// Start of the bucket holding `ts_ms` (buckets are aligned to the epoch).
pub fn bucket_start(ts_ms: i64, bucket_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(bucket_ms)
}

/// Number of buckets that overlap `[start_ms, end_ms)`; 0 when empty.
pub fn bucket_count(start_ms: i64, end_ms: i64, bucket_ms: i64) -> i64 {
    if start_ms >= end_ms {
        return 0;
    }
    (bucket_start(end_ms - 1, bucket_ms) - bucket_start(start_ms, bucket_ms)) / bucket_ms + 1
}

/// Checks a metrics query: `start < end` and at most [`MAX_BUCKETS`] buckets.
pub fn check_metrics_range(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    granularity: Granularity,
) -> Result<(), ValidationErrors> {
    let mut c = Check::new();
    if start >= end {
        c.ensure(false, "start", "must be before end");
    } else {
        let n = bucket_count(
            start.timestamp_millis(),
            end.timestamp_millis(),
            granularity.bucket_ms(),
        );
        c.ensure(
            n <= MAX_BUCKETS,
            "granularity",
            format!(
                "the range spans {n} buckets, more than {MAX_BUCKETS}: use a coarser granularity or a shorter range"
            ),
        );
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::resources::MIN_TIMESTAMP_MS;

    fn fields(r: Result<(), ValidationErrors>) -> Vec<String> {
        r.err()
            .map(|e| e.0.into_iter().map(|(f, _)| f).collect())
            .unwrap_or_default()
    }

    #[test]
    fn buckets_are_aligned_to_the_epoch() {
        assert_eq!(bucket_start(119_999, 60_000), 60_000);
        assert_eq!(bucket_start(120_000, 60_000), 120_000);
        assert_eq!(bucket_count(0, 60_000, 60_000), 1);
        assert_eq!(bucket_count(30_000, 90_000, 60_000), 2);
        assert_eq!(bucket_count(0, 3_600_000, 60_000), 60);
        assert_eq!(bucket_count(10, 10, 60_000), 0);
    }

    #[test]
    fn metrics_ranges_are_checked() {
        let end = DateTime::from_timestamp_millis(MIN_TIMESTAMP_MS + 86_400_000).expect("t");
        let start = end - TimeDelta::hours(1);
        assert!(check_metrics_range(start, end, Granularity::OneMinute).is_ok());
        assert_eq!(
            fields(check_metrics_range(end, start, Granularity::OneMinute)),
            ["start"]
        );
        let long = end - TimeDelta::minutes(10_001);
        assert_eq!(
            fields(check_metrics_range(long, end, Granularity::OneMinute)),
            ["granularity"]
        );
        assert!(check_metrics_range(long, end, Granularity::FiveMinutes).is_ok());
        assert_eq!(Granularity::parse("5m"), Some(Granularity::FiveMinutes));
        assert_eq!(Granularity::parse("2m"), None);
    }
}
