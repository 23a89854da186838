//! Batch submission, status polling and the queue endpoints over HTTP.
//!
//! Each test starts the real API (and, unless it needs nothing to run, one
//! in-process worker) against real Redis and MongoDB, with its own database
//! and queue prefix.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::helpers::{ItemBuilder, TestApp, eventually, spawn_app, spawn_app_with, test_settings};
use crate::receiver::Receiver;

const BATCH_PATH: &str = "/api/v1/nodes/poot/batch-validate";
const SERVICE: &str = "lucid-node-management";

// ---------------------------------------------------------------------------
// Small helpers local to this file.
// ---------------------------------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn seeded_rng() -> (u64, StdRng) {
    let seed: u64 = rand::random();
    (seed, StdRng::seed_from_u64(seed))
}

/// POSTs raw bytes with an optional content type.
async fn post_raw(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.post(format!("{}{path}", app.address)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.expect("request")
}

/// Asserts an error answer with `status` in the full envelope, whatever its
/// code, with `request_id` equal to the `x-request-id` response header.
/// Returns `error`.
async fn expect_envelope(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let header = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = resp.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only `error` at the top: {v}"
    );
    let err = &v["error"];
    assert!(
        err["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("LUCID_ERR_")),
        "code: {v}"
    );
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {v}"
    );
    let header = header.expect("x-request-id response header");
    assert!(!header.is_empty());
    assert_eq!(err["request_id"], header.as_str(), "{v}");
    assert_eq!(err["service"], SERVICE, "{v}");
    assert!(
        err["version"].as_str().is_some_and(|s| !s.is_empty()),
        "version: {v}"
    );
    let ts = err["timestamp"].as_str().expect("timestamp");
    let ts = chrono::DateTime::parse_from_rfc3339(ts).expect("timestamp is RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(ts);
    assert!(
        age.num_seconds().abs() < 60,
        "timestamp {ts} is not the time of the error"
    );
    err.clone()
}

/// [`expect_envelope`] with a given code.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    let err = expect_envelope(resp, status).await;
    assert_eq!(err["code"], code, "{err}");
    err
}

/// `details.fields` of a validation error as (field, message) pairs.
fn fields(err: &Value) -> Vec<(String, String)> {
    err["details"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("details.fields missing: {err}"))
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap_or_default().to_string(),
                f["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn rfc3339(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {v}"))
}

/// Every item result of a batch with `status`, page by page (page_size 100).
async fn all_items(app: &TestApp, batch_id: &str, status: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let v = app
            .get_json(
                &format!(
                    "/api/v1/batches/{batch_id}/items?status={status}&page={page}&page_size=100"
                ),
                200,
            )
            .await;
        let items = v["items"].as_array().expect("items").clone();
        if items.is_empty() {
            break;
        }
        out.extend(items);
    }
    out
}

