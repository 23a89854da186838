//! What a score is computed from: the window's proofs and refusals
//! ([`PootRepo::window`](super::repo::PootRepo::window)), the resource-sample
//! averages and the validation history, three indexed queries and one count
//! per node, each summarised by the server.
//!
//! Many nodes are scored with per-node queries run [`CONCURRENCY`] at a time
//! rather than one `$in` query per input. Both use the `(node_id, …)`
//! indexes; MongoDB 7 runs one `$in` query on one thread, while concurrent
//! per-node queries spread over the server's threads, and each node's
//! summary stays a small server-side aggregation. Measured with `bench
//! store` on secantusd-rs (2026-12-07): 500 nodes' proofs out of 60,000 took
//! 259–322 ms by one `$in` query and 178–227 ms by 500 queries, 8 at a time.
//! (The Python server this replaced scanned the collection for `$in`: 16 s.)

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
#[derive(Debug, Clone, Copy, Default)]
struct ResourceAverages {
    cpu: f64,
    network_mbps: f64,
}

fn get(d: &Document, k: &str) -> Option<f64> {
    number(d.get(k))
}

/// Nodes scored at once by [`Validator::score_and_history_many`].
const CONCURRENCY: usize = 8;

impl Validator {
    /// The score over the window ending `now` and the history of each of
    /// `node_ids` (unknown ones score as nodes without proofs or samples).
    #[tracing::instrument(skip(self, node_ids), fields(nodes = node_ids.len()))]
    pub async fn score_and_history_many(
        &self,
        node_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, (ScoreBreakdown, ScoreHistory)>, StorageError> {
        let mut out = HashMap::with_capacity(node_ids.len());
        for group in node_ids.chunks(CONCURRENCY) {
            let scored =
                futures::future::try_join_all(group.iter().map(|n| self.score_and_history(n, now)))
                    .await?;
            out.extend(group.iter().map(|n| n.to_string()).zip(scored));
        }
        Ok(out)
    }

    /// The node's score over the window ending `now`, and its history.
    pub async fn score_and_history(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(ScoreBreakdown, ScoreHistory), StorageError> {
        let since = now - chrono::Duration::seconds(self.poot.config().window_seconds as i64);
        let (mut inputs, averages, history) = tokio::try_join!(
            self.poot.window(node_id, now),
            self.resource_averages(node_id, since),
            self.history(node_id, now),
        )?;
        (inputs.cpu_utilisation_avg, inputs.network_mbps_avg) =
            (averages.cpu, averages.network_mbps);
        Ok((score(&inputs, self.poot.config()), history))
    }

    /// Mean CPU % and network Mbps (bytes moved between the first and the
    /// last sample, over the time between them) of the node's resource
    /// samples since `since`, in one aggregation along the
    /// `(node_id, timestamp)` index.
    async fn resource_averages(
        &self,
        node_id: &str,
        since: DateTime<Utc>,
    ) -> Result<ResourceAverages, StorageError> {
        let bytes = doc! { "$add": [
            { "$ifNull": ["$network.total_bytes_in", 0] },
            { "$ifNull": ["$network.total_bytes_out", 0] },
        ] };
        let pipeline = vec![
            doc! { "$match": { "node_id": node_id, "timestamp": { "$gte": bson::DateTime::from_chrono(since) } } },
            doc! { "$sort": { "timestamp": 1 } },
            doc! { "$group": {
                "_id": Bson::Null,
                "cpu": { "$avg": "$cpu.usage_percent" },
                "first_ms": { "$first": "$ts_ms" },
                "last_ms": { "$last": "$ts_ms" },
                "first_bytes": { "$first": bytes.clone() },
                "last_bytes": { "$last": bytes },
            } },
        ];
        let Some(row) = self.samples.aggregate(pipeline).await?.try_next().await? else {
            return Ok(ResourceAverages::default());
        };
        let secs =
            (get(&row, "last_ms").unwrap_or(0.0) - get(&row, "first_ms").unwrap_or(0.0)) / 1000.0;
        let moved = (get(&row, "last_bytes").unwrap_or(0.0)
            - get(&row, "first_bytes").unwrap_or(0.0))
        .max(0.0);
        Ok(ResourceAverages {
            cpu: get(&row, "cpu").unwrap_or(0.0),
            network_mbps: if secs > 0.0 {
                (moved * 8.0 / 1e6) / secs
            } else {
                0.0
            },
        })
    }

    /// The node's validation scores of the last 168 hours (and of the last
    /// 24), summarized by the server: counts, means and the population
    /// standard deviation.
    async fn history(
        &self,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ScoreHistory, StorageError> {
        let since = bson::DateTime::from_millis(now.timestamp_millis() - 168 * 3600 * 1000);
        let day_ago = bson::DateTime::from_millis(now.timestamp_millis() - 24 * 3600 * 1000);
        let recent = doc! { "$gte": ["$validated_at", day_ago] };
        let pipeline = vec![
            doc! { "$match": {
                "node_id": node_id,
                "validated_at": { "$gte": since },
                "output_hash": { "$ne": Bson::Null },
            } },
            doc! { "$group": {
                "_id": Bson::Null,
                "n": { "$sum": 1 },
                "mean": { "$avg": "$score" },
                "std": { "$stdDevPop": "$score" },
                "n24": { "$sum": { "$cond": [recent.clone(), 1, 0] } },
                "sum24": { "$sum": { "$cond": [recent, "$score", 0] } },
            } },
        ];
        let Some(row) = self
            .records
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await?
            .try_next()
            .await?
        else {
            return Ok(ScoreHistory::default());
        };
        let n24 = get(&row, "n24").unwrap_or(0.0) as u64;
        Ok(ScoreHistory {
            count_24h: n24,
            mean_24h: if n24 == 0 {
                0.0
            } else {
                get(&row, "sum24").unwrap_or(0.0) / n24 as f64
            },
            count_168h: get(&row, "n").unwrap_or(0.0) as u64,
            mean_168h: get(&row, "mean").unwrap_or(0.0),
            std_168h: get(&row, "std").unwrap_or(0.0).max(0.0),
        })
    }
}
