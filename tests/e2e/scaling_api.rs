//! Pool scaling: evaluations on the `scaling-evaluation` queue, the events
//! they record and apply, manual scaling and the pool webhook.

use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{NodeBuilder, PoolBuilder, TestApp, eventually, spawn_app},
    receiver::Receiver,
    resources_api::{resources, sample},
};

const WAIT: Duration = Duration::from_secs(30);

/// A pool with policy up 80 / down 30, min 1, max 6 (target 70 %), and
/// nodes `(status, poot_score)`; returns the pool id and node ids in order.
async fn pool_with_nodes(
    app: &TestApp,
    webhook: Option<&str>,
    nodes: &[(&str, f64)],
) -> (String, Vec<String>) {
    let mut pool = PoolBuilder::new().policy(80.0, 30.0, 1, 6);
    if let Some(url) = webhook {
        pool = pool.set("/webhook_url", json!(url));
    }
    let pool = app
        .api_call(Method::POST, "/api/v1/nodes/pools/", Some(&pool.build()))
        .await;
    let pool_id = pool.expect(201, "create pool")["pool_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for (status, score) in nodes {
        let r = app
            .api_call(
                Method::POST,
                "/api/v1/nodes/",
                Some(&NodeBuilder::new().status(status).build()),
            )
            .await;
        let id = r.expect(201, "create node")["node_id"]
            .as_str()
            .unwrap()
            .to_string();
        app.api_call(
            Method::POST,
            &format!("/api/v1/nodes/pools/{pool_id}/nodes"),
            Some(&json!({ "node_id": id })),
        )
        .await
        .expect(200, "add node");
        app.db
            .collection::<Document>("nodes")
            .update_one(
                doc! { "_id": &id },
                doc! { "$set": { "poot_score": score } },
            )
            .await
            .expect("set score");
        ids.push(id);
    }
    (pool_id, ids)
}

async fn report_cpu(app: &TestApp, nodes: &[String], cpu: f64) {
    for node in nodes {
        let body = json!({ "samples": [sample(Some(Utc::now() - chrono::Duration::seconds(30)), cpu), sample(Some(Utc::now()), cpu)] });
        app.api_call(Method::POST, &resources(node), Some(&body))
            .await
            .expect(201, "report samples");
    }
}

