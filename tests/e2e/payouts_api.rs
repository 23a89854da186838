//! Payouts over HTTP (issue 5) against real MongoDB, Redis and PostgreSQL:
//! exact money rules, the ledger each payout writes, idempotency, cancel,
//! listings, stats and the queue view. Batches, failures, the cancel race
//! and a killed worker are in [`batch`].

pub(crate) mod batch;
mod earnings;

use std::time::Duration;

use lucid_jobs::{
    domain::payout::Currency,
    ledger::{Account, AccountKind, Ledger},
};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{NodeBuilder, Reply, TestApp, eventually, spawn_app_with, test_settings};

/// A valid TRON address (base58check of 0x41 + 20 random bytes).
pub(crate) fn tron_address() -> String {
    let mut bytes = vec![0x41u8];
    bytes.extend(rand::random::<[u8; 20]>());
    bs58::encode(bytes).with_check().into_string()
}

/// A valid lowercase EVM address.
pub(crate) fn evm_address() -> String {
    format!("0x{}", hex::encode(rand::random::<[u8; 20]>()))
}

fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

fn dec(v: &Value) -> Decimal {
    d(v.as_str()
        .unwrap_or_else(|| panic!("decimal string expected, got {v}")))
}

/// A USDT payout body for `amount`.
fn usdt(amount: &str) -> Value {
    json!({ "amount": amount, "currency": "USDT", "wallet_address": tron_address() })
}

/// Registers a node through the API.
async fn node(app: &TestApp, id: &str) -> String {
    let body = NodeBuilder::new().id(id).build();
    app.api_call(Method::POST, "/api/v1/nodes/", Some(&body))
        .await
        .expect(201, "create node");
    id.to_string()
}

async fn create(app: &TestApp, node: &str, body: &Value) -> Reply {
    app.api_call(
        Method::POST,
        &format!("/api/v1/nodes/{node}/payouts"),
        Some(body),
    )
    .await
}

async fn get_payout(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/api/v1/nodes/payouts/{id}"), 200)
        .await
}

