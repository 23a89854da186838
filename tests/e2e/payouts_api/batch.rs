//! Payout batches at scale: rail failures with exact counts and sums, the
//! ledger matching the documents, the cancel race, priorities, and a worker
//! SIGKILLed mid-batch.

use std::collections::HashMap;

use futures::TryStreamExt as _;
use lucid_jobs::payouts::gateway::SimulatedRail;
use mongodb::bson::doc;

use super::*;

pub(crate) fn batch_body(batch_id: &str, nodes: &[String], n: usize) -> Value {
    let payouts: Vec<Value> = (0..n)
        .map(|i| {
            let node = &nodes[i % nodes.len()];
            if i % 4 == 3 {
                json!({ "node_id": node, "amount": format!("{}.{:018}", 1 + i % 50, i), "currency": "LUCID", "wallet_address": evm_address() })
            } else {
                json!({ "node_id": node, "amount": format!("{}.{:06}", 1 + i % 9_000, i), "currency": "USDT", "wallet_address": tron_address() })
            }
        })
        .collect();
    json!({ "batch_id": batch_id, "payouts": payouts })
}

pub(crate) async fn submit(app: &TestApp, body: &Value) -> Value {
    app.api_call(Method::POST, "/api/v1/nodes/payouts/batch", Some(body))
        .await
        .expect(202, "submit payout batch")
        .clone()
}

