//! MongoDB repository of nodes (`_id` = node id).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Collection,
    bson::{self, Document, doc},
};
use serde::{Deserialize, Serialize};

use super::{Db, StorageError, collections};
use crate::domain::node::{
    HardwareInfo, Location, NodeConfiguration, NodeStatus, NodeType, StatusTransition, Transition,
};

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDoc {
    /// Node id.
    #[serde(rename = "_id")]
    pub node_id: String,
    /// Display name.
    pub name: String,
    /// Status.
    pub status: NodeStatus,
    /// Type.
    pub node_type: NodeType,
    /// Pool membership.
    pub pool_id: Option<String>,
    /// Hardware.
    pub hardware_info: HardwareInfo,
    /// Location.
    pub location: Location,
    /// Configuration.
    pub configuration: NodeConfiguration,
    /// Latest PoOT score, 0–100.
    pub poot_score: Option<f64>,
    /// Last report from the node.
    pub last_heartbeat: Option<bson::DateTime>,
    /// Status changes, oldest first.
    #[serde(default)]
    pub transitions: Vec<TransitionDoc>,
    /// HMAC secret of the node's work proofs (returned once, at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Creation time.
    pub created_at: bson::DateTime,
    /// Last change.
    pub updated_at: bson::DateTime,
}

/// A stored status change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionDoc {
    /// Previous status.
    pub from: NodeStatus,
    /// New status.
    pub to: NodeStatus,
    /// When.
    pub at: bson::DateTime,
}

impl From<&TransitionDoc> for StatusTransition {
    fn from(t: &TransitionDoc) -> Self {
        Self {
            from: t.from,
            to: t.to,
            at: t.at.to_chrono(),
        }
    }
}

/// Filters of the node listing.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    /// Status.
    pub status: Option<NodeStatus>,
    /// Type.
    pub node_type: Option<NodeType>,
    /// Pool.
    pub pool_id: Option<String>,
}

/// Outcome of a start/stop request.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// Done; the node after the change.
    Done(Box<NodeDoc>),
    /// Not allowed from the current status.
    Refused(NodeStatus),
    /// No such node.
    NotFound,
}

/// Nodes.
#[derive(Debug, Clone)]
pub struct NodeRepo {
    nodes: Collection<NodeDoc>,
}

fn status_bson(s: NodeStatus) -> bson::Bson {
    bson::Bson::String(s.as_str().to_string())
}

impl NodeRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            nodes: db.collection(collections::NODES),
        }
    }

    /// Inserts a node; `Ok(false)` when the id exists (unique `_id`, no racy pre-check).
    pub async fn insert(&self, node: &NodeDoc) -> Result<bool, StorageError> {
        super::insert_new(&self.nodes, node).await
    }

    /// A node by id.
    pub async fn get(&self, node_id: &str) -> Result<Option<NodeDoc>, StorageError> {
        Ok(self.nodes.find_one(doc! { "_id": node_id }).await?)
    }

    /// A page of nodes (oldest first) and the total matching the filter.
    pub async fn list(
        &self,
        filter: &NodeFilter,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<NodeDoc>), StorageError> {
        let mut f = Document::new();
        if let Some(s) = filter.status {
            f.insert("status", status_bson(s));
        }
        if let Some(t) = filter.node_type {
            f.insert("node_type", bson::to_bson(&t)?);
        }
        if let Some(p) = &filter.pool_id {
            f.insert("pool_id", p);
        }
        super::find_page(
            &self.nodes,
            f,
            doc! { "created_at": 1, "_id": 1 },
            page,
            page_size,
        )
        .await
    }

    /// Applies `$set` fields to a node; returns the node after the change.
    pub async fn update(
        &self,
        node_id: &str,
        mut set: Document,
    ) -> Result<Option<NodeDoc>, StorageError> {
        set.insert("updated_at", bson::DateTime::now());
        Ok(self
            .nodes
            .find_one_and_update(doc! { "_id": node_id }, doc! { "$set": set })
            .return_document(mongodb::options::ReturnDocument::After)
            .await?)
    }

    /// Which of `node_ids` exist.
    pub async fn existing(
        &self,
        node_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StorageError> {
        super::existing_ids(&self.nodes, node_ids).await
    }

    /// Deletes a node; false when it did not exist.
    pub async fn delete(&self, node_id: &str) -> Result<bool, StorageError> {
        Ok(self
            .nodes
            .delete_one(doc! { "_id": node_id })
            .await?
            .deleted_count
            == 1)
    }

    /// Applies a start/stop transition with one conditional update, so
    /// concurrent requests leave one consistent state.
    pub async fn transition(
        &self,
        node_id: &str,
        t: Transition,
    ) -> Result<TransitionOutcome, StorageError> {
        let to = t.target();
        // Optimistic concurrency: read, then update only if nothing changed
        // since (same status and `updated_at`); a concurrent change makes the
        // update miss and the loop re-read. A refusal thus names the status
        // that refused it, and recorded times never go backwards.
        for _ in 0..50 {
            let Some(node) = self.get(node_id).await? else {
                return Ok(TransitionOutcome::NotFound);
            };
            if !t.allowed_from().contains(&node.status) {
                return Ok(TransitionOutcome::Refused(node.status));
            }
            let floor = node.updated_at.timestamp_millis() + 1;
            let now =
                bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis().max(floor));
            let updated = self
                .nodes
                .find_one_and_update(
                    doc! { "_id": node_id, "status": status_bson(node.status), "updated_at": node.updated_at },
                    doc! {
                        "$set": { "status": status_bson(to), "updated_at": now },
                        "$push": { "transitions": { "$each": [{ "from": status_bson(node.status), "to": status_bson(to), "at": now }], "$slice": -100 } },
                    },
                )
                .return_document(mongodb::options::ReturnDocument::After)
                .await?;
            if let Some(node) = updated {
                return Ok(TransitionOutcome::Done(Box::new(node)));
            }
        }
        Err(StorageError::Bson(
            "node changed too often to apply the transition".into(),
        ))
    }

    /// Records a report from the node.
    pub async fn touch_heartbeat(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let r = self
            .nodes
            .update_one(
                doc! { "_id": node_id },
                doc! { "$max": { "last_heartbeat": bson::DateTime::from_chrono(at) } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Node counts per pool for `pool_ids` (derived from membership, never stored).
    pub async fn count_by_pool(
        &self,
        pool_ids: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, StorageError> {
        let pipeline = vec![
            doc! { "$match": { "pool_id": { "$in": pool_ids } } },
            doc! { "$group": { "_id": "$pool_id", "n": { "$sum": 1 } } },
        ];
        let rows: Vec<Document> = self
            .nodes
            .clone_with_type::<Document>()
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|d| {
                let id = d.get_str("_id").ok()?.to_string();
                let n = super::number(d.get("n")).unwrap_or(0.0) as u64;
                Some((id, n))
            })
            .collect())
    }
}
