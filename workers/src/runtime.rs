//! Building and running the worker process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use apalis::prelude::{Data, WorkerBuilder, WorkerBuilderExt};
use apalis_core::error::BoxDynError;
use lucid_jobs::{
    config::Settings,
    handlers::{CallbackJob, JobContext, deliver_callback},
    payouts::{
        earnings::{EarningsJob, handle_earnings},
        job::{PayoutJob, process_payout},
    },
    poot::{PootValidationJob, handle_chunk},
    queue::{
        ALL_QUEUES, CALLBACKS_QUEUE, EARNINGS_QUEUE, JobLease, LeaseKeeper, LeaseSet,
        MAINTENANCE_QUEUE, PAYOUTS_QUEUE, POOT_VALIDATION_QUEUE, Queue, RedisBackend,
        SCALING_QUEUE, job_error,
    },
    retention::{RetentionJob, handle_retention},
    scaling::job::{ScalingJob, handle_scaling},
    storage::Db,
};
use secrecy_expose::expose;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod secrecy_expose {
    pub(crate) fn expose(s: &secrecy::SecretString) -> &str {
        secrecy::ExposeSecret::expose_secret(s)
    }
}

/// A built worker process, ready to run.
pub struct Application {
    ctx: JobContext,
    name: String,
    listener: TcpListener,
}

/// `hostname-xxxxxx`: unique per process, so restarts and replicas never collide.
fn unique_worker_name(settings: &Settings) -> String {
    if let Some(name) = &settings.worker_name {
        return name.clone();
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl Application {
    /// Connects to Redis and MongoDB and binds the health port (0 = any).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        lucid_jobs::metrics::install();
        let queue = Queue::connect(expose(&settings.redis_url), settings.queue())
            .await
            .context("connect to Redis (LUCID_REDIS_URL)")?;
        let db = Db::connect(expose(&settings.mongodb_url), &settings.database_name)
            .await
            .context("connect to MongoDB (LUCID_MONGODB_URL)")?;
        db.ensure_indexes()
            .await
            .context("create MongoDB indexes")?;
        let listener = TcpListener::bind((
            settings.worker_health_host.as_str(),
            settings.worker_health_port,
        ))
        .await
        .with_context(|| {
            format!(
                "bind the health port (LUCID_WORKER_HEALTH_PORT={})",
                settings.worker_health_port
            )
        })?;
        let ledger = lucid_jobs::ledger::Ledger::connect(
            expose(&settings.postgres_url),
            &settings.postgres_schema,
        )
        .await
        .context("connect to PostgreSQL and migrate the ledger (LUCID_POSTGRES_URL)")?;
        let name = unique_worker_name(&settings);
        let ctx = JobContext::new(db, queue, ledger, Arc::new(settings));
        ctx.ensure_indexes()
            .await
            .context("create PoOT and payout indexes")?;
        Ok(Self {
            ctx,
            name,
            listener,
        })
    }

    /// The unique name this worker registers under.
    pub fn worker_name(&self) -> &str {
        &self.name
    }

    /// The bound health port.
    pub fn health_port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Runs until `stop` is cancelled, then stops taking jobs, lets running
    /// jobs finish (up to the grace period; unfinished ones are redelivered
    /// when their lease expires) and gives back jobs it had not started.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let draining = Arc::new(AtomicBool::new(false));
        let health = crate::health::router(crate::health::HealthState {
            ctx: self.ctx.clone(),
            worker: self.name.clone(),
            draining: draining.clone(),
        });
        let health_stop = CancellationToken::new();
        let server = {
            let s = health_stop.clone();
            tokio::spawn(async move {
                axum::serve(self.listener, health)
                    .with_graceful_shutdown(s.cancelled_owned())
                    .await
            })
        };
        let poot = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            POOT_VALIDATION_QUEUE,
            stop.clone(),
            poot_handler,
        );
        let callbacks = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            CALLBACKS_QUEUE,
            stop.clone(),
            callback_handler,
        );
        let payouts = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            PAYOUTS_QUEUE,
            stop.clone(),
            payout_handler,
        );
        let earnings = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            EARNINGS_QUEUE,
            stop.clone(),
            earnings_handler,
        );
        let scaling = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            SCALING_QUEUE,
            stop.clone(),
            scaling_handler,
        );
        let maintenance = run_registered_worker(
            self.ctx.clone(),
            &self.name,
            MAINTENANCE_QUEUE,
            stop.clone(),
            retention_handler,
        );
        let heartbeat = heartbeat(self.ctx.clone(), self.name.clone(), stop.clone());
        let drain_flag = async {
            stop.cancelled().await;
            draining.store(true, Ordering::Relaxed);
        };
        let (r1, r2, r3, r4, r5, r6, (), ()) = tokio::join!(
            poot,
            callbacks,
            payouts,
            earnings,
            scaling,
            maintenance,
            heartbeat,
            drain_flag
        );
        if let Err(e) = self.ctx.queue.unregister_worker(&self.name).await {
            tracing::warn!(error = %e, "could not unregister worker");
        }
        health_stop.cancel();
        let _ = server.await;
        r1.and(r2).and(r3).and(r4).and(r5).and(r6)
    }
}