pub(crate) async fn wait_batch(app: &TestApp, batch_id: &str, timeout: Duration) -> Value {
    // Polled like a client would (the view reads every payout of the batch).
    let path = format!("/api/v1/nodes/payouts/batch/{batch_id}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = app.get_json(&path, 200).await;
        if matches!(
            v["status"].as_str(),
            Some("completed" | "completed_with_failures")
        ) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "batch {batch_id} not done: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks, per currency, that the ledger equals the payout documents, and
/// that each payout has exactly the entries of its outcome.
pub(crate) async fn assert_ledger_matches(app: &TestApp, payouts: &[Value]) {
    let ledger = app.ledger();
    for currency in Currency::ALL {
        let of = |status: &str, field: &str| -> Decimal {
            payouts
                .iter()
                .filter(|p| p["currency"] == currency.as_str() && p["status"] == status)
                .map(|p| dec(&p[field]))
                .sum()
        };
        let paid = of("completed", "amount");
        assert_eq!(
            balance(&ledger, AccountKind::Treasury, None, currency).await,
            -paid,
            "{currency} treasury"
        );
        assert_eq!(
            balance(&ledger, AccountKind::PaidOut, None, currency).await,
            of("completed", "net"),
            "{currency} paid out"
        );
        assert_eq!(
            balance(&ledger, AccountKind::Fees, None, currency).await,
            of("completed", "fee"),
            "{currency} fees"
        );
    }
    for p in payouts {
        let id = p["payout_id"].as_str().expect("id");
        let entries = ledger.payout_entries(id).await.expect("entries");
        let want: &[&str] = match p["status"].as_str() {
            Some("completed") => &["reserve", "settle"],
            Some("failed") => &["reserve", "reverse"],
            other => panic!("payout {id} not final: {other:?}"),
        };
        assert_eq!(entries, want, "{p}");
    }
    for (_, total) in ledger.trial_balance().await.expect("trial balance") {
        assert!(total.is_zero(), "books balance");
    }
}

pub(crate) async fn all_payouts(app: &TestApp, batch_id: &str) -> Vec<Value> {
    let docs: Vec<mongodb::bson::Document> = app
        .db
        .collection("payouts")
        .find(doc! { "batch_id": batch_id })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("collect");
    let mut out = Vec::new();
    for d in docs {
        let id = d.get_str("_id").expect("id").to_string();
        out.push(get_payout(app, &id).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_payout_batch_with_10_percent_rail_failures_ends_with_exact_counts_sums_and_ledger()
{
    let mut settings = test_settings();
    settings.payouts.rail_failure_rate = 0.1;
    settings.worker_concurrency = 8;
    settings.retry_backoff_base_ms = 20;
    settings.retry_backoff_max_ms = 100;
    let app = spawn_app_with(settings, 2).await;
    let nodes: Vec<String> = (0..20).map(|i| format!("node_pb_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let batch_id = "batch_thousand";
    let body = batch_body(batch_id, &nodes, 1000);
    let accepted = submit(&app, &body).await;
    assert_eq!(accepted["total"], 1000);
    assert_eq!(
        accepted["status_url"],
        format!("/api/v1/nodes/payouts/batch/{batch_id}")
    );
    // Resubmitting the same batch is a replay; another body under its id is 409.
    assert_eq!(submit(&app, &body).await["batch_id"], batch_id);
    let other = batch_body(batch_id, &nodes, 3);
    app.api_call(Method::POST, "/api/v1/nodes/payouts/batch", Some(&other))
        .await
        .expect_error(409, "LUCID_ERR_4090");

    let view = wait_batch(&app, batch_id, Duration::from_secs(420)).await;
    // A payout fails when all of its 1 + max_retries (3) rail calls fail.
    let ids: Vec<String> = (0..1000).map(|i| format!("pay_thousand_{i:04}")).collect();
    let expect_failed: Vec<&String> = ids
        .iter()
        .filter(|id| (1..=4).all(|call| SimulatedRail::call_fails(id, call, 0.1)))
        .collect();
    let payouts = all_payouts(&app, batch_id).await;
    assert_eq!(payouts.len(), 1000);
    let failed: Vec<&Value> = payouts.iter().filter(|p| p["status"] == "failed").collect();
    assert_eq!(failed.len(), expect_failed.len(), "{view}");
    assert_eq!(view["total"], 1000, "{view}");
    assert_eq!(
        view["counts"]["completed"],
        1000 - expect_failed.len() as u64,
        "{view}"
    );
    assert_eq!(
        view["counts"]["failed"],
        expect_failed.len() as u64,
        "{view}"
    );
    let retried = payouts
        .iter()
        .filter(|p| p["retry_count"].as_u64() > Some(0))
        .count();
    assert!(
        retried >= 50,
        "about 10% of payouts needed a retry: {retried}"
    );
    assert!(payouts.iter().all(|p| p["retry_count"].as_u64() <= Some(3)));

    // Exact sums per currency, from the request body itself.
    let mut total: HashMap<String, Decimal> = HashMap::new();
    let mut completed: HashMap<String, Decimal> = HashMap::new();
    for (i, p) in body["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .enumerate()
    {
        let c = p["currency"].as_str().expect("currency").to_string();
        let a = dec(&p["amount"]);
        *total.entry(c.clone()).or_default() += a;
        if !expect_failed.contains(&&ids[i]) {
            *completed.entry(c).or_default() += a;
        }
    }
    for (c, sum) in &total {
        assert_eq!(dec(&view["total_amounts"][c]), *sum, "{c}: {view}");
        assert_eq!(
            dec(&view["completed_amounts"][c]),
            completed[c],
            "{c}: {view}"
        );
    }
    assert_eq!(
        view["status"],
        if expect_failed.is_empty() {
            "completed"
        } else {
            "completed_with_failures"
        }
    );
    assert_ledger_matches(&app, &payouts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_worker_has_exactly_one_winner_100_times() {
    let mut settings = test_settings();
    settings.worker_concurrency = 4;
    let app = spawn_app_with(settings, 1).await;
    let n = node(&app, "node_pay_race").await;
    let mut outcomes = HashMap::new();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let id = create(&app, &n, &usdt("10")).await.expect(201, "create")["payout_id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = app
            .api_call(
                Method::POST,
                &format!("/api/v1/nodes/payouts/{id}/cancel"),
                None,
            )
            .await;
        let won = match r.status {
            200 => "cancel",
            409 => {
                let status = r.expect_error(409, "LUCID_ERR_5006")["details"]["status"].clone();
                assert!(status == "processing" || status == "completed", "{status}");
                "worker"
            }
            other => panic!("cancel answered {other}: {}", r.body),
        };
        *outcomes.entry(won).or_insert(0) += 1;
        ids.push((id, won));
    }
    let ledger = app.ledger();
    for (id, won) in &ids {
        let p = wait_final(&app, id).await;
        let entries = ledger.payout_entries(id).await.expect("entries");
        if *won == "cancel" {
            assert_eq!(p["status"], "cancelled", "{p}");
            assert!(
                entries.is_empty(),
                "a cancelled payout moves no money: {entries:?}"
            );
        } else {
            assert_eq!(p["status"], "completed", "{p}");
            assert_eq!(entries, ["reserve", "settle"]);
        }
    }
    eprintln!("cancel race outcomes: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_payouts_drain_before_low_ones() {
    let mut settings = test_settings();
    settings.worker_concurrency = 1;
    let app = spawn_app_with(settings, 0).await;
    let nodes = vec!["node_pay_prio".to_string()];
    app.insert_nodes(&nodes).await;
    let mut body = batch_body("batch_prio", &nodes, 20);
    for (i, p) in body["payouts"]
        .as_array_mut()
        .expect("payouts")
        .iter_mut()
        .enumerate()
    {
        p["priority"] = json!(if i < 10 { "low" } else { "urgent" });
    }
    submit(&app, &body).await;
    let _worker = app.spawn_worker_process(&format!("{}-w", app.settings.queue_prefix));
    wait_batch(&app, "batch_prio", Duration::from_secs(60)).await;
    let mut payouts = all_payouts(&app, "batch_prio").await;
    payouts.sort_by_key(|p| p["started_at"].as_str().unwrap_or_default().to_string());
    let order: Vec<&str> = payouts
        .iter()
        .map(|p| p["priority"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(order[..10], ["urgent"; 10], "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_leaves_every_payout_settled_exactly_once() {
    let mut settings = test_settings();
    settings.worker_concurrency = 4;
    settings.visibility_timeout_ms = 2_000;
    settings.payouts.rail_delay_ms = 20;
    let app = spawn_app_with(settings, 0).await;
    let nodes: Vec<String> = (0..10).map(|i| format!("node_pk_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let mut workers: Vec<_> = (1..=2)
        .map(|i| app.spawn_worker_process(&format!("{}-w{i}", app.settings.queue_prefix)))
        .collect();
    submit(&app, &batch_body("batch_kill", &nodes, 300)).await;
    let victim = workers[0].name.clone();
    eventually(
        Duration::from_secs(60),
        "the victim to hold payouts",
        || async {
            let running = app.queue.running_jobs("payouts").await.expect("running");
            running.iter().any(|(_, w)| *w == victim).then_some(())
        },
    )
    .await;
    workers[0].kill9().await;

    let view = wait_batch(&app, "batch_kill", Duration::from_secs(300)).await;
    assert_eq!(view["counts"]["completed"], 300, "{view}");
    let payouts = all_payouts(&app, "batch_kill").await;
    assert_ledger_matches(&app, &payouts).await;
    // The rail paid each payout once.
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM simulated_rail_transfers")
        .fetch_one(app.ledger().pool())
        .await
        .expect("count");
    assert_eq!(transfers, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_whole_with_each_offending_field_named() {
    let app = spawn_app_with(test_settings(), 0).await;
    let nodes = vec!["node_pay_badbatch".to_string()];
    app.insert_nodes(&nodes).await;
    let post = |body: Value| {
        let app = &app;
        async move {
            app.api_call(Method::POST, "/api/v1/nodes/payouts/batch", Some(&body))
                .await
        }
    };
    let r = post(json!({ "payouts": [] })).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["payouts"]);
    let too_many = batch_body("batch_big", &nodes, 1001);
    assert_eq!(post(too_many).await.error_fields(), ["payouts"]);

    let mut body = batch_body("not_a_batch", &nodes, 3);
    body["payouts"][1]["amount"] = json!("0");
    body["payouts"][2]["node_id"] = json!("node_unknown_batch");
    let r = post(body).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["batch_id", "payouts[1].amount"]);
    let mut body = batch_body("batch_unknown_node", &nodes, 3);
    body["payouts"][2]["node_id"] = json!("node_unknown_batch");
    let r = post(body).await;
    assert_eq!(r.error_fields(), ["payouts[2].node_id"]);
    assert_eq!(
        app.count("payouts", doc! {}).await,
        0,
        "nothing of a refused batch is stored"
    );
    assert_eq!(app.count("payout_batches", doc! {}).await, 0);
}
