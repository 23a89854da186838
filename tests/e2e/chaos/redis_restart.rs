//! Scenario 2: Redis (a private `redis-server` with AOF) restarts mid-batch.
//! The API and the worker processes reconnect on their own; no job is lost.
//! While Redis is down a batch submission fails fast with 503 and a
//! `LUCID_ERR_` code instead of hanging.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{ChaosBatch, PrivateServer, assert_every_item_recorded_once, valid_items};
use crate::helpers::{spawn_app_with, test_settings};

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
    let mut batch = ChaosBatch::submit(&app, "redis", 4_000).await;
    batch.wait_under_way(&app, 300).await;

    redis.stop().await;
    // Down: a submission is refused at once, with the error envelope.
    for _ in 0..3 {
        let started = Instant::now();
        let r = app
            .client
            .post(format!("{}/api/v1/nodes/poot/batch-validate", app.address))
            .json(&json!({ "validations": valid_items(&batch.nodes, 10) }))
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
    batch
        .assert_completes_exactly_once(
            &app,
            Duration::from_secs(240),
            "the workers must reconnect, not restart",
        )
        .await;
    // The API's own connection is back too.
    let again = app
        .submit_batch(&json!({ "validations": valid_items(&batch.nodes, 20) }))
        .await;
    let batch = app.wait_for_batch(&again, Duration::from_secs(60)).await;
    assert_every_item_recorded_once(&app, &batch, 20).await;
}
