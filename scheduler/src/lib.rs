//! The cron scheduler process. Every replica runs [`Application`]; the one
//! holding the Redis lease fires the schedules (see [`lucid_jobs::schedule`]):
//! each due tick is claimed (fenced by the lease's token), its work enqueued
//! with tick-derived ids, and the claim completed. Followers poll for the
//! lease and take over when it expires; a stopping leader releases it.

use std::{collections::HashMap, time::Duration};

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
    lucid_jobs::telemetry::init(&settings);
    let stop = lucid_jobs::shutdown::signal_token();
    let app = Application::build(settings).await?;
    tracing::info!(replica = %app.replica, "scheduler started");
    app.run_until_stopped(stop).await
}

/// A built scheduler replica.
#[derive(Debug)]
pub struct Application {
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
        let ttl = settings.scheduler.lease_ttl();
        let ctx = JobContext::new(db, queue.clone(), ledger, std::sync::Arc::new(settings));
        Ok(Self {
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

    /// Runs until `stop`; a leader releases its lease on the way out.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        let ttl_ms = self.ttl.as_millis() as u64;
        let renew_every = self.ttl / 3;
        let mut lease: Option<Lease> = None;
        let mut last: HashMap<ScheduleName, Option<DateTime<Utc>>> = HashMap::new();
        while !stop.is_cancelled() {
            match self.store.acquire(&self.replica, ttl_ms).await {
                Ok(Some(l)) => {
                    if lease.as_ref().map(|o| o.token) != Some(l.token) {
                        tracing::info!(replica = %self.replica, token = l.token, "leadership acquired");
                        last.clear();
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
                && !self.fire_due(l, &mut last).await
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

    /// Fires every enabled schedule that is due. False when the lease turned
    /// out to be lost (a claim was refused).
    async fn fire_due(
        &self,
        lease: &Lease,
        last: &mut HashMap<ScheduleName, Option<DateTime<Utc>>>,
    ) -> bool {
        for schedule in self.schedules.iter().filter(|s| s.enabled) {
            let name = schedule.name;
            let known = match last.get(&name) {
                Some(t) => *t,
                None => match self.store.state(name).await {
                    Ok(s) => *last.entry(name).or_insert(s.last_tick),
                    Err(e) => {
                        tracing::warn!(error = %e, schedule = name.as_str(), "could not read schedule state");
                        continue;
                    }
                },
            };
            match self.step(lease, schedule, known).await {
                Ok(Some(handled)) => {
                    last.insert(name, Some(handled));
                }
                Ok(None) => {}
                Err(StepError::NotLeader) => return false,
                Err(StepError::Failed(e)) => {
                    tracing::error!(error = %format!("{e:#}"), schedule = name.as_str(), "firing failed; retrying on the next pass");
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
    ) -> Result<Option<DateTime<Utc>>, StepError> {
        let name = schedule.name;
        match schedule.due(Utc::now(), last) {
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
