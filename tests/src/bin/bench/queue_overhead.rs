//! `queue-overhead` (issue 9): N no-op jobs drained by our full worker stack
//! (the queue's Lua scripts, `RedisBackend`, its acknowledgement layer and
//! lease keeper, run by `lucid_workers::run_registered_worker` exactly as
//! `lucid-worker` runs each queue) against a bare apalis worker on
//! apalis-redis 1.0, on the same Redis, with the same number of worker
//! processes, the same concurrency and the same prefetch.
//!
//! The product has no no-op job kind and does not get one for a benchmark:
//! the workers are child processes of this binary
//! (`bench queue-overhead-worker lucid|apalis ...`). Each child connects,
//! prints `ready` and waits for a line on stdin; the clock starts when every
//! child has been told to go and stops when Redis records the last job done
//! (our `stats.succeeded` counter; apalis-redis' `done` set). All jobs are
//! enqueued before the workers start, in batches for both queues.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use apalis_core::error::BoxDynError;
use lucid_jobs::{
    config::Settings,
    handlers::JobContext,
    queue::{JobLease, NewJob, Queue},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Jobs enqueued per call (both queues).
pub const ENQUEUE_BATCH: usize = 1_000;

/// The no-op job's payload (same bytes for both queues).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    pub n: u64,
}

/// Which stack drains the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// Our queue and worker runtime.
    Lucid,
    /// apalis-redis 1.0 with a bare apalis worker.
    Apalis,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Self::Lucid => "lucid",
            Self::Apalis => "apalis",
        }
    }
}

/// One drain: how many jobs, in how long, and the workers' peak RSS (KiB).
#[derive(Debug, Clone)]
pub struct Drain {
    pub jobs: usize,
    pub enqueue: Duration,
    pub elapsed: Duration,
    pub peak_rss_kib: Vec<Option<u64>>,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

/// `--name value` from the arguments, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn settings(prefix: &str, concurrency: usize) -> Settings {
    Settings {
        database_name: prefix.to_string(),
        queue_prefix: prefix.to_string(),
        worker_concurrency: concurrency,
        log_level: "error".into(),
        ..Settings::default()
    }
}

fn lucid_queue_name() -> &'static str {
    "bench-noop"
}

async fn lucid_noop(
    _: Noop,
    _: apalis::prelude::Data<JobLease>,
    _: apalis::prelude::Data<JobContext>,
) -> Result<(), BoxDynError> {
    Ok(())
}

/// The child process: `queue-overhead-worker <lucid|apalis> <prefix> <concurrency> <name>`.
pub async fn worker(args: &[String]) -> anyhow::Result<()> {
    let (stack, prefix) = (args[0].as_str(), args[1].clone());
    let concurrency: usize = args[2].parse()?;
    let name = args[3].clone();
    let settings = settings(&prefix, concurrency);
    let go = async {
        println!("ready");
        let mut line = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
    };
    match stack {
        "lucid" => {
            let queue =
                Queue::connect(settings.redis_url.expose_secret(), settings.queue()).await?;
            queue.ping().await?;
            let db = lucid_jobs::storage::Db::connect(
                settings.mongodb_url.expose_secret(),
                &settings.database_name,
            )
            .await?;
            let ledger = lucid_jobs::ledger::Ledger::connect_lazy(
                settings.postgres_url.expose_secret(),
                &settings.postgres_schema,
            )?;
            let ctx = JobContext::new(db, queue, ledger, Arc::new(settings));
            go.await?;
            lucid_workers::run_registered_worker(
                ctx,
                &name,
                lucid_queue_name(),
                tokio_util::sync::CancellationToken::new(),
                lucid_noop,
            )
            .await
        }
        "apalis" => {
            let storage = crate::apalis_baseline::storage(&settings, &prefix, concurrency).await?;
            go.await?;
            crate::apalis_baseline::run_worker(storage, name, concurrency).await
        }
        other => anyhow::bail!("unknown stack {other}"),
    }
}

async fn enqueue(stack: Stack, prefix: &str, jobs: usize) -> anyhow::Result<Duration> {
    let s = settings(prefix, 1);
    let t = Instant::now();
    match stack {
        Stack::Lucid => {
            let queue = Queue::connect(s.redis_url.expose_secret(), s.queue()).await?;
            for start in (0..jobs).step_by(ENQUEUE_BATCH) {
                let batch = (start..(start + ENQUEUE_BATCH).min(jobs))
                    .map(|n| NewJob {
                        kind: "bench.noop".into(),
                        payload: serde_json::to_string(&Noop { n: n as u64 }).unwrap_or_default(),
                        options: Default::default(),
                    })
                    .collect();
                queue.enqueue_many(lucid_queue_name(), batch).await?;
            }
        }
        Stack::Apalis => {
            crate::apalis_baseline::enqueue(&s, prefix, jobs).await?;
        }
    }
    Ok(t.elapsed())
}

