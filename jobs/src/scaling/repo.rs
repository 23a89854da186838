//! MongoDB storage of evaluations and scaling events, the observation of a
//! pool, and the transactional decide-and-plan step.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    ClientSession, Collection, IndexModel,
    bson::{self, Document, doc},
};

use super::{
    Decision, EVALUATIONS, EVENTS, EvaluationDoc, EventStatus, EventTrigger, LastEvents,
    Observation, ScaleDirection, ScalingEventDoc, decide,
};
use crate::{
    domain::node::Transition,
    storage::{
        Db, StorageError, collections, find_page,
        nodes::{NodeRepo, TransitionOutcome},
        pools::{MembershipError, PoolRepo},
    },
};

/// Outcome of a manual scale request.
#[derive(Debug, Clone, PartialEq)]
pub enum ManualScale {
    /// An event was created (pending; a job applies it).
    Created(Box<ScalingEventDoc>),
    /// The pool already has that many active nodes.
    Unchanged(u32),
}

/// Evaluations and scaling events.
#[derive(Debug, Clone)]
pub struct ScalingRepo {
    db: Db,
    pools: PoolRepo,
    nodes: NodeRepo,
    evaluations: Collection<EvaluationDoc>,
    events: Collection<ScalingEventDoc>,
}

fn event_id() -> String {
    format!("sevt_{}", uuid::Uuid::now_v7().simple())
}

