//! Earnings: an epoch's pool split in proportion to credits × uptime ×
//! PoOT score, credited in the ledger, paid out over the threshold, and an
//! epoch re-run that changes nothing.

use chrono::Utc;
use lucid_jobs::{
    payouts::earnings::{accrue, accrue_job},
    queue::EARNINGS_QUEUE,
};

use super::*;
use crate::poot_api::{Node, give_work};

/// A node registered with `wallets` (`configuration.payout_wallets`).
async fn node_with_wallets(app: &TestApp, wallets: Value) -> Node {
    let body = NodeBuilder::new()
        .set("/configuration/payout_wallets", wallets)
        .build();
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/", Some(&body))
        .await;
    let b = r.expect(201, "create node");
    Node {
        id: b["node_id"].as_str().expect("id").to_string(),
        secret: b["secret"].as_str().expect("secret").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_splits_the_pool_by_work_pays_nodes_over_the_threshold_and_a_rerun_changes_nothing()
 {
    let mut settings = test_settings();
    settings.payouts.reward_pool_usdt = d("1000");
    let app = spawn_app_with(settings.clone(), 1).await;
    let a = node_with_wallets(&app, json!({ "USDT": tron_address() })).await;
    let b = node_with_wallets(&app, json!({ "USDT": tron_address() })).await;
    let no_wallet = node_with_wallets(&app, json!({})).await;
    let idle = node_with_wallets(&app, json!({ "USDT": tron_address() })).await;
    // Standard week: credits 30 + 2·chunks, uptime 0.25, score 29.75 + 0.4·chunks.
    give_work(&app, &a, 0).await;
    give_work(&app, &b, 5).await;
    give_work(&app, &no_wallet, 0).await;
    let epoch = Utc::now().date_naive();

    app.queue
        .enqueue(EARNINGS_QUEUE, accrue_job(epoch).expect("job"))
        .await
        .expect("enqueue");
    let ledger = app.ledger();
    let usd = Currency::Usdt;
    let paid = eventually(
        Duration::from_secs(60),
        "A's earnings payout to complete",
        || async {
            let page = app
                .get_json(&format!("/api/v1/nodes/{}/payouts", a.id), 200)
                .await;
            let p = page["items"][0].clone();
            (p["status"] == "completed").then_some(p)
        },
    )
    .await;

    // Weights: A 30·0.25·0.2975 = 2.23125, B 40·0.25·0.3175 = 3.175, no-wallet 2.23125, idle 0.
    let total = d("7.6375");
    let share = |w: &str| {
        (d("1000") * d(w) / total).round_dp_with_strategy(6, rust_decimal::RoundingStrategy::ToZero)
    };
    let (share_a, share_b) = (share("2.23125"), share("3.175"));
    assert_eq!(dec(&paid["amount"]), share_a, "{paid}");
    assert_eq!(paid["source"], "earnings", "{paid}");
    let earned = |n: &str| {
        let ledger = ledger.clone();
        let n = n.to_string();
        async move { balance(&ledger, AccountKind::Earnings, Some(&n), usd).await }
    };
    assert_eq!(earned(&a.id).await, d("0"), "paid out in full");
    assert_eq!(
        earned(&no_wallet.id).await,
        share_a,
        "credited, not paid: no wallet"
    );
    assert_eq!(earned(&idle.id).await, d("0"), "no work, no share");
    let rewards = balance(&ledger, AccountKind::Rewards, None, usd).await;
    assert_eq!(
        rewards,
        -(share_a * d("2") + share_b),
        "the pool paid exactly the shares"
    );
    assert!(
        -rewards <= d("1000") && -rewards > d("999.99999"),
        "{rewards}"
    );
    eventually(Duration::from_secs(60), "B's payout", || async {
        let page = app
            .get_json(&format!("/api/v1/nodes/{}/payouts", b.id), 200)
            .await;
        (page["items"][0]["status"] == "completed").then_some(())
    })
    .await;
    assert_eq!(earned(&b.id).await, d("0"));

    // Re-running the epoch (more work since, even) changes nothing.
    give_work(&app, &idle, 9).await;
    let ctx = crate::queue_guarantees::job_context(&settings).await;
    let report = accrue(&ctx, epoch).await.expect("re-run");
    assert_eq!(
        (report.entries_posted, report.payouts_created),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(
        balance(&ledger, AccountKind::Rewards, None, usd).await,
        rewards
    );
    assert_eq!(earned(&idle.id).await, d("0"));
    assert_eq!(app.count("payouts", mongodb::bson::doc! {}).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_wallet_is_checked_when_the_node_is_registered() {
    let app = spawn_app_with(test_settings(), 0).await;
    let body = NodeBuilder::new()
        .set(
            "/configuration/payout_wallets",
            json!({ "USDT": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u", "LUCID": "0x12" }),
        )
        .build();
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/", Some(&body))
        .await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(
        r.error_fields(),
        [
            "configuration.payout_wallets.LUCID",
            "configuration.payout_wallets.USDT"
        ]
    );
}
