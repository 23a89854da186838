//! PoOT over HTTP (issue 4): signed work proofs, score calculation,
//! validation, latest score and history, statistics, and batch validation
//! with the real model, against the real API and MongoDB.
//!
//! Proofs are signed here with the node's secret from its creation answer,
//! using the same `canonical_json` and `sign` a node would use. Most tests
//! need no worker (`spawn_app_with(.., 0)`); the batch test runs one.
//!
//! The "standard week of work" ([`work_history`]) is chosen so every
//! component has a round, hand-computed value:
//!
//! | proof                                   | credits | other                        |
//! |-----------------------------------------|---------|------------------------------|
//! | relay 10 MiB, 5 sessions                | 5       | 5 session hours              |
//! | storage 2 GB (+ `chunks`)               | 20 (+2·chunks) |                       |
//! | validation 1 session                    | 5       |                              |
//! | 1,260 uptime beacons of 120 s           |         | 151,200 s = 0.25 of the week |
//!
//! All proofs fall in 1,260 of the window's 5,040 slots (session_quality 0.25),
//! nothing is refused (trust 1), no resource samples (cpu 0, network 0), so
//! score = 0.25·50 + 0.20·(30 + 2·chunks) + 0 + 0 + 0.15·25 + 0.10·25 + 0.05·100
//! = 29.75 + 0.4·chunks.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use lucid_jobs::poot::proof::{ProofIn, ProofKind, canonical_json, sign};
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{NodeBuilder, PoolBuilder, Reply, TestApp, spawn_app_with, test_settings};

const SLOT_SECONDS: u64 = 120;
const WINDOW_SECONDS: u64 = 7 * 24 * 3600;
const WINDOW_SLOTS: u64 = WINDOW_SECONDS / SLOT_SECONDS;
/// Uptime beacons of the standard week: a quarter of the window's slots.
const BEACONS: u64 = 1260;
const MIB: u64 = 1024 * 1024;
const STATISTICS: &str = "/api/v1/nodes/poot/statistics";

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

/// A registered node and the secret it was given at creation.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) secret: String,
}

/// The API without workers (nothing here but the batch test needs one).
async fn api_only() -> TestApp {
    spawn_app_with(test_settings(), 0).await
}

pub(crate) async fn create_node(app: &TestApp, node_type: &str) -> Node {
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/",
            Some(&NodeBuilder::new().node_type(node_type).build()),
        )
        .await;
    let b = r.expect(201, "create node");
    let secret = b["secret"].as_str().expect("secret").to_string();
    assert_eq!(secret.len(), 64, "32 random bytes, hex: {b}");
    Node {
        id: b["node_id"].as_str().expect("node_id").to_string(),
        secret,
    }
}

async fn create_pool(app: &TestApp, name: &str) -> String {
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/pools/",
            Some(&PoolBuilder::new().name(name).build()),
        )
        .await;
    r.expect(201, "create pool")["pool_id"]
        .as_str()
        .expect("pool_id")
        .to_string()
}

async fn add_to_pool(app: &TestApp, pool_id: &str, node_id: &str) {
    app.api_call(
        Method::POST,
        &format!("/api/v1/nodes/pools/{pool_id}/nodes"),
        Some(&json!({ "node_id": node_id })),
    )
    .await
    .expect(200, "add node to pool");
}

fn now_slot() -> u64 {
    Utc::now().timestamp() as u64 / SLOT_SECONDS
}

fn beacon(seconds: u64) -> ProofKind {
    ProofKind::UptimeBeacon { seconds }
}

fn relay(bytes: u64, sessions: u64) -> ProofKind {
    ProofKind::RelayBandwidth {
        bytes,
        sessions,
        duration_seconds: None,
    }
}

fn storage(gb: f64, chunks: u64) -> ProofKind {
    ProofKind::StorageAvailability { gb, chunks }
}

fn validated(validated_sessions: u64) -> ProofKind {
    ProofKind::ValidationSignature { validated_sessions }
}

/// The wire JSON of a proof signed with `secret`.
fn signed(secret: &str, slot: u64, kind: ProofKind) -> Value {
    let signature = sign(secret, &canonical_json(slot, &kind));
    serde_json::to_value(ProofIn {
        slot,
        kind,
        signature,
    })
    .expect("proof json")
}

async fn post_proofs(app: &TestApp, node_id: &str, body: &Value) -> Reply {
    app.api_call(
        Method::POST,
        &format!("/api/v1/nodes/{node_id}/poot/proofs"),
        Some(body),
    )
    .await
}

/// Submits `proofs` (in requests of at most 1,000), asserting each is accepted.
async fn submit_all(app: &TestApp, node_id: &str, proofs: &[Value]) {
    for chunk in proofs.chunks(1000) {
        let r = post_proofs(app, node_id, &json!({ "proofs": chunk })).await;
        let b = r.expect(201, "submit proofs");
        assert_eq!(b["accepted"], chunk.len(), "{b}");
        assert_eq!(b["duplicates"], json!([]), "{b}");
    }
}

/// The standard week of work (see the module doc), with `chunks` stored
/// chunks on top: score 29.75 + 0.4·chunks.
fn work_history(secret: &str, chunks: u64) -> Vec<Value> {
    let now = now_slot();
    let mut proofs: Vec<Value> = (1..=BEACONS)
        .map(|k| signed(secret, now - k, beacon(SLOT_SECONDS)))
        .collect();
    proofs.push(signed(secret, now - 1, relay(10 * MIB, 5)));
    proofs.push(signed(secret, now - 2, storage(2.0, chunks)));
    proofs.push(signed(secret, now - 3, validated(1)));
    proofs
}

