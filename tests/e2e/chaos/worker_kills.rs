//! Scenario 1: a random worker process is SIGKILLed every few seconds (and
//! a fresh one started in its place) while a 50,000-item PoOT batch and a
//! 1,000-payout batch run. Both finish; every item is recorded exactly once
//! and the ledger settles every payout exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{PrivateServer, assert_every_item_recorded_once, assert_no_dead_jobs, valid_items};
use crate::{
    helpers::{TestApp, WorkerProcess, spawn_app_with, test_settings},
    payouts_api::batch::{all_payouts, assert_ledger_matches, batch_body, submit, wait_batch},
};

/// Items of the PoOT batch and payouts of the payout batch.
const ITEMS: usize = 50_000;
const PAYOUTS: usize = 1_000;
/// Worker processes kept running.
const WORKERS: usize = 3;
/// Time between two kills.
const KILL_EVERY: Duration = Duration::from_secs(3);
/// Bound of the whole run, a liveness bound rather than a speed target
/// (both batches: 212–287 s on earlier days, 383–446 s on 2026-11-27, when
/// the same machine ran slower); nextest kills it at 660 s.
const DEADLINE: Duration = Duration::from_secs(600);

/// Whether a worker holds a running job of a queue.
async fn holds_jobs(app: &TestApp, worker: &str) -> bool {
    for queue in ["poot-validation", "payouts"] {
        let running = app.queue.running_jobs(queue).await.expect("running jobs");
        if running.iter().any(|(_, w)| w == worker) {
            return true;
        }
    }
    false
}

async fn poot_done(app: &TestApp, batch_id: &str) -> bool {
    let v = app
        .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
        .await;
    !matches!(v["status"].as_str(), Some("queued" | "running"))
}

async fn payouts_done(app: &TestApp, batch_id: &str) -> bool {
    let v = app
        .get_json(&format!("/api/v1/nodes/payouts/batch/{batch_id}"), 200)
        .await;
    matches!(
        v["status"].as_str(),
        Some("completed" | "completed_with_failures")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_a_random_worker_every_few_seconds_loses_and_duplicates_nothing_in_a_50000_item_batch_and_a_1000_payout_batch()
 {
    // A MongoDB of its own: the shared SecantusDB slows down as it
    // accumulates state (and other tests load it), which made this run take
    // anywhere from 250 s to over 420 s.
    let mongo = PrivateServer::secantus().await;
    let mut settings = test_settings();
    settings.mongodb_url = mongo.url().into();
    settings.batch_chunk_size = 250;
    settings.worker_concurrency = 4;
    settings.visibility_timeout_ms = 2_000;
    // A chunk may be on a killed worker several times; it must not run out
    // of attempts because of kills alone.
    settings.job_max_attempts = 20;
    settings.payouts.rail_delay_ms = 10;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..20).map(|i| format!("node_chaos_kill_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let prefix = app.settings.queue_prefix.clone();
    let mut spawned = 0usize;
    let mut spawn = |app: &TestApp| {
        spawned += 1;
        app.spawn_worker_process(&format!("{prefix}-w{spawned}"))
    };
    let mut workers: Vec<WorkerProcess> = (0..WORKERS).map(|_| spawn(&app)).collect();

    let started = Instant::now();
    let poot_batch = app
        .submit_batch(&json!({ "validations": valid_items(&nodes, ITEMS) }))
        .await;
    let payout_batch = "batch_chaos_kill";
    submit(&app, &batch_body(payout_batch, &nodes, PAYOUTS)).await;
    eprintln!("submitted both batches in {:?}", started.elapsed());

    // Kill a random worker every few seconds until both batches are done.
    let (mut kills, mut kills_mid_job) = (0u32, 0u32);
    loop {
        let (poot, pay) = (
            poot_done(&app, &poot_batch).await,
            payouts_done(&app, payout_batch).await,
        );
        if poot && pay {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "batches not done in {DEADLINE:?} (PoOT done: {poot}, payouts done: {pay}) after {kills} kills"
        );
        tokio::time::sleep(KILL_EVERY).await;
        let i = rand::random::<u32>() as usize % workers.len();
        if holds_jobs(&app, &workers[i].name).await {
            kills_mid_job += 1;
        }
        workers[i].kill9().await;
        kills += 1;
        workers[i] = spawn(&app);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{ITEMS} items and {PAYOUTS} payouts done in {elapsed:?} with {kills} SIGKILLs ({kills_mid_job} mid-job)"
    );
    assert!(
        kills_mid_job >= 1,
        "no kill hit a worker running a job: the test proved nothing"
    );

    let poot = app
        .get_json(&format!("/api/v1/batches/{poot_batch}"), 200)
        .await;
    assert_every_item_recorded_once(&app, &poot, ITEMS as u64).await;

    let view = wait_batch(&app, payout_batch, Duration::from_secs(10)).await;
    assert_eq!(view["total"], PAYOUTS as u64, "{view}");
    assert_eq!(view["counts"]["completed"], PAYOUTS as u64, "{view}");
    let payouts = all_payouts(&app, payout_batch).await;
    assert_eq!(payouts.len(), PAYOUTS, "payout documents");
    // Each payout has exactly reserve + settle, and the sums match the documents.
    assert_ledger_matches(&app, &payouts).await;
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM simulated_rail_transfers")
        .fetch_one(app.ledger().pool())
        .await
        .expect("count transfers");
    assert_eq!(transfers, PAYOUTS as i64, "the rail paid each payout once");
    assert_no_dead_jobs(&app, "poot-validation").await;
    assert_no_dead_jobs(&app, "payouts").await;
}
