//! [`Queue`]: the producer and inspection side of the Redis queue, shared by
//! the API, workers and scheduler.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::{AsyncCommands, aio::ConnectionManager};

use super::{
    FailOutcome, JobState, JobStatus, LeasedJob, NewJob, Priority, QueueConfig, QueueCounts,
    TransitionResult, WorkerInfo, scripts,
};

/// Jobs per ENQUEUE script call (bounds the script's argument list).
const ENQUEUE_CHUNK: usize = 200;
/// Script calls per pipelined round trip.
const SCRIPTS_PER_PIPELINE: usize = 10;
/// Connection attempts per reconnection after the first one fails (callers
/// retry on their own: the workers' fetch loop backs off, the API answers 503).
const RECONNECT_RETRIES: usize = 2;

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored value is not what the queue wrote.
    #[error("corrupt queue data: {0}")]
    Corrupt(String),
}

/// Handle on the Redis queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    client: redis::Client,
    config: QueueConfig,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

fn ms_to_rfc3339(ms: &str) -> Option<String> {
    let ms: i64 = ms.parse().ok()?;
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

impl Queue {
    /// Connects to Redis (the URL may carry a password; it is never logged).
    ///
    /// The connection is re-established on the next call after Redis comes
    /// back (a restart needs no restart of the API or the workers). While
    /// Redis is down a call fails within about a second: each reconnection
    /// makes [`RECONNECT_RETRIES`] quick attempts instead of the driver's six
    /// with up to 6.4 s of backoff, which every call waiting on the
    /// connection would otherwise sit through (an API request would hang
    /// instead of answering 503).
    pub async fn connect(redis_url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url)?;
        // Large pipelines (a 100,000-item batch) must not hit the driver's 500 ms default.
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(30)))
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(std::time::Duration::from_millis(200));
        let conn = client.get_connection_manager_with_config(manager).await?;
        Ok(Self {
            conn,
            client,
            config,
        })
    }

    /// The configuration this handle was made with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// A fresh pub/sub connection, for wake-ups.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, QueueError> {
        Ok(self.client.get_async_pubsub().await?)
    }

    /// A handle on the Redis connection (for other Redis state under the prefix).
    pub fn redis(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `{prefix}:{suffix}`: a key under this queue's prefix.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.config.prefix)
    }
    pub(crate) fn qkey(&self, queue: &str, part: &str) -> String {
        format!("{}:q:{queue}:{part}", self.config.prefix)
    }
    pub(crate) fn job_prefix(&self) -> String {
        format!("{}:job:", self.config.prefix)
    }
    /// Pub/sub channel announcing new ready jobs of `queue`.
    pub fn wake_channel(&self, queue: &str) -> String {
        format!("{}:wake:{queue}", self.config.prefix)
    }

    /// Checks the connection (readiness probes). A dropped connection is
    /// tried once more (the connection manager reconnects), so a connection
    /// cut while idle does not make a healthy Redis look down.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let first: Result<String, redis::RedisError> =
            redis::cmd("PING").query_async(&mut conn).await;
        match first {
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                tracing::debug!(error = %e, "redis ping: connection lost, trying once more");
                let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            }
            r => {
                r?;
            }
        }
        Ok(())
    }

    /// Enqueues one job; returns its id. An existing id is not enqueued again.
    pub async fn enqueue(&self, queue: &str, job: NewJob) -> Result<String, QueueError> {
        let ids = self.enqueue_many(queue, vec![job]).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| QueueError::Corrupt("no id returned".into()))
    }

    /// Enqueues jobs in pipelined script calls; returns their ids in order.
    /// Jobs with an id that already exists are left as they are (idempotent).
    #[tracing::instrument(skip(self, jobs), fields(count = jobs.len()))]
    pub async fn enqueue_many(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::with_capacity(jobs.len());
        let (ready, scheduled, seq) = (
            self.qkey(queue, "ready"),
            self.qkey(queue, "scheduled"),
            self.qkey(queue, "seq"),
        );
        let (jp, wake) = (self.job_prefix(), self.wake_channel(queue));
        // The enqueuing request's context, stored with every job.
        let (request_id, trace_parent) = (
            crate::telemetry::current_request_id(),
            crate::telemetry::current_trace_parent(),
        );
        let mut conn = self.conn.clone();
        self.ensure_loaded(&mut conn, &[&scripts::ENQUEUE]).await?;
        // Bounded round trips: at most ENQUEUE_CHUNK jobs per script call and
        // SCRIPTS_PER_PIPELINE calls per pipeline.
        for group in jobs.chunks(ENQUEUE_CHUNK * SCRIPTS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for chunk in group.chunks(ENQUEUE_CHUNK) {
                let mut inv = scripts::ENQUEUE.prepare_invoke();
                inv.key(&ready)
                    .key(&scheduled)
                    .key(&seq)
                    .arg(&jp)
                    .arg(queue)
                    .arg(&wake)
                    .arg(&request_id)
                    .arg(&trace_parent);
                for job in chunk {
                    let id = job
                        .options
                        .job_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                    inv.arg(&id)
                        .arg(&job.kind)
                        .arg(&job.payload)
                        .arg(job.options.max_attempts.unwrap_or(self.config.max_attempts))
                        .arg(job.options.priority.band())
                        .arg(job.options.delay_ms)
                        .arg(job.options.batch_id.as_deref().unwrap_or(""));
                    ids.push(id);
                }
                pipe.invoke_script(&inv);
            }
            let started = std::time::Instant::now();
            let _: Vec<i64> = pipe.query_async(&mut conn).await?;
            crate::metrics::store_call("redis", "enqueue", started.elapsed());
        }
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "queue" => queue.to_string())
            .increment(ids.len() as u64);
        Ok(ids)
    }

    async fn ensure_loaded(
        &self,
        conn: &mut ConnectionManager,
        list: &[&redis::Script],
    ) -> Result<(), QueueError> {
        for s in list {
            let exists: Vec<bool> = redis::cmd("SCRIPT")
                .arg("EXISTS")
                .arg(s.get_hash())
                .query_async(conn)
                .await?;
            if !exists.first().copied().unwrap_or(false) {
                s.prepare_invoke().load_async(conn).await?;
            }
        }
        Ok(())
    }

    /// Leases up to `n` ready jobs to `worker` (after promoting due and
    /// recovering expired ones).
    pub async fn fetch(
        &self,
        queue: &str,
        worker: &str,
        n: usize,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let mut conn = self.conn.clone();
        let started = std::time::Instant::now();
        let rows: Vec<Vec<String>> = scripts::FETCH
            .key(self.qkey(queue, "ready"))
            .key(self.qkey(queue, "scheduled"))
            .key(self.qkey(queue, "inflight"))
            .key(self.qkey(queue, "dead"))
            .key(self.key("tokens"))
            .arg(self.job_prefix())
            .arg(n)
            .arg(self.config.visibility_timeout.as_millis() as u64)
            .arg(worker)
            .arg(self.config.retention.as_secs())
            .invoke_async(&mut conn)
            .await?;
        crate::metrics::store_call("redis", "fetch", started.elapsed());
        rows.into_iter()
            .map(|r| {
                let [
                    id,
                    token,
                    attempt,
                    max,
                    kind,
                    payload,
                    waited,
                    request_id,
                    trace_parent,
                ]: [String; 9] = r
                    .try_into()
                    .map_err(|_| QueueError::Corrupt("fetch row".into()))?;
                Ok(LeasedJob {
                    id,
                    token,
                    attempt: attempt.parse().unwrap_or(1),
                    max_attempts: max.parse().unwrap_or(self.config.max_attempts),
                    kind,
                    payload,
                    waited_ms: waited.parse().unwrap_or(0),
                    request_id,
                    trace_parent,
                })
            })
            .collect()
    }

    /// Promotes due jobs and recovers expired leases of `queue`, waking workers.
    pub async fn reap(&self, queue: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        Ok(scripts::REAP
            .key(self.qkey(queue, "ready"))
            .key(self.qkey(queue, "scheduled"))
            .key(self.qkey(queue, "inflight"))
            .key(self.qkey(queue, "dead"))
            .key(self.wake_channel(queue))
            .arg(self.job_prefix())
            .arg(self.config.retention.as_secs())
            .invoke_async(&mut conn)
            .await?)
    }

    /// Renews the leases of running jobs; returns the ids whose lease was lost.
    pub async fn extend(
        &self,
        queue: &str,
        leases: &[(String, String)],
    ) -> Result<Vec<String>, QueueError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = scripts::EXTEND.prepare_invoke();
        inv.key(self.qkey(queue, "inflight"))
            .arg(self.job_prefix())
            .arg(self.config.visibility_timeout.as_millis() as u64);
        for (id, token) in leases {
            inv.arg(id).arg(token);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// Marks a leased job succeeded; false if the lease had been lost.
    pub async fn complete(
        &self,
        queue: &str,
        job: &LeasedJob,
        result: &str,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let done: i64 = scripts::COMPLETE
            .key(self.qkey(queue, "inflight"))
            .key(self.qkey(queue, "stats"))
            .arg(self.job_prefix())
            .arg(&job.id)
            .arg(&job.token)
            .arg(self.config.retention.as_secs())
            .arg(result)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    /// Records a failed attempt: retried with backoff while attempts remain
    /// (and `retryable`), else dead.
    pub async fn fail(
        &self,
        queue: &str,
        job: &LeasedJob,
        error: &str,
        retryable: bool,
    ) -> Result<FailOutcome, QueueError> {
        let backoff = self.config.backoff(job.attempt);
        let mut conn = self.conn.clone();
        let outcome: String = scripts::FAIL
            .key(self.qkey(queue, "inflight"))
            .key(self.qkey(queue, "scheduled"))
            .key(self.qkey(queue, "dead"))
            .key(self.qkey(queue, "stats"))
            .arg(self.job_prefix())
            .arg(&job.id)
            .arg(&job.token)
            .arg(error)
            .arg(backoff.as_millis() as u64)
            .arg(self.config.retention.as_secs())
            .arg(if retryable { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        Ok(match outcome.as_str() {
            "retrying" => FailOutcome::Retrying,
            "dead" => FailOutcome::Dead,
            _ => FailOutcome::Stale,
        })
    }

    /// Gives back a leased job that was not started (graceful shutdown).
    pub async fn release(&self, queue: &str, job: &LeasedJob) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let done: i64 = scripts::RELEASE
            .key(self.qkey(queue, "inflight"))
            .key(self.qkey(queue, "ready"))
            .key(self.wake_channel(queue))
            .arg(self.job_prefix())
            .arg(&job.id)
            .arg(&job.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    /// Cancels a job that has not started.
    pub async fn cancel(&self, job_id: &str) -> Result<TransitionResult, QueueError> {
        let mut conn = self.conn.clone();
        let r: String = scripts::CANCEL
            .arg(&self.config.prefix)
            .arg(job_id)
            .arg(self.config.retention.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(transition(&r))
    }

    /// Requeues a dead job with fresh attempts.
    pub async fn retry_dead(&self, job_id: &str) -> Result<TransitionResult, QueueError> {
        let mut conn = self.conn.clone();
        let r: String = scripts::RETRY_DEAD
            .arg(&self.config.prefix)
            .arg(job_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(transition(&r))
    }

    /// A job's state, if its record still exists (see retention).
    pub async fn job(&self, job_id: &str) -> Result<Option<JobState>, QueueError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn
            .hgetall(format!("{}{job_id}", self.job_prefix()))
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(job_state(job_id, &h)?))
    }

    /// Jobs currently leased in `queue`, with the worker holding each.
    pub async fn running_jobs(&self, queue: &str) -> Result<Vec<(String, String)>, QueueError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.zrange(self.qkey(queue, "inflight"), 0, -1).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let worker: Option<String> = conn
                .hget(format!("{}{id}", self.job_prefix()), "worker")
                .await?;
            out.push((id, worker.unwrap_or_default()));
        }
        Ok(out)
    }

    /// Counts of one queue.
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        let mut conn = self.conn.clone();
        let (queued, scheduled, running, dead, stats): (u64, u64, u64, u64, HashMap<String, u64>) =
            redis::pipe()
                .zcard(self.qkey(queue, "ready"))
                .zcard(self.qkey(queue, "scheduled"))
                .zcard(self.qkey(queue, "inflight"))
                .zcard(self.qkey(queue, "dead"))
                .hgetall(self.qkey(queue, "stats"))
                .query_async(&mut conn)
                .await?;
        Ok(QueueCounts {
            queue: queue.to_string(),
            queued,
            scheduled,
            running,
            dead,
            succeeded: stats.get("succeeded").copied().unwrap_or(0),
            retried: stats.get("retried").copied().unwrap_or(0),
        })
    }

    /// Dead jobs of a queue, newest first, with their last error.
    pub async fn dead_jobs(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<JobState>), QueueError> {
        let mut conn = self.conn.clone();
        let key = self.qkey(queue, "dead");
        let total: u64 = conn.zcard(&key).await?;
        let ids: Vec<String> = conn
            .zrevrange(&key, offset as isize, (offset + limit) as isize - 1)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.job(&id).await? {
                Some(j) => out.push(j),
                None => {
                    // The record expired; drop the stale dead-letter entry.
                    let _: i64 = conn.zrem(&key, &id).await?;
                }
            }
        }
        Ok((total, out))
    }

    /// Deletes every key under `prefix` (test clean-up; never used on a live prefix).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                deleted += keys.len() as u64;
                let _: () = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Registers or refreshes a worker process (heartbeat).
    pub async fn heartbeat_worker(
        &self,
        name: &str,
        queues: &[&str],
        ttl: std::time::Duration,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let now = Utc::now().timestamp_millis();
        let _: () = redis::pipe()
            .zadd(self.key("workers"), name, now)
            .set_ex(
                self.key(&format!("worker:{name}")),
                queues.join(","),
                ttl.as_secs().max(1),
            )
            .zrembyscore(
                self.key("workers"),
                "-inf",
                now - 10 * ttl.as_millis() as i64,
            )
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes a worker from the registry (clean shutdown).
    pub async fn unregister_worker(&self, name: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .zrem(self.key("workers"), name)
            .del(self.key(&format!("worker:{name}")))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Workers whose heartbeat has not expired.
    pub async fn live_workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, i64)> =
            conn.zrange_withscores(self.key("workers"), 0, -1).await?;
        let mut out = Vec::new();
        for (name, seen) in entries {
            let queues: Option<String> = conn.get(self.key(&format!("worker:{name}"))).await?;
            if let Some(queues) = queues {
                out.push(WorkerInfo {
                    host: name
                        .rsplit_once('-')
                        .map_or_else(|| name.clone(), |(h, _)| h.to_string()),
                    current_jobs: Vec::new(),
                    name,
                    last_seen: ms_to_rfc3339(&seen.to_string()).unwrap_or_default(),
                    queues: queues
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                });
            }
        }
        Ok(out)
    }
}