/// Gives `node` the standard week of work; returns its expected score.
pub(crate) async fn give_work(app: &TestApp, node: &Node, chunks: u64) -> f64 {
    submit_all(app, &node.id, &work_history(&node.secret, chunks)).await;
    29.75 + 0.4 * chunks as f64
}

async fn calculate(app: &TestApp, node_id: &str) -> Value {
    app.api_call(
        Method::POST,
        &format!("/api/v1/nodes/{node_id}/poot/calculate"),
        None,
    )
    .await
    .expect(200, "calculate")
    .clone()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn validate_body(output: &[u8], nonce: &str, timestamp: DateTime<Utc>) -> Value {
    json!({ "output_data": b64(output), "timestamp": rfc3339(timestamp), "nonce": nonce })
}

async fn validate(app: &TestApp, node_id: &str, body: &Value) -> Reply {
    app.api_call(
        Method::POST,
        &format!("/api/v1/nodes/{node_id}/poot/validate"),
        Some(body),
    )
    .await
}

/// Validates a small output with a fresh nonce, asserting 201.
async fn validate_ok(app: &TestApp, node_id: &str) -> Value {
    let body = validate_body(b"lucid output", &nonce(), Utc::now());
    validate(app, node_id, &body)
        .await
        .expect(201, "validate")
        .clone()
}

/// A validation record's `validation_id`.
fn id_of(record: &Value) -> String {
    record["validation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("validation_id: {record}"))
        .to_string()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn assert_close(got: &Value, want: f64, what: &str) {
    let g = f(got);
    assert!((g - want).abs() < 1e-9, "{what}: got {g}, want {want}");
}

/// One batch item, built by hand (nonce and timestamp chosen by the test).
fn item(node_id: &str, output_data: &str, nonce: &str, timestamp: DateTime<Utc>) -> Value {
    json!({ "node_id": node_id, "output_data": output_data, "timestamp": rfc3339(timestamp), "nonce": nonce })
}

// ---------------------------------------------------------------------------
// Proofs.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn one_proof_or_a_list_of_signed_proofs_is_accepted_with_its_count() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let now = now_slot();

    let one = signed(&node.secret, now - 1, beacon(120));
    let r = post_proofs(&app, &node.id, &one).await;
    let b = r.expect(201, "one proof");
    assert_eq!(b["accepted"], 1, "{b}");
    assert_eq!(b["duplicates"], json!([]), "{b}");

    let many = json!({ "proofs": [
        signed(&node.secret, now - 2, beacon(60)),
        signed(&node.secret, now - 2, relay(3 * MIB, 2)),
        signed(&node.secret, now, storage(1.5, 3)),
        signed(&node.secret, now + 1, validated(4)),
    ] });
    let r = post_proofs(&app, &node.id, &many).await;
    assert_eq!(r.expect(201, "many proofs")["accepted"], 4, "{}", r.body);

    assert_eq!(
        app.count("poot_proofs", doc! { "node_id": &node.id }).await,
        5
    );
    let stored = app
        .db
        .collection::<Document>("poot_proofs")
        .find_one(doc! { "_id": format!("{}:{}:relay_bandwidth", node.id, now - 2) })
        .await
        .expect("find")
        .expect("relay proof stored under {node}:{slot}:{type}");
    assert_eq!(stored.get_str("type"), Ok("relay_bandwidth"));
    // An empty list is not a submission.
    post_proofs(&app, &node.id, &json!({ "proofs": [] }))
        .await
        .expect_error(422, "LUCID_ERR_4220");
}

#[tokio::test]
async fn a_duplicate_proof_for_the_same_node_slot_and_type_is_answered_409_and_stored_once() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let slot = now_slot() - 5;
    let proof = signed(&node.secret, slot, relay(MIB, 1));

    post_proofs(&app, &node.id, &proof)
        .await
        .expect(201, "first");
    let r = post_proofs(&app, &node.id, &proof).await;
    r.expect_error(409, "LUCID_ERR_4090");
    // Same slot and type with another value is still the same proof.
    let other_value = signed(&node.secret, slot, relay(2 * MIB, 9));
    post_proofs(&app, &node.id, &other_value)
        .await
        .expect_error(409, "LUCID_ERR_4090");
    let id = format!("{}:{slot}:relay_bandwidth", node.id);
    assert_eq!(app.count("poot_proofs", doc! { "_id": &id }).await, 1);
    let kept = app
        .db
        .collection::<Document>("poot_proofs")
        .find_one(doc! { "_id": &id })
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(
        kept.get_document("value")
            .expect("value")
            .get_i64("sessions"),
        Ok(1),
        "the first proof is kept: {kept}"
    );

    // In a list, the new proofs are stored and the duplicate is reported.
    let list = json!({ "proofs": [
        signed(&node.secret, slot, beacon(120)),     // same slot, another type: new
        proof,                                       // duplicate
        signed(&node.secret, slot - 1, relay(MIB, 1)), // another slot: new
    ] });
    let r = post_proofs(&app, &node.id, &list).await;
    let b = r.expect(201, "list with one duplicate");
    assert_eq!(
        (b["accepted"].clone(), b["duplicates"].clone()),
        (json!(2), json!([1])),
        "{b}"
    );
    assert_eq!(
        app.count("poot_proofs", doc! { "node_id": &node.id }).await,
        3
    );
    assert_eq!(app.count("poot_proofs", doc! { "_id": &id }).await, 1);

    // A list of nothing but duplicates is a conflict.
    let r = post_proofs(
        &app,
        &node.id,
        &json!({ "proofs": [list["proofs"][0].clone(), list["proofs"][2].clone()] }),
    )
    .await;
    let e = r.expect_error(409, "LUCID_ERR_4090");
    assert_eq!(e["details"]["duplicates"], json!([0, 1]), "{e}");

    // The same proof twice in one request is stored once, too.
    let twice = signed(&node.secret, slot - 2, validated(3));
    let r = post_proofs(&app, &node.id, &json!({ "proofs": [twice.clone(), twice] })).await;
    let b = r.expect(201, "one request, same proof twice");
    assert_eq!(
        (b["accepted"].clone(), b["duplicates"].clone()),
        (json!(1), json!([1])),
        "{b}"
    );
    assert_eq!(
        app.count("poot_proofs", doc! { "node_id": &node.id }).await,
        4
    );
}

#[tokio::test]
async fn a_proof_with_a_bad_signature_is_refused_with_5005_stores_nothing_and_lowers_trust() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let now = now_slot();
    let good: Vec<Value> = (1..=3)
        .map(|k| signed(&node.secret, now - k, beacon(120)))
        .collect();
    submit_all(&app, &node.id, &good).await;
    assert_close(&calculate(&app, &node.id).await["trust"], 1.0, "trust");

    // A list with one tampered proof: all refused, nothing stored.
    let mut tampered = signed(&node.secret, now - 10, beacon(60));
    tampered["value"]["seconds"] = json!(120);
    let list = json!({ "proofs": [
        signed(&node.secret, now - 11, beacon(120)),
        signed(&node.secret, now - 12, beacon(120)),
        tampered,
    ] });
    let r = post_proofs(&app, &node.id, &list).await;
    let e = r.expect_error(422, "LUCID_ERR_5005");
    assert_eq!(e["details"]["refused"], json!([2]), "{e}");
    assert_eq!(
        app.count("poot_proofs", doc! { "node_id": &node.id }).await,
        3,
        "nothing of a refused request is stored"
    );
    // trust = 1 − refused / all = 1 − 1/4.
    let c = calculate(&app, &node.id).await;
    assert_close(&c["trust"], 0.75, "trust after one refusal");
    assert_close(&c["components"][6], 0.05 * 75.0, "trust points");

    // A signature that is not even hex is refused the same way.
    let mut garbage = signed(&node.secret, now - 20, beacon(120));
    garbage["signature"] = json!("not-hex");
    post_proofs(&app, &node.id, &garbage)
        .await
        .expect_error(422, "LUCID_ERR_5005");
    assert_eq!(
        app.count("poot_proofs", doc! { "node_id": &node.id }).await,
        3
    );
    assert_close(
        &calculate(&app, &node.id).await["trust"],
        1.0 - 2.0 / 5.0,
        "trust after two refusals",
    );
}