/// Polls a payout until it is final.
async fn wait_final(app: &TestApp, id: &str) -> Value {
    eventually(Duration::from_secs(60), "payout to finish", || async {
        let p = get_payout(app, id).await;
        matches!(
            p["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(p)
    })
    .await
}

async fn balance(ledger: &Ledger, kind: AccountKind, node: Option<&str>, c: Currency) -> Decimal {
    let account = match node {
        Some(n) => Account::node(kind, n, c),
        None => Account::network(kind, c),
    };
    ledger.balance(&account).await.expect("balance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_is_paid_once_with_an_exact_fee_and_settled_in_a_balanced_ledger() {
    let app = spawn_app_with(test_settings(), 1).await;
    let n = node(&app, "node_pay_one").await;
    let body = usdt("100");
    let r = create(&app, &n, &body).await;
    let p = r.expect(201, "create payout").clone();
    assert_eq!(
        (dec(&p["amount"]), dec(&p["fee"]), dec(&p["net"])),
        (d("100"), d("1"), d("99")),
        "{p}"
    );
    assert_eq!(p["rail"], "simulated", "{p}");
    assert_eq!(p["priority"], "normal", "{p}");
    assert_eq!(
        (p["retry_count"].clone(), p["max_retries"].clone()),
        (json!(0), json!(3))
    );
    let id = p["payout_id"].as_str().expect("id").to_string();

    let done = wait_final(&app, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let tx = done["tx_hash"].as_str().expect("tx_hash");
    assert_eq!(tx.len(), 64, "{done}");
    assert!(
        done["started_at"].is_string() && done["finished_at"].is_string(),
        "{done}"
    );
    assert!(
        done["processing_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "{done}"
    );

    let ledger = app.ledger();
    assert_eq!(
        ledger.payout_entries(&id).await.expect("entries"),
        ["reserve", "settle"]
    );
    let usd = Currency::Usdt;
    assert_eq!(
        balance(&ledger, AccountKind::Treasury, None, usd).await,
        d("-100")
    );
    assert_eq!(
        balance(&ledger, AccountKind::Payable, Some(&n), usd).await,
        d("0")
    );
    assert_eq!(balance(&ledger, AccountKind::Fees, None, usd).await, d("1"));
    assert_eq!(
        balance(&ledger, AccountKind::PaidOut, None, usd).await,
        d("99")
    );
    for (_, total) in ledger.trial_balance().await.expect("trial balance") {
        assert!(total.is_zero(), "books balance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_amounts_wallets_and_retries_are_refused_422_with_the_field_named_and_nothing_stored() {
    let app = spawn_app_with(test_settings(), 0).await;
    let n = node(&app, "node_pay_bad").await;
    let lucid_wallet = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let cases: Vec<(Value, &str)> = vec![
        (usdt("0"), "amount"),
        (usdt("-5"), "amount"),
        (usdt("0.99"), "amount"),
        (usdt("10000.01"), "amount"),
        (usdt("1.0000001"), "amount"),
        (usdt("12,50"), "amount"),
        (
            json!({ "amount": 12.5, "currency": "USDT", "wallet_address": tron_address() }),
            "amount",
        ),
        (
            json!({ "amount": "10", "currency": "USDT", "wallet_address": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u" }),
            "wallet_address",
        ),
        (
            json!({ "amount": "10", "currency": "USDT", "wallet_address": lucid_wallet }),
            "wallet_address",
        ),
        (
            json!({ "amount": "10", "currency": "LUCID", "wallet_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD" }),
            "wallet_address",
        ),
        (
            json!({ "amount": "10", "currency": "LUCID", "wallet_address": lucid_wallet, "max_retries": 6 }),
            "max_retries",
        ),
        (
            json!({ "amount": "10", "currency": "EUR", "wallet_address": lucid_wallet }),
            "currency",
        ),
        (
            json!({ "amount": "10", "currency": "LUCID", "wallet_address": lucid_wallet, "priority": "asap" }),
            "priority",
        ),
    ];
    for (body, field) in cases {
        let r = create(&app, &n, &body).await;
        r.expect_error(422, "LUCID_ERR_4220");
        assert_eq!(r.error_fields(), [field], "{body}");
    }
    // LUCID keeps 18 decimals; a checksummed or lowercase EVM wallet is fine.
    let ok = json!({ "amount": "1.000000000000000001", "currency": "LUCID", "wallet_address": lucid_wallet });
    let p = create(&app, &n, &ok)
        .await
        .expect(201, "18 decimals")
        .clone();
    assert_eq!(p["amount"], "1.000000000000000001");
    assert_eq!(
        (p["fee"].clone(), p["net"].clone()),
        (json!("0.1"), json!("0.900000000000000001"))
    );
    assert_eq!(
        app.count("payouts", mongodb::bson::doc! {}).await,
        1,
        "only the valid one stored"
    );

    create(&app, "node_missing_pay", &usdt("10"))
        .await
        .expect_error(404, "LUCID_ERR_5001");
    app.api_call(Method::GET, "/api/v1/nodes/payouts/pay_missing", None)
        .await
        .expect_error(404, "LUCID_ERR_4040");
    app.api_call(
        Method::GET,
        "/api/v1/nodes/payouts/batch/batch_missing",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_4040");
}

async fn create_keyed(app: &TestApp, node: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let r = app
        .client
        .post(format!("{}/api/v1/nodes/{node}/payouts", app.address))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let replayed = r.headers().get("idempotent-replayed").is_some();
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"), replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_payout_and_another_body_under_it_is_422() {
    let app = spawn_app_with(test_settings(), 1).await;
    let n = node(&app, "node_pay_idem").await;
    let body = usdt("42.5");
    let (s1, first, r1) = create_keyed(&app, &n, "order-17", &body).await;
    assert_eq!((s1, r1), (201, false), "{first}");
    let (s2, again, r2) = create_keyed(&app, &n, "order-17", &body).await;
    assert_eq!((s2, r2), (200, true), "{again}");
    assert_eq!(again["payout_id"], first["payout_id"]);

    let mut other = body.clone();
    other["amount"] = json!("43");
    let (s3, e, _) = create_keyed(&app, &n, "order-17", &other).await;
    assert_eq!(s3, 422, "{e}");
    assert_eq!(e["error"]["code"], "LUCID_ERR_4221", "{e}");
    // The same key on another node is another payout.
    let m = node(&app, "node_pay_idem2").await;
    let (s4, second, _) = create_keyed(&app, &m, "order-17", &body).await;
    assert_eq!(s4, 201);
    assert_ne!(second["payout_id"], first["payout_id"]);

    let id = first["payout_id"].as_str().expect("id");
    assert_eq!(wait_final(&app, id).await["status"], "completed");
    assert_eq!(
        app.count("payouts", mongodb::bson::doc! { "node_id": &n })
            .await,
        1
    );
    assert_eq!(
        app.ledger().payout_entries(id).await.expect("entries"),
        ["reserve", "settle"],
        "paid once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_payouts_are_listed_newest_first_filtered_and_paginated() {
    let app = spawn_app_with(test_settings(), 0).await;
    let n = node(&app, "node_pay_list").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = if i % 2 == 0 {
            usdt(&format!("{}", 10 + i))
        } else {
            json!({ "amount": "5", "currency": "LUCID", "wallet_address": evm_address() })
        };
        ids.push(create(&app, &n, &body).await.expect(201, "create")["payout_id"].clone());
    }
    let path = format!("/api/v1/nodes/{n}/payouts");
    let page = app.get_json(&format!("{path}?page_size=2"), 200).await;
    assert_eq!(page["total"], 5, "{page}");
    let got: Vec<Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["payout_id"].clone())
        .collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone()], "newest first");
    let usdt_only = app
        .get_json(&format!("{path}?currency=USDT&status=pending"), 200)
        .await;
    assert_eq!(usdt_only["total"], 3, "{usdt_only}");
    let r = app
        .api_call(Method::GET, &format!("{path}?status=paid"), None)
        .await;
    r.expect_error(400, "LUCID_ERR_4000");
    app.api_call(Method::GET, "/api/v1/nodes/node_nobody/payouts", None)
        .await
        .expect_error(404, "LUCID_ERR_5001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_pending_payout_can_be_cancelled_and_a_cancelled_one_is_never_paid() {
    let app = spawn_app_with(test_settings(), 0).await;
    let n = node(&app, "node_pay_cancel").await;
    let id = create(&app, &n, &usdt("20")).await.expect(201, "create")["payout_id"]
        .as_str()
        .expect("id")
        .to_string();
    let cancel = format!("/api/v1/nodes/payouts/{id}/cancel");
    let c = app.api_call(Method::POST, &cancel, None).await;
    assert_eq!(c.expect(200, "cancel")["status"], "cancelled");
    let again = app.api_call(Method::POST, &cancel, None).await;
    let e = again.expect_error(409, "LUCID_ERR_5006");
    assert_eq!(e["details"]["status"], "cancelled", "{e}");

    // A worker arriving later finds nothing to pay.
    let _worker = app.spawn_worker_process(&format!("{}-w", app.settings.queue_prefix));
    let paid = create(&app, &n, &usdt("30")).await.expect(201, "create")["payout_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(wait_final(&app, &paid).await["status"], "completed");
    assert_eq!(get_payout(&app, &id).await["status"], "cancelled");
    assert!(
        app.ledger()
            .payout_entries(&id)
            .await
            .expect("entries")
            .is_empty()
    );
    let late = app
        .api_call(
            Method::POST,
            &format!("/api/v1/nodes/payouts/{paid}/cancel"),
            None,
        )
        .await;
    assert_eq!(
        late.expect_error(409, "LUCID_ERR_5006")["details"]["status"],
        "completed"
    );
    app.api_call(
        Method::POST,
        "/api/v1/nodes/payouts/pay_nothing/cancel",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_4040");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_queue_view_report_exact_sums_counts_and_pending_distributions() {
    let app = spawn_app_with(test_settings(), 0).await;
    let n = node(&app, "node_pay_stats").await;
    for (amount, prio) in [("10.5", "low"), ("20.25", "urgent"), ("1", "urgent")] {
        let mut body = usdt(amount);
        body["priority"] = json!(prio);
        create(&app, &n, &body).await.expect(201, "create");
    }
    let lucid = json!({ "amount": "0.000000000000000001", "currency": "LUCID", "wallet_address": evm_address() });
    create(&app, &n, &lucid)
        .await
        .expect_error(422, "LUCID_ERR_4220");
    let q = app.get_json("/api/v1/nodes/payouts/queue", 200).await;
    assert_eq!(q["queue_length"], 3, "{q}");
    assert_eq!(q["priority_distribution"]["urgent"], 2, "{q}");
    assert_eq!(q["priority_distribution"]["low"], 1, "{q}");
    assert_eq!(q["currency_distribution"]["USDT"], 3, "{q}");
    assert!(
        q["oldest_pending"].is_string() && q["newest_pending"].is_string(),
        "{q}"
    );
    assert_eq!(
        q["estimated_wait_time_seconds"],
        Value::Null,
        "nothing processed yet: {q}"
    );

    let _worker = app.spawn_worker_process(&format!("{}-w", app.settings.queue_prefix));
    eventually(Duration::from_secs(60), "all paid", || async {
        let s = app.get_json("/api/v1/nodes/payouts/stats", 200).await;
        (s["counts_by_status"]["completed"] == 3).then_some(())
    })
    .await;
    let s = app.get_json("/api/v1/nodes/payouts/stats", 200).await;
    assert_eq!(s["total_count"], 3, "{s}");
    assert_eq!(
        dec(&s["amounts_by_status"]["completed"]["USDT"]),
        d("31.75"),
        "{s}"
    );
    // Fees: 0.105 → 0.105 (6 decimals) clamped to ≥ 0.1; 0.2025; 0.01 → 0.1.
    assert_eq!(dec(&s["fees_collected"]["USDT"]), d("0.4075"), "{s}");
    assert_eq!(dec(&s["net_paid"]["USDT"]), d("31.3425"), "{s}");
    assert_eq!(s["processing_time"]["count"], 3, "{s}");
    assert!(s["processing_time"]["p90_ms"].is_i64(), "{s}");
    let q = app.get_json("/api/v1/nodes/payouts/queue", 200).await;
    assert_eq!(q["queue_length"], 0, "{q}");
    assert!(
        q["processing_rate_per_minute"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{q}"
    );
    assert!(
        q["processing_capacity"].as_u64().is_some_and(|c| c >= 1),
        "{q}"
    );
    let by_node = app
        .get_json(
            &format!("/api/v1/nodes/payouts/stats?node_id={n}&currency=LUCID"),
            200,
        )
        .await;
    assert_eq!(by_node["total_count"], 0, "{by_node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_refuses_unbalanced_entries_and_edits_in_the_database_itself() {
    let app = spawn_app_with(test_settings(), 0).await;
    let ledger = app.ledger();
    let unbalanced = lucid_jobs::ledger::NewEntry {
        key: "test:unbalanced".into(),
        kind: lucid_jobs::ledger::EntryKind::Fund,
        payout_id: None,
        tx_hash: None,
        postings: vec![
            (
                Account::network(AccountKind::Treasury, Currency::Usdt),
                d("5"),
            ),
            (
                Account::network(AccountKind::Rewards, Currency::Usdt),
                d("-4"),
            ),
        ],
    };
    let err = ledger.post(&unbalanced).await.expect_err("unbalanced");
    assert!(err.to_string().contains("does not balance"), "{err}");
    let balanced = lucid_jobs::ledger::NewEntry {
        key: "test:balanced".into(),
        postings: vec![
            (
                Account::network(AccountKind::Treasury, Currency::Usdt),
                d("5"),
            ),
            (
                Account::network(AccountKind::Rewards, Currency::Usdt),
                d("-5"),
            ),
        ],
        ..unbalanced
    };
    assert!(ledger.post(&balanced).await.expect("balanced"));
    assert!(
        !ledger.post(&balanced).await.expect("replay"),
        "same key: no-op"
    );
    assert_eq!(
        balance(&ledger, AccountKind::Treasury, None, Currency::Usdt).await,
        d("5")
    );
    let edit = sqlx::query("UPDATE postings SET amount = amount * 2")
        .execute(ledger.pool())
        .await;
    assert!(edit.is_err(), "postings are append-only");
    let delete = sqlx::query("DELETE FROM journal_entries")
        .execute(ledger.pool())
        .await;
    assert!(delete.is_err(), "entries are append-only");
    assert_eq!(
        balance(&ledger, AccountKind::Treasury, None, Currency::Usdt).await,
        d("5")
    );
}

/// The API, the workers and the scheduler all migrate the ledger at start;
/// started together on a new schema, none of them may fail (PostgreSQL's
/// `CREATE SCHEMA IF NOT EXISTS` alone races on its catalog's unique index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_on_a_new_schema_all_migrate_the_ledger() {
    use secrecy::ExposeSecret as _;
    let settings = test_settings();
    for round in 0..5 {
        let schema = format!("{}_{round}", settings.postgres_schema);
        let starts = (0..12).map(|_| {
            let url = settings.postgres_url.expose_secret().to_string();
            let schema = schema.clone();
            tokio::spawn(async move { Ledger::connect(&url, &schema).await })
        });
        let results = futures::future::join_all(starts).await;
        let ledger = Ledger::connect_lazy(settings.postgres_url.expose_secret(), &schema)
            .expect("ledger pool");
        let failures: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.expect("join").err().map(|e| format!("{e:#}")))
            .collect();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(ledger.pool())
            .await
            .expect("drop the test schema");
        assert!(failures.is_empty(), "round {round}: {failures:?}");
    }
}
