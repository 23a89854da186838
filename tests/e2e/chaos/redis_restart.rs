//! Scenario 2: Redis (a private `redis-server` with AOF) restarts mid-batch.
//! The API and the worker processes reconnect on their own; no job is lost.
//! While Redis is down a batch submission fails fast with 503 and a
//! `LUCID_ERR_` code instead of hanging.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{PrivateServer, assert_every_item_recorded_once, assert_no_dead_jobs, valid_items};
use crate::helpers::{eventually, spawn_app_with, test_settings};

/// Longest a submission may take to fail while Redis is down.
const FAIL_FAST: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_batch_loses_no_job_and_submissions_fail_fast_with_503_while_it_is_down()
 {
    let mut redis = PrivateServer::redis().await;
    let mut settings = test_settings();
    settings.redis_url = redis.url().into();
    settings.batch_chunk_size = 100;
    settings.worker_concurrency = 2;
    settings.visibility_timeout_ms = 2_000;
    settings.job_max_attempts = 10;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("node_chaos_redis_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let prefix = app.settings.queue_prefix.clone();
    let mut workers: Vec<_> = (1..=2)
        .map(|i| app.spawn_worker_process(&format!("{prefix}-w{i}")))
        .collect();

    let total = 4_000u64;
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
            (done >= 300 && done < total / 2).then_some(())
        },
    )
    .await;

    redis.stop().await;
    // Down: a submission is refused at once, with the error envelope.
    for _ in 0..3 {
        let started = Instant::now();
        let r = app
            .client
            .post(format!("{}/api/v1/nodes/poot/batch-validate", app.address))
            .json(&json!({ "validations": valid_items(&nodes, 10) }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("the API answers while Redis is down");
        let took = started.elapsed();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("json error body");
        eprintln!("submission with Redis down: {status} in {took:?}");
        assert_eq!(status, 503, "{body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(code.starts_with("LUCID_ERR_"), "{body}");
        assert!(took < FAIL_FAST, "the submission took {took:?} to fail");
    }
    redis.restart().await;

    // The same processes finish the batch.
    let batch = app
        .wait_for_batch(&batch_id, Duration::from_secs(240))
        .await;
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("worker status").is_none(),
            "worker {} exited: the workers must reconnect, not restart",
            w.name
        );
    }
    assert_every_item_recorded_once(&app, &batch, total).await;
    assert_no_dead_jobs(&app, "poot-validation").await;
    // The API's own connection is back too.
    let again = app
        .submit_batch(&json!({ "validations": valid_items(&nodes, 20) }))
        .await;
    let batch = app.wait_for_batch(&again, Duration::from_secs(60)).await;
    assert_every_item_recorded_once(&app, &batch, 20).await;
}
