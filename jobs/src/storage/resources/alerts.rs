//! Thresholds, alerts and the report flow of [`ResourceRepo`].
//!
//! At most one alert per (node, metric) is active, even under concurrent
//! reports. The alerts of a (node, metric) form a sequence (`seq` 1, 2, ...)
//! and the `_id` of alert *n* is derived from (node, metric, *n*): a report
//! that finds the latest alert resolved raises the next one, and two reports
//! that raise at once write the same `_id`, so the `_id` index lets exactly
//! one of them in. Only the latest alert can be active, because alert *n + 1*
//! is written only once *n* is resolved, and an alert is never reopened.
//!
//! This replaced a unique index on (node, metric) restricted to active
//! alerts. That index is right on MongoDB 7, but SecantusDB keeps a unique
//! index's old key when an update changes or removes it, so a resolved alert
//! went on blocking the next one. `_id`s never change, so the scheme holds
//! on both servers.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::{
    bson::{self, Document, doc},
    options::ReturnDocument,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::ResourceRepo;
use crate::{
    domain::resources::{
        AlertChange, AlertEvent, AlertLevel, AlertState, Metric, ResourceSample, ThresholdPair,
        Thresholds, evaluate,
    },
    storage::{StorageError, is_duplicate_key},
};

/// An alert as stored (`_id` = alert id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDoc {
    /// `alert_<uuid>`.
    #[serde(rename = "_id")]
    pub alert_id: String,
    /// Node.
    pub node_id: String,
    /// Metric.
    pub metric: Metric,
    /// Current level.
    pub level: AlertLevel,
    /// Active or resolved.
    pub state: AlertState,
    /// The value that raised (or escalated) the alert.
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Time of the sample that raised it.
    pub raised_at: bson::DateTime,
    /// Time of the sample that made it critical, if escalated.
    #[serde(default)]
    pub escalated_at: Option<bson::DateTime>,
    /// Time of the sample that resolved it.
    #[serde(default)]
    pub resolved_at: Option<bson::DateTime>,
    /// Place in the (node, metric)'s sequence of alerts, from 1; absent on
    /// alerts stored before the sequence existed (they count as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// The `_id` of alert `seq` of (node, metric): `alert_` and 32 hex digits,
/// the shape of the random ids used before.
fn alert_id(node_id: &str, metric: Metric, seq: i64) -> String {
    let digest = Sha256::new()
        .chain_update(node_id.as_bytes())
        .chain_update([0])
        .chain_update(metric.as_str().as_bytes())
        .chain_update([0])
        .chain_update(seq.to_be_bytes())
        .finalize();
    format!("alert_{}", hex::encode(&digest[..16]))
}

/// The latest alert of each of a node's metrics, active or not.
#[derive(Deserialize)]
struct Latest {
    latest: AlertDoc,
}

fn effective(stored: Option<&Document>) -> Result<Thresholds, StorageError> {
    let mut t = Thresholds::default();
    if let Some(d) = stored {
        for metric in Metric::ALL {
            if let Some(pair) = d.get(metric.as_str()) {
                t.set(metric, bson::from_bson::<ThresholdPair>(pair.clone())?);
            }
        }
    }
    Ok(t)
}

impl ResourceRepo {
    /// A node's effective thresholds: the stored pairs over the defaults.
    pub async fn thresholds(&self, node_id: &str) -> Result<Thresholds, StorageError> {
        effective(
            self.thresholds
                .find_one(doc! { "_id": node_id })
                .await?
                .as_ref(),
        )
    }

    /// Stores the given pairs (others stay as they are) and returns the
    /// effective thresholds. One atomic upsert: concurrent updates of
    /// different metrics do not overwrite each other.
    pub async fn update_thresholds(
        &self,
        node_id: &str,
        changes: &[(Metric, ThresholdPair)],
    ) -> Result<Thresholds, StorageError> {
        let mut set = doc! { "updated_at": bson::DateTime::now() };
        for (metric, pair) in changes {
            set.insert(
                metric.as_str(),
                doc! { "warning": pair.warning, "critical": pair.critical },
            );
        }
        let stored = self
            .thresholds
            .find_one_and_update(doc! { "_id": node_id }, doc! { "$set": set })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        effective(stored.as_ref())
    }

    /// A page of a node's alerts, newest first, and the total matching.
    pub async fn list_alerts(
        &self,
        node_id: &str,
        state: Option<AlertState>,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<AlertDoc>), StorageError> {
        let mut filter = doc! { "node_id": node_id };
        if let Some(s) = state {
            filter.insert("state", s.as_str());
        }
        crate::storage::find_page(
            &self.alerts,
            filter,
            doc! { "raised_at": -1, "_id": -1 },
            page,
            page_size,
        )
        .await
    }