#[tokio::test]
async fn a_proof_signed_with_another_nodes_secret_is_refused() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let other = create_node(&app, "worker").await;
    assert_ne!(node.secret, other.secret, "each node gets its own secret");
    let proof = signed(&other.secret, now_slot() - 1, beacon(120));

    post_proofs(&app, &node.id, &proof)
        .await
        .expect_error(422, "LUCID_ERR_5005");
    assert_eq!(app.count("poot_proofs", doc! {}).await, 0);
    assert_close(&calculate(&app, &node.id).await["trust"], 0.0, "trust");
    // The same proof is good for the node whose secret signed it.
    post_proofs(&app, &other.id, &proof)
        .await
        .expect(201, "own secret");
    // The secret is shown once: never in the node's representation.
    let got = app
        .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
        .await;
    assert!(got.get("secret").is_none(), "{got}");
}

#[tokio::test]
async fn after_a_secret_rotation_only_proofs_signed_with_the_new_secret_are_accepted() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let rotate = format!("/api/v1/nodes/{}/poot/secret/rotate", node.id);
    let r = app.api_call(Method::POST, &rotate, None).await;
    let out = r.expect(200, "rotate").clone();
    let secret = out["secret"].as_str().expect("secret").to_string();
    assert_eq!(out["node_id"], node.id.as_str(), "{out}");
    assert_eq!(secret.len(), 64, "{out}");
    assert_ne!(secret, node.secret);

    post_proofs(
        &app,
        &node.id,
        &signed(&node.secret, now_slot() - 1, beacon(120)),
    )
    .await
    .expect_error(422, "LUCID_ERR_5005");
    post_proofs(
        &app,
        &node.id,
        &signed(&secret, now_slot() - 1, beacon(120)),
    )
    .await
    .expect(201, "new secret");
    let got = app
        .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
        .await;
    assert!(got.get("secret").is_none(), "{got}");
    app.api_call(
        Method::POST,
        "/api/v1/nodes/node_missing_rotate/poot/secret/rotate",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_5001");
}

#[tokio::test]
async fn proofs_for_a_future_slot_or_with_more_uptime_than_a_slot_are_refused_422() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let now = now_slot();

    let r = post_proofs(&app, &node.id, &signed(&node.secret, now + 5, beacon(120))).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["proofs[0].slot"]);

    let r = post_proofs(&app, &node.id, &signed(&node.secret, now - 1, beacon(121))).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["proofs[0].value.seconds"]);

    // One bad value refuses the whole list.
    let list = json!({ "proofs": [
        signed(&node.secret, now - 1, beacon(120)),
        signed(&node.secret, now - 2, beacon(121)),
    ] });
    let r = post_proofs(&app, &node.id, &list).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["proofs[1].value.seconds"]);

    assert_eq!(app.count("poot_proofs", doc! {}).await, 0);
    // Invalid values are not signature refusals: trust is untouched.
    assert_close(&calculate(&app, &node.id).await["trust"], 1.0, "trust");
}

