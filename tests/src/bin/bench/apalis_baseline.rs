//! The bare apalis baseline of `queue-overhead`: apalis-redis 1.0's
//! `RedisStorage` and a plain apalis worker, with no layer of ours.

use std::time::Duration;

use apalis::prelude::{WorkerBuilder, WorkerBuilderExt};
use apalis_core::{backend::TaskSink, error::BoxDynError};
use apalis_redis::{Config, RedisStorage};
use lucid_jobs::config::Settings;
use secrecy::ExposeSecret;

use crate::queue_overhead::{ENQUEUE_BATCH, Noop};

fn queue_name(prefix: &str) -> String {
    format!("{prefix}:apalis-noop")
}

/// The set apalis-redis adds each finished task to.
pub fn done_set(prefix: &str) -> String {
    format!("{}:done", queue_name(prefix))
}

async fn noop(_: Noop) -> Result<(), BoxDynError> {
    Ok(())
}

/// The worker's storage, fetching `min(concurrency, 16)` tasks at a time
/// (our backend's prefetch).
pub async fn storage(
    settings: &Settings,
    prefix: &str,
    concurrency: usize,
) -> anyhow::Result<RedisStorage<Noop>> {
    let conn = apalis_redis::connect(settings.redis_url.expose_secret()).await?;
    let config = Config::default()
        .queue(queue_name(prefix))
        .batch_size(concurrency.min(16));
    Ok(RedisStorage::<Noop>::new(conn).with_config(config))
}

/// Runs a bare apalis worker until the process is killed.
pub async fn run_worker(
    storage: RedisStorage<Noop>,
    name: String,
    concurrency: usize,
) -> anyhow::Result<()> {
    WorkerBuilder::new(name)
        .backend(storage)
        .concurrency(concurrency)
        .build(noop)
        .run()
        .await
        .map_err(|e| anyhow::anyhow!("apalis worker: {e}"))
}

/// Pushes `jobs` tasks with apalis-redis' own bulk push, `ENQUEUE_BATCH` at a time.
pub async fn enqueue(settings: &Settings, prefix: &str, jobs: usize) -> anyhow::Result<Duration> {
    let t = std::time::Instant::now();
    let conn = apalis_redis::connect(settings.redis_url.expose_secret()).await?;
    let config = Config::default().queue(queue_name(prefix));
    let mut storage = RedisStorage::<Noop>::new(conn).with_config(config);
    for start in (0..jobs).step_by(ENQUEUE_BATCH) {
        let batch = (start..(start + ENQUEUE_BATCH).min(jobs))
            .map(|n| Noop { n: n as u64 })
            .collect();
        storage
            .push_bulk(batch)
            .await
            .map_err(|e| anyhow::anyhow!("apalis push: {e}"))?;
    }
    let config = storage.get_config().clone();
    promote_scheduled(storage.get_connection(), &config).await?;
    Ok(t.elapsed())
}

/// apalis-redis 1.0 pushes every task into its scheduled set (it sets
/// `run_at` to now), and its fetch script moves all due ones to the active
/// list with one `unpack`, which fails beyond Lua's ~8,000 values ("too many
/// results to unpack"): a backlog of 200,000 never starts. This does that
/// move in chunks, in the same order, so the workers find a plain active list.
async fn promote_scheduled(
    conn: &mut redis::aio::ConnectionManager,
    config: &Config,
) -> anyhow::Result<()> {
    let (scheduled, active) = (config.scheduled_jobs_set(), config.active_jobs_list());
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(&scheduled)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    for chunk in ids.chunks(ENQUEUE_BATCH) {
        let _: () = redis::pipe()
            .cmd("RPUSH")
            .arg(&active)
            .arg(chunk)
            .ignore()
            .cmd("ZREM")
            .arg(&scheduled)
            .arg(chunk)
            .ignore()
            .query_async(conn)
            .await?;
    }
    Ok(())
}
