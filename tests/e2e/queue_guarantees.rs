//! The queue guarantees, each against real Redis: attempts and backoff,
//! dead letters and their requeue over the API, large backlogs, long jobs on
//! saturated workers, job state readable from any process, retention,
//! idempotent enqueue and wake-up latency of an idle queue.
//!
//! Workers are real apalis workers (`run_registered_worker`) on test queues
//! with handlers that record every attempt; each test has its own key prefix.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, FixedOffset};
use lucid_jobs::{
    config::Settings,
    handlers::JobContext,
    queue::{
        EnqueueOptions, JobState, JobStatus, NewJob, PermanentError, Queue, TransitionResult,
        job_error,
    },
    storage::Db,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, eventually, spawn_app_with, test_settings};

/// What a handler returns (apalis' `BoxDynError`).
type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

/// Kind of every test job.
const KIND: &str = "test.probe";

/// Payload of the test jobs: a key naming the job for the recorder and the
/// handler's behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    key: String,
}

/// Payload of the backlog test: the job's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    n: usize,
}

fn probe(key: &str, options: EnqueueOptions) -> NewJob {
    NewJob {
        kind: KIND.into(),
        payload: serde_json::to_string(&Probe { key: key.into() }).expect("payload"),
        options,
    }
}

fn ok() -> Result<(), BoxDynError> {
    Ok(())
}

fn fail(message: impl Into<String>) -> Result<(), BoxDynError> {
    Err(message.into().into())
}

/// The instant of every attempt, per job key.
#[derive(Debug, Default, Clone)]
struct Runs(Arc<Mutex<HashMap<String, Vec<Instant>>>>);

impl Runs {
    /// Records an attempt; returns how many attempts the key has had.
    fn record(&self, key: &str) -> usize {
        let mut runs = self.0.lock().expect("runs");
        let times = runs.entry(key.to_string()).or_default();
        times.push(Instant::now());
        times.len()
    }
    fn count(&self, key: &str) -> usize {
        self.times(key).len()
    }
    fn times(&self, key: &str) -> Vec<Instant> {
        self.0
            .lock()
            .expect("runs")
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
    fn total(&self) -> usize {
        self.0.lock().expect("runs").values().map(Vec::len).sum()
    }
}

/// A handler context of its own (own Redis and MongoDB connections), as a
/// separate worker process would have.
pub(crate) async fn job_context(settings: &Settings) -> JobContext {
    let db = Db::connect(
        settings.mongodb_url.expose_secret(),
        &settings.database_name,
    )
    .await
    .expect("connect MongoDB");
    let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue())
        .await
        .expect("connect Redis");
    let ledger = lucid_jobs::ledger::Ledger::connect_lazy(
        settings.postgres_url.expose_secret(),
        &settings.postgres_schema,
    )
    .expect("ledger pool");
    JobContext::new(db, queue, ledger, Arc::new(settings.clone()))
}

/// Workers of one test, each on its own thread with its own Tokio runtime
/// and its own Redis and MongoDB connections, as separate processes would
/// have. Dropping this stops them.
pub(crate) struct Workers {
    pub(crate) stop: CancellationToken,
    pub(crate) threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Workers {
    pub(crate) fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            threads: Vec::new(),
        }
    }

    /// Stops every worker, waits for them and asserts none of them failed.
    pub(crate) async fn shutdown(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let results = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .map_err(|_| anyhow::anyhow!("worker thread panicked"))?
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("join worker threads");
        for r in results {
            r.expect("worker failed");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs `run_registered_worker(ctx, name, queue, stop, handler)` on a thread
/// of its own. A macro, not a function: the handler's `Data<..>` argument
/// types come from apalis, which this crate cannot name. A thread, not
/// `tokio::spawn`: proving `Send` for a worker future holding a closure
/// handler trips a rustc limitation ("implementation of `From` is not
/// general enough"), and `block_on` needs no `Send`.
macro_rules! start_worker {
    ($workers:expr, $settings:expr, $name:expr, $queue:expr, $handler:expr) => {{
        let (settings, name, queue, stop): (Settings, String, String, CancellationToken) = (
            $settings.clone(),
            String::from($name),
            String::from($queue),
            $workers.stop.clone(),
        );
        let handler = $handler;
        let thread = std::thread::Builder::new()
            .name(format!("worker-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let ctx = job_context(&settings).await;
                    lucid_workers::run_registered_worker(ctx, &name, &queue, stop, handler).await
                })
            })
            .expect("spawn worker thread");
        $workers.threads.push(thread);
    }};
}

/// Polls the job's record until `pred` holds.
async fn wait_for_job(
    queue: &Queue,
    id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&JobState) -> bool,
) -> JobState {
    eventually(timeout, what, || async {
        let job = queue.job(id).await.expect("read job")?;
        pred(&job).then_some(job)
    })
    .await
}

/// Polls `GET /api/v1/jobs/{id}` until its status is `status`.
async fn wait_for_api_status(app: &TestApp, id: &str, status: &str, timeout: Duration) -> Value {
    eventually(
        timeout,
        &format!("job {id} to be {status} over the API"),
        || async {
            let job = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
            (job["status"] == status).then_some(job)
        },
    )
    .await
}

fn rfc3339(v: &Value, field: &str) -> DateTime<FixedOffset> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not set: {v}"));
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{field} = {s:?}: {e}"))
}

/// Scheduling noise allowed below a backoff's lower bound.
const TOLERANCE: Duration = Duration::from_millis(20);
/// Pick-up latency allowed above a backoff's upper bound (loaded 2-core CI).
const SLACK: Duration = Duration::from_millis(250);

