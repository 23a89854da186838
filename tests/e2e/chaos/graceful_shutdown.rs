//! Scenario 6: a worker process gets SIGTERM while it runs jobs of a batch.
//! It stops taking jobs, finishes the ones it runs or gives them back
//! within its shutdown grace period, and exits 0; the batch completes with
//! exact counts, and none of its jobs had to wait for a lease to expire.

use std::time::{Duration, Instant};

use super::{ChaosBatch, sigterm};
use crate::helpers::{eventually, spawn_app_with, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_worker_finishes_or_returns_its_jobs_and_exits_0_within_the_grace_period() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 100;
    settings.worker_concurrency = 4;
    settings.shutdown_grace_secs = 10;
    // Long leases: a job left behind by the stopping worker would stall the
    // batch (and show as a second attempt) instead of being redelivered fast.
    settings.visibility_timeout_ms = 30_000;
    let app = spawn_app_with(settings, 0).await;
    let mut batch = ChaosBatch::submit(&app, "term", 4_000).await;
    let victim = batch.workers[0].name.clone();
    let in_flight: Vec<String> = eventually(
        Duration::from_secs(60),
        "the victim to run jobs",
        || async {
            let mine = app.jobs_running_on("poot-validation", &victim).await;
            (mine.len() >= 2).then_some(mine)
        },
    )
    .await;

    let grace = Duration::from_secs(app.settings.shutdown_grace_secs);
    let term = Instant::now();
    sigterm(batch.workers[0].child.id().expect("pid"));
    let status = tokio::time::timeout(
        grace + Duration::from_secs(5),
        batch.workers[0].child.wait(),
    )
    .await
    .unwrap_or_else(|_| panic!("the worker did not exit within {grace:?} + 5 s of SIGTERM"))
    .expect("wait for the worker");
    let took = term.elapsed();
    eprintln!("worker exited with {status} {took:?} after SIGTERM, running {in_flight:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took <= grace + Duration::from_secs(2), "exit took {took:?}");
    // Nothing is left leased to the stopped worker.
    let left = app.jobs_running_on("poot-validation", &victim).await;
    assert!(
        left.is_empty(),
        "jobs still leased to the stopped worker: {left:?}"
    );

    batch.workers.remove(0);
    batch
        .assert_completes_exactly_once(&app, Duration::from_secs(120), "only the victim stops")
        .await;
    // Each job it ran at SIGTERM finished there or went back to the queue
    // untouched: none needed a second attempt after a lost lease.
    for id in &in_flight {
        let job = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
}