    /// Stores a report of `node_id` and applies the alert rules to it;
    /// returns the alerts it raised, escalated or resolved (final state).
    pub async fn report(
        &self,
        node_id: &str,
        network_limit_mbps: u64,
        samples: &[ResourceSample],
    ) -> Result<Vec<AlertDoc>, StorageError> {
        let previous = self.latest(node_id).await?.map(|d| d.to_sample());
        let thresholds = self.thresholds(node_id).await?;
        let latest = self.latest_alerts(node_id).await?;
        let mut next_seq: HashMap<Metric, i64> = latest
            .iter()
            .map(|a| (a.metric, a.seq.unwrap_or(0) + 1))
            .collect();
        let mut open: HashMap<Metric, AlertDoc> = latest
            .into_iter()
            .filter(|a| a.state == AlertState::Active)
            .map(|a| (a.metric, a))
            .collect();
        self.insert_samples(node_id, samples).await?;
        let mut levels = open.iter().map(|(m, a)| (*m, a.level)).collect();
        let events = evaluate(
            &thresholds,
            network_limit_mbps,
            previous.as_ref(),
            samples,
            &mut levels,
        );
        let mut touched: Vec<AlertDoc> = Vec::new();
        for event in &events {
            if let Some(alert) = self.apply(node_id, &mut open, &mut next_seq, event).await? {
                match touched.iter_mut().find(|a| a.alert_id == alert.alert_id) {
                    Some(slot) => *slot = alert,
                    None => touched.push(alert),
                }
            }
        }
        Ok(touched)
    }

    /// The latest alert of each metric of `node_id` (highest `seq`; among
    /// alerts without one, the newest), one command.
    async fn latest_alerts(&self, node_id: &str) -> Result<Vec<AlertDoc>, StorageError> {
        let pipeline = [
            doc! { "$match": { "node_id": node_id } },
            doc! { "$sort": { "metric": 1, "seq": -1, "raised_at": -1, "_id": -1 } },
            doc! { "$group": { "_id": "$metric", "latest": { "$first": "$$ROOT" } } },
        ];
        let groups: Vec<Document> = self.alerts.aggregate(pipeline).await?.try_collect().await?;
        groups
            .into_iter()
            .map(|d| Ok(bson::from_document::<Latest>(d)?.latest))
            .collect()
    }

    async fn apply(
        &self,
        node_id: &str,
        open: &mut HashMap<Metric, AlertDoc>,
        next_seq: &mut HashMap<Metric, i64>,
        e: &AlertEvent,
    ) -> Result<Option<AlertDoc>, StorageError> {
        let at = bson::DateTime::from_chrono(e.at);
        match e.change {
            AlertChange::Raise(level) => {
                let seq = *next_seq.entry(e.metric).or_insert(1);
                next_seq.insert(e.metric, seq + 1);
                let alert = AlertDoc {
                    alert_id: alert_id(node_id, e.metric, seq),
                    node_id: node_id.to_string(),
                    metric: e.metric,
                    level,
                    state: AlertState::Active,
                    value: e.value,
                    threshold: e.threshold,
                    raised_at: at,
                    escalated_at: None,
                    resolved_at: None,
                    seq: Some(seq),
                };
                match self.alerts.insert_one(&alert).await {
                    Ok(_) => {
                        open.insert(e.metric, alert.clone());
                        Ok(Some(alert))
                    }
                    Err(err) if is_duplicate_key(&err) => {
                        // A concurrent report raised alert `seq` first (or
                        // went further): continue with the active one.
                        let Some(existing) = self
                            .alerts
                            .find_one(doc! {
                                "node_id": node_id,
                                "metric": e.metric.as_str(),
                                "state": AlertState::Active.as_str(),
                            })
                            .sort(doc! { "seq": -1 })
                            .await?
                        else {
                            return Ok(None);
                        };
                        let existing = if level > existing.level {
                            self.escalate(&existing.alert_id, e, at)
                                .await?
                                .unwrap_or(existing)
                        } else {
                            existing
                        };
                        open.insert(e.metric, existing.clone());
                        Ok(Some(existing))
                    }
                    Err(err) => Err(err.into()),
                }
            }
            AlertChange::Escalate => {
                let Some(current) = open.get(&e.metric) else {
                    return Ok(None);
                };
                let updated = self.escalate(&current.alert_id, e, at).await?;
                if let Some(u) = &updated {
                    open.insert(e.metric, u.clone());
                }
                Ok(updated)
            }
            AlertChange::Resolve => {
                let Some(current) = open.remove(&e.metric) else {
                    return Ok(None);
                };
                Ok(self
                    .alerts
                    .find_one_and_update(
                        doc! { "_id": &current.alert_id, "state": AlertState::Active.as_str() },
                        doc! { "$set": {
                            "state": AlertState::Resolved.as_str(),
                            "resolved_at": at,
                        } },
                    )
                    .return_document(ReturnDocument::After)
                    .await?)
            }
        }
    }

    /// Turns an active warning into a critical alert, in place.
    async fn escalate(
        &self,
        alert_id: &str,
        e: &AlertEvent,
        at: bson::DateTime,
    ) -> Result<Option<AlertDoc>, StorageError> {
        Ok(self
            .alerts
            .find_one_and_update(
                doc! {
                    "_id": alert_id,
                    "state": AlertState::Active.as_str(),
                    "level": "warning",
                },
                doc! { "$set": {
                    "level": "critical",
                    "value": e.value,
                    "threshold": e.threshold,
                    "escalated_at": at,
                } },
            )
            .return_document(ReturnDocument::After)
            .await?)
    }
}
