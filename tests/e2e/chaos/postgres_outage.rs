//! Scenario 4: PostgreSQL (the ledger, and the simulated rail's storage)
//! becomes unreachable for 10 s while a payout batch runs: a fault proxy in
//! front of the shared server drops every connection and refuses new ones.
//! Payouts wait — none fails — and all complete once it is back, each
//! settled exactly once.

use std::time::{Duration, Instant};

use super::{assert_no_dead_jobs, proxy::FaultProxy};
use crate::{
    helpers::{spawn_app_with, test_settings},
    payouts_api::batch::{all_payouts, assert_ledger_matches, batch_body, submit, wait_batch},
};

/// How long PostgreSQL stays unreachable.
const OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_wait_through_a_10_s_postgres_outage_and_then_settle_exactly_once() {
    let upstream = "127.0.0.1:5432".parse().expect("address");
    let proxy = FaultProxy::start(upstream).await;
    let mut settings = test_settings();
    let url = std::env::var("LUCID_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    settings.postgres_url = url.replace(":5432/", &format!(":{}/", proxy.port())).into();
    settings.worker_concurrency = 4;
    // Slow rail calls: most payouts in flight at the cut are inside the
    // rail, whose own storage then fails (no rail failure either).
    settings.payouts.rail_delay_ms = 400;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("node_chaos_pg_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let prefix = app.settings.queue_prefix.clone();
    let mut workers: Vec<_> = (1..=2)
        .map(|i| app.spawn_worker_process(&format!("{prefix}-w{i}")))
        .collect();

    let (batch_id, n) = ("batch_chaos_pg", 200u64);
    submit(&app, &batch_body(batch_id, &nodes, n as usize)).await;
    let path = format!("/api/v1/nodes/payouts/batch/{batch_id}");
    crate::helpers::eventually(
        Duration::from_secs(60),
        "payouts to be under way",
        || async {
            let v = app.get_json(&path, 200).await;
            let done = v["counts"]["completed"].as_u64().unwrap_or(0);
            (done >= 20 && done < n / 2).then_some(())
        },
    )
    .await;

    proxy.down();
    let down = Instant::now();
    let completed_before = app.get_json(&path, 200).await["counts"]["completed"].clone();
    // Throughout the outage no payout fails (polled: the view is in MongoDB).
    while down.elapsed() < OUTAGE {
        let v = app.get_json(&path, 200).await;
        assert_eq!(v["counts"]["failed"].as_u64().unwrap_or(0), 0, "{v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = app.get_json(&path, 200).await;
    proxy.up().await;
    eprintln!(
        "PostgreSQL unreachable for {:?}: completed {completed_before} → {} meanwhile",
        down.elapsed(),
        during["counts"]["completed"]
    );
    assert!(
        during["counts"]["completed"].as_u64() < Some(n),
        "the batch finished during the outage: the test proved nothing: {during}"
    );

    let view = wait_batch(&app, batch_id, Duration::from_secs(180)).await;
    for w in &mut workers {
        assert!(
            w.child.try_wait().expect("worker status").is_none(),
            "worker {} exited during the outage",
            w.name
        );
    }
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["counts"]["completed"], n, "{view}");
    let payouts = all_payouts(&app, batch_id).await;
    assert_eq!(payouts.len() as u64, n);
    assert!(
        payouts.iter().all(|p| p["retry_count"] == 0),
        "an outage is no rail failure: no payout may spend a retry on it"
    );
    assert_ledger_matches(&app, &payouts).await;
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM simulated_rail_transfers")
        .fetch_one(app.ledger().pool())
        .await
        .expect("count transfers");
    assert_eq!(transfers, n as i64, "the rail paid each payout once");
    assert_no_dead_jobs(&app, "payouts").await;
}