#[tokio::test]
async fn proofs_for_an_unknown_node_are_answered_404_5001() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let proof = signed(&node.secret, now_slot() - 1, beacon(120));
    post_proofs(&app, "node_does_not_exist", &proof)
        .await
        .expect_error(404, "LUCID_ERR_5001");
    assert_eq!(app.count("poot_proofs", doc! {}).await, 0);
}

// ---------------------------------------------------------------------------
// Calculate.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn calculate_returns_each_component_and_the_score_of_the_formula_for_a_known_week_of_work() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    give_work(&app, &node, 0).await;

    let c = calculate(&app, &node.id).await;
    // Hand-computed (see the module doc).
    assert_eq!(c["credits"], 30, "5 relay + 20 storage + 5 validation: {c}");
    assert_close(&c["session_hours"], 5.0, "session_hours");
    assert_close(&c["uptime_ratio"], 0.25, "uptime_ratio = 151200 / 604800");
    assert_close(
        &c["session_quality"],
        BEACONS as f64 / WINDOW_SLOTS as f64,
        "session_quality = 1260 / 5040",
    );
    assert_close(&c["session_quality"], 0.25, "session_quality");
    assert_close(&c["trust"], 1.0, "trust");
    assert_close(&c["cpu_utilisation_avg"], 0.0, "cpu");
    assert_close(&c["network_mbps_avg"], 0.0, "network");
    assert_eq!(c["eligible"], true, "{c}");
    let want = [12.5, 6.0, 0.0, 0.0, 3.75, 2.5, 5.0];
    let got = c["components"].as_array().expect("components");
    assert_eq!(got.len(), 7, "{c}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f(g) - w).abs() < 1e-9, "component {i}: {g} vs {w}");
    }
    assert_eq!(f(&c["score"]), 29.75, "{c}");

    // Relay credits take the larger of sessions and 5 MiB units, and a
    // duration replaces one hour per session: +7 credits, +0.5 h.
    let now = now_slot();
    let kind = ProofKind::RelayBandwidth {
        bytes: 30 * MIB + 1, // ceil = 7 > 2 sessions
        sessions: 2,
        duration_seconds: Some(1800),
    };
    submit_all(&app, &node.id, &[signed(&node.secret, now - 4, kind)]).await;
    let c = calculate(&app, &node.id).await;
    assert_eq!(c["credits"], 37, "{c}");
    assert_close(&c["session_hours"], 5.5, "session_hours");
    // 0.25·55 + 0.20·37 + 3.75 + 2.5 + 5 = 13.75 + 7.4 + 11.25 = 32.4
    assert_eq!(f(&c["score"]), 32.4, "{c}");

    // A proof older than the 7-day window (5,040 slots) is stored but not counted.
    let old = signed(&node.secret, now - WINDOW_SLOTS - 10, validated(10));
    submit_all(&app, &node.id, &[old]).await;
    let again = calculate(&app, &node.id).await;
    assert_eq!(again["credits"], 37, "{again}");
    assert_eq!(f(&again["score"]), 32.4, "{again}");
    // Recalculating writes no validation.
    assert_eq!(app.count("poot_validations", doc! {}).await, 0);
}

/// A resource sample (issue 3's body) at `t` with `cpu` % and network counters.
fn resource_sample(t: DateTime<Utc>, cpu: f64, bytes_in: u64, bytes_out: u64) -> Value {
    const GIB: u64 = 1 << 30;
    json!({
        "timestamp": rfc3339(t),
        "cpu": { "usage_percent": cpu, "cores": 8, "frequency_mhz": 2400.0, "load_average": [0.5, 0.4, 0.3] },
        "memory": { "total": 4 * GIB, "used": GIB, "free": 3 * GIB, "cached": 0, "swap_total": GIB, "swap_used": 0 },
        "disk": { "total": 1000 * GIB, "used": 250 * GIB, "free": 750 * GIB, "read_iops": 1.0, "write_iops": 1.0,
                  "read_throughput_mbps": 1.0, "write_throughput_mbps": 1.0 },
        "network": { "total_bytes_in": bytes_in, "total_bytes_out": bytes_out, "packets_in": 1, "packets_out": 1,
                     "errors_in": 0, "errors_out": 0 },
    })
}

/// Reports `samples` for `node_id` through the API.
async fn report_samples(app: &TestApp, node_id: &str, samples: &[Value]) {
    for body in samples {
        app.api_call(
            Method::POST,
            &format!("/api/v1/nodes/{node_id}/resources"),
            Some(body),
        )
        .await
        .expect(201, "report resources");
    }
}

#[tokio::test]
async fn cpu_and_network_components_come_from_the_nodes_resource_samples_in_the_window() {
    let app = api_only().await;
    let node = create_node(&app, "compute").await;
    give_work(&app, &node, 0).await;
    let now = Utc::now();
    let samples = [
        // Outside the window: would pull the average up to 66.67 % if counted.
        resource_sample(now - chrono::Duration::days(8), 100.0, 0, 0),
        resource_sample(now - chrono::Duration::seconds(100), 40.0, 0, 0),
        // 1.25e9 bytes in 100 s = 1e10 bits / 100 s = 100 Mbps.
        resource_sample(now, 60.0, 1_000_000_000, 250_000_000),
    ];
    report_samples(&app, &node.id, &samples).await;
    let c = calculate(&app, &node.id).await;
    assert_close(&c["cpu_utilisation_avg"], 50.0, "cpu mean of 40 and 60");
    assert_close(&c["network_mbps_avg"], 100.0, "network Mbps");
    assert_close(&c["components"][2], 0.15 * 50.0, "cpu points");
    assert_close(
        &c["components"][3],
        0.10 * 10.0,
        "network points (100 Mbps / 10)",
    );
    // 29.75 + 7.5 + 1.0
    assert_eq!(f(&c["score"]), 38.25, "{c}");
}