/// Maps a CANCEL / RETRY_DEAD reply: `ok`, a job status, or `missing`.
fn transition(reply: &str) -> TransitionResult {
    if reply == "ok" {
        TransitionResult::Done
    } else if let Some(status) = JobStatus::parse(reply) {
        TransitionResult::WrongState(status)
    } else {
        TransitionResult::NotFound
    }
}

fn job_state(job_id: &str, h: &HashMap<String, String>) -> Result<JobState, QueueError> {
    let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
    let status = get("status")
        .and_then(|s| JobStatus::parse(&s))
        .ok_or_else(|| QueueError::Corrupt(format!("job {job_id} has no valid status")))?;
    let priority = match get("band").as_deref() {
        Some("0") => Priority::Urgent,
        Some("1") => Priority::High,
        Some("3") => Priority::Low,
        _ => Priority::Normal,
    };
    let time = |k: &str| get(k).and_then(|v| ms_to_rfc3339(&v));
    Ok(JobState {
        job_id: job_id.to_string(),
        queue: get("queue").unwrap_or_default(),
        kind: get("kind").unwrap_or_default(),
        status,
        attempts: get("attempts").and_then(|v| v.parse().ok()).unwrap_or(0),
        max_attempts: get("max_attempts")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        priority,
        last_error: get("last_error"),
        worker: get("worker"),
        batch_id: get("batch_id"),
        created_at: time("created_at"),
        started_at: time("started_at"),
        finished_at: time("finished_at"),
        run_at: time("run_at"),
    })
}