/// Checks the gaps between attempts: the gap before retry `n` lies in
/// `[full/2, full]` with `full = base * 2^(n-1)` (equal jitter), give or take
/// `TOLERANCE` below and `SLACK` above; gaps never shrink, and strictly grow
/// over two retries. Returns the gaps.
fn assert_exponential_backoff(times: &[Instant], base: Duration) -> Vec<Duration> {
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let retry = i as u32 + 1;
        let full = base * 2u32.pow(retry - 1);
        assert!(
            *gap + TOLERANCE >= full / 2,
            "retry {retry} started {gap:?} after the previous attempt, sooner than the \
             minimum backoff {:?} (gaps {gaps:?})",
            full / 2
        );
        assert!(
            *gap <= full + SLACK,
            "retry {retry} started {gap:?} after the previous attempt, much later than the \
             maximum backoff {full:?} (gaps {gaps:?})"
        );
    }
    for w in gaps.windows(2) {
        assert!(w[1] + TOLERANCE >= w[0], "backoff shrank: {gaps:?}");
    }
    for w in gaps.windows(3) {
        assert!(
            w[2] > w[0],
            "backoff did not grow over two retries: {gaps:?}"
        );
    }
    gaps
}

// ---------------------------------------------------------------------------
// 2. Attempts, backoff, dead letters and their requeue.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_runs_max_attempts_times_with_growing_jittered_backoff_then_is_dead_and_the_api_requeues_it()
 {
    const QUEUE: &str = "test-flaky-dead";
    let mut settings = test_settings();
    settings.retry_backoff_base_ms = 200;
    settings.retry_backoff_max_ms = 10_000;
    settings.queue_poll_interval_ms = 10;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let healed = Arc::new(AtomicBool::new(false));
    let handler = {
        let (runs, healed) = (runs.clone(), healed.clone());
        move |p: Probe, _lease, _ctx| {
            let attempt = runs.record(&p.key);
            let healed = healed.load(Ordering::SeqCst);
            async move {
                if healed {
                    ok()
                } else {
                    fail(format!("flaky handler failed on run {attempt}"))
                }
            }
        }
    };
    let id = app
        .queue
        .enqueue(
            QUEUE,
            probe(
                "flaky",
                EnqueueOptions {
                    max_attempts: Some(3),
                    ..EnqueueOptions::default()
                },
            ),
        )
        .await
        .expect("enqueue");
    let mut workers = Workers::new();
    start_worker!(workers, settings, "flaky-worker", QUEUE, handler);

    let dead = wait_for_job(
        &app.queue,
        &id,
        Duration::from_secs(15),
        "the job to be dead",
        |j| j.status == JobStatus::Dead,
    )
    .await;
    assert_eq!(
        runs.count("flaky"),
        3,
        "the handler must run exactly max_attempts times"
    );
    assert_eq!(dead.attempts, 3, "{dead:?}");
    assert_eq!(dead.max_attempts, 3, "{dead:?}");
    assert_eq!(
        dead.last_error.as_deref(),
        Some("flaky handler failed on run 3"),
        "{dead:?}"
    );
    assert!(dead.finished_at.is_some(), "{dead:?}");
    let gaps = assert_exponential_backoff(&runs.times("flaky"), Duration::from_millis(200));
    println!("gaps between the 3 attempts: {gaps:?}");

    let (total, letters) = app.queue.dead_jobs(QUEUE, 0, 10).await.expect("dead jobs");
    assert_eq!(total, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, id);
    assert_eq!(letters[0].status, JobStatus::Dead);
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some("flaky handler failed on run 3")
    );
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(counts.dead, 1, "{counts:?}");
    assert_eq!(counts.retried, 2, "{counts:?}");
    assert_eq!(counts.succeeded, 0, "{counts:?}");
    assert_eq!(
        (counts.queued, counts.scheduled, counts.running),
        (0, 0, 0),
        "a dead job is in no other set: {counts:?}"
    );
    let over_api = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
    assert_eq!(over_api["status"], "dead", "{over_api}");
    assert_eq!(over_api["last_error"], "flaky handler failed on run 3");
    // This test process runs the worker, so its /metrics counts the attempts
    // (the queue is this test's own: the counts are exact under `cargo test`).
    let lines = [
        r#"lucid_jobs_started_total{queue="test-flaky-dead"} 3"#,
        r#"lucid_jobs_failed_total{queue="test-flaky-dead"} 3"#,
        r#"lucid_jobs_retried_total{queue="test-flaky-dead"} 2"#,
        r#"lucid_jobs_dead_total{queue="test-flaky-dead"} 1"#,
    ];
    eventually(
        Duration::from_secs(10),
        "the dead job's metrics",
        || async {
            let metrics = app.get("/metrics").await.text().await.ok()?;
            lines
                .iter()
                .all(|line| metrics.lines().any(|l| l == *line))
                .then_some(())
        },
    )
    .await;

    // The fault is fixed; the operator requeues the dead job over the API.
    healed.store(true, Ordering::SeqCst);
    let r = app.post(&format!("/api/v1/jobs/{id}/retry")).await;
    assert_eq!(r.status().as_u16(), 202, "retry a dead job");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["job_id"], id.as_str(), "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    let done = wait_for_job(
        &app.queue,
        &id,
        Duration::from_secs(10),
        "the requeued job to succeed",
        |j| j.status == JobStatus::Succeeded,
    )
    .await;
    assert_eq!(runs.count("flaky"), 4, "one more run after the requeue");
    assert_eq!(
        done.attempts, 1,
        "a requeued job starts with fresh attempts: {done:?}"
    );
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!((counts.succeeded, counts.dead), (1, 0), "{counts:?}");
    assert_eq!(app.queue.dead_jobs(QUEUE, 0, 10).await.expect("dead").0, 0);

    // Only dead jobs can be requeued: a succeeded job and a scheduled one are conflicts.
    let r = app.post(&format!("/api/v1/jobs/{id}/retry")).await;
    assert_eq!(r.status().as_u16(), 409, "retry a succeeded job");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "LUCID_ERR_4090", "{body}");
    assert_eq!(body["error"]["details"]["status"], "succeeded", "{body}");
    let parked = app
        .queue
        .enqueue(
            QUEUE,
            probe(
                "parked",
                EnqueueOptions {
                    delay_ms: 600_000,
                    ..EnqueueOptions::default()
                },
            ),
        )
        .await
        .expect("enqueue");
    let r = app.post(&format!("/api/v1/jobs/{parked}/retry")).await;
    assert_eq!(r.status().as_u16(), 409, "retry a scheduled job");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "LUCID_ERR_4090", "{body}");
    assert_eq!(body["error"]["details"]["status"], "scheduled", "{body}");
    assert_eq!(
        app.queue.job(&parked).await.expect("job").map(|j| j.status),
        Some(JobStatus::Scheduled),
        "a refused retry leaves the job alone"
    );

    // An unknown id is a 404.
    let r = app.post("/api/v1/jobs/no-such-job/retry").await;
    assert_eq!(r.status().as_u16(), 404, "retry an unknown job");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "LUCID_ERR_4040", "{body}");

    workers.shutdown().await;
    assert_eq!(runs.count("parked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_its_own_max_attempts_gets_the_default_from_settings() {
    const QUEUE: &str = "test-flaky";
    let mut settings = test_settings();
    settings.job_max_attempts = 4; // not the built-in default (5)
    settings.retry_backoff_base_ms = 200;
    settings.retry_backoff_max_ms = 10_000;
    settings.queue_poll_interval_ms = 10;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            let attempt = runs.record(&p.key);
            async move { fail(format!("always fails (run {attempt})")) }
        }
    };
    let id = app
        .queue
        .enqueue(QUEUE, probe("always-fails", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let queued = app.queue.job(&id).await.expect("job").expect("stored");
    assert_eq!(queued.max_attempts, 4, "{queued:?}");

    let mut workers = Workers::new();
    start_worker!(workers, settings, "default-attempts-worker", QUEUE, handler);
    let dead = wait_for_job(
        &app.queue,
        &id,
        Duration::from_secs(15),
        "the job to be dead",
        |j| j.status == JobStatus::Dead,
    )
    .await;
    assert_eq!(runs.count("always-fails"), 4);
    assert_eq!((dead.attempts, dead.max_attempts), (4, 4), "{dead:?}");
    assert_eq!(dead.last_error.as_deref(), Some("always fails (run 4)"));
    let gaps = assert_exponential_backoff(&runs.times("always-fails"), Duration::from_millis(200));
    println!("gaps between the 4 attempts: {gaps:?}");
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!((counts.dead, counts.retried), (1, 3), "{counts:?}");
    workers.shutdown().await;
    assert_eq!(runs.count("always-fails"), 4, "a dead job never runs again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_are_jittered_so_jobs_failing_together_do_not_retry_in_lockstep() {
    const QUEUE: &str = "test-flaky";
    const JOBS: usize = 20;
    let mut settings = test_settings();
    settings.retry_backoff_base_ms = 200;
    settings.retry_backoff_max_ms = 10_000;
    settings.queue_poll_interval_ms = 10;
    settings.worker_concurrency = JOBS;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            let attempt = runs.record(&p.key);
            async move {
                if attempt == 1 {
                    fail("first run fails")
                } else {
                    ok()
                }
            }
        }
    };
    let keys: Vec<String> = (0..JOBS).map(|i| format!("job-{i}")).collect();
    app.queue
        .enqueue_many(
            QUEUE,
            keys.iter()
                .map(|k| probe(k, EnqueueOptions::default()))
                .collect(),
        )
        .await
        .expect("enqueue");
    let mut workers = Workers::new();
    start_worker!(workers, settings, "jitter-worker", QUEUE, handler);
    eventually(Duration::from_secs(15), "every job to succeed", || async {
        let c = app.queue.counts(QUEUE).await.expect("counts");
        (c.succeeded == JOBS as u64).then_some(())
    })
    .await;
    workers.shutdown().await;

    let mut gaps: Vec<Duration> = keys
        .iter()
        .map(|k| {
            let t = runs.times(k);
            assert_eq!(t.len(), 2, "{k} must run twice");
            t[1] - t[0]
        })
        .collect();
    gaps.sort();
    for gap in &gaps {
        assert!(
            *gap + TOLERANCE >= Duration::from_millis(100)
                && *gap <= Duration::from_millis(200) + SLACK,
            "first retry after {gap:?}, outside [100 ms, 200 ms]: {gaps:?}"
        );
    }
    // Without jitter the 20 retries, due at the same instant, would start
    // within a poll interval or two of one another.
    let spread = gaps[JOBS - 1] - gaps[0];
    println!("first-retry delays of {JOBS} jobs failing together: {gaps:?} (spread {spread:?})");
    assert!(
        spread >= Duration::from_millis(40),
        "retries are not jittered: delays {gaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_dead_letters_the_job_after_one_attempt() {
    const QUEUE: &str = "test-permanent";
    let mut settings = test_settings();
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            runs.record(&p.key);
            async move {
                match p.key.as_str() {
                    // A handler returning the error boxed, as is...
                    "boxed" => {
                        Err::<(), BoxDynError>(Box::new(PermanentError("malformed input".into())))
                    }
                    // ...or through `job_error`, as the platform's handlers do.
                    _ => Err::<(), BoxDynError>(job_error(
                        anyhow::Error::new(PermanentError("unknown node".into()))
                            .context("validating chunk"),
                    )),
                }
            }
        }
    };
    let many = EnqueueOptions {
        max_attempts: Some(5),
        ..EnqueueOptions::default()
    };
    let boxed = app
        .queue
        .enqueue(QUEUE, probe("boxed", many.clone()))
        .await
        .expect("enqueue");
    let via_anyhow = app
        .queue
        .enqueue(QUEUE, probe("anyhow", many))
        .await
        .expect("enqueue");
    let mut workers = Workers::new();
    start_worker!(workers, settings, "permanent-worker", QUEUE, handler);

    for (id, key, error) in [
        (&boxed, "boxed", "permanent failure: malformed input"),
        (&via_anyhow, "anyhow", "permanent failure: unknown node"),
    ] {
        let dead = wait_for_job(
            &app.queue,
            id,
            Duration::from_secs(10),
            "the job to be dead",
            |j| j.status == JobStatus::Dead,
        )
        .await;
        assert_eq!((dead.attempts, dead.max_attempts), (1, 5), "{dead:?}");
        assert_eq!(dead.last_error.as_deref(), Some(error), "{dead:?}");
        assert_eq!(runs.count(key), 1, "{key}");
    }
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(
        (counts.dead, counts.retried, counts.scheduled),
        (2, 0, 0),
        "{counts:?}"
    );
    workers.shutdown().await;
    assert_eq!(runs.total(), 2, "a permanently failed job never runs again");
}