#[tokio::test]
async fn a_node_without_proofs_or_below_20_percent_uptime_is_ineligible_and_scores_0() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let c = calculate(&app, &node.id).await;
    assert_eq!(c["eligible"], false, "{c}");
    assert_eq!(c["credits"], 0, "{c}");
    assert_eq!(f(&c["score"]), 0.0, "{c}");
    assert_close(&c["trust"], 1.0, "trust without proofs");

    // Credits, but 1007 full slots of uptime: 120840 s < 0.2 · 604800 = 120960 s.
    let now = now_slot();
    let mut proofs: Vec<Value> = (1..=1007)
        .map(|k| signed(&node.secret, now - k, beacon(SLOT_SECONDS)))
        .collect();
    proofs.push(signed(&node.secret, now - 1, validated(2)));
    submit_all(&app, &node.id, &proofs).await;
    let c = calculate(&app, &node.id).await;
    assert_eq!(
        (c["credits"].clone(), c["eligible"].clone()),
        (json!(10), json!(false)),
        "{c}"
    );
    assert_eq!(f(&c["score"]), 0.0, "{c}");

    // One more slot reaches exactly 0.2: eligible.
    submit_all(
        &app,
        &node.id,
        &[signed(&node.secret, now - 1008, beacon(120))],
    )
    .await;
    let c = calculate(&app, &node.id).await;
    assert_eq!(c["eligible"], true, "{c}");
    assert_close(&c["uptime_ratio"], 0.2, "uptime_ratio");
    // 0 + 0.20·10 + 0 + 0 + 0.15·20 + 0.10·20 + 0.05·100 = 2 + 3 + 2 + 5 = 12
    assert_eq!(f(&c["score"]), 12.0, "{c}");

    app.api_call(
        Method::POST,
        "/api/v1/nodes/node_missing/poot/calculate",
        None,
    )
    .await
    .expect_error(404, "LUCID_ERR_5001");
}

// ---------------------------------------------------------------------------
// Validate.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_validation_of_an_eligible_node_is_recorded_with_hash_score_and_confidence_one_half_and_updates_poot_score()
 {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let expected = give_work(&app, &node, 0).await;
    let output = b"the output of some operational task".to_vec();

    let r = validate(&app, &node.id, &validate_body(&output, "n-1", Utc::now())).await;
    let v = r.expect(201, "validate").clone();
    assert!(id_of(&v).starts_with("val_"), "{v}");
    assert_eq!(v["node_id"], node.id.as_str());
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(f(&v["score"]), expected, "{v}");
    assert_eq!(f(&v["score"]), f(&calculate(&app, &node.id).await["score"]));
    assert_eq!(f(&v["confidence"]), 0.5, "no history: {v}");
    assert_eq!(v["suspicious"], false, "{v}");
    assert_eq!(v["output_hash"], sha256_hex(&output), "{v}");
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["nonce"], "n-1");
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["node_type"], "worker", "{v}");
    assert!(f(&v["validation_time_ms"]) >= 0.0, "{v}");

    let got = app
        .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
        .await;
    assert_eq!(f(&got["poot_score"]), expected, "{got}");
    let stored = app
        .db
        .collection::<Document>("poot_validations")
        .find_one(doc! { "node_id": &node.id })
        .await
        .expect("find")
        .expect("record stored");
    assert_eq!(stored.get_str("_id"), Ok(id_of(&v).as_str()));
    assert_eq!(app.count("poot_validations", doc! {}).await, 1);

    app.api_call(
        Method::POST,
        "/api/v1/nodes/node_missing/poot/validate",
        Some(&validate_body(&output, "n-2", Utc::now())),
    )
    .await
    .expect_error(404, "LUCID_ERR_5001");
}

