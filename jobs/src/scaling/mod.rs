//! Pool auto-scaling: the rule ([`rule`]), what evaluations and scaling
//! events store ([`repo`]), and the `scaling-evaluation` job ([`job`]).
//!
//! An evaluation observes a pool (mean CPU of its active nodes over a window),
//! applies the rule, and — in one MongoDB transaction that also bumps the
//! pool's `version`, so concurrent evaluations of a pool serialize — stores the
//! evaluation and, when it decides to scale, a pending [`ScalingEventDoc`]
//! naming the nodes it will start or stop. Applying the event then moves those
//! nodes; it is idempotent (a node already in the target status counts as
//! applied), so a re-run job never applies twice.

pub mod job;
pub mod repo;
pub mod rule;

use mongodb::bson;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use rule::{Decision, LastEvents, Observation, ScaleDirection, decide};

/// Stored evaluations (`_id` = evaluation id).
pub const EVALUATIONS: &str = "scaling_evaluations";
/// Stored scaling events (`_id` = event id).
pub const EVENTS: &str = "scaling_events";
/// Batch kind of an evaluation of every pool.
pub const BATCH_KIND: &str = "scaling_evaluation";

/// Lifecycle of a scaling event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Decided, nodes not (all) moved yet.
    Pending,
    /// Every planned node moved.
    Applied,
    /// Fewer nodes than needed could be moved (see `missing`).
    Partial,
    /// No node could be moved.
    Failed,
}

/// What started a scaling event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventTrigger {
    /// The auto-scaling rule.
    Auto,
    /// `POST /api/v1/nodes/pools/{pool_id}/scale`.
    Manual,
}

/// A PoolScalingEvent as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingEventDoc {
    /// Event id.
    #[serde(rename = "_id")]
    pub event_id: String,
    /// Pool.
    pub pool_id: String,
    /// `scale_up` or `scale_down`.
    pub event_type: ScaleDirection,
    /// Active nodes when decided.
    pub current_nodes: u32,
    /// Active nodes wanted.
    pub target_nodes: u32,
    /// Why.
    pub trigger_reason: String,
    /// Auto or manual.
    pub trigger: EventTrigger,
    /// The evaluation that decided it (auto events).
    pub evaluation_id: Option<String>,
    /// What the evaluation observed (auto events).
    pub metrics: Option<Observation>,
    /// Nodes chosen to start (highest PoOT first) or stop (lowest first).
    pub planned_nodes: Vec<String>,
    /// Nodes moved.
    #[serde(default)]
    pub applied_nodes: Vec<String>,
    /// Nodes that were needed but could not be moved.
    #[serde(default)]
    pub missing: u32,
    /// Status.
    pub status: EventStatus,
    /// When decided.
    pub triggered_at: bson::DateTime,
    /// When applied (or found impossible).
    pub completed_at: Option<bson::DateTime>,
    /// When the pool's webhook acknowledged it.
    #[serde(default)]
    pub webhook_delivered_at: Option<bson::DateTime>,
}

impl ScalingEventDoc {
    /// Nodes to move to reach the target.
    pub fn needed(&self) -> u32 {
        self.target_nodes.abs_diff(self.current_nodes)
    }
}

/// An evaluation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationDoc {
    /// Evaluation id (the job id).
    #[serde(rename = "_id")]
    pub evaluation_id: String,
    /// Pool.
    pub pool_id: String,
    /// What was observed.
    pub metrics: Option<Observation>,
    /// The rule's outcome.
    pub decision: Decision,
    /// The event it created, if it decided to scale.
    pub event_id: Option<String>,
    /// The batch it belongs to (evaluations of every pool).
    pub batch_id: Option<String>,
    /// When.
    pub evaluated_at: bson::DateTime,
}

/// Settings of the evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ScalingSettings {
    /// `LUCID_SCALING__WINDOW_MINUTES`: the CPU averaging window (default 5).
    pub window_minutes: u32,
}

impl Default for ScalingSettings {
    fn default() -> Self {
        Self { window_minutes: 5 }
    }
}

/// A scaling event as the API and the pool webhook show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingEventView {
    /// Event id.
    pub event_id: String,
    /// Pool.
    pub pool_id: String,
    /// `scale_up` or `scale_down`.
    pub event_type: ScaleDirection,
    /// Active nodes when decided.
    pub current_nodes: u32,
    /// Active nodes wanted.
    pub target_nodes: u32,
    /// Why.
    pub trigger_reason: String,
    /// Auto or manual.
    pub trigger: EventTrigger,
    /// The evaluation that decided it.
    pub evaluation_id: Option<String>,
    /// The metrics used (auto events).
    pub metrics: Option<Observation>,
    /// Nodes chosen to move.
    pub planned_nodes: Vec<String>,
    /// Nodes moved.
    pub applied_nodes: Vec<String>,
    /// Nodes needed but not available.
    pub missing: u32,
    /// Status.
    pub status: EventStatus,
    /// When decided.
    pub triggered_at: chrono::DateTime<chrono::Utc>,
    /// When applied.
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&ScalingEventDoc> for ScalingEventView {
    fn from(e: &ScalingEventDoc) -> Self {
        Self {
            event_id: e.event_id.clone(),
            pool_id: e.pool_id.clone(),
            event_type: e.event_type,
            current_nodes: e.current_nodes,
            target_nodes: e.target_nodes,
            trigger_reason: e.trigger_reason.clone(),
            trigger: e.trigger,
            evaluation_id: e.evaluation_id.clone(),
            metrics: e.metrics.clone(),
            planned_nodes: e.planned_nodes.clone(),
            applied_nodes: e.applied_nodes.clone(),
            missing: e.missing,
            status: e.status,
            triggered_at: e.triggered_at.to_chrono(),
            completed_at: e.completed_at.map(|t| t.to_chrono()),
        }
    }
}