/// Jobs recorded done so far.
async fn done(
    stack: Stack,
    prefix: &str,
    redis: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<u64> {
    Ok(match stack {
        Stack::Lucid => redis::cmd("HGET")
            .arg(format!("{prefix}:q:{}:stats", lucid_queue_name()))
            .arg("succeeded")
            .query_async::<Option<u64>>(redis)
            .await?
            .unwrap_or(0),
        Stack::Apalis => {
            redis::cmd("SCARD")
                .arg(crate::apalis_baseline::done_set(prefix))
                .query_async(redis)
                .await?
        }
    })
}

/// Enqueues `jobs` no-op jobs, then drains them with `workers` processes of
/// `stack` at `concurrency` each; cleans its keys up.
pub async fn drain(
    stack: Stack,
    jobs: usize,
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<Drain> {
    let prefix = format!(
        "bench_qo_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let result = drain_inner(stack, &prefix, jobs, workers, concurrency).await;
    let s = settings(&prefix, 1);
    let queue = Queue::connect(s.redis_url.expose_secret(), s.queue()).await?;
    queue.delete_prefix(&prefix).await?;
    result
}

async fn drain_inner(
    stack: Stack,
    prefix: &str,
    jobs: usize,
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<Drain> {
    let enqueue = enqueue(stack, prefix, jobs).await?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for w in 0..workers {
        let mut child = tokio::process::Command::new(&exe)
            .args(["queue-overhead-worker", stack.name(), prefix])
            .arg(concurrency.to_string())
            .arg(format!("{prefix}-w{w}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .context("worker did not get ready in 30 s")??;
        anyhow::ensure!(line.as_deref() == Some("ready"), "worker said {line:?}");
        children.push(child);
    }
    let client = redis::Client::open(settings(prefix, 1).redis_url.expose_secret())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let t = Instant::now();
    for c in &mut children {
        c.stdin
            .as_mut()
            .context("stdin")?
            .write_all(b"go\n")
            .await?;
    }
    loop {
        let n = done(stack, prefix, &mut redis).await?;
        if n >= jobs as u64 {
            break;
        }
        for c in &mut children {
            if let Some(status) = c.try_wait()? {
                anyhow::bail!("{} worker exited ({status}) after {n} jobs", stack.name());
            }
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "{} workers did {n} of {jobs} jobs in 10 min",
            stack.name()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t.elapsed();
    let peak_rss_kib = children
        .iter()
        .map(|c| c.id().and_then(crate::poot::peak_rss_kib))
        .collect();
    for mut c in children {
        let _ = c.kill().await;
    }
    Ok(Drain {
        jobs,
        enqueue,
        elapsed,
        peak_rss_kib,
    })
}

/// Runs `redis-benchmark -t lpush,rpop -n N -q`; returns its output lines.
/// It pushes to and pops from the key `mylist`, which must not exist (the
/// pops empty it again).
fn redis_benchmark(n: usize) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(Settings::default().redis_url.expose_secret())?;
    let mut conn = client.get_connection()?;
    let exists: bool = redis::cmd("EXISTS").arg("mylist").query(&mut conn)?;
    anyhow::ensure!(
        !exists,
        "the key mylist exists: not running redis-benchmark over it"
    );
    let out = std::process::Command::new("redis-benchmark")
        .args(["-t", "lpush,rpop", "-n", &n.to_string(), "-q"])
        .output()
        .context("run redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split(['\n', '\r'])
        .filter(|l| l.contains("requests per second"))
        .map(|l| l.trim().to_string())
        .collect())
}

/// `bench queue-overhead [--jobs N] [--workers W] [--concurrency C] [--rounds R] [--stacks lucid,apalis]`.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let jobs = arg(args, "--jobs", 200_000usize);
    let workers = arg(args, "--workers", 2usize);
    let concurrency = arg(
        args,
        "--concurrency",
        Settings::default().worker_concurrency,
    );
    let rounds = arg(args, "--rounds", 2usize);
    let stacks: String = arg(args, "--stacks", "lucid,apalis".to_string());
    let stacks: Vec<Stack> = [Stack::Lucid, Stack::Apalis]
        .into_iter()
        .filter(|s| stacks.split(',').any(|n| n == s.name()))
        .collect();
    println!(
        "queue overhead: {jobs} no-op jobs, {workers} worker processes, concurrency {concurrency} (prefetch {}), {rounds} round(s)",
        concurrency.min(16)
    );
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for &stack in &stacks {
            let d = drain(stack, jobs, workers, concurrency).await?;
            println!(
                "  round {round} {:>6}: enqueue {:>8.2?} ({:>7.0} jobs/s), drain {:>8.2?} = {:>7.0} jobs/s, worker peak RSS {}",
                stack.name(),
                d.enqueue,
                jobs as f64 / d.enqueue.as_secs_f64(),
                d.elapsed,
                d.rate(),
                rss_list(&d.peak_rss_kib)
            );
            match stack {
                Stack::Lucid => ours.push(d.rate()),
                Stack::Apalis => bare.push(d.rate()),
            }
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (o, b) = (best(&ours), best(&bare));
    println!("  best lucid {o:.0} jobs/s, best bare apalis {b:.0} jobs/s");
    if o > 0.0 && b > 0.0 {
        println!("  ratio lucid/apalis: {:.2} (target >= 0.90)", o / b);
    }
    println!("  lucid >= 20,000 jobs/s: {}", o >= 20_000.0);
    match redis_benchmark(jobs) {
        Ok(lines) => {
            println!("  raw ceiling, redis-benchmark -t lpush,rpop -n {jobs} -q:");
            for l in lines {
                println!("    {l}");
            }
        }
        Err(e) => println!("  redis-benchmark failed: {e:#}"),
    }
    Ok(())
}

/// `a / b MiB` for peak RSS figures.
pub fn rss_list(kib: &[Option<u64>]) -> String {
    kib.iter()
        .map(|k| k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)))
        .collect::<Vec<_>>()
        .join(" / ")
        + " MiB"
}
