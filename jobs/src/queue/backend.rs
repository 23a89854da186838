//! The apalis [`Backend`] over the Redis queue, and the layer that records
//! each attempt's outcome.

use std::{
    collections::VecDeque,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig, finalize::Ephemeral},
    error::BoxDynError,
    task::{
        Task,
        builder::TaskBuilder,
        task_id::{RandomId, TaskId},
    },
    worker::context::WorkerContext,
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use super::{FailOutcome, LeasedJob, Queue, lease::LeaseSet};

/// Identity and lease of the job being run; handlers extract it as `Data<JobLease>`.
#[derive(Debug, Clone)]
pub struct JobLease {
    /// Job id (deterministic for chunk jobs).
    pub job_id: String,
    /// This attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Stable job name.
    pub kind: String,
    /// Request id of the API call that enqueued the job (empty if none).
    pub request_id: String,
    /// W3C `traceparent` of the span that enqueued the job (may be empty).
    pub trace_parent: String,
    token: String,
}

/// An error that retrying cannot fix: the job goes straight to the dead letters.
#[derive(Debug, thiserror::Error)]
#[error("permanent failure: {0}")]
pub struct PermanentError(pub String);

/// A job handler panicked; the attempt fails with the panic message.
#[derive(Debug, thiserror::Error)]
#[error("handler panicked: {0}")]
pub struct HandlerPanicked(pub String);

impl HandlerPanicked {
    fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".into());
        Self(message)
    }
}

/// Converts a handler's `anyhow` error for apalis, keeping [`PermanentError`]
/// recognisable so the job goes straight to the dead letters.
pub fn job_error(e: anyhow::Error) -> BoxDynError {
    match e.downcast::<PermanentError>() {
        Ok(p) => Box::new(p),
        Err(e) => format!("{e:#}").into(),
    }
}

/// Consumes one queue for one apalis worker.
pub struct RedisBackend<Args> {
    queue: Queue,
    queue_name: String,
    worker: String,
    prefetch: usize,
    leases: Arc<LeaseSet>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    buffer: VecDeque<LeasedJob>,
    fetching: Option<BoxFuture<'static, Vec<LeasedJob>>>,
    closing: Option<BoxFuture<'static, ()>>,
    _args: PhantomData<fn() -> Args>,
}

impl<Args> std::fmt::Debug for RedisBackend<Args> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", &self.queue_name)
            .field("worker", &self.worker)
            .finish()
    }
}

impl<Args> RedisBackend<Args> {
    /// A backend leasing jobs of `queue_name` to `worker`, `prefetch` at a time.
    /// `stop` ends polling (the worker then drains); `leases` is shared with a
    /// [`LeaseKeeper`](super::LeaseKeeper).
    pub fn new(
        queue: Queue,
        queue_name: impl Into<String>,
        worker: impl Into<String>,
        prefetch: usize,
        leases: Arc<LeaseSet>,
        stop: CancellationToken,
    ) -> Self {
        let backend = Self {
            queue,
            queue_name: queue_name.into(),
            worker: worker.into(),
            prefetch: prefetch.max(1),
            leases,
            wake: Arc::new(Notify::new()),
            stop,
            buffer: VecDeque::new(),
            fetching: None,
            closing: None,
            _args: PhantomData,
        };
        backend.spawn_wake_listener();
        backend
    }