#[tokio::test]
async fn a_replayed_nonce_is_answered_409_and_nonces_are_per_node() {
    let app = api_only().await;
    let a = create_node(&app, "worker").await;
    let b = create_node(&app, "worker").await;
    let body = validate_body(b"x", "same-nonce", Utc::now());

    validate(&app, &a.id, &body).await.expect(201, "first use");
    validate(&app, &a.id, &body)
        .await
        .expect_error(409, "LUCID_ERR_4090");
    // A replay with another output is still a replay.
    validate(&app, &a.id, &validate_body(b"y", "same-nonce", Utc::now()))
        .await
        .expect_error(409, "LUCID_ERR_4090");
    assert_eq!(
        app.count("poot_validations", doc! { "node_id": &a.id })
            .await,
        1
    );
    // Another node may use the same nonce.
    validate(&app, &b.id, &body).await.expect(201, "other node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_validations_with_one_nonce_and_concurrent_copies_of_one_proof_succeed_once() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let body = validate_body(b"race", "raced-nonce", Utc::now());
    let replies = futures::future::join_all((0..8).map(|_| validate(&app, &node.id, &body))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(app.count("poot_validations", doc! {}).await, 1);

    let proof = signed(&node.secret, now_slot() - 1, beacon(120));
    let replies =
        futures::future::join_all((0..8).map(|_| post_proofs(&app, &node.id, &proof))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(app.count("poot_proofs", doc! {}).await, 1);
}

#[tokio::test]
async fn a_timestamp_more_than_5_minutes_from_server_time_is_refused_422() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    for offset in [-6 * 60, 6 * 60, -3600] {
        let ts = Utc::now() + chrono::Duration::seconds(offset);
        let r = validate(&app, &node.id, &validate_body(b"x", &nonce(), ts)).await;
        r.expect_error(422, "LUCID_ERR_4220");
        assert_eq!(r.error_fields(), ["timestamp"], "offset {offset}s");
    }
    assert_eq!(app.count("poot_validations", doc! {}).await, 0);
    for offset in [-4 * 60, 4 * 60] {
        let ts = Utc::now() + chrono::Duration::seconds(offset);
        validate(&app, &node.id, &validate_body(b"x", &nonce(), ts))
            .await
            .expect(201, "within 5 minutes");
    }
}

#[tokio::test]
async fn output_that_is_not_base64_or_larger_than_max_output_bytes_is_refused_422_without_using_the_nonce()
 {
    let mut settings = test_settings();
    settings.max_output_bytes = 64;
    let app = spawn_app_with(settings, 0).await;
    let node = create_node(&app, "worker").await;

    let mut bad = validate_body(b"", "kept-nonce", Utc::now());
    bad["output_data"] = json!("***not base64***");
    let r = validate(&app, &node.id, &bad).await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["output_data"]);

    let r = validate(
        &app,
        &node.id,
        &validate_body(&[7u8; 65], "kept-nonce", Utc::now()),
    )
    .await;
    r.expect_error(422, "LUCID_ERR_4220");
    assert_eq!(r.error_fields(), ["output_data"]);
    assert_eq!(app.count("poot_validations", doc! {}).await, 0);

    for bad_nonce in [String::new(), "n".repeat(129)] {
        let r = validate(&app, &node.id, &validate_body(b"x", &bad_nonce, Utc::now())).await;
        r.expect_error(422, "LUCID_ERR_4220");
        assert_eq!(r.error_fields(), ["nonce"]);
    }

    // Exactly the limit is fine, and the refused requests did not use the nonce.
    let r = validate(
        &app,
        &node.id,
        &validate_body(&[7u8; 64], "kept-nonce", Utc::now()),
    )
    .await;
    let v = r.expect(201, "64 bytes");
    assert_eq!(v["output_hash"], sha256_hex(&[7u8; 64]), "{v}");
}

#[tokio::test]
async fn an_ineligible_node_validates_as_invalid_with_score_0_and_an_error() {
    let app = api_only().await;
    let node = create_node(&app, "storage").await;
    let v = validate_ok(&app, &node.id).await;
    assert_eq!(v["is_valid"], false, "{v}");
    assert_eq!(f(&v["score"]), 0.0, "{v}");
    assert_eq!(v["status"], "succeeded", "scored, just not valid: {v}");
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v}");
    assert!(
        errors[0]
            .as_str()
            .is_some_and(|m| m.contains("below the minimum of 0.1")),
        "{v}"
    );
    let got = app
        .get_json(&format!("/api/v1/nodes/{}", node.id), 200)
        .await;
    assert_eq!(f(&got["poot_score"]), 0.0, "{got}");
}

#[tokio::test]
async fn confidence_is_one_half_without_history_then_follows_max_0_1_and_1_minus_z_over_3() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    give_work(&app, &node, 0).await;

    // Same score every time: std 0 and equal → 1.0.
    let confidences: Vec<f64> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = validate_ok(&app, &node.id).await;
            assert_eq!(f(&r["score"]), 29.75, "{r}");
            assert_eq!(r["suspicious"], false, "{r}");
            v.push(f(&r["confidence"]));
        }
        v
    };
    assert_eq!(confidences, [0.5, 1.0, 1.0]);

    // Five more chunks stored: 29.75 + 0.20·10 = 31.75. History is flat at
    // 29.75 (std 0) and differs → 0.1.
    submit_all(
        &app,
        &node.id,
        &[signed(&node.secret, now_slot() - 7, storage(0.0, 5))],
    )
    .await;
    let r = validate_ok(&app, &node.id).await;
    assert_eq!(f(&r["score"]), 31.75, "{r}");
    assert_eq!(f(&r["confidence"]), 0.1, "{r}");
    assert_eq!(r["suspicious"], false, "|31.75 − 29.75| ≤ 2·avg: {r}");

    // History 29.75 ×3, 31.75: mean 30.25, population std √0.75; z = 1.5/√0.75.
    let history = [29.75, 29.75, 29.75, 31.75];
    let mean = history.iter().sum::<f64>() / 4.0;
    let std = (history.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
    let z = (31.75 - mean).abs() / std;
    let want = ((1.0 - z / 3.0).max(0.1) * 1e4).round() / 1e4;
    assert_eq!(want, 0.4226, "hand-computed");
    let r = validate_ok(&app, &node.id).await;
    assert_eq!(f(&r["confidence"]), want, "{r}");
}

#[tokio::test]
async fn a_score_far_from_the_24h_average_is_flagged_suspicious() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    // Two validations at 0 (ineligible) …
    for _ in 0..2 {
        let v = validate_ok(&app, &node.id).await;
        assert_eq!(v["suspicious"], false, "{v}");
    }
    // … then a week of work appears at once: |29.75 − 0| > 2·0.
    give_work(&app, &node, 0).await;
    let v = validate_ok(&app, &node.id).await;
    assert_eq!(f(&v["score"]), 29.75, "{v}");
    assert_eq!(v["is_valid"], true, "{v}");
    assert_eq!(v["suspicious"], true, "{v}");
    assert_eq!(
        f(&v["confidence"]),
        0.1,
        "flat history at 0, score differs: {v}"
    );
}

