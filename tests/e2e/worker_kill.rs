//! Guarantees 1 and 6 with real processes: a worker SIGKILLed mid-batch loses
//! nothing, its jobs run again elsewhere, and every item is recorded once.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use serde_json::json;

use crate::helpers::{ItemBuilder, eventually, spawn_app_with, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_records_every_item_exactly_once() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 100;
    settings.worker_concurrency = 2;
    settings.visibility_timeout_ms = 2_000;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("node_kill_{i}")).collect();
    app.insert_nodes(&nodes).await;

    let total = 3_000usize;
    let (mut expect_failed, mut items) = (0u64, Vec::with_capacity(total));
    for i in 0..total {
        let item = if i % 10 == 0 {
            expect_failed += 1;
            ItemBuilder::new("node_unknown")
        } else if i % 7 == 0 {
            expect_failed += 1;
            ItemBuilder::new(&nodes[i % 10]).output_raw("***not base64***")
        } else {
            ItemBuilder::new(&nodes[i % 10]).output_bytes(&vec![(i % 251) as u8; 2048])
        };
        items.push(item.build());
    }

    let mut workers: Vec<_> = (1..=3)
        .map(|i| app.spawn_worker_process(&format!("{}-w{i}", app.settings.queue_prefix)))
        .collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;

    // Wait until the victim is running a chunk, then SIGKILL it.
    let victim_name = workers[1].name.clone();
    let victim_jobs: Vec<String> = eventually(
        Duration::from_secs(60),
        "the victim to run a job",
        || async {
            let mine = app.jobs_running_on("poot-validation", &victim_name).await;
            (!mine.is_empty()).then_some(mine)
        },
    )
    .await;
    workers[1].kill9().await;

    let batch = app
        .wait_for_batch(&batch_id, Duration::from_secs(420))
        .await;
    assert_eq!(batch["status"], "completed_with_errors", "{batch}");
    assert_eq!(batch["total"], total as u64);
    assert_eq!(batch["failed"], expect_failed, "{batch}");
    assert_eq!(batch["succeeded"], total as u64 - expect_failed, "{batch}");
    assert_eq!(batch["pending"], 0);

    // Every item has exactly one result document.
    let results = app.db.collection::<Document>("poot_validations");
    let stored = results
        .count_documents(doc! { "batch_id": &batch_id })
        .await
        .expect("count");
    assert_eq!(stored, total as u64);
    let distinct = results
        .distinct("item_index", doc! { "batch_id": &batch_id })
        .await
        .expect("distinct");
    assert_eq!(distinct.len(), total);

    // The victim's jobs were run again by another worker after its lease expired.
    let mut redelivered = 0;
    for id in &victim_jobs {
        let job = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        if job["attempts"].as_u64().unwrap_or(0) >= 2 {
            assert_ne!(job["worker"], victim_name.as_str(), "{job}");
            redelivered += 1;
        }
    }
    assert!(
        redelivered >= 1,
        "none of the killed worker's jobs {victim_jobs:?} was redelivered"
    );
    let dead = app.get_json("/api/v1/queues", 200).await;
    assert_eq!(dead["queues"][0]["dead"], 0, "{dead}");
}
