//! Scenario 5: a poison job — its handler panics on every attempt. The
//! worker survives (it goes on running other jobs, and stops cleanly), and
//! the job reaches the dead letters after its max attempts, with the panic
//! as its last error. The handler runs on the real worker stack
//! (`run_registered_worker`: apalis, the Redis backend, the ack layer).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use lucid_jobs::{
    config::Settings,
    queue::{EnqueueOptions, JobStatus, NewJob},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{eventually, spawn_app_with, test_settings},
    queue_guarantees::{Workers, job_context},
};

const QUEUE: &str = "test-poison";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    key: String,
}

fn task(key: &str, max_attempts: Option<u32>) -> NewJob {
    NewJob {
        kind: "test.poison".into(),
        payload: serde_json::to_string(&Task { key: key.into() }).expect("payload"),
        options: EnqueueOptions {
            max_attempts,
            ..EnqueueOptions::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_handler_panics_is_dead_after_max_attempts_and_the_worker_keeps_running() {
    let mut settings = test_settings();
    settings.retry_backoff_base_ms = 50;
    settings.retry_backoff_max_ms = 200;
    settings.queue_poll_interval_ms = 20;
    let app = spawn_app_with(settings.clone(), 0).await;

    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let handler = {
        let runs = runs.clone();
        move |t: Task, _lease, _ctx| {
            *runs.lock().expect("runs").entry(t.key.clone()).or_default() += 1;
            async move {
                if t.key == "poison" {
                    panic!("poison job {} panics", t.key);
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            }
        }
    };
    let mut workers = Workers::new();
    start_worker!(workers, settings, "poison-worker", QUEUE, handler);

    let poison = app
        .queue
        .enqueue(QUEUE, task("poison", Some(3)))
        .await
        .expect("enqueue poison");
    let dead = eventually(
        Duration::from_secs(30),
        "the poison job to be dead",
        || async {
            let job = app.queue.job(&poison).await.expect("read job")?;
            (job.status == JobStatus::Dead).then_some(job)
        },
    )
    .await;
    assert_eq!((dead.attempts, dead.max_attempts), (3, 3), "{dead:?}");
    let error = dead.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("handler panicked: poison job poison panics"),
        "the last error names the panic: {error:?}"
    );
    assert_eq!(
        runs.lock().expect("runs")["poison"],
        3,
        "ran max_attempts times"
    );
    let (total, letters) = app.queue.dead_jobs(QUEUE, 0, 10).await.expect("dead");
    assert_eq!(total, 1);
    assert_eq!(letters[0].job_id, poison);

    // The same worker still runs jobs, and holds no lease of the poison job.
    let healthy: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                app.queue
                    .enqueue(QUEUE, task(&format!("healthy-{i}"), None))
                    .await
                    .expect("enqueue"),
            );
        }
        ids
    };
    for id in &healthy {
        eventually(
            Duration::from_secs(15),
            "a healthy job to succeed",
            || async {
                let job = app.queue.job(id).await.expect("read job")?;
                (job.status == JobStatus::Succeeded).then_some(())
            },
        )
        .await;
    }
    let counts = app.queue.counts(QUEUE).await.expect("counts");
    assert_eq!(
        (counts.dead, counts.succeeded, counts.running, counts.queued),
        (1, 5, 0, 0),
        "{counts:?}"
    );
    let over_api = app.get_json(&format!("/api/v1/jobs/{poison}"), 200).await;
    assert_eq!(over_api["status"], "dead", "{over_api}");
    // The worker stops cleanly: it did not die with the panics.
    workers.shutdown().await;
    assert_eq!(
        runs.lock().expect("runs")["poison"],
        3,
        "a dead job never runs again"
    );
}