impl ScalingRepo {
    /// The repository over `db`.
    pub fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            pools: PoolRepo::new(db),
            nodes: NodeRepo::new(db),
            evaluations: db.collection(EVALUATIONS),
            events: db.collection(EVENTS),
        }
    }

    /// Creates the indexes the queries need.
    pub async fn ensure_indexes(&self) -> Result<(), StorageError> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        self.events
            .create_index(index(doc! { "pool_id": 1, "triggered_at": -1 }))
            .await?;
        self.evaluations
            .create_index(index(doc! { "evaluated_at": 1 }))
            .await?;
        Ok(())
    }

    /// Pools with auto-scaling enabled, oldest first.
    pub async fn auto_scaled_pools(&self) -> Result<Vec<String>, StorageError> {
        let rows: Vec<Document> = self
            .db
            .collection::<Document>(collections::POOLS)
            .find(doc! { "auto_scaling.enabled": true })
            .projection(doc! { "_id": 1 })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(String::from))
            .collect())
    }

    /// A stored evaluation.
    pub async fn evaluation(&self, id: &str) -> Result<Option<EvaluationDoc>, StorageError> {
        Ok(self.evaluations.find_one(doc! { "_id": id }).await?)
    }

    /// A stored event.
    pub async fn event(&self, id: &str) -> Result<Option<ScalingEventDoc>, StorageError> {
        Ok(self.events.find_one(doc! { "_id": id }).await?)
    }

    /// A page of a pool's events, newest first, and the total.
    pub async fn events_page(
        &self,
        pool_id: &str,
        page: u64,
        page_size: u64,
    ) -> Result<(u64, Vec<ScalingEventDoc>), StorageError> {
        find_page(
            &self.events,
            doc! { "pool_id": pool_id },
            doc! { "triggered_at": -1, "_id": -1 },
            page,
            page_size,
        )
        .await
    }

    /// Mean CPU of the pool's active nodes over `[now - window, now]`.
    pub async fn observe(
        &self,
        pool_id: &str,
        now: DateTime<Utc>,
        window_minutes: u32,
    ) -> Result<Observation, StorageError> {
        let active: Vec<Document> = self
            .db
            .collection::<Document>(collections::NODES)
            .find(doc! { "pool_id": pool_id, "status": "active" })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let ids: Vec<&str> = active
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .collect();
        let from = now - chrono::Duration::minutes(i64::from(window_minutes));
        let rows: Vec<Document> = if ids.is_empty() {
            Vec::new()
        } else {
            self.db
                .collection::<Document>(collections::RESOURCE_SAMPLES)
                .aggregate(vec![
                    doc! { "$match": {
                        "node_id": { "$in": &ids },
                        "timestamp": { "$gte": bson::DateTime::from_chrono(from), "$lte": bson::DateTime::from_chrono(now) },
                    } },
                    doc! { "$group": { "_id": "$node_id", "cpu": { "$avg": "$cpu.usage_percent" }, "n": { "$sum": 1 } } },
                ])
                .await?
                .try_collect()
                .await?
        };
        let means: Vec<f64> = rows
            .iter()
            .filter_map(|r| crate::storage::number(r.get("cpu")))
            .collect();
        let samples = rows
            .iter()
            .map(|r| crate::storage::number(r.get("n")).unwrap_or(0.0) as u64)
            .sum();
        Ok(Observation {
            active_nodes: ids.len() as u32,
            reporting_nodes: means.len() as u32,
            samples,
            mean_cpu_percent: (!means.is_empty())
                .then(|| means.iter().sum::<f64>() / means.len() as f64),
            window_minutes,
        })
    }

    /// Applies the rule to `obs` and stores the evaluation and, when it
    /// scales, a pending event with its planned nodes — in one transaction
    /// serialized per pool. A re-run returns the stored evaluation.
    pub async fn decide_and_record(
        &self,
        pool_id: &str,
        evaluation_id: &str,
        batch_id: Option<&str>,
        obs: Observation,
        now: DateTime<Utc>,
    ) -> Result<EvaluationDoc, MembershipError> {
        if let Some(done) = self.evaluation(evaluation_id).await? {
            return Ok(done);
        }
        let this = self.clone();
        let id = evaluation_id.to_string();
        let (pool_id, evaluation_id) = (pool_id.to_string(), evaluation_id.to_string());
        let batch_id = batch_id.map(String::from);
        let result = self
            .pools
            .in_transaction(move |s, pools| {
                let (this, pool_id, evaluation_id, batch_id, mut obs) = (
                    this.clone(),
                    pool_id.clone(),
                    evaluation_id.clone(),
                    batch_id.clone(),
                    obs.clone(),
                );
                Box::pin(async move {
                    let pool = pools.bump(s, &pool_id).await?;
                    obs.active_nodes = this.count_active(s, &pool_id).await?;
                    let last = this.last_events(s, &pool_id).await?;
                    let decision = decide(&pool.auto_scaling, &obs, last, now);
                    let event = match &decision {
                        Decision::Scale {
                            direction,
                            current_nodes,
                            target_nodes,
                            reason,
                        } => {
                            let mut e = this
                                .plan(s, &pool_id, *direction, *current_nodes, *target_nodes)
                                .await?;
                            e.trigger = EventTrigger::Auto;
                            e.trigger_reason = reason.clone();
                            e.evaluation_id = Some(evaluation_id.clone());
                            e.metrics = Some(obs.clone());
                            this.events.insert_one(&e).session(&mut *s).await?;
                            Some(e)
                        }
                        _ => None,
                    };
                    let evaluation = EvaluationDoc {
                        evaluation_id,
                        pool_id,
                        metrics: Some(obs),
                        decision,
                        event_id: event.map(|e| e.event_id),
                        batch_id,
                        evaluated_at: bson::DateTime::from_chrono(now),
                    };
                    this.evaluations
                        .insert_one(&evaluation)
                        .session(&mut *s)
                        .await?;
                    Ok(evaluation)
                })
            })
            .await;
        match result {
            Err(MembershipError::Storage(StorageError::Mongo(e)))
                if crate::storage::is_duplicate_key(&e) =>
            {
                // A concurrent run of the same job stored it first.
                match self.evaluation(&id).await? {
                    Some(done) => Ok(done),
                    None => Err(StorageError::Mongo(e).into()),
                }
            }
            other => other,
        }
    }

    /// Stores an evaluation that decided nothing without looking at the pool
    /// (the pool is gone); a re-run keeps the first.
    pub async fn record_without_pool(
        &self,
        evaluation: &EvaluationDoc,
    ) -> Result<EvaluationDoc, StorageError> {
        crate::storage::insert_new(&self.evaluations, evaluation).await?;
        Ok(self
            .evaluation(&evaluation.evaluation_id)
            .await?
            .unwrap_or_else(|| evaluation.clone()))
    }

    /// Creates a pending manual event moving the pool to `target` active
    /// nodes; above the pool's capacity is [`MembershipError::PoolFull`].
    pub async fn manual(&self, pool_id: &str, target: u32) -> Result<ManualScale, MembershipError> {
        let this = self.clone();
        let pool_id = pool_id.to_string();
        self.pools
            .in_transaction(move |s, pools| {
                let (this, pool_id) = (this.clone(), pool_id.clone());
                Box::pin(async move {
                    let pool = pools.bump(s, &pool_id).await?;
                    if target > pool.max_nodes {
                        return Err(MembershipError::PoolFull(pool.max_nodes));
                    }
                    let current = this.count_active(s, &pool_id).await?;
                    if current == target {
                        return Ok(ManualScale::Unchanged(current));
                    }
                    let direction = if target > current {
                        ScaleDirection::ScaleUp
                    } else {
                        ScaleDirection::ScaleDown
                    };
                    let mut e = this.plan(s, &pool_id, direction, current, target).await?;
                    e.trigger_reason = format!("manual scale from {current} to {target} nodes");
                    this.events.insert_one(&e).session(&mut *s).await?;
                    Ok(ManualScale::Created(Box::new(e)))
                })
            })
            .await
    }

    async fn count_active(
        &self,
        s: &mut ClientSession,
        pool_id: &str,
    ) -> Result<u32, MembershipError> {
        Ok(self
            .db
            .collection::<Document>(collections::NODES)
            .count_documents(doc! { "pool_id": pool_id, "status": "active" })
            .session(s)
            .await? as u32)
    }

    async fn last_events(
        &self,
        s: &mut ClientSession,
        pool_id: &str,
    ) -> Result<LastEvents, MembershipError> {
        let mut last = LastEvents::default();
        for direction in [ScaleDirection::ScaleUp, ScaleDirection::ScaleDown] {
            let at = self
                .events
                .find_one(doc! { "pool_id": pool_id, "event_type": direction.as_str(), "status": { "$ne": "failed" } })
                .sort(doc! { "triggered_at": -1 })
                .session(&mut *s)
                .await?
                .map(|e| e.triggered_at.to_chrono());
            match direction {
                ScaleDirection::ScaleUp => last.scale_up = at,
                ScaleDirection::ScaleDown => last.scale_down = at,
            }
        }
        Ok(last)
    }

    /// A pending manual event with its planned nodes: for a scale-up the
    /// pool's inactive nodes with the highest PoOT, for a scale-down its
    /// active nodes with the lowest (no score counts as lowest).
    async fn plan(
        &self,
        s: &mut ClientSession,
        pool_id: &str,
        direction: ScaleDirection,
        current: u32,
        target: u32,
    ) -> Result<ScalingEventDoc, MembershipError> {
        let (status, order) = match direction {
            ScaleDirection::ScaleUp => ("inactive", -1),
            ScaleDirection::ScaleDown => ("active", 1),
        };
        let planned: Vec<Document> = self
            .db
            .collection::<Document>(collections::NODES)
            .find(doc! { "pool_id": pool_id, "status": status })
            .projection(doc! { "_id": 1 })
            .sort(doc! { "poot_score": order, "_id": 1 })
            .limit(i64::from(target.abs_diff(current)))
            .session(&mut *s)
            .await?
            .stream(&mut *s)
            .try_collect()
            .await?;
        Ok(ScalingEventDoc {
            event_id: event_id(),
            pool_id: pool_id.to_string(),
            event_type: direction,
            current_nodes: current,
            target_nodes: target,
            trigger_reason: String::new(),
            trigger: EventTrigger::Manual,
            evaluation_id: None,
            metrics: None,
            planned_nodes: planned
                .iter()
                .filter_map(|d| d.get_str("_id").ok().map(String::from))
                .collect(),
            applied_nodes: Vec::new(),
            missing: 0,
            status: EventStatus::Pending,
            triggered_at: bson::DateTime::now(),
            completed_at: None,
            webhook_delivered_at: None,
        })
    }

    /// Moves a pending event's planned nodes and records the outcome; an
    /// event that is no longer pending is returned as it is. Idempotent: a
    /// node already in the target status counts as moved.
    pub async fn apply(&self, event: ScalingEventDoc) -> Result<ScalingEventDoc, StorageError> {
        if event.status != EventStatus::Pending {
            return Ok(event);
        }
        let transition = match event.event_type {
            ScaleDirection::ScaleUp => Transition::Start,
            ScaleDirection::ScaleDown => Transition::Stop,
        };
        let mut applied = Vec::new();
        for node in &event.planned_nodes {
            let moved = match self.nodes.transition(node, transition).await? {
                TransitionOutcome::Done(_) => true,
                TransitionOutcome::Refused(status) => status == transition.target(),
                TransitionOutcome::NotFound => false,
            };
            if moved {
                applied.push(node.clone());
            }
        }
        let missing = event.needed().saturating_sub(applied.len() as u32);
        let status = match (missing, applied.is_empty()) {
            (0, _) => EventStatus::Applied,
            (_, true) => EventStatus::Failed,
            _ => EventStatus::Partial,
        };
        self.events
            .update_one(
                doc! { "_id": &event.event_id, "status": "pending" },
                doc! { "$set": {
                    "status": bson::to_bson(&status)?,
                    "applied_nodes": &applied,
                    "missing": i64::from(missing),
                    "completed_at": bson::DateTime::now(),
                } },
            )
            .await?;
        Ok(self.event(&event.event_id).await?.unwrap_or(event))
    }

    /// Records the delivery of an event's webhook; false if it already was.
    pub async fn mark_webhook_delivered(&self, event_id: &str) -> Result<bool, StorageError> {
        let r = self
            .events
            .update_one(
                doc! { "_id": event_id, "webhook_delivered_at": bson::Bson::Null },
                doc! { "$set": { "webhook_delivered_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(r.modified_count == 1)
    }
}