/// An in-process worker started after the app (for tests that submit work
/// while nothing runs). Stopped when dropped.
struct Worker {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Worker {
    /// Builds and starts a worker, and waits until its heartbeat is listed.
    async fn start(app: &TestApp) -> Self {
        let worker = lucid_workers::Application::build(app.settings.clone())
            .await
            .expect("build worker");
        let name = worker.worker_name().to_string();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run_until_stopped(stop.clone()));
        eventually(
            Duration::from_secs(10),
            "the worker's heartbeat",
            || async {
                let v = app.get_json("/api/v1/queues", 200).await;
                v["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|w| w["name"] == name.as_str()))
                    .then_some(())
            },
        )
        .await;
        Self {
            stop,
            handle: Some(handle),
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Replaces the payload of a queued job with one no version of the code can
/// decode (as a job written by a future deploy would be): the worker moves it
/// straight to the dead letters.
async fn poison_job_payload(app: &TestApp, job_id: &str) {
    let client = redis::Client::open(
        secrecy::ExposeSecret::expose_secret(&app.settings.redis_url).to_string(),
    )
    .expect("redis client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{}:job:{job_id}", app.settings.queue_prefix);
    let status: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("status")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(status.as_deref(), Some("queued"), "{key}");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("payload")
        .arg(r#"{"version":"v99","batch_id":"?"}"#)
        .query_async(&mut conn)
        .await
        .expect("HSET");
}

/// What an item of the mixed batch must become.
#[derive(Debug, Clone)]
enum Expect {
    Valid { hash: String },
    UnknownNode,
    BadBase64,
    Oversize,
}

/// A batch with a known mix of items.
struct Mixed {
    items: Vec<Value>,
    expect: Vec<Expect>,
}

impl Mixed {
    fn failed(&self) -> u64 {
        self.expect
            .iter()
            .filter(|e| !matches!(e, Expect::Valid { .. }))
            .count() as u64
    }
}

/// `n` items over `nodes`: every 10th (offset 3) from an unknown node, every
/// 10th (offset 5) with bad base64, every 20th (offset 7) over `max` bytes
/// (one byte over, or far over), the first and the last exactly `max` bytes,
/// the rest small and valid.
fn mixed_batch(n: usize, nodes: &[String], max: usize, rng: &mut StdRng) -> Mixed {
    let bad_b64 = ["***not base64***", "abc", "ab=c", "@@@@", "aGVsbG8=x"];
    let (mut items, mut expect) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let node = &nodes[i % nodes.len()];
        let (item, e) = if i == 0 || i == n - 1 {
            let bytes = random_bytes(rng, max);
            let hash = sha256_hex(&bytes);
            (
                ItemBuilder::new(node).output_bytes(&bytes),
                Expect::Valid { hash },
            )
        } else if i % 10 == 3 {
            (
                ItemBuilder::new(&format!("node_missing_{i}")),
                Expect::UnknownNode,
            )
        } else if i % 10 == 5 {
            (
                ItemBuilder::new(node).output_raw(bad_b64[(i / 10) % bad_b64.len()]),
                Expect::BadBase64,
            )
        } else if i % 20 == 7 {
            let len = if i % 40 == 7 { max + 1 } else { max * 3 };
            (
                ItemBuilder::new(node).output_bytes(&random_bytes(rng, len)),
                Expect::Oversize,
            )
        } else {
            let len = rng.gen_range(1..64);
            let bytes = random_bytes(rng, len);
            let hash = sha256_hex(&bytes);
            (
                ItemBuilder::new(node).output_bytes(&bytes),
                Expect::Valid { hash },
            )
        };
        items.push(item.build());
        expect.push(e);
    }
    Mixed { items, expect }
}

/// Starts an app with a 1 KiB output limit and chunks of 100, and runs a
/// 1,000-item mixed batch to its end. Returns the app, the batch, its final view.
async fn run_mixed_batch() -> (TestApp, Mixed, String, Value) {
    let mut settings = test_settings();
    settings.max_output_bytes = 1024;
    settings.batch_chunk_size = 100;
    let app = spawn_app_with(settings, 1).await;
    let nodes: Vec<String> = (0..5).map(|i| format!("node_mix_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let (seed, mut rng) = seeded_rng();
    let batch = mixed_batch(1000, &nodes, 1024, &mut rng);

    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": batch.items }))
        .await;
    assert_eq!(r.status().as_u16(), 202, "seed {seed}");
    let accepted: Value = r.json().await.expect("json");
    let batch_id = accepted["batch_id"].as_str().expect("batch_id").to_string();
    assert!(batch_id.starts_with("batch_"), "{accepted}");
    assert_eq!(
        accepted["status_url"],
        format!("/api/v1/batches/{batch_id}").as_str()
    );
    assert_eq!(accepted["total"], 1000);
    assert_eq!(accepted["chunk_count"], 10);

    let view = app.wait_for_batch(&batch_id, Duration::from_secs(60)).await;
    (app, batch, batch_id, view)
}

// ---------------------------------------------------------------------------
// Submission and status.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1000_item_batch_with_a_known_mix_completes_with_errors_exact_counts_and_listed_item_results()
 {
    let (app, batch, batch_id, view) = run_mixed_batch().await;
    let failed = batch.failed();
    assert_eq!(
        failed, 250,
        "100 unknown nodes + 100 bad base64 + 50 oversize"
    );

    assert_eq!(view["batch_id"], batch_id.as_str());
    assert_eq!(view["kind"], "poot_validation");
    assert_eq!(view["status"], "completed_with_errors", "{view}");
    assert_eq!(view["total"], 1000);
    assert_eq!(view["succeeded"], 1000 - failed, "{view}");
    assert_eq!(view["failed"], failed, "{view}");
    assert_eq!(view["pending"], 0, "{view}");
    assert_eq!(view["progress"].as_f64(), Some(1.0), "{view}");
    assert_eq!(view["chunk_count"], 10);
    let created = rfc3339(&view["created_at"]);
    let started = rfc3339(&view["started_at"]);
    let finished = rfc3339(&view["finished_at"]);
    assert!(
        created <= started && started <= finished,
        "created {created} <= started {started} <= finished {finished}"
    );

    // The status URL answers the same, and nothing changes once final.
    let again = app
        .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
        .await;
    assert_eq!(again, view);
    // Exactly one result per item is stored.
    assert_eq!(
        app.count("poot_validations", doc! { "batch_id": &batch_id })
            .await,
        1000
    );

    assert_item_results_listed_page_by_page(&app, &batch, &batch_id).await;
}

/// Per-item results of the mixed batch: listed by status, in item order,
/// page by page, each with its error code or output hash.
async fn assert_item_results_listed_page_by_page(app: &TestApp, batch: &Mixed, batch_id: &str) {
    let items_path = format!("/api/v1/batches/{batch_id}/items");

    // Failed: 250 results, pages of 100, the last page partial, then empty.
    let p1 = app
        .get_json(
            &format!("{items_path}?status=failed&page=1&page_size=100"),
            200,
        )
        .await;
    assert_eq!(p1["total"], 250, "{}", p1["total"]);
    assert_eq!(p1["page"], 1);
    assert_eq!(p1["page_size"], 100);
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(100));
    let p3 = app
        .get_json(
            &format!("{items_path}?status=failed&page=3&page_size=100"),
            200,
        )
        .await;
    assert_eq!(p3["total"], 250);
    assert_eq!(p3["page"], 3);
    assert_eq!(p3["items"].as_array().map(Vec::len), Some(50), "last page");
    let p4 = app
        .get_json(
            &format!("{items_path}?status=failed&page=4&page_size=100"),
            200,
        )
        .await;
    assert_eq!(p4["total"], 250);
    assert_eq!(
        p4["items"].as_array().map(Vec::len),
        Some(0),
        "past the end"
    );

    // Every failed item, in item order across pages, with the right code.
    let failed = all_items(app, batch_id, "failed").await;
    assert_eq!(failed.len(), 250);
    let expected_failed: Vec<(usize, &Expect)> = batch
        .expect
        .iter()
        .enumerate()
        .filter(|(_, e)| !matches!(e, Expect::Valid { .. }))
        .collect();
    for (got, (index, expect)) in failed.iter().zip(&expected_failed) {
        assert_eq!(
            got["item_index"], *index as u64,
            "ordered by item_index: {got}"
        );
        assert_eq!(got["batch_id"], batch_id);
        assert_eq!(got["status"], "failed", "{got}");
        assert_eq!(got["chunk_index"], (*index / 100) as u64, "{got}");
        assert_eq!(got["node_id"], batch.items[*index]["node_id"], "{got}");
        assert_eq!(got["nonce"], batch.items[*index]["nonce"], "{got}");
        assert!(got["output_hash"].is_null(), "{got}");
        // The reason: `error` (a message) or `errors` (a list of messages).
        let reason = got["error"].as_str().is_some_and(|m| !m.is_empty())
            || got["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|m| m.as_str().is_some_and(|m| !m.is_empty())));
        assert!(reason, "a failed item says why: {got}");
        let code = match expect {
            Expect::UnknownNode => "LUCID_ERR_5001",
            Expect::BadBase64 | Expect::Oversize => "LUCID_ERR_5005",
            Expect::Valid { .. } => unreachable!(),
        };
        assert_eq!(got["error_code"], code, "item {index} ({expect:?}): {got}");
    }

    // Every succeeded item carries sha256(decoded output), including the two
    // exactly at the limit (first and last).
    let succeeded = all_items(app, batch_id, "succeeded").await;
    assert_eq!(succeeded.len(), 750);
    let expected_ok: Vec<(usize, &String)> = batch
        .expect
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Expect::Valid { hash } => Some((i, hash)),
            _ => None,
        })
        .collect();
    for (got, (index, hash)) in succeeded.iter().zip(&expected_ok) {
        assert_eq!(
            got["item_index"], *index as u64,
            "ordered by item_index: {got}"
        );
        assert_eq!(got["status"], "succeeded", "{got}");
        assert_eq!(got["output_hash"], hash.as_str(), "item {index}: {got}");
        assert!(got["error_code"].is_null(), "{got}");
    }
    assert_eq!(succeeded[0]["item_index"], 0);
    assert_eq!(succeeded[749]["item_index"], 999);

    // No filter: every item, default page size 20.
    let all = app.get_json(&items_path, 200).await;
    assert_eq!(all["total"], 1000);
    assert_eq!(all["page"], 1);
    assert_eq!(all["page_size"], 20);
    let indexes: Vec<u64> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["item_index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, (0..20).collect::<Vec<u64>>());

    // Bad pagination and filters are refused in the envelope.
    let err = expect_error(
        app.get(&format!("{items_path}?status=failed&page=1&page_size=101"))
            .await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err)[0].0, "page_size", "{err}");
    let err = expect_error(
        app.get(&format!("{items_path}?page_size=0")).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err)[0].0, "page_size", "{err}");
    let err = expect_error(
        app.get(&format!("{items_path}?page=0")).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err)[0].0, "page", "{err}");
    let err = expect_error(
        app.get(&format!("{items_path}?status=pending")).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err)[0].0, "status", "{err}");
    expect_error(
        app.get(&format!("{items_path}?page=abc")).await,
        400,
        "LUCID_ERR_4000",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_valid_batch_ends_completed_with_every_item_succeeded() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 7;
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_ok".to_string()]).await;
    let (seed, mut rng) = seeded_rng();
    let outputs: Vec<Vec<u8>> = (0..30)
        .map(|_| {
            let len = rng.gen_range(1..300);
            random_bytes(&mut rng, len)
        })
        .collect();
    let items: Vec<Value> = outputs
        .iter()
        .map(|o| ItemBuilder::new("node_ok").output_bytes(o).build())
        .collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed", "seed {seed}: {view}");
    assert_eq!(view["total"], 30);
    assert_eq!(view["succeeded"], 30);
    assert_eq!(view["failed"], 0);
    assert_eq!(view["pending"], 0);
    assert_eq!(view["progress"].as_f64(), Some(1.0));
    assert_eq!(view["chunk_count"], 5);
    assert!(view["started_at"].is_string() && view["finished_at"].is_string());

    let failed = app
        .get_json(
            &format!("/api/v1/batches/{batch_id}/items?status=failed"),
            200,
        )
        .await;
    assert_eq!(failed["total"], 0);
    assert_eq!(failed["items"], json!([]));
    let ok = all_items(&app, &batch_id, "succeeded").await;
    assert_eq!(ok.len(), 30);
    for (i, (got, out)) in ok.iter().zip(&outputs).enumerate() {
        assert_eq!(got["item_index"], i as u64);
        assert_eq!(got["output_hash"], sha256_hex(out).as_str(), "item {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_submissions_at_once_are_each_accepted_with_their_own_batch_stored_once() {
    let app = spawn_app_with(test_settings(), 0).await;
    let submissions = (0..100).map(|i| {
        let body = json!({ "validations": [ItemBuilder::new(&format!("node_{i}")).build()] });
        let app = &app;
        async move { app.submit_batch(&body).await }
    });
    let mut ids: Vec<String> = futures::future::join_all(submissions).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "one batch per submission");
    let batches = app.db.collection::<Document>("batches");
    assert_eq!(batches.count_documents(doc! {}).await.expect("count"), 100);
    for id in &ids {
        let view = app.get_json(&format!("/api/v1/batches/{id}"), 200).await;
        assert_eq!(view["total"], 1, "{view}");
        assert_eq!(view["status"], "queued", "no worker runs: {view}");
    }
    let queued = app.queue.counts("poot-validation").await.expect("counts");
    assert_eq!(queued.queued, 100, "one chunk job per batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_submission_leaves_no_batch_without_its_chunks() {
    let app = spawn_app_with(test_settings(), 0).await;
    let items: Vec<Value> = (0..20_000)
        .map(|_| ItemBuilder::new("node_x").build())
        .collect();
    let body = serde_json::to_vec(&json!({ "validations": items })).expect("json");
    let url = format!("{}/api/v1/nodes/poot/batch-validate", app.address);
    let post = |timeout: Option<Duration>| {
        let mut req = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        req.send()
    };
    let started = std::time::Instant::now();
    assert_eq!(post(None).await.expect("submit").status(), 202);
    let whole = started.elapsed();

    // Hang up at 24 points spread over the time a whole submission takes.
    let mut cut = 0;
    for k in 1..=24u32 {
        if post(Some(whole * k / 24)).await.is_err() {
            cut += 1;
        }
    }
    assert!(cut > 0, "no submission was cut short ({whole:?} each)");

    // Every stored batch gets all its chunks queued: a submission the
    // client walked away from still finishes on the server.
    let batches = app.db.collection::<Document>("batches");
    let (stored, chunks) = eventually(
        Duration::from_secs(30),
        "every stored batch to have its chunks queued",
        || async {
            let stored = batches.count_documents(doc! {}).await.ok()?;
            let queued = app.queue.counts("poot-validation").await.ok()?.queued;
            (queued == stored * 40).then_some((stored, queued))
        },
    )
    .await;
    assert!(
        stored >= 1 && chunks == stored * 40,
        "{stored} batches, {chunks} chunks"
    );
}

// ---------------------------------------------------------------------------
// Refused submissions.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_submissions_are_refused_in_the_error_envelope_and_store_nothing() {
    let mut settings = test_settings();
    settings.batch_max_items = 10;
    let app = spawn_app_with(settings, 0).await;
    app.insert_nodes(&["node_m".to_string()]).await;
    let item = || ItemBuilder::new("node_m").build();
    let batches_before = app.count("batches", doc! {}).await;

    // One accepted batch first, so "nothing changes" is checked against a non-empty store.
    let stored = app.submit_batch(&json!({ "validations": [item()] })).await;
    let stored_view = app
        .get_json(&format!("/api/v1/batches/{stored}"), 200)
        .await;
    assert_eq!(app.count("batches", doc! {}).await, batches_before + 1);
    let baseline = app.count("batches", doc! {}).await;
    let queued = app
        .queue
        .counts("poot-validation")
        .await
        .expect("counts")
        .queued;
    assert_eq!(queued, 1);

    let json_ct = Some("application/json");

    // Invalid JSON syntax: 400.
    for body in [
        &b"{\"validations\": ["[..],
        b"{validations: []}",
        b"",
        b"{\"validations\": [], }",
        b"\xff\xfe{}",
    ] {
        let r = post_raw(&app, BATCH_PATH, body.to_vec(), json_ct).await;
        expect_error(r, 400, "LUCID_ERR_4000").await;
    }

    // Missing field in an item: 422 naming the item and the field.
    let mut no_nonce = item();
    no_nonce.as_object_mut().expect("object").remove("nonce");
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": [item(), no_nonce] }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    let f = fields(&err);
    assert_eq!(f.len(), 1, "{err}");
    assert!(f[0].0.starts_with("validations[1]"), "{err}");
    assert!(
        format!("{} {}", f[0].0, f[0].1).contains("nonce"),
        "names the missing field: {err}"
    );

    // Missing top-level field.
    let r = app
        .post_json(BATCH_PATH, &json!({ "callback_url": "http://x" }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert!(
        fields(&err)
            .iter()
            .any(|(f, m)| f.contains("validations") || m.contains("validations")),
        "{err}"
    );

    // Wrong type: a timestamp that is not RFC 3339.
    let mut yesterday = item();
    yesterday["timestamp"] = json!("yesterday");
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": [yesterday] }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations[0].timestamp", "{err}");

    // Wrong types elsewhere.
    let mut numeric_node = item();
    numeric_node["node_id"] = json!(42);
    let r = app
        .post_json(
            BATCH_PATH,
            &json!({ "validations": [item(), item(), numeric_node] }),
        )
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations[2].node_id", "{err}");
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": "all of them" }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations", "{err}");
    let r = app
        .post_json(
            BATCH_PATH,
            &json!({ "validations": [item()], "callback_url": 7 }),
        )
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "callback_url", "{err}");

    // Unknown fields, at the top and in an item.
    let r = app
        .post_json(
            BATCH_PATH,
            &json!({ "validations": [item()], "priority": "high" }),
        )
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert!(format!("{err}").contains("priority"), "{err}");
    let mut extra = item();
    extra["signature"] = json!("abc");
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": [extra] }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert!(format!("{err}").contains("signature"), "{err}");

    // Empty, and one more than batch_max_items (10).
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": [] }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations", "{err}");
    let eleven: Vec<Value> = (0..11).map(|_| item()).collect();
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": eleven }))
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations", "{err}");
    assert!(fields(&err)[0].1.contains("10"), "names the limit: {err}");

