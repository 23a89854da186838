//! The cron scheduler process. For now it only starts, checks Redis and
//! stops cleanly on SIGINT/SIGTERM; issue 6 adds the schedules.

use anyhow::Context as _;
use lucid_jobs::{config::Settings, queue::Queue};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// A built scheduler.
#[derive(Debug)]
pub struct Application {
    queue: Queue,
}

impl Application {
    /// Connects to Redis.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue())
            .await
            .context("connect to Redis (LUCID_REDIS_URL)")?;
        queue.ping().await.context("ping Redis (LUCID_REDIS_URL)")?;
        Ok(Self { queue })
    }

    /// Waits until `stop` is cancelled.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(prefix = %self.queue.config().prefix, "scheduler running (no schedules configured yet)");
        stop.cancelled().await;
        tracing::info!("scheduler stopped");
        Ok(())
    }
}