// ---------------------------------------------------------------------------
// 3. A large backlog drains.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_200_000_jobs_drains_on_two_workers_running_each_job_exactly_once() {
    const QUEUE: &str = "test-backlog";
    const JOBS: usize = 200_000;
    // `enqueue_many` sends all its jobs in one pipelined round trip, and the
    // queue's Redis connection gives up on a reply after 500 ms (the redis
    // crate's default response timeout): 10,000 jobs per call take ~330 ms on
    // an idle 2-core machine and time out under load, so 2,000 per call.
    const BATCH: usize = 2_000;
    let mut settings = test_settings();
    settings.worker_concurrency = 32;
    let app = spawn_app_with(settings.clone(), 0).await;

    let started = Instant::now();
    let mut slowest_call = Duration::ZERO;
    for batch in 0..JOBS / BATCH {
        let jobs = (batch * BATCH..(batch + 1) * BATCH)
            .map(|n| NewJob {
                kind: "test.tick".into(),
                payload: serde_json::to_string(&Tick { n }).expect("payload"),
                options: EnqueueOptions::default(),
            })
            .collect();
        let call = Instant::now();
        let ids = app.queue.enqueue_many(QUEUE, jobs).await.expect("enqueue");
        slowest_call = slowest_call.max(call.elapsed());
        assert_eq!(ids.len(), BATCH);
    }
    let enqueued_in = started.elapsed();
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(counts.queued, JOBS as u64, "{counts:?}");

    let handled = Arc::new(AtomicU64::new(0));
    let per_job: Arc<Vec<AtomicU32>> = Arc::new((0..JOBS).map(|_| AtomicU32::new(0)).collect());
    let handler = {
        let (handled, per_job) = (handled.clone(), per_job.clone());
        move |t: Tick, _lease, _ctx| {
            handled.fetch_add(1, Ordering::Relaxed);
            per_job[t.n].fetch_add(1, Ordering::Relaxed);
            async { ok() }
        }
    };
    let mut workers = Workers::new();
    let drain = Instant::now();
    for name in ["backlog-a", "backlog-b"] {
        // Each worker with its own connections, as two processes would have.
        start_worker!(workers, settings, name, QUEUE, handler.clone());
    }
    let last = eventually(Duration::from_secs(300), "the backlog to drain", || async {
        let c = app.queue.counts(QUEUE).await.expect("counts");
        let done = c.succeeded == JOBS as u64
            && c.queued == 0
            && c.running == 0
            && handled.load(Ordering::Relaxed) == JOBS as u64;
        assert_eq!(c.dead, 0, "no job may die: {c:?}");
        done.then_some(c)
    })
    .await;
    let drained_in = drain.elapsed();
    workers.shutdown().await;
    println!(
        "{JOBS} jobs: enqueued in {enqueued_in:?} ({BATCH} per call, slowest call \
         {slowest_call:?}), drained by 2 workers (concurrency 32) in \
         {drained_in:?} ({:.0} jobs/s)",
        JOBS as f64 / drained_in.as_secs_f64()
    );

    assert_eq!(last.dead, 0, "{last:?}");
    assert_eq!(last.scheduled, 0, "{last:?}");
    assert_eq!(last.retried, 0, "no attempt failed: {last:?}");
    assert_eq!(
        handled.load(Ordering::Relaxed),
        JOBS as u64,
        "no redelivery"
    );
    let not_once: Vec<(usize, u32)> = per_job
        .iter()
        .enumerate()
        .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
        .filter(|&(_, c)| c != 1)
        .take(10)
        .collect();
    assert!(
        not_once.is_empty(),
        "jobs not run exactly once (index, runs): {not_once:?}"
    );
    let after = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(after.succeeded, JOBS as u64, "{after:?}");
}

