//! The cron scheduler process. Every replica runs [`Application`]; the one
//! holding the Redis lease fires the schedules (see [`lucid_jobs::schedule`]):
//! each due tick is claimed (fenced by the lease's token), its work enqueued
//! with tick-derived ids, and the claim completed. Followers poll for the
//! lease and take over when it expires; a stopping leader releases it.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lucid_jobs::{
    config::Settings,
    handlers::JobContext,
    queue::Queue,
    schedule::{
        Due, Schedule, ScheduleName, actions,
        store::{Claim, Lease, ScheduleStore},
    },
    storage::Db,
};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// `lucid-scheduler`'s `main`: configuration, telemetry, signals, run.
pub async fn cli_main() -> anyhow::Result<()> {
    let settings = Settings::load().context("load configuration")?;
    let _telemetry = lucid_jobs::telemetry::init(&settings, "lucid-scheduler");
    let stop = lucid_jobs::shutdown::signal_token();
    let app = Application::build(settings).await?;
    tracing::info!(replica = %app.replica, "scheduler started");
    app.run_until_stopped(stop).await
}

/// A built scheduler replica.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    ctx: JobContext,
    store: ScheduleStore,
    schedules: Vec<Schedule>,
    replica: String,
    ttl: Duration,
}

/// `hostname-pid-xxxx`: unique per process.
fn replica_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

impl Application {
    /// Connects to Redis and MongoDB (PostgreSQL lazily: the scheduler only enqueues).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue())
            .await
            .context("connect to Redis (LUCID_REDIS_URL)")?;
        queue.ping().await.context("ping Redis (LUCID_REDIS_URL)")?;
        let db = Db::connect(
            settings.mongodb_url.expose_secret(),
            &settings.database_name,
        )
        .await
        .context("connect to MongoDB (LUCID_MONGODB_URL)")?;
        let ledger = lucid_jobs::ledger::Ledger::connect_lazy(
            settings.postgres_url.expose_secret(),
            &settings.postgres_schema,
        )
        .context("ledger pool (LUCID_POSTGRES_URL)")?;
        let schedules = settings.scheduler.schedules()?;
        lucid_jobs::metrics::install();
        let port = settings.scheduler.metrics_port;
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| {
                format!("bind the metrics port (LUCID_SCHEDULER__METRICS_PORT={port})")
            })?;
        let ttl = settings.scheduler.lease_ttl();
        let ctx = JobContext::new(db, queue.clone(), ledger, std::sync::Arc::new(settings));
        Ok(Self {
            listener,
            ctx,
            store: ScheduleStore::new(queue),
            schedules,
            replica: replica_name(),
            ttl,
        })
    }

    /// This replica's id (as shown as `leader`).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The bound metrics port.
    pub fn metrics_port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Runs until `stop`; a leader releases its lease on the way out.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let queue = self.ctx.queue.clone();
        let server = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let queue = queue.clone();
                    async move {
                        (
                            [("content-type", "text/plain; version=0.0.4")],
                            lucid_jobs::metrics::render(&queue).await,
                        )
                    }
                }),
            );
        let (listener, server_stop) = (self.listener, stop.clone());
        tokio::spawn(async move {
            axum::serve(listener, server)
                .with_graceful_shutdown(server_stop.cancelled_owned())
                .await
        });
        let this = Replica {
            ctx: self.ctx,
            store: self.store,
            schedules: self.schedules,
            replica: self.replica,
            ttl: self.ttl,
        };
        this.run(stop).await
    }
}

/// The scheduling loop of one replica.
struct Replica {
    ctx: JobContext,
    store: ScheduleStore,
    schedules: Vec<Schedule>,
    replica: String,
    ttl: Duration,
}