    /// Subscribes to the queue's wake channel so an idle worker starts a new job at once.
    fn spawn_wake_listener(&self) {
        let (queue, channel, wake, stop) = (
            self.queue.clone(),
            self.queue.wake_channel(&self.queue_name),
            self.wake.clone(),
            self.stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let listen = async {
                    let mut pubsub = queue.pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    // A (re)subscription may have missed messages: poll once.
                    wake.notify_waiters();
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        wake.notify_waiters();
                    }
                    Ok::<_, super::QueueError>(())
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = listen => {
                        if let Err(e) = r { tracing::warn!(error = %e, "wake-up subscription lost; retrying"); }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    fn fetch_future(&self) -> BoxFuture<'static, Vec<LeasedJob>> {
        let (queue, name, worker, n) = (
            self.queue.clone(),
            self.queue_name.clone(),
            self.worker.clone(),
            self.prefetch,
        );
        let (wake, stop, leases) = (self.wake.clone(), self.stop.clone(), self.leases.clone());
        async move {
            let mut failures = 0u32;
            loop {
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if stop.is_cancelled() {
                    return Vec::new();
                }
                match queue.fetch(&name, &worker, n).await {
                    Ok(jobs) if !jobs.is_empty() => {
                        for job in &jobs {
                            leases.insert(job);
                        }
                        return jobs;
                    }
                    Ok(_) => failures = 0,
                    Err(e) => {
                        // Never surface this to apalis: a backend error stops the worker.
                        failures += 1;
                        tracing::warn!(queue = %name, error = %e, "fetching jobs failed; backing off");
                        let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                        tokio::select! { () = stop.cancelled() => return Vec::new(), () = tokio::time::sleep(pause) => {} }
                        continue;
                    }
                }
                let poll = queue.config().poll_interval;
                tokio::select! {
                    () = stop.cancelled() => return Vec::new(),
                    () = &mut notified => {}
                    () = tokio::time::sleep(poll) => {}
                }
            }
        }
        .boxed()
    }
}

impl<Args: DeserializeOwned + Send + Sync + 'static> RedisBackend<Args> {
    fn into_task(&self, job: LeasedJob) -> Option<Task<Args>> {
        match serde_json::from_str::<Args>(&job.payload) {
            Ok(args) => {
                let lease = JobLease {
                    job_id: job.id.clone(),
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    kind: job.kind.clone(),
                    request_id: job.request_id.clone(),
                    trace_parent: job.trace_parent.clone(),
                    token: job.token.clone(),
                };
                let queue = self.queue_name.clone();
                metrics::counter!(crate::metrics::JOBS_STARTED, "queue" => queue.clone())
                    .increment(1);
                if job.attempt == 1 {
                    metrics::histogram!(crate::metrics::JOB_QUEUE_WAIT, "queue" => queue)
                        .record(job.waited_ms as f64 / 1000.0);
                }
                Some(
                    TaskBuilder::new(args)
                        .task_id(TaskId::from_string(job.id))
                        .max_attempts(job.max_attempts as usize)
                        .data(lease)
                        .build(),
                )
            }
            Err(e) => {
                // A payload no version of the code can read will never succeed.
                tracing::error!(job_id = %job.id, error = %e, "undecodable job payload; moving to dead letters");
                let (queue, name, leases) = (
                    self.queue.clone(),
                    self.queue_name.clone(),
                    self.leases.clone(),
                );
                tokio::spawn(async move {
                    let msg = format!("cannot decode payload of kind {}: {e}", job.kind);
                    if let Err(e) = queue.fail(&name, &job, &msg, false).await {
                        tracing::warn!(error = %e, "could not dead-letter an undecodable job");
                    }
                    leases.remove(&job.id, &job.token);
                });
                None
            }
        }
    }
}

impl<Args: DeserializeOwned + Send + Sync + 'static> Backend for RedisBackend<Args> {
    type Task = Task<Args>;
    type Error = std::convert::Infallible;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        loop {
            if let Some(job) = self.buffer.pop_front() {
                if self.stop.is_cancelled() {
                    self.buffer.push_front(job);
                    return Poll::Ready(None);
                }
                match self.into_task(job) {
                    Some(task) => return Poll::Ready(Some(Ok(task))),
                    None => continue,
                }
            }
            if self.stop.is_cancelled() && self.fetching.is_none() {
                return Poll::Ready(None);
            }
            if self.fetching.is_none() {
                self.fetching = Some(self.fetch_future());
            }
            let Some(fut) = self.fetching.as_mut() else {
                return Poll::Pending;
            };
            match fut.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(jobs) => {
                    self.fetching = None;
                    if jobs.is_empty() {
                        return Poll::Ready(None);
                    }
                    self.buffer.extend(jobs);
                }
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            // Give back jobs leased but never started, so nobody waits for their lease to expire.
            let pending: Vec<LeasedJob> = self.buffer.drain(..).collect();
            let (queue, name, leases) = (
                self.queue.clone(),
                self.queue_name.clone(),
                self.leases.clone(),
            );
            self.closing = Some(
                async move {
                    for job in pending {
                        if let Err(e) = queue.release(&name, &job).await {
                            tracing::warn!(job_id = %job.id, error = %e, "could not release job; its lease will expire");
                        }
                        leases.remove(&job.id, &job.token);
                    }
                }
                .boxed(),
            );
        }
        match self.closing.as_mut().map(|f| f.poll_unpin(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl<Args> BackendConfig for RedisBackend<Args> {
    type Args = Args;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        AckLayer {
            queue: self.queue.clone(),
            queue_name: self.queue_name.clone(),
            leases: self.leases.clone(),
        }
    }
}

/// Records each attempt's outcome in Redis: succeeded, retrying (with
/// backoff) or dead once attempts run out.
#[derive(Debug, Clone)]
pub struct AckLayer {
    queue: Queue,
    queue_name: String,
    leases: Arc<LeaseSet>,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Debug, Clone)]
pub struct AckService<S> {
    inner: S,
    layer: AckLayer,
}

impl<S, Args> Service<Task<Args>> for AckService<S>
where
    S: Service<Task<Args>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxDynError>,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.data().get::<JobLease>().cloned();
        // Every log line of the attempt carries the job and the request id
        // of the API call that enqueued it; its span continues that call's trace.
        let span = match &lease {
            Some(l) => {
                let span = tracing::info_span!("job", queue = %self.layer.queue_name, job_id = %l.job_id, attempt = l.attempt, request_id = %l.request_id);
                crate::telemetry::set_remote_parent(&span, &l.trace_parent);
                span
            }
            None => tracing::info_span!("job", queue = %self.layer.queue_name),
        };
        let fut = tracing::Instrument::instrument(self.inner.call(task), span);
        let layer = self.layer.clone();
        async move {
            let started = std::time::Instant::now();
            // A panicking handler fails its attempt like an error (retried,
            // then dead letters after max attempts): caught here, so the
            // outcome is recorded and the lease dropped, and the worker goes on.
            // (apalis' CatchPanic layer does the same but its `fn` pointer
            // type defeats the `Send` proof of `tokio::spawn(worker.run..)`.)
            let result = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r.map_err(Into::into),
                Err(panic) => Err(HandlerPanicked::from_payload(&*panic).into()),
            };
            metrics::histogram!(crate::metrics::JOB_DURATION, "queue" => layer.queue_name.clone())
                .record(started.elapsed().as_secs_f64());
            if let Some(lease) = lease {
                let outcome = result.as_ref().map(|_| ()).map_err(|e| {
                    (
                        format!("{e:#}"),
                        e.downcast_ref::<PermanentError>().is_some(),
                    )
                });
                layer.record(&lease, outcome).await;
            }
            result
        }
        .boxed()
    }
}

