//! Scenario 3: MongoDB (a private SecantusDB) stops for 10 s mid-batch and
//! starts again on the same data. Chunk jobs wait or retry with backoff and
//! finish once it is back: nothing lost, nothing recorded twice.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{PrivateServer, assert_every_item_recorded_once, assert_no_dead_jobs, valid_items};
use crate::helpers::{eventually, spawn_app_with, test_settings};

/// How long MongoDB stays down.
const OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_for_10_s_mid_batch_delays_the_batch_but_loses_and_duplicates_nothing() {
    let mut mongo = PrivateServer::secantus().await;
    let mut settings = test_settings();
    settings.mongodb_url = mongo.url().into();
    settings.batch_chunk_size = 100;
    settings.worker_concurrency = 2;
    settings.visibility_timeout_ms = 2_000;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("node_chaos_mongo_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let prefix = app.settings.queue_prefix.clone();
    let mut workers: Vec<_> = (1..=2)
        .map(|i| app.spawn_worker_process(&format!("{prefix}-w{i}")))
        .collect();

    let total = 3_000u64;
    let batch_id = app
        .submit_batch(&json!({ "validations": valid_items(&nodes, total as usize) }))
        .await;
    let path = format!("/api/v1/batches/{batch_id}");
    eventually(
        Duration::from_secs(60),
        "the batch to be under way",
        || async {
            let v = app.get_json(&path, 200).await;
            let done = v["succeeded"].as_u64().unwrap_or(0);
            (done >= 200 && done < total / 2).then_some(())
        },
    )
    .await;

    let down = Instant::now();
    mongo.stop().await;
    // The outage itself: nothing to poll, MongoDB is down.
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    mongo.restart().await;
    eprintln!("MongoDB was down for {:?}", down.elapsed());

    let batch = app
        .wait_for_batch(&batch_id, Duration::from_secs(180))
        .await;
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("worker status").is_none(),
            "worker {} exited during the outage",
            w.name
        );
    }
    assert_every_item_recorded_once(&app, &batch, total).await;
    assert_no_dead_jobs(&app, "poot-validation").await;
    let counts = app.queue.counts("poot-validation").await.expect("counts");
    eprintln!("queue counts after the outage: {counts:?}");
}
