//! Scenario 3: MongoDB (a private SecantusDB) stops for 10 s mid-batch and
//! starts again on the same data. Chunk jobs wait or retry with backoff and
//! finish once it is back: nothing lost, nothing recorded twice.

use std::time::{Duration, Instant};

use super::{ChaosBatch, PrivateServer};
use crate::helpers::{spawn_app_with, test_settings};

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
    let mut batch = ChaosBatch::submit(&app, "mongo", 3_000).await;
    batch.wait_under_way(&app, 200).await;

    let down = Instant::now();
    mongo.stop().await;
    // The outage itself: nothing to poll, MongoDB is down.
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    mongo.restart().await;
    eprintln!("MongoDB was down for {:?}", down.elapsed());

    batch
        .assert_completes_exactly_once(&app, Duration::from_secs(180), "during the outage")
        .await;
    let counts = app.queue.counts("poot-validation").await.expect("counts");
    eprintln!("queue counts after the outage: {counts:?}");
}
