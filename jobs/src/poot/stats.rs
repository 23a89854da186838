//! PoOT statistics for a time range: grouped and counted by MongoDB, overall,
//! by pool and by node type.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::storage::{Db, StorageError, collections};

/// Statistics of one group of validations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScoreStats {
    /// Group key (pool id or node type; `null` for none).
    pub key: Option<String>,
    /// Validations.
    pub count: u64,
    /// Share valid.
    pub valid_rate: f64,
    /// Share suspicious.
    pub suspicious_rate: f64,
    /// Mean score.
    pub mean_score: f64,
    /// Median score.
    pub p50_score: f64,
    /// 90th percentile score.
    pub p90_score: f64,
}

/// Statistics for a time range.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PootStatistics {
    /// Range start.
    pub start: DateTime<Utc>,
    /// Range end (exclusive).
    pub end: DateTime<Utc>,
    /// All validations.
    pub overall: ScoreStats,
    /// Per pool.
    pub by_pool: Vec<ScoreStats>,
    /// Per node type.
    pub by_node_type: Vec<ScoreStats>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn as_f64(b: Option<&Bson>) -> f64 {
    crate::storage::number(b).unwrap_or(0.0)
}

async fn grouped(db: &Db, m: &Document, key: Bson) -> Result<Vec<ScoreStats>, StorageError> {
    let pipeline = vec![
        doc! { "$match": m.clone() },
        doc! { "$group": {
            "_id": key,
            "count": { "$sum": 1 },
            "valid": { "$sum": { "$cond": ["$is_valid", 1, 0] } },
            "suspicious": { "$sum": { "$cond": ["$suspicious", 1, 0] } },
            "mean": { "$avg": "$score" },
            "scores": { "$push": "$score" },
        } },
        doc! { "$sort": { "_id": 1 } },
    ];
    let rows: Vec<Document> = db
        .collection::<Document>(collections::POOT_VALIDATIONS)
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let count = as_f64(r.get("count")) as u64;
            let mut scores: Vec<f64> = r
                .get_array("scores")
                .map(|a| a.iter().map(|b| as_f64(Some(b))).collect())
                .unwrap_or_default();
            scores.sort_by(f64::total_cmp);
            let rate = |k: &str| {
                if count == 0 {
                    0.0
                } else {
                    as_f64(r.get(k)) / count as f64
                }
            };
            ScoreStats {
                key: r.get_str("_id").ok().map(String::from),
                count,
                valid_rate: rate("valid"),
                suspicious_rate: rate("suspicious"),
                mean_score: (as_f64(r.get("mean")) * 100.0).round() / 100.0,
                p50_score: percentile(&scores, 0.5),
                p90_score: percentile(&scores, 0.9),
            }
        })
        .collect())
}

/// Statistics of scored validations in `[start, end)`.
pub async fn statistics(
    db: &Db,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<PootStatistics, StorageError> {
    let m = doc! {
        "validated_at": { "$gte": bson::DateTime::from_chrono(start), "$lt": bson::DateTime::from_chrono(end) },
        "output_hash": { "$ne": Bson::Null },
    };
    let overall = grouped(db, &m, Bson::Null)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(PootStatistics {
        start,
        end,
        overall: ScoreStats {
            key: None,
            ..overall
        },
        by_pool: grouped(db, &m, Bson::String("$pool_id".into())).await?,
        by_node_type: grouped(db, &m, Bson::String("$node_type".into())).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