// ---------------------------------------------------------------------------
// 4. Long jobs on a saturated worker keep their leases.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_on_a_saturated_worker_is_not_run_twice() {
    const QUEUE: &str = "test-long";
    const LONG: Duration = Duration::from_millis(2_500);
    let mut settings = test_settings();
    settings.visibility_timeout_ms = 600;
    settings.worker_concurrency = 2;
    settings.queue_poll_interval_ms = 50;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            runs.record(&p.key);
            async move {
                if p.key.starts_with("long") {
                    tokio::time::sleep(LONG).await;
                }
                ok()
            }
        }
    };
    let mut workers = Workers::new();
    start_worker!(workers, settings, "busy", QUEUE, handler.clone());
    let long: Vec<String> = app
        .queue
        .enqueue_many(
            QUEUE,
            vec![
                probe("long-1", EnqueueOptions::default()),
                probe("long-2", EnqueueOptions::default()),
            ],
        )
        .await
        .expect("enqueue");

    // The busy worker runs both: every concurrency slot is taken.
    eventually(
        Duration::from_secs(5),
        "the busy worker to run both long jobs",
        || async {
            let running = app.queue.running_jobs(QUEUE).await.expect("running");
            let both = running.len() == 2
                && running.iter().all(|(_, w)| w == "busy")
                && runs.count("long-1") == 1
                && runs.count("long-2") == 1;
            both.then_some(())
        },
    )
    .await;
    let long_started = Instant::now();

    // An idle worker polls the same queue every 50 ms (and reaps expired leases on every poll).
    start_worker!(workers, settings, "idle", QUEUE, handler);
    // It is live: a short job enqueued now runs there, the busy worker has no free slot.
    let canary = app
        .queue
        .enqueue(QUEUE, probe("canary", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let canary = wait_for_job(
        &app.queue,
        &canary,
        Duration::from_secs(5),
        "the canary to run",
        |j| j.status == JobStatus::Succeeded,
    )
    .await;
    assert_eq!(canary.worker.as_deref(), Some("idle"), "{canary:?}");

    for id in &long {
        let done = wait_for_job(
            &app.queue,
            id,
            Duration::from_secs(10),
            "a long job to finish",
            |j| j.status == JobStatus::Succeeded,
        )
        .await;
        assert_eq!(done.attempts, 1, "the long job was redelivered: {done:?}");
        assert_eq!(done.worker.as_deref(), Some("busy"), "{done:?}");
        assert_eq!(done.last_error, None, "its lease never expired: {done:?}");
    }
    assert!(
        long_started.elapsed() + Duration::from_millis(100) >= LONG,
        "the jobs ran over 4x the visibility timeout"
    );
    workers.shutdown().await;
    assert_eq!(runs.count("long-1"), 1, "long-1 ran twice");
    assert_eq!(runs.count("long-2"), 1, "long-2 ran twice");
    assert_eq!(runs.count("canary"), 1);
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(
        (counts.succeeded, counts.retried, counts.dead),
        (3, 0, 0),
        "{counts:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Job state from any process, and retention.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_state_is_readable_over_the_api_through_its_whole_lifecycle() {
    const QUEUE: &str = "test-state";
    const WORKER: &str = "state-worker";
    let mut settings = test_settings();
    // A failed attempt waits 5-10 s for its retry: long enough to watch it `retrying`.
    settings.retry_backoff_base_ms = 10_000;
    settings.retry_backoff_max_ms = 20_000;
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs = Runs::default();
    let release = Arc::new(Notify::new());
    let handler = {
        let (runs, release) = (runs.clone(), release.clone());
        move |p: Probe, _lease, _ctx| {
            runs.record(&p.key);
            let release = release.clone();
            async move {
                match p.key.as_str() {
                    "blocking" => {
                        release.notified().await;
                        ok()
                    }
                    "failing" => fail("upstream returned 503"),
                    _ => ok(),
                }
            }
        }
    };

    // Queued: no worker runs yet.
    let id = app
        .queue
        .enqueue(QUEUE, probe("blocking", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let path = format!("/api/v1/jobs/{id}");
    let queued = app.get_json(&path, 200).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["job_id"], id.as_str(), "{queued}");
    assert_eq!(queued["queue"], QUEUE, "{queued}");
    assert_eq!(queued["kind"], KIND, "{queued}");
    assert_eq!(queued["attempts"], 0, "{queued}");
    assert_eq!(
        queued["max_attempts"], settings.job_max_attempts,
        "{queued}"
    );
    assert_eq!(queued["priority"], "normal", "{queued}");
    let created = rfc3339(&queued, "created_at");
    for unset in ["started_at", "finished_at", "worker", "last_error"] {
        assert!(
            queued[unset].is_null(),
            "{unset} set on a queued job: {queued}"
        );
    }

    // Running: the handler is held.
    let mut workers = Workers::new();
    start_worker!(workers, settings, WORKER, QUEUE, handler);
    let running = wait_for_api_status(&app, &id, "running", Duration::from_secs(5)).await;
    assert_eq!(running["attempts"], 1, "{running}");
    assert_eq!(running["worker"], WORKER, "{running}");
    let started = rfc3339(&running, "started_at");
    assert!(created <= started, "{running}");
    assert!(running["finished_at"].is_null(), "{running}");
    assert_eq!(runs.count("blocking"), 1);
    assert_eq!(
        app.queue.cancel(&id).await.expect("cancel"),
        TransitionResult::WrongState(JobStatus::Running),
        "a running job cannot be cancelled"
    );
    assert_eq!(app.get_json(&path, 200).await["status"], "running");

    // Succeeded.
    release.notify_one();
    let succeeded = wait_for_api_status(&app, &id, "succeeded", Duration::from_secs(5)).await;
    assert_eq!(succeeded["attempts"], 1, "{succeeded}");
    assert_eq!(succeeded["worker"], WORKER, "{succeeded}");
    assert!(succeeded["last_error"].is_null(), "{succeeded}");
    assert_eq!(rfc3339(&succeeded, "created_at"), created);
    assert_eq!(rfc3339(&succeeded, "started_at"), started);
    assert!(started <= rfc3339(&succeeded, "finished_at"), "{succeeded}");
    assert_eq!(
        app.queue.cancel(&id).await.expect("cancel"),
        TransitionResult::WrongState(JobStatus::Succeeded)
    );

    // Retrying: a failed attempt waiting for its backoff shows the error.
    let failing = app
        .queue
        .enqueue(
            QUEUE,
            probe(
                "failing",
                EnqueueOptions {
                    max_attempts: Some(3),
                    ..EnqueueOptions::default()
                },
            ),
        )
        .await
        .expect("enqueue");
    let retrying = wait_for_api_status(&app, &failing, "retrying", Duration::from_secs(5)).await;
    assert_eq!(
        retrying["last_error"], "upstream returned 503",
        "{retrying}"
    );
    assert_eq!(retrying["attempts"], 1, "{retrying}");
    assert_eq!(retrying["worker"], WORKER, "{retrying}");
    assert!(retrying["finished_at"].is_null(), "{retrying}");
    let due = rfc3339(&retrying, "run_at");
    assert!(due > rfc3339(&retrying, "started_at"), "{retrying}");
    // A job waiting for its retry can still be cancelled.
    assert_eq!(
        app.queue.cancel(&failing).await.expect("cancel"),
        TransitionResult::Done
    );
    let cancelled = app.get_json(&format!("/api/v1/jobs/{failing}"), 200).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // Scheduled, then cancelled before it ever ran.
    let delayed = app
        .queue
        .enqueue(
            QUEUE,
            probe(
                "delayed",
                EnqueueOptions {
                    delay_ms: 60_000,
                    ..EnqueueOptions::default()
                },
            ),
        )
        .await
        .expect("enqueue");
    let scheduled = app.get_json(&format!("/api/v1/jobs/{delayed}"), 200).await;
    assert_eq!(scheduled["status"], "scheduled", "{scheduled}");
    let delay = rfc3339(&scheduled, "run_at") - rfc3339(&scheduled, "created_at");
    assert_eq!(delay.num_milliseconds(), 60_000, "{scheduled}");
    assert_eq!(
        app.queue.cancel(&delayed).await.expect("cancel"),
        TransitionResult::Done
    );
    let cancelled = app.get_json(&format!("/api/v1/jobs/{delayed}"), 200).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["attempts"], 0, "{cancelled}");
    rfc3339(&cancelled, "finished_at");
    // Cancelling again changes nothing (the queue answers `Done` for an
    // already cancelled job: the CANCEL script cannot tell the two apart).
    let again = app.queue.cancel(&delayed).await.expect("cancel");
    assert!(
        matches!(
            again,
            TransitionResult::Done | TransitionResult::WrongState(JobStatus::Cancelled)
        ),
        "{again:?}"
    );
    let still = app.get_json(&format!("/api/v1/jobs/{delayed}"), 200).await;
    assert_eq!(still["status"], "cancelled", "{still}");
    assert_eq!(still["finished_at"], cancelled["finished_at"], "{still}");
    assert_eq!(
        app.queue.cancel("no-such-job").await.expect("cancel"),
        TransitionResult::NotFound
    );
    let unknown = app.get("/api/v1/jobs/no-such-job").await;
    assert_eq!(unknown.status().as_u16(), 404);

    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(
        (
            counts.queued,
            counts.scheduled,
            counts.running,
            counts.succeeded
        ),
        (0, 0, 0, 1),
        "cancelled jobs left every set: {counts:?}"
    );
    workers.shutdown().await;
    assert_eq!(runs.count("delayed"), 0, "a cancelled job never runs");
    assert_eq!(runs.count("failing"), 1, "a cancelled retry never runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_records_expire_after_the_retention_period() {
    const QUEUE: &str = "test-retention";
    let mut settings = test_settings();
    settings.job_retention_secs = 1;
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;
    let redis = redis::Client::open(settings.redis_url.expose_secret())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect Redis");
    let pttl = |id: String| {
        let mut redis = redis.clone();
        let key = format!("{}:job:{id}", settings.queue_prefix);
        async move {
            redis::cmd("PTTL")
                .arg(&key)
                .query_async::<i64>(&mut redis)
                .await
                .expect("PTTL")
        }
    };

    let handler = move |p: Probe, _lease, _ctx| async move {
        match p.key.as_str() {
            "dies" => Err::<(), BoxDynError>(Box::new(PermanentError("bad".into()))),
            _ => ok(),
        }
    };
    let opts = EnqueueOptions::default();
    let succeeds = app
        .queue
        .enqueue(QUEUE, probe("succeeds", opts.clone()))
        .await
        .expect("enqueue");
    let dies = app
        .queue
        .enqueue(QUEUE, probe("dies", opts.clone()))
        .await
        .expect("enqueue");
    let cancelled = app
        .queue
        .enqueue(
            QUEUE,
            probe(
                "cancelled",
                EnqueueOptions {
                    delay_ms: 60_000,
                    ..opts
                },
            ),
        )
        .await
        .expect("enqueue");
    for id in [&succeeds, &dies, &cancelled] {
        assert_eq!(
            pttl(id.clone()).await,
            -1,
            "an unfinished job never expires"
        );
    }

    let mut workers = Workers::new();
    start_worker!(workers, settings, "retention-worker", QUEUE, handler);
    for (id, status) in [(&succeeds, JobStatus::Succeeded), (&dies, JobStatus::Dead)] {
        wait_for_job(
            &app.queue,
            id,
            Duration::from_secs(5),
            "the job to finish",
            |j| j.status == status,
        )
        .await;
        let ttl = pttl(id.clone()).await;
        assert!(
            ttl > 0 && ttl <= 1_000,
            "a {status:?} record must expire within the 1 s retention; PTTL = {ttl}"
        );
    }
    assert_eq!(
        app.queue.cancel(&cancelled).await.expect("cancel"),
        TransitionResult::Done
    );
    let ttl = pttl(cancelled.clone()).await;
    assert!(ttl > 0 && ttl <= 1_000, "cancelled record: PTTL = {ttl}");

    for id in [&succeeds, &dies, &cancelled] {
        eventually(Duration::from_secs(5), "the record to expire", || async {
            app.queue
                .job(id)
                .await
                .expect("job")
                .is_none()
                .then_some(())
        })
        .await;
    }
    let gone = app.get(&format!("/api/v1/jobs/{succeeds}")).await;
    assert_eq!(gone.status().as_u16(), 404, "an expired job is not found");
    let (_, letters) = app.queue.dead_jobs(QUEUE, 0, 10).await.expect("dead jobs");
    assert!(
        letters.is_empty(),
        "expired dead letters are not listed: {letters:?}"
    );
    workers.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Idempotent enqueue.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueueing_the_same_job_id_twice_stores_and_runs_the_job_once() {
    const QUEUE: &str = "test-idempotent";
    let mut settings = test_settings();
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;
    let with_id = |id: &str| EnqueueOptions {
        job_id: Some(id.into()),
        ..EnqueueOptions::default()
    };

    // Twice in two calls (the second with another payload), twice in one call.
    let first = app
        .queue
        .enqueue(QUEUE, probe("first", with_id("order-42")))
        .await
        .expect("enqueue");
    let second = app
        .queue
        .enqueue(QUEUE, probe("second", with_id("order-42")))
        .await
        .expect("enqueue");
    assert_eq!((first.as_str(), second.as_str()), ("order-42", "order-42"));
    let ids = app
        .queue
        .enqueue_many(
            QUEUE,
            vec![
                probe("batched", with_id("chunk-7")),
                probe("batched-again", with_id("chunk-7")),
            ],
        )
        .await
        .expect("enqueue");
    assert_eq!(ids, ["chunk-7", "chunk-7"]);
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(counts.queued, 2, "one job per id: {counts:?}");

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            runs.record(&p.key);
            async { ok() }
        }
    };
    let mut workers = Workers::new();
    start_worker!(workers, settings, "idempotent-worker", QUEUE, handler);
    for id in ["order-42", "chunk-7"] {
        let done = wait_for_job(
            &app.queue,
            id,
            Duration::from_secs(5),
            "the job to succeed",
            |j| j.status == JobStatus::Succeeded,
        )
        .await;
        assert_eq!(done.attempts, 1, "{done:?}");
    }

    // Enqueueing it again once it ran (its record is retained) changes nothing.
    let again = app
        .queue
        .enqueue(QUEUE, probe("third", with_id("order-42")))
        .await
        .expect("enqueue");
    assert_eq!(again, "order-42");
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(counts.queued, 0, "nothing was requeued: {counts:?}");
    let kept = app.queue.job("order-42").await.expect("job").expect("kept");
    assert_eq!(
        (kept.status, kept.attempts),
        (JobStatus::Succeeded, 1),
        "{kept:?}"
    );
    // A job enqueued after it (FIFO) has run: a duplicate would have run before it.
    let sentinel = app
        .queue
        .enqueue(QUEUE, probe("sentinel", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    wait_for_job(
        &app.queue,
        &sentinel,
        Duration::from_secs(5),
        "the sentinel to run",
        |j| j.status == JobStatus::Succeeded,
    )
    .await;
    workers.shutdown().await;

    assert_eq!(
        runs.count("first"),
        1,
        "the first enqueue's payload runs once"
    );
    assert_eq!(runs.count("batched"), 1);
    for dup in ["second", "batched-again", "third"] {
        assert_eq!(runs.count(dup), 0, "duplicate {dup} ran");
    }
    assert_eq!(runs.total(), 3, "order-42, chunk-7 and the sentinel");
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(counts.succeeded, 3, "{counts:?}");
}

// ---------------------------------------------------------------------------
// 7. Wake-up latency of an idle queue.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_queue_starts_a_new_job_within_50ms_p99() {
    const QUEUE: &str = "test-idle";
    const SAMPLES: usize = 50;
    let mut settings = test_settings();
    // Polling alone would take up to 10 s: only the pub/sub wake-up can be fast.
    settings.queue_poll_interval_ms = 10_000;
    let app = spawn_app_with(settings.clone(), 0).await;

    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let handler = move |p: Probe, _lease, _ctx| {
        let _ = started_tx.send((p.key, Instant::now()));
        async { ok() }
    };
    let mut workers = Workers::new();
    start_worker!(workers, settings, "idle-worker", QUEUE, handler);

    // The worker is up and running jobs...
    app.queue
        .enqueue(QUEUE, probe("warm-up", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let (key, _) = tokio::time::timeout(Duration::from_secs(15), started_rx.recv())
        .await
        .expect("the warm-up job to start")
        .expect("channel");
    assert_eq!(key, "warm-up");
    // ...then the queue stays idle for a minute.
    tokio::time::sleep(Duration::from_secs(61)).await;

    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let key = format!("job-{i}");
        let pushed = Instant::now();
        app.queue
            .enqueue(QUEUE, probe(&key, EnqueueOptions::default()))
            .await
            .expect("enqueue");
        let (started_key, started) =
            tokio::time::timeout(Duration::from_secs(15), started_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("job {i} did not start within 15 s"))
                .expect("channel");
        assert_eq!(started_key, key);
        latencies.push(started - pushed);
    }
    workers.shutdown().await;

    latencies.sort();
    let p50 = latencies[SAMPLES / 2 - 1];
    let p99 = latencies[(SAMPLES * 99).div_ceil(100) - 1]; // the 50th of 50
    println!(
        "push -> start after a 61 s idle, {SAMPLES} jobs: p50 {p50:?}, p99 {p99:?}, min {:?}",
        latencies[0]
    );
    assert!(
        p99 <= Duration::from_millis(50),
        "p99 push->start latency {p99:?} over 50 ms (sorted: {latencies:?})"
    );
}

// ---------------------------------------------------------------------------
// Known bugs of the queue, kept as ignored tests until they are fixed
// (run them with `cargo nextest run -p lucid-e2e --run-ignored all queue_guarantees`).
// ---------------------------------------------------------------------------

/// `RETRY_DEAD` (jobs/src/queue/scripts.rs) answers a job's current status
/// when it is not dead, and `Queue::retry_dead` maps the answer `queued` to
/// `TransitionResult::Done` (client.rs, `transition`): a job that is merely
/// queued is reported as requeued, and the API answers 202 instead of 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_queued_job_over_the_api_is_a_conflict() {
    const QUEUE: &str = "test-flaky";
    let settings = test_settings();
    let app = spawn_app_with(settings.clone(), 0).await;
    let id = app
        .queue
        .enqueue(QUEUE, probe("waiting", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let r = app.post(&format!("/api/v1/jobs/{id}/retry")).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 409, "retry a queued job: {body}");
    assert_eq!(body["error"]["code"], "LUCID_ERR_4090", "{body}");
    assert_eq!(body["error"]["details"]["status"], "queued", "{body}");
}

/// `LeaseSet` (jobs/src/queue/lease.rs) is keyed by job id alone and
/// `remove` ignores the token: when a job whose lease was lost is fetched
/// again by the same worker process while its old attempt still runs, the
/// old attempt's acknowledgement (backend.rs, `AckLayer::record`) or the
/// keeper's "lease lost" path removes the *new* lease, which is then never
/// renewed and expires: the job runs a third time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_ending_does_not_drop_the_lease_of_the_jobs_new_attempt() {
    const QUEUE: &str = "test-lease";
    let mut settings = test_settings();
    settings.visibility_timeout_ms = 600;
    settings.worker_concurrency = 2;
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;
    let redis = redis::Client::open(settings.redis_url.expose_secret())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect Redis");

    let runs = Runs::default();
    let handler = {
        let runs = runs.clone();
        move |p: Probe, _lease, _ctx| {
            let run = runs.record(&p.key);
            async move {
                match run {
                    1 => tokio::time::sleep(Duration::from_millis(1_000)).await,
                    2 => tokio::time::sleep(Duration::from_millis(2_500)).await,
                    _ => {}
                }
                ok()
            }
        }
    };
    let id = app
        .queue
        .enqueue(QUEUE, probe("job", EnqueueOptions::default()))
        .await
        .expect("enqueue");
    let mut workers = Workers::new();
    start_worker!(workers, settings, "only-worker", QUEUE, handler);
    eventually(
        Duration::from_secs(5),
        "the first attempt to start",
        || async { (runs.count("job") == 1).then_some(()) },
    )
    .await;

    // The first attempt's lease is lost (as after a renewal stalled for longer
    // than the visibility timeout): the same worker, which has a free slot,
    // fetches the job again while the first attempt still runs.
    let inflight = format!("{}:q:{QUEUE}:inflight", settings.queue_prefix);
    eventually(
        Duration::from_secs(5),
        "the job to be redelivered",
        || async {
            if runs.count("job") < 2 {
                let _: i64 = redis::cmd("ZADD")
                    .arg(&inflight)
                    .arg("XX")
                    .arg(0)
                    .arg(&id)
                    .query_async(&mut redis.clone())
                    .await
                    .expect("ZADD");
            }
            (runs.count("job") >= 2).then_some(())
        },
    )
    .await;
    let redelivered = Instant::now();
    assert_eq!(runs.count("job"), 2);

    // The second attempt's lease must keep being renewed after the first
    // attempt ends (about 1 s in): the job runs exactly twice.
    let done = wait_for_job(
        &app.queue,
        &id,
        Duration::from_secs(10),
        "the job to succeed",
        |j| j.status == JobStatus::Succeeded,
    )
    .await;
    assert_eq!(
        runs.count("job"),
        2,
        "the second attempt's lease was dropped and the job ran again: {done:?}"
    );
    assert_eq!(done.attempts, 2, "{done:?}");
    assert!(
        redelivered.elapsed() >= Duration::from_millis(2_000),
        "the job succeeded before its second attempt ended"
    );
    workers.shutdown().await;
    assert_eq!(runs.count("job"), 2, "{done:?}");
}