impl AckLayer {
    /// `outcome` is Ok, or the error text and whether it is permanent.
    async fn record(&self, lease: &JobLease, outcome: Result<(), (String, bool)>) {
        let job = LeasedJob {
            id: lease.job_id.clone(),
            token: lease.token.clone(),
            attempt: lease.attempt,
            max_attempts: lease.max_attempts,
            kind: lease.kind.clone(),
            payload: String::new(),
            waited_ms: 0,
            request_id: lease.request_id.clone(),
            trace_parent: lease.trace_parent.clone(),
        };
        let queue = self.queue_name.clone();
        match &outcome {
            Ok(()) => metrics::counter!(crate::metrics::JOBS_SUCCEEDED, "queue" => queue.clone())
                .increment(1),
            Err(_) => metrics::counter!(crate::metrics::JOBS_FAILED, "queue" => queue.clone())
                .increment(1),
        }
        // Redis may blip: retry the acknowledgement briefly. If it still fails,
        // the lease expires and the (idempotent) job runs again.
        for attempt in 0..5u32 {
            let recorded = match &outcome {
                Ok(()) => self.queue.complete(&self.queue_name, &job, "").await.map(|ok| {
                    if !ok {
                        tracing::warn!(job_id = %job.id, "job finished after its lease was lost");
                    }
                }),
                Err((e, permanent)) => {
                    self.queue.fail(&self.queue_name, &job, e, !permanent).await.map(|o| match o {
                        FailOutcome::Retrying => {
                            metrics::counter!(crate::metrics::JOBS_RETRIED, "queue" => queue.clone()).increment(1);
                            tracing::warn!(job_id = %job.id, attempt = job.attempt, error = %e, "job failed; will retry");
                        }
                        FailOutcome::Dead => {
                            metrics::counter!(crate::metrics::JOBS_DEAD, "queue" => queue.clone()).increment(1);
                            tracing::error!(job_id = %job.id, attempt = job.attempt, error = %e, "job failed; moved to dead letters");
                        }
                        FailOutcome::Stale => tracing::warn!(job_id = %job.id, "job failed after its lease was lost"),
                    })
                }
            };
            match recorded {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "recording the job outcome failed");
                    tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
                }
            }
        }
        self.leases.remove(&job.id, &job.token);
    }
}