#[tokio::test]
async fn validation_records_name_their_id_validation_id_and_carry_rfc3339_times() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let before = Utc::now();
    let v = validate_ok(&app, &node.id).await;
    assert!(
        v["validation_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("val_")),
        "validation_id: {v}"
    );
    assert!(v.get("_id").is_none(), "storage key leaks: {v}");
    for field in ["timestamp", "validated_at"] {
        let s = v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a string: {v}"));
        let t = DateTime::parse_from_rfc3339(s).expect("RFC 3339");
        assert!(t >= before - chrono::Duration::seconds(1), "{field}: {v}");
    }
    let latest = app
        .get_json(&format!("/api/v1/nodes/{}/poot/score", node.id), 200)
        .await;
    assert_eq!(latest["validation_id"], v["validation_id"], "{latest}");
}

// ---------------------------------------------------------------------------
// Latest score and history.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn score_returns_the_latest_validation_and_404_without_one() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let path = format!("/api/v1/nodes/{}/poot/score", node.id);
    app.api_call(Method::GET, &path, None)
        .await
        .expect_error(404, "LUCID_ERR_4040");
    app.api_call(Method::GET, "/api/v1/nodes/node_missing/poot/score", None)
        .await
        .expect_error(404, "LUCID_ERR_5001");

    let first = validate_ok(&app, &node.id).await;
    give_work(&app, &node, 0).await;
    let second = validate_ok(&app, &node.id).await;
    let latest = app.get_json(&path, 200).await;
    assert_eq!(id_of(&latest), id_of(&second), "{latest}");
    assert_ne!(id_of(&latest), id_of(&first));
    assert_eq!(f(&latest["score"]), 29.75, "{latest}");
    assert_eq!(latest["is_valid"], true, "{latest}");
    assert_eq!(latest["output_hash"], second["output_hash"]);
}

#[tokio::test]
async fn history_is_newest_first_paginated_and_limited_to_the_time_range() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let other = create_node(&app, "worker").await;
    let start = Utc::now() - chrono::Duration::seconds(1);
    let v1 = id_of(&validate_ok(&app, &node.id).await);
    let v2 = id_of(&validate_ok(&app, &node.id).await);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mid = Utc::now();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let v3 = id_of(&validate_ok(&app, &node.id).await);
    validate_ok(&app, &other.id).await;

    let base = format!("/api/v1/nodes/{}/poot/history", node.id);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(id_of)
            .collect()
    };

    let all = app.get_json(&base, 200).await;
    assert_eq!(all["total"], 3, "only this node's validations: {all}");
    assert_eq!(
        ids(&all),
        [v3.clone(), v2.clone(), v1.clone()],
        "newest first"
    );

    let p1 = app.get_json(&format!("{base}?page_size=2"), 200).await;
    assert_eq!(
        (
            p1["page"].clone(),
            p1["page_size"].clone(),
            p1["total"].clone()
        ),
        (json!(1), json!(2), json!(3))
    );
    assert_eq!(ids(&p1), [v3.clone(), v2.clone()]);
    let p2 = app
        .get_json(&format!("{base}?page_size=2&page=2"), 200)
        .await;
    assert_eq!(ids(&p2), std::slice::from_ref(&v1));
    let p3 = app
        .get_json(&format!("{base}?page_size=2&page=3"), 200)
        .await;
    assert_eq!((ids(&p3).len(), p3["total"].clone()), (0, json!(3)));

    let after = app
        .get_json(&format!("{base}?start={}", rfc3339(mid)), 200)
        .await;
    assert_eq!(
        (ids(&after), after["total"].clone()),
        (vec![v3.clone()], json!(1))
    );
    let before = app
        .get_json(
            &format!("{base}?start={}&end={}", rfc3339(start), rfc3339(mid)),
            200,
        )
        .await;
    assert_eq!(
        (ids(&before), before["total"].clone()),
        (vec![v2, v1], json!(2))
    );
    let long_ago = app
        .get_json(
            &format!(
                "{base}?start={}&end={}",
                rfc3339(start - chrono::Duration::days(30)),
                rfc3339(start)
            ),
            200,
        )
        .await;
    assert_eq!(long_ago["total"], 0, "{long_ago}");

    app.api_call(Method::GET, &format!("{base}?page_size=101"), None)
        .await
        .expect_error(422, "LUCID_ERR_4220");
    app.api_call(Method::GET, "/api/v1/nodes/node_missing/poot/history", None)
        .await
        .expect_error(404, "LUCID_ERR_5001");
}

#[tokio::test]
async fn history_and_statistics_refuse_a_start_not_before_the_end_with_422() {
    let app = api_only().await;
    let node = create_node(&app, "worker").await;
    let t = Utc::now();
    let later = t + chrono::Duration::hours(1);
    for (start, end) in [(t, t), (later, t)] {
        let q = format!("start={}&end={}", rfc3339(start), rfc3339(end));
        let r = app
            .api_call(
                Method::GET,
                &format!("/api/v1/nodes/{}/poot/history?{q}", node.id),
                None,
            )
            .await;
        r.expect_error(422, "LUCID_ERR_4220");
        assert_eq!(r.error_fields(), ["start"]);
        let r = app
            .api_call(Method::GET, &format!("{STATISTICS}?{q}"), None)
            .await;
        r.expect_error(422, "LUCID_ERR_4220");
        assert_eq!(r.error_fields(), ["start"]);
    }
}

// ---------------------------------------------------------------------------
// Statistics.
// ---------------------------------------------------------------------------

