//! Public types of the queue: names, ids, states and options.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Queue of chunked PoOT batch validations.
pub const POOT_VALIDATION_QUEUE: &str = "poot-validation";
/// Queue of batch completion callbacks (webhooks).
pub const CALLBACKS_QUEUE: &str = "callbacks";
/// Queue of payouts (one job per payout; `urgent` drains first).
pub const PAYOUTS_QUEUE: &str = "payouts";
/// Queue of earnings accruals (one job per epoch).
pub const EARNINGS_QUEUE: &str = "earnings";
/// Queue of pool scaling evaluations and manual scaling events.
pub const SCALING_QUEUE: &str = "scaling-evaluation";
/// Queue of maintenance work (retention clean-up).
pub const MAINTENANCE_QUEUE: &str = "maintenance";
/// Every queue the platform runs, for listings and the worker.
pub const ALL_QUEUES: &[&str] = &[
    POOT_VALIDATION_QUEUE,
    CALLBACKS_QUEUE,
    PAYOUTS_QUEUE,
    EARNINGS_QUEUE,
    SCALING_QUEUE,
    MAINTENANCE_QUEUE,
];

/// A job's lifecycle state, readable from any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the ready set.
    Queued,
    /// Waiting for its due time (delayed).
    Scheduled,
    /// Leased by a worker.
    Running,
    /// Failed, waiting for its retry (backoff).
    Retrying,
    /// Finished successfully.
    Succeeded,
    /// Out of attempts; in the dead-letter set.
    Dead,
    /// Cancelled before it started.
    Cancelled,
}

impl JobStatus {
    /// Parses the status stored in Redis.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "scheduled" => Self::Scheduled,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will not run again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// Job priority; `Urgent` drains first, FIFO within one priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Drains last.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal.
    High,
    /// Before everything else.
    Urgent,
}

impl Priority {
    /// Band used in the ready set score (lower drains first).
    pub(crate) fn band(self) -> u64 {
        match self {
            Self::Urgent => 0,
            Self::High => 1,
            Self::Normal => 2,
            Self::Low => 3,
        }
    }
}

/// How a job is enqueued.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Deterministic id: enqueueing the same id twice stores the job once.
    pub job_id: Option<String>,
    /// Overrides the queue's default attempts.
    pub max_attempts: Option<u32>,
    /// Priority band.
    pub priority: Priority,
    /// Run no earlier than this many milliseconds from now.
    pub delay_ms: u64,
    /// Batch this job belongs to, for listings.
    pub batch_id: Option<String>,
}

/// A job to enqueue: its kind (stable job name) and serialized payload.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Stable job name, e.g. `poot.validate_chunk`.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Options.
    pub options: EnqueueOptions,
}

/// A job's state as stored in Redis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobState {
    /// Job id.
    pub job_id: String,
    /// Queue name.
    pub queue: String,
    /// Stable job name.
    pub kind: String,
    /// Current state.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Priority.
    pub priority: Priority,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Worker holding (or that last held) the job.
    pub worker: Option<String>,
    /// Batch the job belongs to.
    pub batch_id: Option<String>,
    /// Enqueue time (RFC 3339).
    pub created_at: Option<String>,
    /// Start of the latest attempt.
    pub started_at: Option<String>,
    /// When it reached a final state.
    pub finished_at: Option<String>,
    /// When a scheduled or retrying job is due.
    pub run_at: Option<String>,
}

/// A job leased to a worker.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    /// Job id.
    pub id: String,
    /// Fencing token of this lease: only its holder can finish the job.
    pub token: String,
    /// This attempt's number (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Stable job name.
    pub kind: String,
    /// JSON payload.
    pub payload: String,
    /// Milliseconds since the job was enqueued.
    pub waited_ms: u64,
    /// Request id of the API call that enqueued it (empty if none).
    pub request_id: String,
    /// W3C `traceparent` of the span that enqueued it (empty when traces
    /// are not exported).
    pub trace_parent: String,
}

/// What happened to a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Scheduled for another attempt.
    Retrying,
    /// Out of attempts: moved to the dead-letter set.
    Dead,
    /// The lease had been lost (the job was redelivered); nothing changed.
    Stale,
}

/// Per-queue counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct QueueCounts {
    /// Queue name.
    pub queue: String,
    /// Ready to run.
    pub queued: u64,
    /// Delayed or waiting for a retry.
    pub scheduled: u64,
    /// Leased by workers.
    pub running: u64,
    /// Succeeded (cumulative).
    pub succeeded: u64,
    /// In the dead-letter set.
    pub dead: u64,
    /// Attempts that failed and were retried (cumulative).
    pub retried: u64,
}

/// A worker process seen recently.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    /// Unique worker name (`hostname-xxxxxx`).
    pub name: String,
    /// Last heartbeat (RFC 3339).
    pub last_seen: String,
    /// Queues it consumes.
    pub queues: Vec<String>,
    /// Host it runs on (the name without its random suffix).
    #[serde(default)]
    pub host: String,
    /// Jobs it is running now.
    #[serde(default)]
    pub current_jobs: Vec<String>,
}

/// Result of cancelling or retrying one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionResult {
    /// The transition happened.
    Done,
    /// The job is in another state; the transition is not allowed.
    WrongState(JobStatus),
    /// No such job.
    NotFound,
}
