//! What a score is computed from, read for many nodes at once: the window's
//! proofs and refusals ([`PootRepo::windows`](super::repo::PootRepo::windows)),
//! resource-sample averages and the validation history. Each is one
//! server-side query whatever the number of nodes, so a batch's node
//! snapshots cost a handful of commands, not several per node.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};

use super::{
    assess::ScoreHistory,
    score::{ScoreBreakdown, score},
    validation::Validator,
};
use crate::storage::{StorageError, number};

/// Mean CPU % and network Mbps of one node's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ResourceAverages {
    cpu: f64,
    network_mbps: f64,
}

fn get(d: &Document, k: &str) -> Option<f64> {
    number(d.get(k))
}

impl Validator {
    /// The score over the window ending `now` and the history of each of
    /// `node_ids` (every node gets an entry; unknown ones score as nodes
    /// without proofs or samples).
    #[tracing::instrument(skip(self, node_ids), fields(nodes = node_ids.len()))]
    pub async fn score_and_history_many(
        &self,
        node_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, (ScoreBreakdown, ScoreHistory)>, StorageError> {
        if node_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let since = now - chrono::Duration::seconds(self.poot.config().window_seconds as i64);
        let windows = self.poot.windows(node_ids, now).await?;
        let mut averages = self.resource_averages(node_ids, since).await?;
        let mut histories = self.histories(node_ids, now).await?;
        Ok(windows
            .into_iter()
            .map(|(node, mut inputs)| {
                let avg = averages.remove(&node).unwrap_or_default();
                (inputs.cpu_utilisation_avg, inputs.network_mbps_avg) = (avg.cpu, avg.network_mbps);
                let breakdown = score(&inputs, self.poot.config());
                let history = histories.remove(&node).unwrap_or_default();
                (node, (breakdown, history))
            })
            .collect())
    }

    /// The node's score over the window ending `now`, and its history.
    pub async fn score_and_history(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(ScoreBreakdown, ScoreHistory), StorageError> {
        let mut all = self.score_and_history_many(&[node_id], now).await?;
        Ok(all.remove(node_id).unwrap_or_else(|| {
            let inputs = Default::default();
            (score(&inputs, self.poot.config()), ScoreHistory::default())
        }))
    }

    /// Mean CPU % and network Mbps (bytes moved between the first and the
    /// last sample, over the time between them) of each node's resource
    /// samples since `since`. Matched and sorted along the
    /// `(node_id, timestamp)` index, so MongoDB needs no in-memory sort.
    async fn resource_averages(
        &self,
        node_ids: &[&str],
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, ResourceAverages>, StorageError> {
        let bytes = doc! { "$add": [
            { "$ifNull": ["$network.total_bytes_in", 0] },
            { "$ifNull": ["$network.total_bytes_out", 0] },
        ] };
        let pipeline = vec![
            doc! { "$match": { "node_id": { "$in": node_ids }, "timestamp": { "$gte": bson::DateTime::from_chrono(since) } } },
            doc! { "$sort": { "node_id": 1, "timestamp": 1 } },
            doc! { "$group": {
                "_id": "$node_id",
                "cpu": { "$avg": "$cpu.usage_percent" },
                "first_ms": { "$first": "$ts_ms" },
                "last_ms": { "$last": "$ts_ms" },
                "first_bytes": { "$first": bytes.clone() },
                "last_bytes": { "$last": bytes },
            } },
        ];
        let mut rows = self.samples.aggregate(pipeline).await?;
        let mut out = HashMap::new();
        while let Some(row) = rows.try_next().await? {
            let Ok(node) = row.get_str("_id") else {
                continue;
            };
            let secs = (get(&row, "last_ms").unwrap_or(0.0) - get(&row, "first_ms").unwrap_or(0.0))
                / 1000.0;
            let moved = (get(&row, "last_bytes").unwrap_or(0.0)
                - get(&row, "first_bytes").unwrap_or(0.0))
            .max(0.0);
            let network_mbps = if secs > 0.0 {
                (moved * 8.0 / 1e6) / secs
            } else {
                0.0
            };
            let cpu = get(&row, "cpu").unwrap_or(0.0);
            out.insert(node.to_string(), ResourceAverages { cpu, network_mbps });
        }
        Ok(out)
    }

    /// Each node's validation scores of the last 168 hours (and of the last
    /// 24), summarized by the server: counts, means and the population
    /// standard deviation.
    async fn histories(
        &self,
        node_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, ScoreHistory>, StorageError> {
        let since = bson::DateTime::from_millis(now.timestamp_millis() - 168 * 3600 * 1000);
        let day_ago = bson::DateTime::from_millis(now.timestamp_millis() - 24 * 3600 * 1000);
        let recent = doc! { "$gte": ["$validated_at", day_ago] };
        let pipeline = vec![
            doc! { "$match": {
                "node_id": { "$in": node_ids },
                "validated_at": { "$gte": since },
                "output_hash": { "$ne": Bson::Null },
            } },
            doc! { "$group": {
                "_id": "$node_id",
                "n": { "$sum": 1 },
                "mean": { "$avg": "$score" },
                "std": { "$stdDevPop": "$score" },
                "n24": { "$sum": { "$cond": [recent.clone(), 1, 0] } },
                "sum24": { "$sum": { "$cond": [recent, "$score", 0] } },
            } },
        ];
        let mut rows = self
            .records
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await?;
        let mut out = HashMap::new();
        while let Some(row) = rows.try_next().await? {
            let Ok(node) = row.get_str("_id") else {
                continue;
            };
            let n24 = get(&row, "n24").unwrap_or(0.0) as u64;
            out.insert(
                node.to_string(),
                ScoreHistory {
                    count_24h: n24,
                    mean_24h: if n24 == 0 {
                        0.0
                    } else {
                        get(&row, "sum24").unwrap_or(0.0) / n24 as f64
                    },
                    count_168h: get(&row, "n").unwrap_or(0.0) as u64,
                    mean_168h: get(&row, "mean").unwrap_or(0.0),
                    std_168h: get(&row, "std").unwrap_or(0.0).max(0.0),
                },
            );
        }
        Ok(out)
    }
}
