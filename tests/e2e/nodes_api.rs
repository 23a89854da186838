//! Nodes over HTTP against the real API and real MongoDB: create, read,
//! update, delete, the start/stop state machine (also under concurrency),
//! field validation, pagination and filters on 1,000 nodes, static segments
//! winning over `{node_id}`, the error envelope, the OpenAPI document and a
//! property test that every accepted body round-trips through GET.
//!
//! Each test starts its own API (no workers) with its own database.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use reqwest::Method;
use serde_json::{Value, json};

use lucid_jobs::storage::{collections, nodes::NodeDoc};

use crate::helpers::{
    ItemBuilder, NodeBuilder, PoolBuilder, Reply, TestApp, spawn_app_with, test_settings,
};

const NODES: &str = "/api/v1/nodes/";
const VALIDATION: &str = "LUCID_ERR_4220";
const NODE_NOT_FOUND: &str = "LUCID_ERR_5001";
const INVALID_STATUS: &str = "LUCID_ERR_5003";
const NODE_EXISTS: &str = "LUCID_ERR_5007";

/// The API alone (node tests need no workers).
pub(crate) async fn app() -> TestApp {
    spawn_app_with(test_settings(), 0).await
}

/// POSTs a node, asserting 201; returns the created node.
pub(crate) async fn create_node(app: &TestApp, body: &Value) -> Value {
    let r = app.api_call(Method::POST, NODES, Some(body)).await;
    r.expect(201, "create node").clone()
}

/// GETs a node, asserting 200.
pub(crate) async fn get_node(app: &TestApp, id: &str) -> Value {
    let r = app
        .api_call(Method::GET, &format!("{NODES}{id}"), None)
        .await;
    r.expect(200, "get node").clone()
}

/// A node id matches `^node_[A-Za-z0-9_-]+$`.
pub(crate) fn is_node_id(s: &str) -> bool {
    s.strip_prefix("node_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 timestamp: {v}"))
}

fn without_secret(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("secret");
    }
    v
}

async fn list(app: &TestApp, query: &str) -> Reply {
    app.api_call(Method::GET, &format!("{NODES}?{query}"), None)
        .await
}

