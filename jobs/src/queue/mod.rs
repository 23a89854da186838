//! A Redis job queue with the guarantees the platform promises, driven by
//! apalis as the worker runtime.
//!
//! apalis-redis 1.0 ignores `max_attempts`, breaks on large backlogs, stops
//! heartbeats when a worker is saturated and never expires finished jobs, so
//! this module implements the queue itself (atomic Lua scripts, see
//! [`scripts`]) and plugs into apalis as a [`Backend`](apalis_core::backend::Backend)
//! ([`backend::RedisBackend`]).
//!
//! Layout of the keys, all under the configured prefix `P`:
//! - `P:job:{id}`: hash with the job's state (payload, status, attempts, errors, timestamps);
//! - `P:q:{queue}:ready`: sorted set, priority band then FIFO sequence;
//! - `P:q:{queue}:scheduled`: sorted set by due time (delayed jobs and retries with backoff);
//! - `P:q:{queue}:inflight`: sorted set by lease deadline; a job whose lease
//!   expires (its worker died) goes back to `ready` — at-least-once delivery;
//! - `P:q:{queue}:dead`: sorted set by death time (dead letters);
//! - `P:q:{queue}:stats`: counters; `P:workers`: live workers by last heartbeat;
//! - channel `P:wake:{queue}`: published on every push so idle workers start at once.

pub mod backend;
mod client;
pub mod lease;
mod scripts;
mod types;

pub use backend::{HandlerPanicked, JobLease, PermanentError, RedisBackend, job_error};
pub use client::{Queue, QueueError};
pub use lease::{LeaseKeeper, LeaseSet};
pub use types::*;

use std::time::Duration;

/// Queue behaviour shared by producers and workers.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Prefix of every key, so tests and deployments never collide.
    pub prefix: String,
    /// A running job whose lease is not renewed for this long is redelivered.
    pub visibility_timeout: Duration,
    /// Attempts before a job becomes dead, unless the job sets its own.
    pub max_attempts: u32,
    /// How long finished (succeeded, dead, cancelled) job records are kept.
    pub retention: Duration,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// Fallback poll of an idle queue when no wake-up message arrives.
    pub poll_interval: Duration,
}

impl QueueConfig {
    /// Delay before retry number `attempt` (1-based): exponential with "equal jitter"
    /// (half fixed, half random), capped at `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        let capped = exp.min(self.backoff_max);
        let half = capped / 2;
        let jitter_ms = rand::random::<u64>() % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QueueConfig {
        QueueConfig {
            prefix: "t".into(),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            retention: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_bounds() {
        let c = config();
        for attempt in 1..=6u32 {
            let full = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(c.backoff_max);
            for _ in 0..50 {
                let d = c.backoff(attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let c = config();
        assert!(c.backoff(40) <= c.backoff_max);
    }
}
