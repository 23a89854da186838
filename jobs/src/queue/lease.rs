//! Lease renewal that does not depend on the worker's concurrency slots.
//!
//! apalis drives a backend only while the worker has a free slot, so renewing
//! leases from `poll_ready` stops exactly when a worker is saturated with long
//! jobs. [`LeaseKeeper`] runs as its own task: every third of the visibility
//! timeout it renews every lease the process holds, recovers expired leases of
//! dead workers and promotes due retries.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

use super::{LeasedJob, Queue};

/// The leases a worker process currently holds for one queue.
#[derive(Debug, Default)]
pub struct LeaseSet {
    inner: Mutex<HashMap<String, String>>,
}

impl LeaseSet {
    pub(crate) fn insert(&self, job: &LeasedJob) {
        self.lock().insert(job.id.clone(), job.token.clone());
    }
    /// Forgets the lease of `id` only if it is still the one with `token`: an
    /// old attempt ending must not drop the lease of the job's newer attempt.
    pub(crate) fn remove(&self, id: &str, token: &str) {
        let mut leases = self.lock();
        if leases.get(id).is_some_and(|t| t == token) {
            leases.remove(id);
        }
    }
    /// Number of leases held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn snapshot(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map is still a valid map of leases.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Renews leases and recovers abandoned jobs of one queue until cancelled.
#[derive(Debug)]
pub struct LeaseKeeper {
    queue: Queue,
    name: String,
    leases: Arc<LeaseSet>,
}

impl LeaseKeeper {
    /// A keeper for the leases in `leases`, taken from `queue_name`.
    pub fn new(queue: Queue, queue_name: impl Into<String>, leases: Arc<LeaseSet>) -> Self {
        Self {
            queue,
            name: queue_name.into(),
            leases,
        }
    }

    /// Runs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let period = self.queue.config().visibility_timeout / 3;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let held = self.leases.snapshot();
            match self.queue.extend(&self.name, &held).await {
                Ok(lost) => {
                    for id in lost {
                        tracing::warn!(queue = %self.name, job_id = %id, "lease lost; the job was redelivered");
                        if let Some((_, token)) = held.iter().find(|(h, _)| *h == id) {
                            self.leases.remove(&id, token);
                        }
                    }
                }
                Err(e) => tracing::warn!(queue = %self.name, error = %e, "lease renewal failed"),
            }
            if let Err(e) = self.queue.reap(&self.name).await {
                tracing::warn!(queue = %self.name, error = %e, "reaping expired leases failed");
            }
        }
    }
}