/// Registry heartbeat, plus the sweep that records chunks that died outside
/// their handler (so their batches finish).
async fn heartbeat(ctx: JobContext, name: String, stop: CancellationToken) {
    let queue = ctx.queue.clone();
    let ttl = queue.config().visibility_timeout;
    let mut tick = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = queue.heartbeat_worker(&name, ALL_QUEUES, ttl).await {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
        if let Err(e) = lucid_jobs::poot::sweep_dead_chunks(&ctx).await {
            tracing::warn!(error = %format!("{e:#}"), "sweeping dead chunks failed");
        }
    }
}

async fn poot_handler(
    job: PootValidationJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    handle_chunk(&ctx, job, &lease).await.map_err(job_error)
}

async fn payout_handler(
    job: PayoutJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    process_payout(&ctx, job, &lease).await.map_err(job_error)
}

async fn earnings_handler(
    job: EarningsJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    handle_earnings(&ctx, job, &lease).await.map_err(job_error)
}

async fn scaling_handler(
    job: ScalingJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    handle_scaling(&ctx, job, &lease).await.map_err(job_error)
}

async fn retention_handler(
    job: RetentionJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    handle_retention(&ctx, job, &lease).await.map_err(job_error)
}

async fn callback_handler(
    job: CallbackJob,
    lease: Data<JobLease>,
    ctx: Data<JobContext>,
) -> Result<(), BoxDynError> {
    deliver_callback(&ctx, job, &lease).await.map_err(job_error)
}

/// Runs one apalis worker on `queue_name` with `handler` until `stop`, with
/// its own lease keeper. Public so tests can run workers for test queues.
pub async fn run_registered_worker<Args, H, Fut>(
    ctx: JobContext,
    worker: &str,
    queue_name: &str,
    stop: CancellationToken,
    handler: H,
) -> anyhow::Result<()>
where
    Args: DeserializeOwned + Send + Sync + Unpin + 'static,
    H: Fn(Args, Data<JobLease>, Data<JobContext>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), BoxDynError>> + Send + 'static,
{
    let concurrency = ctx.settings.worker_concurrency;
    let grace = Duration::from_secs(ctx.settings.shutdown_grace_secs);
    let leases = Arc::new(LeaseSet::default());
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(
        LeaseKeeper::new(ctx.queue.clone(), queue_name, leases.clone()).run(keeper_stop.clone()),
    );
    let backend: RedisBackend<Args> = RedisBackend::new(
        ctx.queue.clone(),
        queue_name,
        worker,
        concurrency.min(16),
        leases.clone(),
        stop.clone(),
    );
    let apalis_worker = WorkerBuilder::new(format!("{worker}/{queue_name}"))
        .backend(backend)
        .concurrency(concurrency)
        .data(ctx.clone())
        .build(handler);
    let signal = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        }
    };
    let run = apalis_worker.run_until(signal);
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r.map_err(|e| anyhow::anyhow!("worker {queue_name}: {e}")),
        () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(queue = queue_name, running = leases.len(), "grace period over; unfinished jobs will be redelivered");
            Ok(())
        }
    };
    keeper_stop.cancel();
    let _ = keeper.await;
    result
}
