//! Batch validation with the real model: exact failures, scores like
//! `/calculate`, per-batch node snapshots, history across batches.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_the_real_model_fails_exactly_the_bad_items_and_scores_the_rest_like_calculate()
 {
    let mut settings = test_settings();
    settings.max_output_bytes = 64;
    settings.batch_chunk_size = 5;
    let app = spawn_app_with(settings, 1).await;
    let e1 = create_node(&app, "worker").await;
    let e2 = create_node(&app, "storage").await;
    let idle = create_node(&app, "worker").await;
    give_work(&app, &e1, 0).await;
    give_work(&app, &e2, 5).await;
    // Resource samples for e2 only: the batch scores its nodes in one query
    // each for proofs, samples and history, and each must get its own.
    let now = Utc::now();
    let samples = [
        resource_sample(now - chrono::Duration::seconds(100), 40.0, 0, 0),
        resource_sample(now, 60.0, 1_000_000_000, 250_000_000),
    ];
    report_samples(&app, &e2.id, &samples).await;
    let score1 = f(&calculate(&app, &e1.id).await["score"]);
    let score2 = f(&calculate(&app, &e2.id).await["score"]);
    // e2: 31.75 + 0.15 · 50 % CPU + 0.10 · (100 Mbps / 10).
    assert_eq!((score1, score2), (29.75, 40.25));

    let now = Utc::now();
    let ok = b64(b"batch output");
    // (item, expected failure code)
    let plan: Vec<(Value, Option<&str>)> = vec![
        /* 0 */ (item(&e1.id, &ok, &nonce(), now), None),
        /* 1 */ (item(&e2.id, &ok, &nonce(), now), None),
        /* 2 */
        (
            item(&e1.id, "***not base64***", &nonce(), now),
            Some("LUCID_ERR_5005"),
        ),
        /* 3 */
        (
            item(&e2.id, &b64(&[1u8; 65]), &nonce(), now),
            Some("LUCID_ERR_5005"),
        ),
        /* 4 */
        (
            item("node_unknown_batch", &ok, &nonce(), now),
            Some("LUCID_ERR_5001"),
        ),
        /* 5 */ (item(&e1.id, &ok, "dup", now), None),
        /* 6 */ (item(&e1.id, &ok, "dup", now), Some("LUCID_ERR_5005")),
        /* 7 */ (item(&idle.id, &ok, &nonce(), now), None),
        /* 8 */
        (
            item(&e2.id, &ok, &nonce(), now - chrono::Duration::minutes(10)),
            Some("LUCID_ERR_5005"),
        ),
        /* 9 */ (item(&e2.id, &ok, "dup", now), None),
        /* 10 */ (item(&e2.id, &b64(&[2u8; 64]), &nonce(), now), None),
        /* 11 */ (item(&e1.id, &ok, &nonce(), now), None),
    ];
    let items: Vec<Value> = plan.iter().map(|(i, _)| i.clone()).collect();
    let expect_failed = plan.iter().filter(|(_, c)| c.is_some()).count() as u64;
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let batch = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(batch["status"], "completed_with_errors", "{batch}");
    assert_eq!(batch["total"], plan.len(), "{batch}");
    assert_eq!(batch["failed"], expect_failed, "{batch}");
    assert_eq!(
        batch["succeeded"],
        plan.len() as u64 - expect_failed,
        "{batch}"
    );
    assert_eq!(batch["pending"], 0, "{batch}");

    let items_path = format!("/api/v1/batches/{batch_id}/items");
    let failed = app
        .get_json(&format!("{items_path}?status=failed&page_size=100"), 200)
        .await;
    assert_eq!(failed["total"], expect_failed, "{failed}");
    let got: Vec<(u64, String)> = failed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            (
                r["item_index"].as_u64().expect("item_index"),
                r["error_code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = plan
        .iter()
        .enumerate()
        .filter_map(|(i, (_, c))| c.map(|c| (i as u64, c.to_string())))
        .collect();
    assert_eq!(got, want, "{failed}");
    for r in failed["items"].as_array().expect("items") {
        let i = r["item_index"].as_u64().expect("item_index");
        assert_eq!(id_of(r), format!("{batch_id}:{i:06}"), "{r}");
        assert_eq!(r["status"], "failed", "{r}");
        assert_eq!(r["is_valid"], false, "{r}");
        assert_eq!(r["output_hash"], Value::Null, "{r}");
        assert!(!r["errors"].as_array().expect("errors").is_empty(), "{r}");
    }

    let succeeded = app
        .get_json(&format!("{items_path}?status=succeeded&page_size=100"), 200)
        .await;
    let rows = succeeded["items"].as_array().expect("items");
    assert_eq!(
        rows.len() as u64,
        plan.len() as u64 - expect_failed,
        "{succeeded}"
    );
    for r in rows {
        let i = r["item_index"].as_u64().expect("item_index") as usize;
        let node = plan[i].0["node_id"].as_str().expect("node");
        let output = base64::engine::general_purpose::STANDARD
            .decode(plan[i].0["output_data"].as_str().expect("output"))
            .expect("base64");
        assert_eq!(r["output_hash"], sha256_hex(&output), "item {i}: {r}");
        if node == idle.id {
            assert_eq!(
                (r["is_valid"].clone(), f(&r["score"])),
                (json!(false), 0.0),
                "item {i}: {r}"
            );
        } else {
            let want = if node == e1.id { score1 } else { score2 };
            assert_eq!(r["is_valid"], true, "item {i}: {r}");
            assert_eq!(f(&r["score"]), want, "item {i}: {r}");
        }
    }
    // The batch recalculated nothing: /calculate still agrees.
    assert_eq!(f(&calculate(&app, &e1.id).await["score"]), score1);
    // Exactly one record per item, and the batch's nonces are used up.
    assert_eq!(
        app.count("poot_validations", doc! { "batch_id": &batch_id })
            .await,
        plan.len() as u64
    );
    validate(&app, &e1.id, &validate_body(b"x", "dup", Utc::now()))
        .await
        .expect_error(409, "LUCID_ERR_4090");
    let node = app.get_json(&format!("/api/v1/nodes/{}", e2.id), 200).await;
    assert_eq!(f(&node["poot_score"]), score2, "{node}");
}

/// Submits a batch of one item of `node` and returns that item's record.
async fn one_item_batch(app: &TestApp, node_id: &str) -> Value {
    let body = json!({ "validations": [item(node_id, &b64(b"out"), &nonce(), Utc::now())] });
    let batch_id = app.submit_batch(&body).await;
    let batch = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    let items = app
        .get_json(&format!("/api/v1/batches/{batch_id}/items"), 200)
        .await;
    items["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_item_is_judged_against_the_validations_of_an_earlier_batch() {
    let app = spawn_app_with(test_settings(), 1).await;
    let node = create_node(&app, "worker").await;
    give_work(&app, &node, 0).await;

    let first = one_item_batch(&app, &node.id).await;
    assert_eq!(
        (f(&first["score"]), f(&first["confidence"])),
        (29.75, 0.5),
        "{first}"
    );
    // Now the node has one validation at 29.75: the same score again → 1.0.
    let second = one_item_batch(&app, &node.id).await;
    assert_eq!(f(&second["score"]), 29.75, "{second}");
    assert_eq!(
        f(&second["confidence"]),
        1.0,
        "history [29.75], std 0, equal score: {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_scores_the_proofs_submitted_since_an_earlier_batch_like_calculate() {
    let app = spawn_app_with(test_settings(), 1).await;
    let node = create_node(&app, "worker").await;
    give_work(&app, &node, 0).await;

    let first = one_item_batch(&app, &node.id).await;
    assert_eq!(f(&first["score"]), 29.75, "{first}");
    submit_all(
        &app,
        &node.id,
        &[signed(&node.secret, now_slot() - 7, storage(0.0, 5))],
    )
    .await;
    let want = f(&calculate(&app, &node.id).await["score"]);
    assert_eq!(want, 31.75);
    let second = one_item_batch(&app, &node.id).await;
    assert_eq!(f(&second["score"]), want, "{second}");
    let got = app
        .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
        .await;
    assert_eq!(f(&got["poot_score"]), want, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_scores_each_node_once_and_every_item_of_a_node_gets_that_score_across_chunks_and_workers()
 {
    let mut settings = test_settings();
    settings.batch_chunk_size = 3;
    let app = spawn_app_with(settings, 2).await;
    let a = create_node(&app, "worker").await;
    let b = create_node(&app, "storage").await;
    let score_a = give_work(&app, &a, 0).await;
    let score_b = give_work(&app, &b, 5).await;
    let now = Utc::now();
    let items: Vec<Value> = (0..30)
        .map(|i| {
            let node = if i % 2 == 0 { &a.id } else { &b.id };
            item(node, &b64(b"out"), &nonce(), now)
        })
        .collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let batch = app.wait_for_batch(&batch_id, Duration::from_secs(60)).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["succeeded"], 30, "{batch}");

    let rows = app
        .get_json(
            &format!("/api/v1/batches/{batch_id}/items?page_size=100"),
            200,
        )
        .await;
    let rows = rows["items"].as_array().expect("items");
    assert_eq!(rows.len(), 30);
    for r in rows {
        let want = if r["node_id"] == a.id.as_str() {
            score_a
        } else {
            score_b
        };
        assert_eq!(f(&r["score"]), want, "{r}");
    }
    // One snapshot per node of the batch, shared by its 10 chunks and both workers.
    assert_eq!(
        app.count("poot_batch_nodes", doc! { "batch_id": &batch_id })
            .await,
        2
    );
    for (node, want) in [(&a, score_a), (&b, score_b)] {
        let got = app
            .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
            .await;
        assert_eq!(f(&got["poot_score"]), want, "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_constants_come_from_the_settings() {
    let mut settings = test_settings();
    // Only the uptime component counts: the standard week is 0.25 of the window.
    settings.poot.weights = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let app = spawn_app_with(settings, 1).await;
    let node = create_node(&app, "worker").await;
    give_work(&app, &node, 0).await;
    let calc = calculate(&app, &node.id).await;
    assert_eq!(f(&calc["score"]), 25.0, "{calc}");
    let record = one_item_batch(&app, &node.id).await;
    assert_eq!(
        f(&record["score"]),
        25.0,
        "the workers use the same constants: {record}"
    );
}