impl Replica {
    async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let ttl_ms = self.ttl.as_millis() as u64;
        let renew_every = self.ttl / 3;
        let mut lease: Option<Lease> = None;
        let mut last: HashMap<ScheduleName, Option<DateTime<Utc>>> = HashMap::new();
        // Schedules whose last tick this replica handled while leading.
        let mut own: HashSet<ScheduleName> = HashSet::new();
        while !stop.is_cancelled() {
            match self.store.acquire(&self.replica, ttl_ms).await {
                Ok(Some(l)) => {
                    if lease.as_ref().map(|o| o.token) != Some(l.token) {
                        tracing::info!(replica = %self.replica, token = l.token, "leadership acquired");
                        last.clear();
                        own.clear();
                    }
                    lease = Some(l);
                }
                Ok(None) => {
                    if lease.take().is_some() {
                        tracing::warn!(replica = %self.replica, "leadership lost");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease check failed");
                    lease = None;
                }
            }
            if let Some(l) = &lease
                && !self.fire_due(l, &mut last, &mut own).await
            {
                lease = None;
            }
            let now = Utc::now();
            let wake = if lease.is_some() {
                self.schedules
                    .iter()
                    .filter(|s| s.enabled)
                    .filter_map(|s| s.next_after(now))
                    .min()
                    .map(|t| (t - now).to_std().unwrap_or_default())
                    .unwrap_or(renew_every)
                    .min(renew_every)
            } else {
                renew_every.min(Duration::from_secs(1))
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
        if let Some(l) = lease
            && let Err(e) = self.store.release(&l).await
        {
            tracing::warn!(error = %e, "could not release the lease");
        }
        tracing::info!(replica = %self.replica, "scheduler stopped");
        Ok(())
    }

    /// Fires every enabled schedule's due ticks (in order, when this replica
    /// fell behind while leading). False when the lease turned out to be lost
    /// (a claim was refused).
    async fn fire_due(
        &self,
        lease: &Lease,
        last: &mut HashMap<ScheduleName, Option<DateTime<Utc>>>,
        own: &mut HashSet<ScheduleName>,
    ) -> bool {
        for schedule in self.schedules.iter().filter(|s| s.enabled) {
            let name = schedule.name;
            // Bounded: a schedule far behind catches up over several passes.
            for _ in 0..100 {
                let known = match last.get(&name) {
                    Some(t) => *t,
                    None => match self.store.state(name).await {
                        Ok(s) => *last.entry(name).or_insert(s.last_tick),
                        Err(e) => {
                            tracing::warn!(error = %e, schedule = name.as_str(), "could not read schedule state");
                            break;
                        }
                    },
                };
                match self.step(lease, schedule, known, own.contains(&name)).await {
                    Ok(Some(handled)) => {
                        last.insert(name, Some(handled));
                        own.insert(name);
                    }
                    Ok(None) => break,
                    Err(StepError::NotLeader) => return false,
                    Err(StepError::Failed(e)) => {
                        tracing::error!(error = %format!("{e:#}"), schedule = name.as_str(), "firing failed; retrying on the next pass");
                        break;
                    }
                }
            }
        }
        true
    }

    /// Handles one schedule; returns the tick it handled, if any.
    async fn step(
        &self,
        lease: &Lease,
        schedule: &Schedule,
        last: Option<DateTime<Utc>>,
        in_order: bool,
    ) -> Result<Option<DateTime<Utc>>, StepError> {
        let name = schedule.name;
        match schedule.due(Utc::now(), last, in_order) {
            Due::Idle => Ok(None),
            Due::TooLate { tick } => {
                tracing::warn!(schedule = name.as_str(), %tick, catch_up_secs = schedule.catch_up.num_seconds(), "missed tick is older than the catch-up window; skipped");
                self.store.skip(name, tick).await.map_err(failed)?;
                Ok(Some(tick))
            }
            Due::Fire { tick, missed } => {
                if self.store.state(name).await.map_err(failed)?.paused {
                    tracing::info!(schedule = name.as_str(), %tick, "schedule paused; tick skipped");
                    self.store.skip(name, tick).await.map_err(failed)?;
                    return Ok(Some(tick));
                }
                if missed > 0 {
                    tracing::warn!(schedule = name.as_str(), %tick, missed, "missed ticks dropped; firing the latest");
                }
                match self.store.claim(lease, name, tick).await.map_err(failed)? {
                    Claim::NotLeader => return Err(StepError::NotLeader),
                    Claim::Done => return Ok(Some(tick)),
                    Claim::Claimed => {}
                }
                let job_id = actions::fire(&self.ctx, name, Some(tick))
                    .await
                    .map_err(StepError::Failed)?;
                self.store
                    .complete(lease, name, tick, &job_id)
                    .await
                    .map_err(failed)?;
                metrics::counter!(lucid_jobs::metrics::SCHEDULE_FIRES, "schedule" => name.as_str())
                    .increment(1);
                tracing::info!(schedule = name.as_str(), %tick, %job_id, token = lease.token, "tick fired");
                Ok(Some(tick))
            }
        }
    }
}

enum StepError {
    NotLeader,
    Failed(anyhow::Error),
}

fn failed(e: impl Into<anyhow::Error>) -> StepError {
    StepError::Failed(e.into())
}