/// What the statistics should say about `scores` (count, valid, suspicious).
fn expected_stats(rows: &[&Value]) -> (u64, f64, f64, f64, f64, f64) {
    let n = rows.len();
    let mut scores: Vec<f64> = rows.iter().map(|r| f(&r["score"])).collect();
    scores.sort_by(f64::total_cmp);
    let rate = |k: &str| rows.iter().filter(|r| r[k] == true).count() as f64 / n as f64;
    let nearest_rank = |p: f64| scores[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = scores.iter().sum::<f64>() / n as f64;
    (
        n as u64,
        rate("is_valid"),
        rate("suspicious"),
        (mean * 100.0).round() / 100.0,
        nearest_rank(0.5),
        nearest_rank(0.9),
    )
}

fn assert_stats(got: &Value, rows: &[&Value], what: &str) {
    let (n, valid, suspicious, mean, p50, p90) = expected_stats(rows);
    assert_eq!(got["count"], n, "{what}: {got}");
    assert_close(&got["valid_rate"], valid, &format!("{what} valid_rate"));
    assert_close(
        &got["suspicious_rate"],
        suspicious,
        &format!("{what} suspicious_rate"),
    );
    assert_close(&got["mean_score"], mean, &format!("{what} mean_score"));
    assert_close(&got["p50_score"], p50, &format!("{what} p50_score"));
    assert_close(&got["p90_score"], p90, &format!("{what} p90_score"));
}

#[tokio::test]
async fn statistics_give_count_rates_mean_and_percentiles_overall_by_pool_and_by_node_type() {
    let app = api_only().await;
    let (p1, p2) = (
        create_pool(&app, "Pool one").await,
        create_pool(&app, "Pool two").await,
    );
    let a = create_node(&app, "worker").await; // pool 1, 29.75
    let b = create_node(&app, "storage").await; // pool 1, ineligible
    let c = create_node(&app, "worker").await; // pool 2, 31.75
    let d = create_node(&app, "storage").await; // pool 2, 33.75
    let e = create_node(&app, "storage").await; // no pool: 0, then 29.75 (suspicious)
    for (pool, node) in [(&p1, &a), (&p1, &b), (&p2, &c), (&p2, &d)] {
        add_to_pool(&app, pool, &node.id).await;
    }
    give_work(&app, &a, 0).await;
    give_work(&app, &c, 5).await;
    give_work(&app, &d, 10).await;

    let mut records: Vec<Value> = Vec::new();
    for node in [&a, &a, &b, &c, &d, &d, &e] {
        records.push(validate_ok(&app, &node.id).await);
    }
    give_work(&app, &e, 0).await;
    records.push(validate_ok(&app, &e.id).await);

    let scores: Vec<f64> = records.iter().map(|r| f(&r["score"])).collect();
    assert_eq!(scores, [29.75, 29.75, 0.0, 31.75, 33.75, 33.75, 0.0, 29.75]);
    assert_eq!(
        records.iter().filter(|r| r["suspicious"] == true).count(),
        1,
        "only e's jump from 0"
    );

    let s = app.get_json(STATISTICS, 200).await;
    let all: Vec<&Value> = records.iter().collect();
    assert_stats(&s["overall"], &all, "overall");
    assert_eq!(s["overall"]["count"], 8, "{s}");

    // Groups sorted by key, `null` (no pool) first.
    let mut pools = [p1.clone(), p2.clone()];
    pools.sort();
    let by_pool = s["by_pool"].as_array().expect("by_pool");
    assert_eq!(by_pool.len(), 3, "{s}");
    assert_eq!(by_pool[0]["key"], Value::Null, "{s}");
    assert_stats(&by_pool[0], &[&records[6], &records[7]], "no pool");
    for (i, pool) in pools.iter().enumerate() {
        let g = &by_pool[i + 1];
        assert_eq!(g["key"], pool.as_str(), "{s}");
        let rows: Vec<&Value> = records
            .iter()
            .filter(|r| r["pool_id"] == pool.as_str())
            .collect();
        assert_stats(g, &rows, pool);
    }

    let by_type = s["by_node_type"].as_array().expect("by_node_type");
    let keys: Vec<&str> = by_type.iter().filter_map(|g| g["key"].as_str()).collect();
    assert_eq!(keys, ["storage", "worker"], "{s}");
    for g in by_type {
        let t = g["key"].as_str().expect("key");
        let rows: Vec<&Value> = records.iter().filter(|r| r["node_type"] == t).collect();
        assert_stats(g, &rows, t);
    }
    // Spot-check one group by hand: storage = 0, 33.75, 33.75, 0, 29.75.
    let storage = &by_type[0];
    assert_eq!(storage["count"], 5);
    assert_close(&storage["valid_rate"], 0.6, "storage valid_rate");
    assert_close(&storage["suspicious_rate"], 0.2, "storage suspicious_rate");
    assert_close(&storage["mean_score"], 19.45, "storage mean (97.25 / 5)");
    assert_close(&storage["p50_score"], 29.75, "storage p50");
    assert_close(&storage["p90_score"], 33.75, "storage p90");

    // A range without validations.
    let old = app
        .get_json(
            &format!(
                "{STATISTICS}?start={}&end={}",
                rfc3339(Utc::now() - chrono::Duration::days(3)),
                rfc3339(Utc::now() - chrono::Duration::days(2))
            ),
            200,
        )
        .await;
    assert_eq!(old["overall"]["count"], 0, "{old}");
    assert_eq!(old["by_pool"], json!([]), "{old}");
    assert_eq!(old["by_node_type"], json!([]), "{old}");
}

mod batch;