    // A callback URL that is not http(s).
    for url in [
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "example.com/hook",
        "",
        "file:///etc/passwd",
    ] {
        let r = app
            .post_json(
                BATCH_PATH,
                &json!({ "validations": [item()], "callback_url": url }),
            )
            .await;
        let err = expect_error(r, 422, "LUCID_ERR_4220").await;
        assert_eq!(fields(&err)[0].0, "callback_url", "{url}: {err}");
    }
    let long = format!("http://example.com/{}", "a".repeat(2048));
    let r = app
        .post_json(
            BATCH_PATH,
            &json!({ "validations": [item()], "callback_url": long }),
        )
        .await;
    expect_error(r, 422, "LUCID_ERR_4220").await;

    // Not JSON at all: 415 without a JSON content type.
    let body = serde_json::to_vec(&json!({ "validations": [item()] })).expect("json");
    let r = post_raw(&app, BATCH_PATH, body.clone(), None).await;
    expect_error(r, 415, "LUCID_ERR_4150").await;
    let r = post_raw(&app, BATCH_PATH, body.clone(), Some("text/plain")).await;
    expect_error(r, 415, "LUCID_ERR_4150").await;

    // Nothing stored changed: the same batches, the same queued chunk, and the
    // stored batch is untouched.
    assert_eq!(app.count("batches", doc! {}).await, baseline);
    assert_eq!(
        app.queue
            .counts("poot-validation")
            .await
            .expect("counts")
            .queued,
        1
    );
    assert_eq!(
        app.get_json(&format!("/api/v1/batches/{stored}"), 200)
            .await,
        stored_view
    );