// ---------------------------------------------------------------------------
// Create and read
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_node_returns_201_with_the_node_and_a_one_time_secret_and_get_returns_it_without_the_secret()
 {
    let app = app().await;
    let body = NodeBuilder::new()
        .id("node_alpha-1")
        .name("Alpha 1")
        .node_type("validator")
        .coordinates(52.52, 13.405)
        .maintenance_window(0, "03:30", 90)
        .build();
    let before = Utc::now() - chrono::Duration::seconds(1);
    let created = create_node(&app, &body).await;

    assert_eq!(created["node_id"], "node_alpha-1");
    assert_eq!(created["name"], "Alpha 1");
    assert_eq!(created["node_type"], "validator");
    assert_eq!(created["status"], "inactive", "default status");
    assert_eq!(created["pool_id"], Value::Null);
    assert_eq!(created["poot_score"], Value::Null);
    assert_eq!(created["last_heartbeat"], Value::Null);
    assert_eq!(created["location"]["coordinates"]["latitude"], 52.52);
    assert_eq!(
        created["configuration"]["maintenance_window"]["start_time"],
        "03:30"
    );
    let created_at = ts(&created["created_at"]);
    assert!(created_at >= before && created_at <= Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(created["created_at"], created["updated_at"]);
    let secret = created["secret"].as_str().expect("secret");
    assert!(
        secret.len() == 64 && secret.chars().all(|c| c.is_ascii_hexdigit()),
        "secret {secret}"
    );

    let got = get_node(&app, "node_alpha-1").await;
    assert!(
        got.get("secret").is_none(),
        "GET must not reveal the secret"
    );
    assert_eq!(got, without_secret(&created));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_collection_answers_with_and_without_a_trailing_slash() {
    let app = app().await;
    let a = app
        .api_call(
            Method::POST,
            "/api/v1/nodes",
            Some(&NodeBuilder::new().id("node_no_slash").build()),
        )
        .await;
    a.expect(201, "POST /api/v1/nodes");
    create_node(&app, &NodeBuilder::new().id("node_slash").build()).await;

    for path in ["/api/v1/nodes", "/api/v1/nodes/"] {
        let page = app.api_call(Method::GET, path, None).await;
        let page = page.expect(200, path);
        assert_eq!(page["total"], 2, "{path}: {page}");
        assert_eq!(page["page"], 1);
        assert_eq!(page["page_size"], 20, "default page size");
        let ids: Vec<&str> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .collect();
        assert_eq!(ids, ["node_no_slash", "node_slash"], "{path}");
        assert!(
            page["items"][0].get("secret").is_none(),
            "listing must not reveal secrets"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_is_generated_when_absent_and_max_sessions_defaults_to_10() {
    let app = app().await;
    let body = NodeBuilder::new().build();
    assert!(body.get("node_id").is_none());
    let a = create_node(&app, &body).await;
    let b = create_node(&app, &body).await;
    for n in [&a, &b] {
        let id = n["node_id"].as_str().expect("node_id");
        assert!(is_node_id(id), "generated id {id}");
        assert_eq!(n["configuration"]["max_sessions"], 10);
        assert_eq!(n["configuration"]["auto_scaling"], false);
        assert_eq!(n["configuration"]["maintenance_window"], Value::Null);
        assert_eq!(n["hardware_info"]["gpu"], Value::Null);
        assert_eq!(n["hardware_info"]["network"], Value::Null);
        assert_eq!(n["location"]["coordinates"], Value::Null);
        // The generated id is the stored one.
        assert_eq!(get_node(&app, id).await, without_secret(n));
    }
    assert_ne!(a["node_id"], b["node_id"], "generated ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_node_with_a_duplicate_id_returns_409_lucid_err_5007_and_keeps_the_original() {
    let app = app().await;
    let original = create_node(
        &app,
        &NodeBuilder::new().id("node_dup").name("Original").build(),
    )
    .await;
    let r = app
        .api_call(
            Method::POST,
            NODES,
            Some(
                &NodeBuilder::new()
                    .id("node_dup")
                    .name("Impostor")
                    .node_type("storage")
                    .build(),
            ),
        )
        .await;
    let e = r.expect_error(409, NODE_EXISTS);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("node_dup"),
        "{e}"
    );
    assert_eq!(get_node(&app, "node_dup").await, without_secret(&original));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_node_id_yield_exactly_one_201_and_409_lucid_err_5007_for_the_rest()
 {
    let app = app().await;
    let replies = join_all((0..10).map(|i| {
        let body = NodeBuilder::new()
            .id("node_race")
            .name(&format!("Racer {i}"))
            .build();
        let app = &app;
        async move { app.api_call(Method::POST, NODES, Some(&body)).await }
    }))
    .await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins");
    for r in replies.iter().filter(|r| r.status != 201) {
        r.expect_error(409, NODE_EXISTS);
    }
    let stored = get_node(&app, "node_race").await;
    assert_eq!(
        stored["name"], winners[0].body["name"],
        "the winner is stored"
    );
    assert_eq!(list(&app, "").await.body["total"], 1);
}

// ---------------------------------------------------------------------------
// Not found and malformed ids
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_endpoint_returns_404_lucid_err_5001_for_an_unknown_node() {
    let app = app().await;
    let update = json!({ "name": "Renamed" });
    let cases: [(Method, &str, Option<&Value>); 6] = [
        (Method::GET, "/api/v1/nodes/node_ghost", None),
        (Method::PUT, "/api/v1/nodes/node_ghost", Some(&update)),
        (Method::DELETE, "/api/v1/nodes/node_ghost", None),
        (Method::POST, "/api/v1/nodes/node_ghost/start", None),
        (Method::POST, "/api/v1/nodes/node_ghost/stop", None),
        (Method::GET, "/api/v1/nodes/node_ghost/status", None),
    ];
    for (method, path, body) in cases {
        let r = app.api_call(method.clone(), path, body).await;
        let e = r.expect_error(404, NODE_NOT_FOUND);
        assert!(
            e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("node_ghost"),
            "{method} {path}: {e}"
        );
    }
    // Nothing was created by the PUT.
    assert_eq!(list(&app, "").await.body["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_node_id_in_the_path_returns_422_naming_node_id_on_every_endpoint() {
    let app = app().await;
    let update = json!({ "name": "Renamed" });
    for raw in ["bad-id", "node_", "node_a%20b", "pool_x"] {
        let cases: [(Method, String, Option<&Value>); 6] = [
            (Method::GET, format!("{NODES}{raw}"), None),
            (Method::PUT, format!("{NODES}{raw}"), Some(&update)),
            (Method::DELETE, format!("{NODES}{raw}"), None),
            (Method::POST, format!("{NODES}{raw}/start"), None),
            (Method::POST, format!("{NODES}{raw}/stop"), None),
            (Method::GET, format!("{NODES}{raw}/status"), None),
        ];
        for (method, path, body) in cases {
            let r = app.api_call(method.clone(), &path, body).await;
            r.expect_error(422, VALIDATION);
            assert_eq!(r.error_fields(), ["node_id"], "{method} {path}");
        }
    }
}

// ---------------------------------------------------------------------------
// Field validation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_many_bad_fields_returns_422_lucid_err_4220_naming_every_offending_field() {
    let app = app().await;
    let body = NodeBuilder::new()
        .id("bad id!")
        .name("x!")
        .country("XX")
        .timezone("Berlin")
        .coordinates(91.0, 0.0)
        .max_sessions(0)
        .cpu_percent(0)
        .maintenance_window(1, "25:00", 60)
        .build();
    let r = app.api_call(Method::POST, NODES, Some(&body)).await;
    let e = r.expect_error(422, VALIDATION);
    assert_eq!(
        r.error_fields(),
        [
            "configuration.maintenance_window.start_time",
            "configuration.max_sessions",
            "configuration.resource_limits.cpu_percent",
            "location.coordinates.latitude",
            "location.country",
            "location.timezone",
            "name",
            "node_id",
        ],
        "{e}"
    );
    for f in e["details"]["fields"].as_array().expect("fields") {
        assert!(
            f["message"].as_str().is_some_and(|m| !m.is_empty()),
            "each field has a message: {f}"
        );
    }
    assert_eq!(list(&app, "").await.body["total"], 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_out_of_range_node_field_alone_returns_422_naming_exactly_that_field() {
    let app = app().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/name", json!("ab"), "name"),
        ("/name", json!("bad/name"), "name"),
        ("/name", json!("x".repeat(101)), "name"),
        ("/name", json!("Café"), "name"),
        ("/node_id", json!("node-1"), "node_id"),
        ("/node_id", json!("node_"), "node_id"),
        ("/node_id", json!("node_a b"), "node_id"),
        (
            "/node_id",
            json!(format!("node_{}", "a".repeat(124))),
            "node_id",
        ),
        ("/location/country", json!("XX"), "location.country"),
        ("/location/country", json!("de"), "location.country"),
        ("/location/country", json!("DEU"), "location.country"),
        ("/location/timezone", json!("Berlin"), "location.timezone"),
        (
            "/location/timezone",
            json!("Europe//Berlin"),
            "location.timezone",
        ),
        ("/location/region", json!(""), "location.region"),
        ("/location/city", json!("c".repeat(101)), "location.city"),
        (
            "/location/coordinates",
            json!({ "latitude": 91.0, "longitude": 0.0 }),
            "location.coordinates.latitude",
        ),
        (
            "/location/coordinates",
            json!({ "latitude": -90.5, "longitude": 0.0 }),
            "location.coordinates.latitude",
        ),
        (
            "/location/coordinates",
            json!({ "latitude": 0.0, "longitude": 180.5 }),
            "location.coordinates.longitude",
        ),
        (
            "/configuration/max_sessions",
            json!(0),
            "configuration.max_sessions",
        ),
        (
            "/configuration/max_sessions",
            json!(1001),
            "configuration.max_sessions",
        ),
        (
            "/configuration/resource_limits/cpu_percent",
            json!(0),
            "configuration.resource_limits.cpu_percent",
        ),
        (
            "/configuration/resource_limits/cpu_percent",
            json!(101),
            "configuration.resource_limits.cpu_percent",
        ),
        (
            "/configuration/maintenance_window",
            json!({ "day_of_week": 1, "start_time": "25:00", "duration_minutes": 60 }),
            "configuration.maintenance_window.start_time",
        ),
        (
            "/configuration/maintenance_window",
            json!({ "day_of_week": 7, "start_time": "01:00", "duration_minutes": 60 }),
            "configuration.maintenance_window.day_of_week",
        ),
        (
            "/configuration/maintenance_window",
            json!({ "day_of_week": 1, "start_time": "01:00", "duration_minutes": 0 }),
            "configuration.maintenance_window.duration_minutes",
        ),
        (
            "/hardware_info/cpu/cores",
            json!(0),
            "hardware_info.cpu.cores",
        ),
        (
            "/hardware_info/cpu/frequency_mhz",
            json!(10_001),
            "hardware_info.cpu.frequency_mhz",
        ),
        (
            "/hardware_info/cpu/architecture",
            json!(""),
            "hardware_info.cpu.architecture",
        ),
        (
            "/hardware_info/memory_bytes",
            json!(0),
            "hardware_info.memory_bytes",
        ),
        (
            "/hardware_info/storage_bytes",
            json!((1u64 << 53) + 1),
            "hardware_info.storage_bytes",
        ),
        (
            "/hardware_info/gpu",
            json!({ "model": "A100", "memory_bytes": 1, "count": 65 }),
            "hardware_info.gpu.count",
        ),
        (
            "/hardware_info/network",
            json!({ "bandwidth_mbps": 100, "public_ip": "999.1.1.1" }),
            "hardware_info.network.public_ip",
        ),
    ];
    for (pointer, value, field) in cases {
        let body = NodeBuilder::new().set(pointer, value.clone()).build();
        let r = app.api_call(Method::POST, NODES, Some(&body)).await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), [field], "{pointer} = {value}");
    }
    // The bounds themselves are accepted.
    let edges = NodeBuilder::new()
        .name(&"n".repeat(100))
        .max_sessions(1000)
        .cpu_percent(100)
        .coordinates(-90.0, 180.0)
        .maintenance_window(6, "23:59", 1440)
        .build();
    create_node(&app, &edges).await;
    let low = NodeBuilder::new()
        .name("abc")
        .max_sessions(1)
        .cpu_percent(1)
        .coordinates(90.0, -180.0)
        .maintenance_window(0, "00:00", 1)
        .timezone("UTC")
        .build();
    create_node(&app, &low).await;
    assert_eq!(
        list(&app, "").await.body["total"],
        2,
        "only the valid ones are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_json_fields_are_rejected_with_422_at_the_top_level_and_nested() {
    let app = app().await;
    for (pointer, name) in [
        ("/colour", "colour"),
        ("/hardware_info/cpu/turbo", "turbo"),
        ("/location/continent", "continent"),
        ("/configuration/resource_limits/gpu_percent", "gpu_percent"),
    ] {
        let body = NodeBuilder::new().set(pointer, json!(1)).build();
        let r = app.api_call(Method::POST, NODES, Some(&body)).await;
        let e = r.expect_error(422, VALIDATION);
        assert!(
            e.to_string().contains(name),
            "the error names the unknown field {name}: {e}"
        );
    }
    create_node(&app, &NodeBuilder::new().id("node_known").build()).await;
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_known",
            Some(&json!({ "name": "Renamed", "pool_id": "pool_x" })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(get_node(&app, "node_known").await["name"], "Test node");
    assert_eq!(list(&app, "").await.body["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_and_wrong_types_return_422_and_bad_json_400_and_no_content_type_415() {
    let app = app().await;
    for (body, mentions) in [
        (NodeBuilder::new().without("/name").build(), "name"),
        (
            NodeBuilder::new().without("/hardware_info/cpu").build(),
            "cpu",
        ),
        (
            NodeBuilder::new().node_type("gpu-miner").build(),
            "gpu-miner",
        ),
        (NodeBuilder::new().status("sleeping").build(), "sleeping"),
        (NodeBuilder::new().cpu_percent(300).build(), "cpu_percent"),
        (
            NodeBuilder::new()
                .set("/configuration/max_sessions", json!("ten"))
                .build(),
            "max_sessions",
        ),
    ] {
        let r = app.api_call(Method::POST, NODES, Some(&body)).await;
        let e = r.expect_error(422, VALIDATION);
        assert!(!r.error_fields().is_empty(), "{e}");
        assert!(e.to_string().contains(mentions), "mentions {mentions}: {e}");
    }

    let raw = app
        .client
        .post(format!("{}{NODES}", app.address))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("request");
    let reply = to_reply(raw).await;
    reply.expect_error(400, "LUCID_ERR_4000");

    let no_type = app
        .client
        .post(format!("{}{NODES}", app.address))
        .body(NodeBuilder::new().build().to_string())
        .send()
        .await
        .expect("request");
    to_reply(no_type).await.expect_error(415, "LUCID_ERR_4150");
    assert_eq!(list(&app, "").await.body["total"], 0);
}

async fn to_reply(r: reqwest::Response) -> Reply {
    let status = r.status().as_u16();
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = r.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        request_id,
        body,
    }
}

// ---------------------------------------------------------------------------
// Update and delete
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_a_node_replaces_only_the_given_fields_and_bumps_updated_at() {
    let app = app().await;
    let created = create_node(&app, &NodeBuilder::new().id("node_upd").build()).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let new_cfg = json!({
        "max_sessions": 42,
        "resource_limits": { "cpu_percent": 50, "memory_bytes": 1, "disk_bytes": 2, "network_mbps": 3 },
        "auto_scaling": true,
        "maintenance_window": { "day_of_week": 3, "start_time": "12:15", "duration_minutes": 30 }
    });
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_upd",
            Some(&json!({ "name": "Renamed node", "node_type": "compute", "configuration": new_cfg })),
        )
        .await;
    let updated = r.expect(200, "PUT").clone();
    assert_eq!(updated["name"], "Renamed node");
    assert_eq!(updated["node_type"], "compute");
    assert_eq!(updated["configuration"], new_cfg);
    for unchanged in [
        "node_id",
        "status",
        "hardware_info",
        "location",
        "pool_id",
        "created_at",
    ] {
        assert_eq!(updated[unchanged], created[unchanged], "{unchanged}");
    }
    assert!(ts(&updated["updated_at"]) > ts(&created["updated_at"]));
    assert_eq!(get_node(&app, "node_upd").await, updated);

    // A configuration without max_sessions gets the default again.
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_upd",
            Some(&json!({ "configuration": { "resource_limits": new_cfg["resource_limits"] } })),
        )
        .await;
    assert_eq!(
        r.expect(200, "PUT cfg")["configuration"]["max_sessions"],
        10
    );

    // An empty update changes nothing and says so.
    let before = get_node(&app, "node_upd").await;
    let r = app
        .api_call(Method::PUT, "/api/v1/nodes/node_upd", Some(&json!({})))
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["body"]);
    assert_eq!(get_node(&app, "node_upd").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_update_leaves_the_stored_node_unchanged() {
    let app = app().await;
    create_node(&app, &NodeBuilder::new().id("node_keep").build()).await;
    let before = get_node(&app, "node_keep").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    // One valid field next to invalid ones: nothing is applied.
    let mut bad_location = before["location"].clone();
    bad_location["country"] = json!("XX");
    let mut bad_cfg = before["configuration"].clone();
    bad_cfg["max_sessions"] = json!(1001);
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_keep",
            Some(&json!({ "name": "Perfectly fine", "location": bad_location, "configuration": bad_cfg })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(
        r.error_fields(),
        ["configuration.max_sessions", "location.country"]
    );
    assert_eq!(get_node(&app, "node_keep").await, before);

    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_keep",
            Some(&json!({ "name": "no!" })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["name"]);
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_keep",
            Some(&json!({ "node_type": "miner" })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/node_keep",
            Some(&json!({ "status": "active" })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(get_node(&app, "node_keep").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_returns_204_and_it_is_gone() {
    let app = app().await;
    create_node(&app, &NodeBuilder::new().id("node_del").build()).await;
    create_node(&app, &NodeBuilder::new().id("node_stay").build()).await;
    let r = app
        .api_call(Method::DELETE, "/api/v1/nodes/node_del", None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null, "no body");
    app.api_call(Method::GET, "/api/v1/nodes/node_del", None)
        .await
        .expect_error(404, NODE_NOT_FOUND);
    app.api_call(Method::DELETE, "/api/v1/nodes/node_del", None)
        .await
        .expect_error(404, NODE_NOT_FOUND);
    let page = list(&app, "").await;
    assert_eq!(page.body["total"], 1);
    assert_eq!(page.body["items"][0]["node_id"], "node_stay");
    // The id can be registered again.
    create_node(&app, &NodeBuilder::new().id("node_del").build()).await;
}

// ---------------------------------------------------------------------------
// Start/stop state machine
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_follow_the_state_machine_and_record_timestamped_transitions() {
    let app = app().await;
    create_node(&app, &NodeBuilder::new().id("node_sm").build()).await;
    let t0 = Utc::now() - chrono::Duration::seconds(1);
    let status0 = app.get_json("/api/v1/nodes/node_sm/status", 200).await;
    assert_eq!(status0["status"], "inactive");
    assert_eq!(status0["transitions"], json!([]));

    // Stop an inactive node: 409 with the current status.
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/node_sm/stop", None)
        .await;
    let e = r.expect_error(409, INVALID_STATUS);
    assert_eq!(e["details"]["status"], "inactive");

    let started = app
        .api_call(Method::POST, "/api/v1/nodes/node_sm/start", None)
        .await;
    let started = started.expect(200, "start").clone();
    assert_eq!(started["node_id"], "node_sm");
    assert_eq!(started["status"], "active");
    assert_eq!(started["transitions"].as_array().map(Vec::len), Some(1));
    assert_eq!(started["transitions"][0]["from"], "inactive");
    assert_eq!(started["transitions"][0]["to"], "active");

    // Start an active node: 409, and nothing recorded.
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/node_sm/start", None)
        .await;
    let e = r.expect_error(409, INVALID_STATUS);
    assert_eq!(e["details"]["status"], "active");
    assert_eq!(
        app.get_json("/api/v1/nodes/node_sm/status", 200).await,
        started,
        "a refused start changes nothing"
    );
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;

    let stopped = app
        .api_call(Method::POST, "/api/v1/nodes/node_sm/stop", None)
        .await;
    let stopped = stopped.expect(200, "stop").clone();
    assert_eq!(stopped["status"], "inactive");
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/node_sm/stop", None)
        .await;
    assert_eq!(
        r.expect_error(409, INVALID_STATUS)["details"]["status"],
        "inactive"
    );

    let status = app.get_json("/api/v1/nodes/node_sm/status", 200).await;
    assert_eq!(status, stopped);
    let t = status["transitions"].as_array().expect("transitions");
    assert_eq!(t.len(), 2);
    assert_eq!(
        (&t[1]["from"], &t[1]["to"]),
        (&json!("active"), &json!("inactive"))
    );
    let (a0, a1) = (ts(&t[0]["at"]), ts(&t[1]["at"]));
    assert!(a0 >= t0 && a0 < a1 && a1 <= Utc::now() + chrono::Duration::seconds(1));
    assert_eq!(
        status["updated_at"], t[1]["at"],
        "updated_at is the last change"
    );
    let node = get_node(&app, "node_sm").await;
    assert_eq!(node["status"], "inactive");
    assert_eq!(node["updated_at"], status["updated_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_created_in_maintenance_error_or_starting_can_be_started_or_stopped() {
    let app = app().await;
    for (status, op, to) in [
        ("maintenance", "stop", "inactive"),
        ("maintenance", "start", "active"),
        ("error", "start", "active"),
        ("error", "stop", "inactive"),
        ("starting", "start", "active"),
        ("stopping", "stop", "inactive"),
    ] {
        let id = format!("node_{status}_{op}");
        let n = create_node(&app, &NodeBuilder::new().id(&id).status(status).build()).await;
        assert_eq!(n["status"], status);
        let r = app
            .api_call(Method::POST, &format!("{NODES}{id}/{op}"), None)
            .await;
        let b = r.expect(200, &format!("{op} from {status}"));
        assert_eq!(b["status"], to);
        assert_eq!(
            b["transitions"],
            json!([{ "from": status, "to": to, "at": b["updated_at"] }])
        );
    }
    // A node created active cannot be started.
    create_node(
        &app,
        &NodeBuilder::new()
            .id("node_born_active")
            .status("active")
            .build(),
    )
    .await;
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/node_born_active/start", None)
        .await;
    assert_eq!(
        r.expect_error(409, INVALID_STATUS)["details"]["status"],
        "active"
    );
}

/// Fires 20 starts and 20 stops at one inactive node at once; returns the
/// operations, their replies and the node's `/status` afterwards.
async fn flip_concurrently(app: &TestApp, id: &str) -> (Vec<&'static str>, Vec<Reply>, Value) {
    create_node(app, &NodeBuilder::new().id(id).build()).await;
    let ops: Vec<&'static str> = (0..40)
        .map(|i| if i % 2 == 0 { "start" } else { "stop" })
        .collect();
    let replies = join_all(ops.iter().map(|op| async move {
        app.api_call(Method::POST, &format!("{NODES}{id}/{op}"), None)
            .await
    }))
    .await;
    let status = app.get_json(&format!("{NODES}{id}/status"), 200).await;
    (ops, replies, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_and_stops_on_one_node_leave_one_consistent_state() {
    let app = app().await;
    let (ops, replies, status) = flip_concurrently(&app, "node_flip").await;
    let final_status = status["status"].as_str().expect("status");
    assert!(matches!(final_status, "active" | "inactive"), "{status}");
    let transitions = status["transitions"]
        .as_array()
        .expect("transitions")
        .clone();

    // The recorded transitions form one chain from the initial status.
    let mut prev = "inactive";
    for t in &transitions {
        assert_eq!(t["from"], prev, "chain broken: {status}");
        assert_ne!(t["from"], t["to"]);
        prev = t["to"].as_str().expect("to");
    }
    assert_eq!(prev, final_status);

    // Every success is exactly one recorded transition; its answer is the
    // chain up to and including it.
    let mut seen_lengths = HashSet::new();
    let (mut starts, mut stops) = (0, 0);
    for (op, r) in ops.iter().zip(&replies) {
        if r.status == 200 {
            let target = if *op == "start" { "active" } else { "inactive" };
            assert_eq!(r.body["status"], target, "{op}: {}", r.body);
            let mine = r.body["transitions"].as_array().expect("transitions");
            assert!(!mine.is_empty());
            assert_eq!(
                mine.as_slice(),
                &transitions[..mine.len()],
                "prefix of the final chain"
            );
            assert_eq!(mine[mine.len() - 1]["to"], target);
            assert!(
                seen_lengths.insert(mine.len()),
                "two successes claim one transition"
            );
            if *op == "start" {
                starts += 1;
            } else {
                stops += 1;
            }
        } else {
            r.expect_error(409, INVALID_STATUS);
        }
    }
    assert_eq!(
        starts + stops,
        transitions.len(),
        "one transition per success"
    );
    assert_eq!(
        starts,
        transitions.iter().filter(|t| t["to"] == "active").count()
    );
    assert!(
        starts >= 1,
        "the node was inactive, so some start succeeded"
    );
    assert_eq!(get_node(&app, "node_flip").await["status"], final_status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_start_or_stop_reports_the_status_that_refused_it() {
    let app = app().await;
    let (ops, replies, status) = flip_concurrently(&app, "node_reason").await;
    for (op, r) in ops.iter().zip(&replies).filter(|(_, r)| r.status != 200) {
        let e = r.expect_error(409, INVALID_STATUS);
        // Only active and inactive occur here: start is refused only when
        // active, stop only when inactive.
        let refusing = if *op == "start" { "active" } else { "inactive" };
        assert_eq!(
            e["details"]["status"], refusing,
            "{op} refused with {e}; final {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transitions_are_recorded_with_non_decreasing_timestamps() {
    let app = app().await;
    // Several rounds: the inversion needs two requests to interleave.
    for round in 0..5 {
        let id = format!("node_clock{round}");
        let (_, _, status) = flip_concurrently(&app, &id).await;
        let transitions = status["transitions"].as_array().expect("transitions");
        for w in transitions.windows(2) {
            assert!(
                ts(&w[0]["at"]) <= ts(&w[1]["at"]),
                "transition {} recorded after {} but timestamped earlier: {status}",
                w[1],
                w[0]
            );
        }
        if let Some(last) = transitions.last() {
            assert_eq!(
                status["updated_at"], last["at"],
                "updated_at is the last change"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Pagination and filters on 1,000 nodes
// ---------------------------------------------------------------------------

/// A node in the repository's stored form (as `POST /api/v1/nodes/` writes it).
pub(crate) fn stored_node(
    id: &str,
    status: &str,
    node_type: &str,
    pool: Option<&str>,
    at: mongodb::bson::DateTime,
) -> NodeDoc {
    let body = NodeBuilder::new().build();
    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("stored field")
    }
    NodeDoc {
        node_id: id.to_string(),
        name: format!("Seeded {id}"),
        status: parse(json!(status)),
        node_type: parse(json!(node_type)),
        pool_id: pool.map(String::from),
        hardware_info: parse(body["hardware_info"].clone()),
        location: parse(body["location"].clone()),
        configuration: parse(body["configuration"].clone()),
        poot_score: None,
        last_heartbeat: None,
        transitions: Vec::new(),
        secret: Some("00".repeat(32)),
        created_at: at,
        updated_at: at,
    }
}

async fn create_pool(app: &TestApp, id: &str, max_nodes: u64) {
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/",
        Some(&PoolBuilder::new().id(id).max_nodes(max_nodes).build()),
    )
    .await
    .expect(201, "create pool");
}

const STATUSES: [&str; 4] = ["active", "inactive", "maintenance", "error"];
const TYPES: [&str; 4] = ["worker", "validator", "storage", "compute"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_1000_nodes_pages_through_each_exactly_once_in_creation_order_and_filters_count_correctly()
 {
    let app = app().await;
    let started = Instant::now();
    let n = 1000usize;
    let seeded = 900usize;
    let status_of = |i: usize| STATUSES[i % 4];
    let type_of = |i: usize| TYPES[(i / 4) % 4];
    let in_pool = |i: usize| i % 10 == 3;
    create_pool(&app, "pool_paged", 1000).await;

    // SecantusDB commits every insert on its own (~55 ms each, measured; no
    // gain from concurrency), so 1,000 API creates alone would take a minute.
    // 900 nodes are written in the repository's own stored form in one
    // insert_many, created an hour ago, three per millisecond (ties are
    // broken by id) and inserted in a scrambled order; the last 100 go
    // through the API in two groups of 50 concurrent requests.
    let base = Utc::now() - chrono::Duration::hours(1);
    let docs: Vec<NodeDoc> = (0..seeded)
        .map(|k| (k * 7919) % seeded)
        .map(|i| {
            let at = mongodb::bson::DateTime::from_chrono(
                base + chrono::Duration::milliseconds((i / 3) as i64),
            );
            stored_node(
                &format!("node_p{i:04}"),
                status_of(i),
                type_of(i),
                in_pool(i).then_some("pool_paged"),
                at,
            )
        })
        .collect();
    app.db
        .collection::<NodeDoc>(collections::NODES)
        .insert_many(docs)
        .await
        .expect("seed nodes");
    let seed_time = started.elapsed();

    let mut api_created: Vec<(DateTime<Utc>, String, usize)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (g, chunk) in (seeded..n).collect::<Vec<_>>().chunks(50).enumerate() {
        let replies = join_all(chunk.iter().map(|&i| {
            let body = NodeBuilder::new()
                .id(&format!("node_p{i:04}"))
                .name(&format!("Paged node {i}"))
                .status(status_of(i))
                .node_type(type_of(i))
                .build();
            let app = &app;
            async move { (i, create_node(app, &body).await) }
        }))
        .await;
        for (i, node) in replies {
            let id = node["node_id"].as_str().expect("id").to_string();
            group_of.insert(id.clone(), g);
            api_created.push((ts(&node["created_at"]), id, i));
        }
    }
    for i in (seeded..n).filter(|&i| in_pool(i)) {
        app.api_call(
            Method::POST,
            "/api/v1/nodes/pools/pool_paged/nodes",
            Some(&json!({ "node_id": format!("node_p{i:04}") })),
        )
        .await
        .expect(200, "add to pool");
    }
    let create_time = started.elapsed() - seed_time;

    // Creation order: by creation time, ties by id. The seeded nodes come
    // first in index order; the API's in the order of their created_at.
    api_created.sort();
    assert!(api_created[0].0 > base + chrono::Duration::seconds(1));
    let mut order: Vec<(String, usize)> =
        (0..seeded).map(|i| (format!("node_p{i:04}"), i)).collect();
    order.extend(api_created.into_iter().map(|(_, id, i)| (id, i)));
    let walk_started = Instant::now();

    type Pred = Box<dyn Fn(usize) -> bool>;
    let filters: Vec<(&str, Pred)> = vec![
        ("", Box::new(|_| true)),
        ("status=active", Box::new(move |i| status_of(i) == "active")),
        ("status=error", Box::new(move |i| status_of(i) == "error")),
        (
            "node_type=storage",
            Box::new(move |i| type_of(i) == "storage"),
        ),
        ("pool_id=pool_paged", Box::new(in_pool)),
        (
            "status=maintenance&node_type=compute",
            Box::new(move |i| status_of(i) == "maintenance" && type_of(i) == "compute"),
        ),
        (
            "status=inactive&node_type=worker&pool_id=pool_paged",
            Box::new(move |i| status_of(i) == "inactive" && type_of(i) == "worker" && in_pool(i)),
        ),
        ("status=starting", Box::new(|_| false)),
        ("pool_id=pool_nope", Box::new(|_| false)),
    ];
    for (query, pred) in &filters {
        let expected: Vec<&str> = order
            .iter()
            .filter(|(_, i)| pred(*i))
            .map(|(id, _)| id.as_str())
            .collect();
        let mut walked: Vec<String> = Vec::new();
        let mut page = 1;
        loop {
            let r = list(&app, &format!("{query}&page={page}&page_size=100")).await;
            let body = r.expect(200, query);
            assert_eq!(body["total"], expected.len(), "total for {query:?}");
            assert_eq!(body["page"], page);
            assert_eq!(body["page_size"], 100);
            let items = body["items"].as_array().expect("items");
            if items.is_empty() {
                break;
            }
            assert!(items.len() <= 100);
            walked.extend(
                items
                    .iter()
                    .map(|n| n["node_id"].as_str().expect("id").to_string()),
            );
            page += 1;
        }
        assert_eq!(
            walked, expected,
            "every node once, in creation order, for {query:?}"
        );
        let distinct: HashSet<&String> = walked.iter().collect();
        assert_eq!(distinct.len(), walked.len(), "no duplicates for {query:?}");
        assert_eq!(
            page - 1,
            expected.len().div_ceil(100),
            "pages for {query:?}"
        );
    }

    // API nodes of the first concurrent group are listed before the second's.
    let api_order: Vec<usize> = order[seeded..].iter().map(|(id, _)| group_of[id]).collect();
    assert!(
        api_order.windows(2).all(|w| w[0] <= w[1]),
        "creation order across groups: {api_order:?}"
    );
    let walk_time = walk_started.elapsed();

    // Items are whole nodes; the pool members carry the pool id.
    let r = list(&app, "pool_id=pool_paged&page_size=3").await;
    for item in r.body["items"].as_array().expect("items") {
        assert_eq!(item["pool_id"], "pool_paged");
        assert!(item["hardware_info"]["cpu"]["cores"].is_u64());
    }
    assert_eq!(
        app.get_json("/api/v1/nodes/pools/pool_paged", 200).await["node_count"],
        100
    );

    // Bounds and pages past the end.
    let r = list(&app, "page_size=101").await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["page_size"]);
    let r = list(&app, "page_size=0").await;
    r.expect_error(422, VALIDATION);
    let r = list(&app, "page=0").await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["page"]);
    let r = list(&app, "page=11&page_size=100").await;
    assert_eq!(r.expect(200, "past the end")["items"], json!([]));
    assert_eq!(r.body["total"], 1000);
    let r = list(&app, "pool_id=pool_paged&page=2&page_size=100").await;
    assert_eq!(r.body["items"], json!([]));
    assert_eq!(r.body["total"], 100);
    let r = list(&app, "page=50").await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(20),
        "default page size 20: page 50 is the last full page"
    );
    assert_eq!(r.body["items"][19]["node_id"], order[999].0.as_str());
    let r = list(&app, "page=51").await;
    assert_eq!(r.body["items"], json!([]), "past the end");
    assert_eq!(r.body["total"], 1000);
    eprintln!(
        "1,000 nodes: 900 seeded in {seed_time:?}, 100 API creates + 10 pool adds in {create_time:?}, 9 filtered walks in {walk_time:?}, whole test {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_queries_are_rejected_in_the_envelope() {
    let app = app().await;
    for (q, status, code) in [
        ("page_size=101", 422, VALIDATION),
        ("page=0", 422, VALIDATION),
        ("page=1000001", 422, VALIDATION),
        ("page_size=abc", 400, "LUCID_ERR_4000"),
        ("status=sleeping", 400, "LUCID_ERR_4000"),
        ("node_type=miner", 400, "LUCID_ERR_4000"),
        ("colour=red", 400, "LUCID_ERR_4000"),
    ] {
        list(&app, q).await.expect_error(status, code);
    }
    let empty = list(&app, "").await;
    assert_eq!(
        empty.expect(200, "empty"),
        &json!({ "items": [], "page": 1, "page_size": 20, "total": 0 })
    );
}

// ---------------------------------------------------------------------------
// Routing: static segments win over {node_id}
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_segments_pools_poot_and_payouts_win_over_node_id() {
    let app = app().await;
    app.api_call(
        Method::POST,
        "/api/v1/nodes/pools/",
        Some(&PoolBuilder::new().id("pool_static").build()),
    )
    .await
    .expect(201, "create pool");
    create_node(&app, &NodeBuilder::new().id("node_static").build()).await;

    for path in ["/api/v1/nodes/pools/", "/api/v1/nodes/pools"] {
        let r = app.api_call(Method::GET, path, None).await;
        let b = r.expect(200, path);
        assert_eq!(b["total"], 1, "{path} is the pool listing: {b}");
        assert_eq!(b["items"][0]["pool_id"], "pool_static");
    }
    // A pool id is not looked up as a node and vice versa.
    app.api_call(Method::GET, "/api/v1/nodes/pools/pool_missing", None)
        .await
        .expect_error(404, "LUCID_ERR_5002");
    app.api_call(Method::GET, "/api/v1/nodes/pools/node_static", None)
        .await
        .expect_error(422, VALIDATION);

    // The batch endpoint under nodes/poot is reached (202), not a node route.
    let batch = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/poot/batch-validate",
            Some(&json!({ "validations": [ItemBuilder::new("node_static").build()] })),
        )
        .await;
    let b = batch.expect(202, "batch-validate");
    assert!(b["batch_id"].is_string(), "{b}");
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/poot/batch-validate",
            Some(&json!({ "validations": [] })),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["validations"]);

    // `poot` and `payouts` are not valid node ids: 422, not a crash or a 404 lookup.
    for path in [
        "/api/v1/nodes/poot",
        "/api/v1/nodes/payouts",
        "/api/v1/nodes/poot/status",
    ] {
        let r = app.api_call(Method::GET, path, None).await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), ["node_id"], "{path}");
    }
    // Under nodes/payouts/ the payout routes win: `status` is read as a payout id.
    let r = app
        .api_call(Method::GET, "/api/v1/nodes/payouts/status", None)
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["payout_id"]);
    let r = app
        .api_call(Method::POST, "/api/v1/nodes/poot/start", None)
        .await;
    r.expect_error(422, VALIDATION);
    // The node itself is unaffected and reachable.
    assert_eq!(
        get_node(&app, "node_static").await["node_id"],
        "node_static"
    );
}

// ---------------------------------------------------------------------------
// Envelope and docs
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_carries_the_envelope_with_the_request_id_of_the_response_header() {
    let app = app().await;
    create_node(&app, &NodeBuilder::new().id("node_env").build()).await;

    // A client id is echoed in the header and the envelope.
    let r = app
        .client
        .get(format!("{}/api/v1/nodes/node_none", app.address))
        .header("x-request-id", "trace-nodes-42")
        .send()
        .await
        .expect("request");
    let reply = to_reply(r).await;
    assert_eq!(reply.request_id.as_deref(), Some("trace-nodes-42"));
    assert_eq!(
        reply.expect_error(404, NODE_NOT_FOUND)["request_id"],
        "trace-nodes-42"
    );

    // Generated ids differ per request, errors of every kind carry them.
    let mut ids = HashSet::new();
    let dup = NodeBuilder::new().id("node_env").build();
    let bad = NodeBuilder::new().country("XX").build();
    let cases: Vec<(Method, &str, Option<&Value>, u16, &str)> = vec![
        (
            Method::GET,
            "/api/v1/nodes/node_none",
            None,
            404,
            NODE_NOT_FOUND,
        ),
        (Method::POST, NODES, Some(&dup), 409, NODE_EXISTS),
        (Method::POST, NODES, Some(&bad), 422, VALIDATION),
        (
            Method::POST,
            "/api/v1/nodes/node_env/stop",
            None,
            409,
            INVALID_STATUS,
        ),
        (Method::GET, "/api/v1/nodes/?page=0", None, 422, VALIDATION),
        (
            Method::GET,
            "/api/v1/nodes/?status=x",
            None,
            400,
            "LUCID_ERR_4000",
        ),
        (Method::GET, "/api/v1/nodez", None, 404, "LUCID_ERR_4040"),
        (
            Method::GET,
            "/api/v1/nodes/pools/pool_none",
            None,
            404,
            "LUCID_ERR_5002",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = app.api_call(method.clone(), path, body).await;
        r.expect_error(status, code);
        assert!(
            ids.insert(r.request_id.clone()),
            "{method} {path}: ids are unique"
        );
    }
    // Successes carry the header too.
    let ok = app
        .api_call(Method::GET, "/api/v1/nodes/node_env", None)
        .await;
    assert!(ok.request_id.is_some_and(|id| !id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_method_on_a_node_route_answers_405_in_the_envelope() {
    let app = app().await;
    for (method, path) in [
        (Method::PATCH, "/api/v1/nodes/node_x"),
        (Method::GET, "/api/v1/nodes/node_x/start"),
        (Method::DELETE, "/api/v1/nodes/"),
        (Method::GET, "/api/v1/nodes/pools/pool_x/nodes"),
    ] {
        let r = app.api_call(method.clone(), path, None).await;
        assert_eq!(r.status, 405, "{method} {path}");
        let code = r.body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code.starts_with("LUCID_ERR_"),
            "{method} {path}: 405 without the envelope: {}",
            r.body
        );
        r.expect_error(405, &code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_node_and_pool_path_and_method() {
    let app = app().await;
    let doc = app.get_json("/openapi.json", 200).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "OpenAPI 3"
    );
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/nodes/", &["get", "post"][..]),
        ("/api/v1/nodes/{node_id}", &["get", "put", "delete"][..]),
        ("/api/v1/nodes/{node_id}/start", &["post"][..]),
        ("/api/v1/nodes/{node_id}/stop", &["post"][..]),
        ("/api/v1/nodes/{node_id}/status", &["get"][..]),
        ("/api/v1/nodes/pools/", &["get", "post"][..]),
        (
            "/api/v1/nodes/pools/{pool_id}",
            &["get", "put", "delete"][..],
        ),
        ("/api/v1/nodes/pools/{pool_id}/nodes", &["post"][..]),
        (
            "/api/v1/nodes/pools/{pool_id}/nodes/{node_id}",
            &["delete"][..],
        ),
    ] {
        for m in methods {
            assert!(
                paths[path][m].is_object(),
                "{m} {path} missing from /openapi.json"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    for s in [
        "NodeIn",
        "NodeOut",
        "NodeUpdateIn",
        "NodeStatusOut",
        "NodePage",
        "PoolIn",
        "PoolOut",
        "PoolPage",
        "ErrorEnvelope",
    ] {
        assert!(schemas[s].is_object(), "schema {s}");
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.status().as_u16(), 200, "docs UI");
}

// ---------------------------------------------------------------------------
// Property: every accepted body round-trips through GET unchanged
// ---------------------------------------------------------------------------

const MAX_BYTES: u64 = 1 << 53;
const COUNTRIES: [&str; 10] = ["DE", "US", "FR", "JP", "BR", "IN", "ZA", "AU", "CA", "NO"];
const ZONES: [&str; 6] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Argentina/Buenos_Aires",
    "Asia/Tokyo",
    "Etc/GMT+5",
];

/// A value and its expected echo (defaults filled in), without `node_id`.
#[derive(Debug, Clone)]
struct Case {
    sent: Value,
    expected: Value,
    id_suffix: Option<String>,
}

fn put_opt(sent: &mut Value, expected: &mut Value, key: &str, v: Option<Value>, default: Value) {
    match v {
        Some(v) => {
            sent[key] = v.clone();
            expected[key] = v;
        }
        None => expected[key] = default,
    }
}

fn micro(n: i64) -> f64 {
    n as f64 / 1e6
}

fn node_case() -> impl Strategy<Value = Case> {
    let ident = (
        prop::option::of("[A-Za-z0-9_-]{1,24}"),
        "[A-Za-z0-9 _-]{3,100}",
        prop::sample::select(TYPES.to_vec()),
        prop::option::of(prop::sample::select(vec![
            "active",
            "inactive",
            "maintenance",
            "error",
            "starting",
            "stopping",
        ])),
    );
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|s| std::net::Ipv6Addr::from(s).to_string()),
    ];
    let hardware = (
        (1u32..=1024, 1u32..=10_000, "[A-Za-z0-9_.-]{1,32}"),
        1u64..=MAX_BYTES,
        1u64..=MAX_BYTES,
        prop::option::of(("[A-Za-z0-9 ._-]{1,100}", 0u64..=MAX_BYTES, 1u32..=64)),
        prop::option::of((1u64..=MAX_BYTES, prop::option::of(ip))),
    );
    let location = (
        prop::sample::select(COUNTRIES.to_vec()),
        "\\PC{1,100}",
        "\\PC{1,100}",
        prop::sample::select(ZONES.to_vec()),
        prop::option::of((-90_000_000i64..=90_000_000, -180_000_000i64..=180_000_000)),
    );
    let configuration = (
        prop::option::of(1u32..=1000),
        (
            1u8..=100,
            0u64..=MAX_BYTES,
            0u64..=MAX_BYTES,
            0u64..=MAX_BYTES,
        ),
        prop::option::of(any::<bool>()),
        prop::option::of((0u8..=6, 0u8..24, 0u8..60, 1u32..=1440)),
    );
    (ident, hardware, location, configuration).prop_map(|(ident, hw, loc, cfg)| {
        let (id_suffix, name, node_type, status) = ident;
        let mut sent = json!({ "name": name, "node_type": node_type });
        let mut expected = sent.clone();
        put_opt(&mut sent, &mut expected, "status", status.map(|s| json!(s)), json!("inactive"));

        let ((cores, mhz, arch), mem, storage, gpu, network) = hw;
        let mut hs = json!({
            "cpu": { "cores": cores, "frequency_mhz": mhz, "architecture": arch },
            "memory_bytes": mem,
            "storage_bytes": storage,
        });
        let mut he = hs.clone();
        put_opt(
            &mut hs,
            &mut he,
            "gpu",
            gpu.map(|(model, bytes, count)| json!({ "model": model, "memory_bytes": bytes, "count": count })),
            Value::Null,
        );
        match network {
            Some((bw, ip)) => {
                let mut ns = json!({ "bandwidth_mbps": bw });
                let mut ne = ns.clone();
                put_opt(&mut ns, &mut ne, "public_ip", ip.map(|i| json!(i)), Value::Null);
                hs["network"] = ns;
                he["network"] = ne;
            }
            None => he["network"] = Value::Null,
        }
        sent["hardware_info"] = hs;
        expected["hardware_info"] = he;

        let (country, region, city, tz, coords) = loc;
        let mut ls = json!({ "country": country, "region": region, "city": city, "timezone": tz });
        let mut le = ls.clone();
        put_opt(
            &mut ls,
            &mut le,
            "coordinates",
            coords.map(|(la, lo)| json!({ "latitude": micro(la), "longitude": micro(lo) })),
            Value::Null,
        );
        sent["location"] = ls;
        expected["location"] = le;

        let (max_sessions, (cpu, mem_l, disk_l, net_l), auto, window) = cfg;
        let mut cs = json!({
            "resource_limits": { "cpu_percent": cpu, "memory_bytes": mem_l, "disk_bytes": disk_l, "network_mbps": net_l }
        });
        let mut ce = cs.clone();
        put_opt(&mut cs, &mut ce, "max_sessions", max_sessions.map(|m| json!(m)), json!(10));
        put_opt(&mut cs, &mut ce, "auto_scaling", auto.map(|a| json!(a)), json!(false));
        put_opt(
            &mut cs,
            &mut ce,
            "maintenance_window",
            window.map(|(d, h, m, len)| {
                json!({ "day_of_week": d, "start_time": format!("{h:02}:{m:02}"), "duration_minutes": len })
            }),
            Value::Null,
        );
        sent["configuration"] = cs;
        expected["configuration"] = ce;
        Case {
            sent,
            expected,
            id_suffix,
        }
    })
}

#[test]
fn any_node_body_the_api_accepts_round_trips_through_get_unchanged() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(app());
    let counter = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&node_case(), |case| {
        rt.block_on(async {
            let Case {
                mut sent,
                mut expected,
                id_suffix,
            } = case;
            if let Some(s) = id_suffix {
                // Unique per run, so shrinking never collides with an earlier case.
                let id = format!("node_{s}_{}", counter.fetch_add(1, Ordering::Relaxed));
                sent["node_id"] = json!(id);
                expected["node_id"] = json!(id);
            }
            let r = app.api_call(Method::POST, NODES, Some(&sent)).await;
            prop_assert_eq!(r.status, 201, "accepted body {} answered {}", sent, r.body);
            let id = r.body["node_id"].as_str().unwrap_or_default().to_string();
            prop_assert!(is_node_id(&id), "node id {}", id);
            let got = app
                .api_call(Method::GET, &format!("{NODES}{id}"), None)
                .await;
            prop_assert_eq!(got.status, 200);
            for (key, want) in expected.as_object().into_iter().flatten() {
                prop_assert_eq!(&got.body[key], want, "GET field {} of {}", key, sent);
                prop_assert_eq!(&r.body[key], want, "POST field {} of {}", key, sent);
            }
            prop_assert_eq!(&got.body["pool_id"], &Value::Null);
            prop_assert_eq!(&got.body["created_at"], &r.body["created_at"]);
            Ok::<(), TestCaseError>(())
        })
    });
    drop(app);
    if let Err(e) = result {
        panic!("{e}");
    }
}