async fn evaluate(app: &TestApp, pool_id: &str) -> Value {
    let r = app
        .api_call(
            Method::POST,
            &format!("/api/v1/nodes/pools/{pool_id}/scaling/evaluate"),
            None,
        )
        .await;
    let job_id = r.expect(202, "evaluate")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait_for_job(&job_id, WAIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let evaluation = app
        .db
        .collection::<Document>("scaling_evaluations")
        .find_one(doc! { "_id": &job_id })
        .await
        .expect("find")
        .expect("evaluation stored");
    serde_json::to_value(&evaluation).expect("json")
}

async fn events(app: &TestApp, pool_id: &str) -> Vec<Value> {
    let v = app
        .get_json(
            &format!("/api/v1/nodes/pools/{pool_id}/scaling/events?page_size=100"),
            200,
        )
        .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn statuses(app: &TestApp, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let v = app.get_json(&format!("/api/v1/nodes/{id}"), 200).await;
        out.push(v["status"].as_str().unwrap_or_default().to_string());
    }
    out
}

/// Moves every stored event of the pool `minutes` into the past (cooldowns).
async fn age_events(app: &TestApp, pool_id: &str, minutes: i64) {
    let coll = app.db.collection::<Document>("scaling_events");
    let all: Vec<Document> = futures::TryStreamExt::try_collect(
        coll.find(doc! { "pool_id": pool_id }).await.expect("find"),
    )
    .await
    .expect("read");
    for e in all {
        let at = e
            .get_datetime("triggered_at")
            .expect("triggered_at")
            .to_chrono()
            - chrono::Duration::minutes(minutes);
        coll.update_one(
            doc! { "_id": e.get_str("_id").unwrap() },
            doc! { "$set": { "triggered_at": mongodb::bson::DateTime::from_chrono(at) } },
        )
        .await
        .expect("age");
    }
}

#[tokio::test]
async fn a_pool_driven_hot_then_cold_produces_exactly_the_expected_events() {
    let app = spawn_app().await;
    let hook = Receiver::start(0).await;
    // Two active nodes, four inactive with PoOT 10, 90, 50, 70.
    let (pool, n) = pool_with_nodes(
        &app,
        Some(&hook.url),
        &[
            ("active", 40.0),
            ("active", 60.0),
            ("inactive", 10.0),
            ("inactive", 90.0),
            ("inactive", 50.0),
            ("inactive", 70.0),
        ],
    )
    .await;

    // Hot: mean 95 % over 2 nodes → ceil(2 × 95 / 70) = 3: start the best inactive node.
    report_cpu(&app, &n[..2], 95.0).await;
    let e = evaluate(&app, &pool).await;
    assert_eq!(e["decision"]["decision"], "scale", "{e}");
    let list = events(&app, &pool).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let up = &list[0];
    assert_eq!(
        (
            up["event_type"].as_str(),
            up["current_nodes"].as_u64(),
            up["target_nodes"].as_u64()
        ),
        (Some("scale_up"), Some(2), Some(3)),
        "{up}"
    );
    assert_eq!(up["status"], "applied", "{up}");
    assert_eq!(
        up["applied_nodes"],
        json!([n[3]]),
        "highest PoOT first: {up}"
    );
    assert_eq!(up["metrics"]["mean_cpu_percent"], 95.0);
    assert_eq!(up["metrics"]["reporting_nodes"], 2);
    assert!(up["completed_at"].is_string(), "{up}");
    assert_eq!(
        statuses(&app, &n).await,
        [
            "active", "active", "inactive", "active", "inactive", "inactive"
        ]
    );

    // Still hot at once: the scale-up cooldown (5 min) holds; no event.
    let e = evaluate(&app, &pool).await;
    assert_eq!(e["decision"]["decision"], "none", "{e}");
    assert!(
        e["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("cooldown"),
        "{e}"
    );
    assert_eq!(events(&app, &pool).await.len(), 1);

    // Cold, 11 minutes later: 3 active nodes at 10 % → max(1, ceil(3 × 10 / 70)) = 1:
    // stop the two lowest-PoOT active nodes (40 and 60), keep the 90.
    age_events(&app, &pool, 11).await;
    app.db
        .collection::<Document>("resource_samples")
        .delete_many(doc! {})
        .await
        .expect("clear");
    report_cpu(&app, &[n[0].clone(), n[1].clone(), n[3].clone()], 10.0).await;
    evaluate(&app, &pool).await;
    let list = events(&app, &pool).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let down = &list[0];
    assert_eq!(
        (
            down["event_type"].as_str(),
            down["current_nodes"].as_u64(),
            down["target_nodes"].as_u64()
        ),
        (Some("scale_down"), Some(3), Some(1)),
        "{down}"
    );
    assert_eq!(down["status"], "applied");
    assert_eq!(
        down["applied_nodes"],
        json!([n[0], n[1]]),
        "lowest PoOT first: {down}"
    );
    assert_eq!(
        statuses(&app, &n).await,
        [
            "inactive", "inactive", "inactive", "active", "inactive", "inactive"
        ]
    );

    // Cold again (at min_nodes): no event.
    let e = evaluate(&app, &pool).await;
    assert!(
        e["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("min_nodes"),
        "{e}"
    );
    assert_eq!(events(&app, &pool).await.len(), 2);

    // The webhook got each event once, keyed by its id.
    let got = eventually(WAIT, "two webhook deliveries", || async {
        let r = hook.received();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let mut keys: Vec<_> = got
        .iter()
        .map(|r| r.idempotency_key.clone().unwrap_or_default())
        .collect();
    keys.sort();
    let mut ids: Vec<String> = list
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(keys, ids);
    assert!(
        got.iter()
            .any(|r| r.body["event_type"] == "scale_up" && r.body["status"] == "applied")
    );
}

#[tokio::test]
async fn re_running_an_evaluation_job_does_not_apply_twice() {
    let app = spawn_app().await;
    let (pool, n) = pool_with_nodes(
        &app,
        None,
        &[("active", 50.0), ("inactive", 80.0), ("inactive", 20.0)],
    )
    .await;
    report_cpu(&app, &n[..1], 99.0).await;
    let ctx = app.job_context().await;
    // ceil(1 × 99 / 70) = 2.
    let first = lucid_jobs::scaling::job::evaluate(&ctx, &pool, "seval_rerun", None)
        .await
        .expect("evaluate");
    assert!(first.event_id.is_some());
    // Someone stops the started node and an hour passes (no cooldown would
    // stop a fresh decision); the same job runs again (redelivery).
    app.api_call(Method::POST, &format!("/api/v1/nodes/{}/stop", n[1]), None)
        .await
        .expect(200, "stop");
    age_events(&app, &pool, 60).await;
    report_cpu(&app, &n[..1], 99.0).await;
    let again = lucid_jobs::scaling::job::evaluate(&ctx, &pool, "seval_rerun", None)
        .await
        .expect("re-run");
    assert_eq!(again, first, "the stored evaluation is reused");
    assert_eq!(events(&app, &pool).await.len(), 1);
    assert_eq!(
        statuses(&app, &n).await,
        ["active", "inactive", "inactive"],
        "the applied event is not applied again"
    );
    // Control: a different evaluation does decide to scale again.
    let fresh = lucid_jobs::scaling::job::evaluate(&ctx, &pool, "seval_fresh", None)
        .await
        .expect("fresh");
    assert!(fresh.event_id.is_some(), "{fresh:?}");
    assert_eq!(events(&app, &pool).await.len(), 2);
}

#[tokio::test]
async fn a_shortfall_is_recorded_as_partial_with_what_was_missing() {
    let app = spawn_app().await;
    let (pool, n) = pool_with_nodes(
        &app,
        None,
        &[
            ("active", 1.0),
            ("active", 2.0),
            ("active", 3.0),
            ("inactive", 4.0),
        ],
    )
    .await;
    // ceil(3 × 99 / 70) = 5, but only one inactive node exists.
    report_cpu(&app, &n[..3], 99.0).await;
    evaluate(&app, &pool).await;
    let e = &events(&app, &pool).await[0];
    assert_eq!(
        (
            e["target_nodes"].as_u64(),
            e["status"].as_str(),
            e["missing"].as_u64()
        ),
        (Some(5), Some("partial"), Some(1)),
        "{e}"
    );
    assert_eq!(e["applied_nodes"], json!([n[3]]));
}

#[tokio::test]
async fn no_samples_in_the_window_records_no_decision() {
    let app = spawn_app().await;
    let (pool, n) = pool_with_nodes(&app, None, &[("active", 1.0), ("inactive", 2.0)]).await;
    // A sample older than the 5-minute window does not count.
    let old = json!({ "samples": [sample(Some(Utc::now() - chrono::Duration::minutes(6)), 99.0)] });
    app.api_call(Method::POST, &resources(&n[0]), Some(&old))
        .await
        .expect(201, "old sample");
    let e = evaluate(&app, &pool).await;
    assert_eq!(e["decision"]["decision"], "no_decision", "{e}");
    assert!(
        e["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("no active node reported"),
        "{e}"
    );
    assert_eq!(e["metrics"]["samples"], 0);
    assert!(events(&app, &pool).await.is_empty());
}

#[tokio::test]
async fn all_pools_are_evaluated_as_one_batch() {
    let app = spawn_app().await;
    let (hot, hot_nodes) = pool_with_nodes(&app, None, &[("active", 1.0), ("inactive", 2.0)]).await;
    let (_quiet, _) = pool_with_nodes(&app, None, &[("active", 1.0)]).await;
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/",
        Some(&PoolBuilder::new().build()),
    )
    .await
    .expect(201, "pool without auto-scaling");
    report_cpu(&app, &hot_nodes[..1], 99.0).await;
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/pools/scaling/evaluate", None)
        .await;
    let body = r.expect(202, "evaluate all");
    assert_eq!(body["total"], 2, "only auto-scaled pools: {body}");
    let batch = app
        .wait_for_batch(body["batch_id"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(
        (batch["status"].as_str(), batch["succeeded"].as_u64()),
        (Some("completed"), Some(2)),
        "{batch}"
    );
    assert_eq!(
        app.count(
            "scaling_evaluations",
            doc! { "batch_id": body["batch_id"].as_str().unwrap() }
        )
        .await,
        2
    );
    assert_eq!(events(&app, &hot).await.len(), 1);
}

#[tokio::test]
async fn manual_scaling_applies_and_refuses_above_max_nodes() {
    let app = spawn_app().await;
    let (pool, n) = pool_with_nodes(
        &app,
        None,
        &[("active", 5.0), ("inactive", 9.0), ("inactive", 1.0)],
    )
    .await;
    let path = format!("/api/v1/nodes/pools/{pool}/scale");
    app.api_call(Method::POST, &path, Some(&json!({ "target_nodes": 11 })))
        .await
        .expect_error(409, "LUCID_ERR_5009");
    app.api_call(Method::POST, &path, Some(&json!({ "target_nodes": -1 })))
        .await
        .expect_error(422, "LUCID_ERR_4220");
    app.api_call(Method::POST, &path, Some(&json!({ "nodes": 2 })))
        .await
        .expect_error(422, "LUCID_ERR_4220");
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/pool_missing/scale",
        Some(&json!({ "target_nodes": 1 })),
    )
    .await
    .expect_error(404, "LUCID_ERR_5002");
    let r = app
        .api_call(Method::POST, &path, Some(&json!({ "target_nodes": 1 })))
        .await;
    assert_eq!(r.expect(200, "unchanged")["status"], "unchanged");
    assert!(
        events(&app, &pool).await.is_empty(),
        "nothing recorded for a no-op"
    );

    let r = app
        .api_call(Method::POST, &path, Some(&json!({ "target_nodes": 3 })))
        .await;
    let body = r.expect(202, "scale to 3");
    assert_eq!(body["event"]["status"], "pending");
    assert_eq!(body["event"]["trigger"], "manual");
    let job = app
        .wait_for_job(body["job_id"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let e = &events(&app, &pool).await[0];
    assert_eq!(
        (e["status"].as_str(), e["target_nodes"].as_u64()),
        (Some("applied"), Some(3)),
        "{e}"
    );
    assert_eq!(e["applied_nodes"], json!([n[1], n[2]]));
    assert_eq!(statuses(&app, &n).await, ["active", "active", "active"]);
}

#[tokio::test]
async fn scaling_endpoints_answer_404_for_unknown_pools_and_paginate_events() {
    let app = spawn_app().await;
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/pool_nope/scaling/evaluate",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_5002");
    app.api_call(
        Method::GET,
        "/api/v1/nodes/pools/pool_nope/scaling/events",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_5002");
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/bad id/scaling/evaluate",
        None,
    )
    .await
    .expect_error(422, "LUCID_ERR_4220");
    let (pool, _) = pool_with_nodes(
        &app,
        None,
        &[("active", 1.0), ("active", 2.0), ("active", 3.0)],
    )
    .await;
    for target in [2, 1, 2] {
        let r = app
            .api_call(
                Method::POST,
                &format!("/api/v1/nodes/pools/{pool}/scale"),
                Some(&json!({ "target_nodes": target })),
            )
            .await;
        let job = r.expect(202, "scale")["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        app.wait_for_job(&job, WAIT).await;
    }
    let v = app
        .get_json(
            &format!("/api/v1/nodes/pools/{pool}/scaling/events?page=2&page_size=2"),
            200,
        )
        .await;
    assert_eq!(
        (v["total"].as_u64(), v["items"].as_array().map(Vec::len)),
        (Some(3), Some(1)),
        "{v}"
    );
    assert_eq!(v["items"][0]["target_nodes"], 2, "oldest last: {v}");
    app.api_call(
        Method::GET,
        &format!("/api/v1/nodes/pools/{pool}/scaling/events?page_size=0"),
        None,
    )
    .await
    .expect_error(422, "LUCID_ERR_4220");
}