    // Control: exactly batch_max_items is accepted.
    let ten: Vec<Value> = (0..10).map(|_| item()).collect();
    app.submit_batch(&json!({ "validations": ten })).await;
    assert_eq!(app.count("batches", doc! {}).await, baseline + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_batch_and_an_unknown_route_answer_404_in_the_envelope() {
    let app = spawn_app_with(test_settings(), 0).await;
    expect_error(
        app.get("/api/v1/batches/batch_0000000000000000").await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    expect_error(
        app.get("/api/v1/batches/batch_0000000000000000/items?status=failed")
            .await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    expect_error(
        app.post("/api/v1/batches/batch_0000000000000000/cancel")
            .await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    expect_error(
        app.get("/api/v1/no-such-route").await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    expect_error(app.get("/api/v2/batches").await, 404, "LUCID_ERR_4040").await;
    let r = app.post_json("/api/v1/nope", &json!({})).await;
    expect_error(r, 404, "LUCID_ERR_4040").await;
    assert_eq!(app.count("batches", doc! {}).await, 0);
}

// ---------------------------------------------------------------------------
// Cancellation.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_batch_cancels_its_chunks_and_no_item_is_ever_processed() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 3;
    let app = spawn_app_with(settings.clone(), 0).await;
    app.insert_nodes(&["node_c".to_string()]).await;
    let items: Vec<Value> = (0..14)
        .map(|_| ItemBuilder::new("node_c").build())
        .collect();
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": items }))
        .await;
    assert_eq!(r.status().as_u16(), 202);
    let accepted: Value = r.json().await.expect("json");
    assert_eq!(accepted["chunk_count"], 5);
    let batch_id = accepted["batch_id"].as_str().expect("id").to_string();
    let chunk = |i: u32| format!("/api/v1/jobs/{batch_id}-c{i:05}");

    // Nothing runs: the batch and its chunks wait.
    let view = app
        .get_json(accepted["status_url"].as_str().expect("url"), 200)
        .await;
    assert_eq!(view["status"], "queued", "{view}");
    assert_eq!(view["pending"], 14);
    assert_eq!(view["progress"].as_f64(), Some(0.0));
    assert!(view["started_at"].is_null() && view["finished_at"].is_null());
    for i in 0..5 {
        let job = app.get_json(&chunk(i), 200).await;
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["batch_id"], batch_id.as_str());
        assert_eq!(job["queue"], "poot-validation");
    }
    expect_error(app.get(&chunk(5)).await, 404, "LUCID_ERR_4040").await;

    // Cancel.
    let r = app
        .post(&format!("/api/v1/batches/{batch_id}/cancel"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let cancelled: Value = r.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["batch_id"], batch_id.as_str());
    assert_eq!(cancelled["pending"], 14);
    assert!(cancelled["finished_at"].is_string(), "{cancelled}");
    for i in 0..5 {
        let job = app.get_json(&chunk(i), 200).await;
        assert_eq!(job["status"], "cancelled", "{job}");
        assert_eq!(job["attempts"], 0, "{job}");
    }
    let counts = app.queue.counts("poot-validation").await.expect("counts");
    assert_eq!((counts.queued, counts.scheduled, counts.running), (0, 0, 0));

    // A worker starts now and finds nothing to run.
    let worker = Worker::start(&app).await;
    // Several poll intervals for the worker to pick up anything it could.
    tokio::time::sleep(Duration::from_millis(settings.queue_poll_interval_ms * 5)).await;
    eventually(Duration::from_secs(10), "empty queues", || async {
        let v = app.get_json("/api/v1/queues", 200).await;
        v["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .all(|q| q["queued"] == 0 && q["scheduled"] == 0 && q["running"] == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        app.count("poot_validations", doc! {}).await,
        0,
        "no item result written"
    );
    assert_eq!(
        app.count("jobs", doc! { "batch_id": &batch_id }).await,
        0,
        "no chunk summary written"
    );
    for i in 0..5 {
        assert_eq!(app.get_json(&chunk(i), 200).await["status"], "cancelled");
    }
    let view = app
        .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
        .await;
    assert_eq!(view["status"], "cancelled", "{view}");
    assert_eq!(
        (&view["succeeded"], &view["failed"], &view["pending"]),
        (&json!(0), &json!(0), &json!(14))
    );

    // Cancelling again conflicts.
    let err = expect_error(
        app.post(&format!("/api/v1/batches/{batch_id}/cancel"))
            .await,
        409,
        "LUCID_ERR_4090",
    )
    .await;
    assert_eq!(err["details"]["status"], "cancelled", "{err}");

    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_batch_cannot_be_cancelled() {
    let app = spawn_app().await;
    app.insert_nodes(&["node_f".to_string()]).await;
    let batch_id = app
        .submit_batch(&json!({ "validations": [ItemBuilder::new("node_f").build()] }))
        .await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed", "{view}");
    let err = expect_error(
        app.post(&format!("/api/v1/batches/{batch_id}/cancel"))
            .await,
        409,
        "LUCID_ERR_4090",
    )
    .await;
    assert_eq!(err["details"]["status"], "completed", "{err}");
    let after = app
        .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
        .await;
    assert_eq!(after, view, "a refused cancel changes nothing");
}

// ---------------------------------------------------------------------------
// Jobs and queues.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_chunk_job_shows_succeeded_after_one_attempt_with_its_batch() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 4;
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_j".to_string()]).await;
    let items: Vec<Value> = (0..10)
        .map(|_| ItemBuilder::new("node_j").build())
        .collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed", "{view}");

    for i in 0..3 {
        let id = format!("{batch_id}-c{i:05}");
        // The last chunk is acknowledged just after it finalized the batch.
        let job = eventually(Duration::from_secs(10), "the chunk's ack", || async {
            let job = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
            (job["status"] != "running").then_some(job)
        })
        .await;
        assert_eq!(job["job_id"], id.as_str(), "{job}");
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["batch_id"], batch_id.as_str(), "{job}");
        assert_eq!(job["queue"], "poot-validation", "{job}");
        assert_eq!(job["kind"], "poot.validate_chunk", "{job}");
        assert!(job["last_error"].is_null(), "{job}");
        assert!(job["finished_at"].is_string(), "{job}");
    }
    expect_error(
        app.get(&format!("/api/v1/jobs/{batch_id}-c00003")).await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    expect_error(
        app.get("/api/v1/jobs/no-such-job").await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_list_every_queue_with_counts_and_the_live_worker() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 2;
    let app = spawn_app_with(settings, 1).await;
    let v = eventually(Duration::from_secs(10), "a live worker", || async {
        let v = app.get_json("/api/v1/queues", 200).await;
        (v["workers"].as_array().map(Vec::len) == Some(1)).then_some(v)
    })
    .await;
    let worker = &v["workers"][0];
    assert!(
        worker["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{v}"
    );
    let seen = rfc3339(&worker["last_seen"]);
    assert!(
        chrono::Utc::now()
            .signed_duration_since(seen)
            .num_seconds()
            .abs()
            < 30,
        "{v}"
    );
    let worker_queues: Vec<&str> = worker["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        worker_queues.contains(&"poot-validation")
            && worker_queues.contains(&"callbacks")
            && worker_queues.contains(&"payouts"),
        "{v}"
    );
    let names: Vec<&str> = v["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "poot-validation",
            "callbacks",
            "payouts",
            "earnings",
            "scaling-evaluation",
            "maintenance"
        ],
        "{v}"
    );
    for q in v["queues"].as_array().expect("queues") {
        for k in [
            "queued",
            "scheduled",
            "running",
            "succeeded",
            "dead",
            "retried",
        ] {
            assert_eq!(q[k], 0, "{k} of a fresh queue: {v}");
        }
    }

    // Counts follow the work: 3 chunks succeed.
    app.insert_nodes(&["node_q".to_string()]).await;
    let items: Vec<Value> = (0..6).map(|_| ItemBuilder::new("node_q").build()).collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    let v = eventually(Duration::from_secs(10), "3 succeeded chunks", || async {
        let v = app.get_json("/api/v1/queues", 200).await;
        (v["queues"][0]["succeeded"] == 3).then_some(v)
    })
    .await;
    let poot = &v["queues"][0];
    assert_eq!(poot["queue"], "poot-validation");
    assert_eq!(
        (&poot["queued"], &poot["running"], &poot["dead"]),
        (&json!(0), &json!(0), &json!(0)),
        "{v}"
    );
    assert_eq!(v["queues"][1]["succeeded"], 0, "no callback: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_an_unknown_queue_are_404_and_of_a_known_queue_empty() {
    let app = spawn_app_with(test_settings(), 0).await;
    expect_error(
        app.get("/api/v1/queues/nope/dead").await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    for q in ["poot-validation", "callbacks"] {
        let v = app.get_json(&format!("/api/v1/queues/{q}/dead"), 200).await;
        assert_eq!(v["queue"], q);
        assert_eq!(v["total"], 0, "{v}");
        assert_eq!(v["jobs"], json!([]), "{v}");
    }
    expect_error(
        app.get("/api/v1/queues/poot-validation/dead?page_size=101")
            .await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Completion callbacks.
// ---------------------------------------------------------------------------

fn callback_settings() -> lucid_jobs::config::Settings {
    let mut settings = test_settings();
    settings.visibility_timeout_ms = 1_500;
    settings.batch_chunk_size = 2;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_callback_is_delivered_exactly_once_with_the_final_status() {
    let settings = callback_settings();
    let window = Duration::from_millis(settings.visibility_timeout_ms);
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_cb".to_string()]).await;
    let receiver = Receiver::start(0).await;
    let items = vec![
        ItemBuilder::new("node_cb").build(),
        ItemBuilder::new("node_cb").output_raw("%%%").build(),
        ItemBuilder::new("node_cb").build(),
        ItemBuilder::new("node_unknown").build(),
        ItemBuilder::new("node_cb").build(),
    ];
    let batch_id = app
        .submit_batch(&json!({ "validations": items, "callback_url": receiver.url }))
        .await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed_with_errors", "{view}");

    eventually(Duration::from_secs(15), "the callback", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    // An extra visibility window: a second delivery would show up by now.
    tokio::time::sleep(window * 2).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "delivered exactly once: {got:?}");
    let hit = &got[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.idempotency_key.as_deref(), Some(batch_id.as_str()));
    assert!(
        hit.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{hit:?}"
    );
    assert_eq!(hit.body["batch_id"], batch_id.as_str(), "{hit:?}");
    assert_eq!(hit.body["status"], "completed_with_errors", "{hit:?}");
    assert_eq!(hit.body["total"], 5);
    assert_eq!(hit.body["succeeded"], 3);
    assert_eq!(hit.body["failed"], 2);
    assert_eq!(hit.body["pending"], 0);
    assert!(hit.body["finished_at"].is_string(), "{hit:?}");

    let job = app
        .get_json(&format!("/api/v1/jobs/callback-{batch_id}"), 200)
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["queue"], "callbacks", "{job}");
    let batch = app
        .db
        .collection::<Document>("batches")
        .find_one(doc! { "_id": &batch_id })
        .await
        .expect("find")
        .expect("batch");
    assert!(
        batch.get_datetime("callback_delivered_at").is_ok(),
        "{batch}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_answered_500_twice_is_retried_until_delivered_and_never_resent() {
    let settings = callback_settings();
    let window = Duration::from_millis(settings.visibility_timeout_ms);
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_cb".to_string()]).await;
    let receiver = Receiver::start(2).await;
    let items: Vec<Value> = (0..3)
        .map(|_| ItemBuilder::new("node_cb").build())
        .collect();
    let batch_id = app
        .submit_batch(&json!({ "validations": items, "callback_url": receiver.url }))
        .await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed", "{view}");

    let job = eventually(
        Duration::from_secs(20),
        "the callback delivered",
        || async {
            // The callback job is enqueued just after the batch turns final: 404 until then.
            let r = app.get(&format!("/api/v1/jobs/callback-{batch_id}")).await;
            if r.status().as_u16() == 404 {
                return None;
            }
            assert_eq!(r.status().as_u16(), 200);
            let job: Value = r.json().await.expect("json");
            (job["status"] == "succeeded").then_some(job)
        },
    )
    .await;
    assert_eq!(job["attempts"], 3, "{job}");
    tokio::time::sleep(window * 2).await;

    let got = receiver.received();
    assert_eq!(got.len(), 3, "two refusals, one delivery: {got:?}");
    for hit in &got {
        assert_eq!(hit.idempotency_key.as_deref(), Some(batch_id.as_str()));
        assert_eq!(hit.body["status"], "completed", "{hit:?}");
        assert_eq!(hit.body["succeeded"], 3, "{hit:?}");
    }
    let callbacks = app.queue.counts("callbacks").await.expect("counts");
    assert_eq!(callbacks.retried, 2, "{callbacks:?}");
    assert_eq!(callbacks.succeeded, 1, "{callbacks:?}");
    assert_eq!(
        (
            callbacks.queued,
            callbacks.scheduled,
            callbacks.running,
            callbacks.dead
        ),
        (0, 0, 0, 0),
        "{callbacks:?}"
    );
    let dead = app.get_json("/api/v1/queues/callbacks/dead", 200).await;
    assert_eq!(dead["total"], 0);
}

// ---------------------------------------------------------------------------
// Health, documents, request ids.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_openapi_and_docs_answer() {
    let app = spawn_app_with(test_settings(), 0).await;
    let health = app.get_json("/health", 200).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], SERVICE);

    let ready = app.get_json("/ready", 200).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    for dep in ["redis", "mongodb", "postgres"] {
        assert_eq!(ready["checks"][dep], "up", "{dep}: {ready}");
    }

    let doc = app.get_json("/openapi.json", 200).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/health", "get"),
        ("/ready", "get"),
        ("/api/v1/nodes/poot/batch-validate", "post"),
        ("/api/v1/batches/{batch_id}", "get"),
        ("/api/v1/batches/{batch_id}/items", "get"),
        ("/api/v1/batches/{batch_id}/cancel", "post"),
        ("/api/v1/jobs/{job_id}", "get"),
        ("/api/v1/queues", "get"),
        ("/api/v1/queues/{queue}/dead", "get"),
    ] {
        assert!(
            paths.get(path).is_some_and(|p| p.get(method).is_some()),
            "{method} {path} missing from /openapi.json: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    assert!(
        schemas.contains_key("ErrorEnvelope"),
        "{:?}",
        schemas.keys()
    );

    let r = app.get("/docs").await;
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = r.text().await.expect("html");
    assert!(html.to_ascii_lowercase().contains("<html"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_echoed_and_used_in_the_error_envelope() {
    let app = spawn_app_with(test_settings(), 0).await;
    let send = |path: &str, id: Option<&str>| {
        let mut req = app.client.get(format!("{}{path}", app.address));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let header = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };

    let r = send("/health", Some("client-id-123")).await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r).as_deref(), Some("client-id-123"));

    let r = send("/api/v1/batches/batch_missing", Some("trace-abc.42"))
        .await
        .expect("send");
    assert_eq!(header(&r).as_deref(), Some("trace-abc.42"));
    let err = expect_error(r, 404, "LUCID_ERR_4040").await;
    assert_eq!(err["request_id"], "trace-abc.42");

    // Without one (or with an unusable one) the API assigns a fresh id.
    let r = send("/health", None).await.expect("send");
    let a = header(&r).expect("generated id");
    let r = send("/health", None).await.expect("send");
    let b = header(&r).expect("generated id");
    assert!(!a.is_empty() && a != b, "{a} {b}");
    let too_long = "x".repeat(200);
    let r = send("/api/v1/nope", Some(&too_long)).await.expect("send");
    let got = header(&r).expect("id");
    assert_ne!(got, too_long);
    let err = expect_error(r, 404, "LUCID_ERR_4040").await;
    assert_eq!(err["request_id"], got.as_str());
}

// ---------------------------------------------------------------------------
// Robustness.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_produce_a_server_error() {
    let mut settings = test_settings();
    settings.batch_max_items = 50;
    let app = spawn_app_with(settings, 0).await;
    app.insert_nodes(&["node_r".to_string()]).await;
    let (seed, mut rng) = seeded_rng();
    let valid = serde_json::to_vec(&json!({
        "validations": [ItemBuilder::new("node_r").build(), ItemBuilder::new("node_x").build()],
        "callback_url": "http://127.0.0.1:9/hook",
    }))
    .expect("json");
    let alphabet: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b" ",
        b"0",
        b"-1",
        b"1e999",
        b"3.5",
        b"true",
        b"null",
        b"\\u0000",
        b"\\",
        b"\"validations\"",
        b"\"node_id\"",
        b"\"output_data\"",
        b"\"timestamp\"",
        b"\"nonce\"",
        b"\"callback_url\"",
        b"\"2024-02-30T25:61:00Z\"",
        b"\"+275760-09-13T00:00:00Z\"",
        b"\xf0\x9f\x92\xa5",
        b"\xff",
    ];
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for round in 0..200 {
        let body: Vec<u8> = match round % 4 {
            // Arbitrary bytes.
            0 => {
                let len = rng.gen_range(0..512);
                random_bytes(&mut rng, len)
            }
            // A valid body with a few random byte edits.
            1 | 2 => {
                let mut b = valid.clone();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..b.len());
                    match rng.gen_range(0..3) {
                        0 => b[at] = rng.gen_range(0..=255),
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, rng.gen_range(0..=255)),
                    }
                }
                b
            }
            // JSON-looking token soup.
            _ => (0..rng.gen_range(0..60))
                .flat_map(|_| alphabet[rng.gen_range(0..alphabet.len())].to_vec())
                .collect(),
        };
        let content_type = match round % 13 {
            0 => None,
            1 => Some("text/plain"),
            _ => Some("application/json"),
        };
        let r = post_raw(&app, BATCH_PATH, body.clone(), content_type).await;
        let status = r.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let text = r.text().await.expect("body");
        assert!(
            status < 500,
            "seed {seed}, round {round}: {status} for body {:?}: {text}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("seed {seed}, round {round}: {status} body not JSON ({e}): {text}")
            });
            assert!(
                v["error"]["code"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("LUCID_ERR_")),
                "seed {seed}, round {round}: {v}"
            );
        }
    }
    // The API is still healthy afterwards.
    let ready = app.get_json("/ready", 200).await;
    assert_eq!(ready["status"], "ready", "after {statuses:?}");
}

// ---------------------------------------------------------------------------
// Dead chunks, retention and the documented contract.
// ---------------------------------------------------------------------------

/// Submits a 3-chunk batch (6 items, item 0 from an unknown node) while
/// nothing runs, poisons chunk 1, then starts a worker and waits until chunk
/// 1 is dead and chunks 0 and 2 succeeded.
async fn batch_with_a_dead_chunk(callback_url: Option<&str>) -> (TestApp, Worker, String) {
    let mut settings = test_settings();
    settings.batch_chunk_size = 2;
    settings.job_max_attempts = 2;
    let app = spawn_app_with(settings, 0).await;
    app.insert_nodes(&["node_d".to_string()]).await;
    let items: Vec<Value> = (0..6)
        .map(|i| {
            if i == 0 {
                ItemBuilder::new("node_gone").build()
            } else {
                ItemBuilder::new("node_d").build()
            }
        })
        .collect();
    let mut body = json!({ "validations": items });
    if let Some(url) = callback_url {
        body["callback_url"] = json!(url);
    }
    let batch_id = app.submit_batch(&body).await;
    poison_job_payload(&app, &format!("{batch_id}-c00001")).await;
    let worker = Worker::start(&app).await;
    eventually(
        Duration::from_secs(20),
        "one dead chunk and two succeeded",
        || async {
            let c = app.queue.counts("poot-validation").await.expect("counts");
            (c.dead == 1 && c.succeeded == 2).then_some(())
        },
    )
    .await;
    (app, worker, batch_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_cannot_run_is_listed_in_the_dead_letters_and_can_be_requeued() {
    let (app, worker, batch_id) = batch_with_a_dead_chunk(None).await;
    let dead_id = format!("{batch_id}-c00001");

    let v = app
        .get_json("/api/v1/queues/poot-validation/dead", 200)
        .await;
    assert_eq!(v["queue"], "poot-validation");
    assert_eq!(v["total"], 1, "{v}");
    let job = &v["jobs"][0];
    assert_eq!(job["job_id"], dead_id.as_str(), "{v}");
    assert_eq!(job["status"], "dead", "{v}");
    assert_eq!(job["batch_id"], batch_id.as_str(), "{v}");
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("decode")),
        "{v}"
    );
    let empty = app.get_json("/api/v1/queues/callbacks/dead", 200).await;
    assert_eq!(empty["total"], 0);
    let before = app.get_json(&format!("/api/v1/jobs/{dead_id}"), 200).await;
    assert_eq!(before["status"], "dead", "{before}");

    // Only dead jobs can be requeued.
    let err = expect_error(
        app.post(&format!("/api/v1/jobs/{batch_id}-c00000/retry"))
            .await,
        409,
        "LUCID_ERR_4090",
    )
    .await;
    assert_eq!(err["details"]["status"], "succeeded", "{err}");
    expect_error(
        app.post("/api/v1/jobs/no-such-job/retry").await,
        404,
        "LUCID_ERR_4040",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = app.post(&format!("/api/v1/jobs/{dead_id}/retry")).await;
    assert_eq!(r.status().as_u16(), 202);
    let out: Value = r.json().await.expect("json");
    assert_eq!(out, json!({ "job_id": dead_id, "status": "queued" }));

    // It runs again, still cannot be decoded, and is dead again: listed once.
    let after = eventually(Duration::from_secs(10), "the job to die again", || async {
        let j = app.get_json(&format!("/api/v1/jobs/{dead_id}"), 200).await;
        (j["status"] == "dead" && j["finished_at"] != before["finished_at"]).then_some(j)
    })
    .await;
    assert!(after["last_error"].is_string(), "{after}");
    let v = app
        .get_json("/api/v1/queues/poot-validation/dead", 200)
        .await;
    assert_eq!(v["total"], 1, "{v}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_undecodable_chunk_ends_failed_and_counts_the_chunk_items_as_failed() {
    let receiver = Receiver::start(0).await;
    let (app, worker, batch_id) = batch_with_a_dead_chunk(Some(&receiver.url)).await;
    // The batch leaves `running` once its chunk died.
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(5)).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["total"], 6);
    assert_eq!(view["succeeded"], 3, "{view}");
    assert_eq!(
        view["failed"], 3,
        "1 unknown node + the 2 items of the dead chunk: {view}"
    );
    assert_eq!(view["pending"], 0, "{view}");
    assert_eq!(view["progress"].as_f64(), Some(1.0), "{view}");
    assert!(view["finished_at"].is_string(), "{view}");
    eventually(Duration::from_secs(10), "the callback", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    assert_eq!(receiver.received()[0].body["status"], "failed");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_chunk_dies_with_its_worker_on_the_last_attempt_ends_failed() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 2;
    settings.job_max_attempts = 1;
    settings.visibility_timeout_ms = 600;
    let app = spawn_app_with(settings, 0).await;
    app.insert_nodes(&["node_l".to_string()]).await;
    let items: Vec<Value> = (0..4).map(|_| ItemBuilder::new("node_l").build()).collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let doomed = format!("{batch_id}-c00000");

    // A worker leases chunk 0 (its only attempt) and dies without finishing it.
    let leased = app
        .queue
        .fetch("poot-validation", "doomed-worker", 1)
        .await
        .expect("fetch");
    assert_eq!(
        leased.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [doomed.as_str()]
    );
    // A live worker runs chunk 1 and, once the lease has expired, dead-letters chunk 0.
    let worker = Worker::start(&app).await;
    eventually(
        Duration::from_secs(10),
        "chunk 0 dead and chunk 1 succeeded",
        || async {
            let c = app.queue.counts("poot-validation").await.expect("counts");
            (c.dead == 1 && c.succeeded == 1).then_some(())
        },
    )
    .await;
    let job = app.get_json(&format!("/api/v1/jobs/{doomed}"), 200).await;
    assert_eq!(job["status"], "dead", "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("lease expired")),
        "{job}"
    );

    // The batch leaves `running` once its chunk died.
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(5)).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["succeeded"], 2, "{view}");
    assert_eq!(view["failed"], 2, "the items of the dead chunk: {view}");
    assert_eq!(view["pending"], 0, "{view}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_with_a_callback_url_receives_its_final_status_once() {
    let settings = callback_settings();
    let window = Duration::from_millis(settings.visibility_timeout_ms);
    let app = spawn_app_with(settings, 0).await;
    app.insert_nodes(&["node_cb".to_string()]).await;
    let receiver = Receiver::start(0).await;
    let items: Vec<Value> = (0..3)
        .map(|_| ItemBuilder::new("node_cb").build())
        .collect();
    let batch_id = app
        .submit_batch(&json!({ "validations": items, "callback_url": receiver.url }))
        .await;
    let r = app
        .post(&format!("/api/v1/batches/{batch_id}/cancel"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let worker = Worker::start(&app).await;
    eventually(
        Duration::from_secs(10),
        "the callback of the cancelled batch",
        || async { (!receiver.received().is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(window * 2).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].idempotency_key.as_deref(), Some(batch_id.as_str()));
    assert_eq!(got[0].body["status"], "cancelled", "{got:?}");
    assert_eq!(got[0].body["pending"], 3, "{got:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_chunk_job_is_still_served_from_its_summary_after_its_queue_record_expires() {
    let mut settings = test_settings();
    settings.batch_chunk_size = 5;
    settings.job_retention_secs = 1;
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_e".to_string()]).await;
    let items: Vec<Value> = (0..10)
        .map(|_| ItemBuilder::new("node_e").build())
        .collect();
    let batch_id = app.submit_batch(&json!({ "validations": items })).await;
    let view = app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "completed", "{view}");
    let id = format!("{batch_id}-c00001");
    eventually(
        Duration::from_secs(10),
        "the queue record to expire",
        || async {
            app.queue
                .job(&id)
                .await
                .expect("job")
                .is_none()
                .then_some(())
        },
    )
    .await;
    let job = app.get_json(&format!("/api/v1/jobs/{id}"), 200).await;
    assert_eq!(job["job_id"], id.as_str(), "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["batch_id"], batch_id.as_str(), "{job}");
    assert_eq!(job["queue"], "poot-validation", "{job}");
    assert_eq!(job["kind"], "poot.validate_chunk", "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_results_show_their_timestamps_as_rfc3339_strings() {
    let app = spawn_app().await;
    app.insert_nodes(&["node_t".to_string()]).await;
    let at = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut item = ItemBuilder::new("node_t").build();
    item["timestamp"] = json!(at);
    let batch_id = app.submit_batch(&json!({ "validations": [item] })).await;
    app.wait_for_batch(&batch_id, Duration::from_secs(30)).await;

    let doc = app.get_json("/openapi.json", 200).await;
    // The schema of one item of the listing, whatever it is named.
    let schemas = &doc["components"]["schemas"];
    let item_ref = schemas["ItemsPage"]["properties"]["items"]["items"]["$ref"]
        .as_str()
        .expect("ItemsPage.items is a $ref");
    let name = item_ref.rsplit('/').next().expect("schema name");
    let schema = &schemas[name]["properties"];
    assert_eq!(schema["timestamp"]["type"], "string", "{schema}");
    assert_eq!(schema["validated_at"]["type"], "string", "{schema}");

    let page = app
        .get_json(&format!("/api/v1/batches/{batch_id}/items"), 200)
        .await;
    let got = &page["items"][0];
    assert!(got["timestamp"].is_string(), "timestamp: {got}");
    assert_eq!(
        rfc3339(&got["timestamp"]),
        chrono::DateTime::parse_from_rfc3339(&at).expect("time")
    );
    assert!(got["validated_at"].is_string(), "validated_at: {got}");
    rfc3339(&got["validated_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_offending_field_by_its_json_path() {
    let app = spawn_app_with(test_settings(), 0).await;
    for body in ["null", "5", "\"x\"", "true", "[]"] {
        let r = post_raw(
            &app,
            BATCH_PATH,
            body.as_bytes().to_vec(),
            Some("application/json"),
        )
        .await;
        let err = expect_error(r, 422, "LUCID_ERR_4220").await;
        assert_eq!(fields(&err)[0].0, "body", "{body}: {err}");
    }
    let mut no_nonce = ItemBuilder::new("n").build();
    no_nonce.as_object_mut().expect("object").remove("nonce");
    let r = app
        .post_json(
            BATCH_PATH,
            &json!({ "validations": [ItemBuilder::new("n").build(), no_nonce] }),
        )
        .await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations[1].nonce", "{err}");
    let r = app.post_json(BATCH_PATH, &json!({})).await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err)[0].0, "validations", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_answers_405_in_the_error_envelope() {
    let app = spawn_app_with(test_settings(), 0).await;
    let r = app.get(BATCH_PATH).await;
    assert_eq!(
        r.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    expect_error(r, 405, "LUCID_ERR_4050").await;
    let r = app
        .client
        .delete(format!("{}/api/v1/queues", app.address))
        .send()
        .await
        .expect("request");
    expect_error(r, 405, "LUCID_ERR_4050").await;
    let r = app.get("/api/v1/batches/batch_x/cancel").await;
    expect_error(r, 405, "LUCID_ERR_4050").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_timestamp_out_of_the_storable_range_is_refused_or_fails_alone() {
    let mut settings = test_settings();
    settings.job_max_attempts = 2;
    let app = spawn_app_with(settings, 1).await;
    app.insert_nodes(&["node_y".to_string()]).await;
    let mut ancient = ItemBuilder::new("node_y").build();
    ancient["timestamp"] = json!("-0001-01-01T00:00:00Z");
    let items = json!([
        ItemBuilder::new("node_y").build(),
        ancient,
        ItemBuilder::new("node_y").build(),
    ]);
    let r = app
        .post_json(BATCH_PATH, &json!({ "validations": items }))
        .await;
    if r.status().as_u16() == 422 {
        let err = expect_error(r, 422, "LUCID_ERR_4220").await;
        assert_eq!(fields(&err)[0].0, "validations[1].timestamp", "{err}");
        return;
    }
    assert_eq!(r.status().as_u16(), 202);
    let batch_id = r.json::<Value>().await.expect("json")["batch_id"]
        .as_str()
        .expect("id")
        .to_string();
    let view = eventually(
        Duration::from_secs(15),
        "the batch to end or its chunk to die",
        || async {
            let v = app
                .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
                .await;
            let dead = app
                .queue
                .counts("poot-validation")
                .await
                .expect("counts")
                .dead;
            (dead > 0 || (v["status"] != "running" && v["status"] != "queued")).then_some(v)
        },
    )
    .await;
    assert!(
        view["status"] == "completed" || view["status"] == "completed_with_errors",
        "{view}"
    );
    assert_eq!(view["pending"], 0, "{view}");
    let ok = app
        .get_json(
            &format!("/api/v1/batches/{batch_id}/items?status=succeeded"),
            200,
        )
        .await;
    assert!(
        ok["total"].as_u64().unwrap_or(0) >= 2,
        "the valid items: {ok}"
    );
}
