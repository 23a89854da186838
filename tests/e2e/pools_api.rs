//! Node pools over HTTP against the real API and real MongoDB: create, read,
//! update, delete (with and without `?force=true`), membership with a derived
//! node count, full pools, one pool per node, and membership races.
//!
//! Each test starts its own API (no workers) with its own database.

use std::collections::HashSet;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use lucid_jobs::storage::{collections, nodes::NodeDoc};

use crate::{
    helpers::{NodeBuilder, PoolBuilder, Reply, TestApp},
    nodes_api::{app, create_node, get_node, stored_node},
};

const POOLS: &str = "/api/v1/nodes/pools/";
const VALIDATION: &str = "LUCID_ERR_4220";
const NODE_NOT_FOUND: &str = "LUCID_ERR_5001";
const POOL_NOT_FOUND: &str = "LUCID_ERR_5002";
const POOL_EXISTS: &str = "LUCID_ERR_5008";
const INVALID_ALLOCATION: &str = "LUCID_ERR_5009";

async fn create_pool(app: &TestApp, body: &Value) -> Value {
    app.api_call(Method::POST, POOLS, Some(body))
        .await
        .expect(201, "create pool")
        .clone()
}

async fn get_pool(app: &TestApp, id: &str) -> Value {
    app.api_call(Method::GET, &format!("{POOLS}{id}"), None)
        .await
        .expect(200, "get pool")
        .clone()
}

async fn add(app: &TestApp, pool: &str, node: &str) -> Reply {
    app.api_call(
        Method::POST,
        &format!("{POOLS}{pool}/nodes"),
        Some(&json!({ "node_id": node })),
    )
    .await
}

async fn remove(app: &TestApp, pool: &str, node: &str) -> Reply {
    app.api_call(Method::DELETE, &format!("{POOLS}{pool}/nodes/{node}"), None)
        .await
}

async fn nodes(app: &TestApp, ids: &[&str]) {
    for id in ids {
        create_node(app, &NodeBuilder::new().id(id).build()).await;
    }
}

async fn total_pools(app: &TestApp) -> Value {
    app.get_json(POOLS, 200).await["total"].clone()
}

// ---------------------------------------------------------------------------
// Create, read, duplicates
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_pool_returns_201_with_its_defaults_and_get_returns_the_same() {
    let app = app().await;
    let created = create_pool(
        &app,
        &PoolBuilder::new()
            .id("pool_main")
            .name("Main pool")
            .max_nodes(25)
            .build(),
    )
    .await;
    assert_eq!(created["pool_id"], "pool_main");
    assert_eq!(created["name"], "Main pool");
    assert_eq!(created["node_count"], 0);
    assert_eq!(created["max_nodes"], 25);
    assert_eq!(created["description"], Value::Null);
    assert_eq!(created["resource_limits"], Value::Null);
    assert_eq!(
        created["auto_scaling"],
        json!({
            "enabled": false,
            "policy": null,
            "target_cpu_percent": 70.0,
            "scale_up_cooldown": 5,
            "scale_down_cooldown": 10
        })
    );
    assert_eq!(created["created_at"], created["updated_at"]);
    assert_eq!(get_pool(&app, "pool_main").await, created);

    // A full body round-trips too.
    let full = PoolBuilder::new()
        .id("pool_full_body")
        .description(&"é".repeat(500))
        .policy(80.0, 30.0, 2, 8)
        .set(
            "/resource_limits",
            json!({ "cpu_percent": 90, "memory_bytes": 1024, "disk_bytes": 2048, "network_mbps": 100 }),
        )
        .set("/auto_scaling/target_cpu_percent", json!(55.5))
        .set("/auto_scaling/scale_up_cooldown", json!(1))
        .set("/auto_scaling/scale_down_cooldown", json!(60))
        .build();
    let created = create_pool(&app, &full).await;
    for key in [
        "description",
        "resource_limits",
        "auto_scaling",
        "max_nodes",
        "name",
    ] {
        assert_eq!(created[key], full[key], "{key}");
    }
    assert_eq!(get_pool(&app, "pool_full_body").await, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_id_is_generated_when_absent_and_the_collection_answers_without_a_trailing_slash() {
    let app = app().await;
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/pools",
            Some(&PoolBuilder::new().build()),
        )
        .await;
    let created = r.expect(201, "POST without slash").clone();
    let id = created["pool_id"].as_str().expect("pool_id");
    assert!(
        id.strip_prefix("pool_").is_some_and(|rest| !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')),
        "generated id {id}"
    );
    assert_eq!(get_pool(&app, id).await, created);
    let listing = app.get_json("/api/v1/nodes/pools", 200).await;
    assert_eq!(listing["total"], 1);
    assert_eq!(listing["items"][0], created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_pool_with_a_duplicate_id_returns_409_lucid_err_5008_and_keeps_the_original() {
    let app = app().await;
    let original = create_pool(
        &app,
        &PoolBuilder::new().id("pool_dup").name("Original").build(),
    )
    .await;
    let r = app
        .api_call(
            Method::POST,
            POOLS,
            Some(
                &PoolBuilder::new()
                    .id("pool_dup")
                    .name("Impostor")
                    .max_nodes(3)
                    .build(),
            ),
        )
        .await;
    r.expect_error(409, POOL_EXISTS);
    assert_eq!(get_pool(&app, "pool_dup").await, original);

    // Racing creates: the unique index decides, exactly one wins.
    let replies = join_all((0..10).map(|i| {
        let body = PoolBuilder::new()
            .id("pool_race")
            .name(&format!("Racer {i}"))
            .build();
        let app = &app;
        async move { app.api_call(Method::POST, POOLS, Some(&body)).await }
    }))
    .await;
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    for r in replies.iter().filter(|r| r.status != 201) {
        r.expect_error(409, POOL_EXISTS);
    }
    assert_eq!(total_pools(&app).await, 2);
}

// ---------------------------------------------------------------------------
// Not found, malformed ids, validation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pool_endpoint_returns_404_lucid_err_5002_for_an_unknown_pool() {
    let app = app().await;
    nodes(&app, &["node_real"]).await;
    let update = json!({ "name": "Renamed" });
    let member = json!({ "node_id": "node_real" });
    let cases: [(Method, &str, Option<&Value>); 6] = [
        (Method::GET, "/api/v1/nodes/pools/pool_ghost", None),
        (Method::PUT, "/api/v1/nodes/pools/pool_ghost", Some(&update)),
        (Method::DELETE, "/api/v1/nodes/pools/pool_ghost", None),
        (
            Method::DELETE,
            "/api/v1/nodes/pools/pool_ghost?force=true",
            None,
        ),
        (
            Method::POST,
            "/api/v1/nodes/pools/pool_ghost/nodes",
            Some(&member),
        ),
        (
            Method::DELETE,
            "/api/v1/nodes/pools/pool_ghost/nodes/node_real",
            None,
        ),
    ];
    for (method, path, body) in cases {
        let r = app.api_call(method.clone(), path, body).await;
        let e = r.expect_error(404, POOL_NOT_FOUND);
        assert!(
            e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("pool_ghost"),
            "{method} {path}: {e}"
        );
    }
    assert_eq!(get_node(&app, "node_real").await["pool_id"], Value::Null);
    assert_eq!(total_pools(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pool_and_node_ids_return_422_naming_the_field() {
    let app = app().await;
    create_pool(&app, &PoolBuilder::new().id("pool_ok").build()).await;
    let update = json!({ "name": "Renamed" });
    let member = json!({ "node_id": "node_x" });
    for (method, path, body, field) in [
        (Method::GET, "/api/v1/nodes/pools/node_x", None, "pool_id"),
        (
            Method::PUT,
            "/api/v1/nodes/pools/bad",
            Some(&update),
            "pool_id",
        ),
        (Method::DELETE, "/api/v1/nodes/pools/pool_", None, "pool_id"),
        (
            Method::POST,
            "/api/v1/nodes/pools/pool%20x/nodes",
            Some(&member),
            "pool_id",
        ),
        (
            Method::DELETE,
            "/api/v1/nodes/pools/x/nodes/node_x",
            None,
            "pool_id",
        ),
        (
            Method::DELETE,
            "/api/v1/nodes/pools/pool_ok/nodes/pool_ok",
            None,
            "node_id",
        ),
    ] {
        let r = app.api_call(method.clone(), path, body).await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), [field], "{method} {path}");
    }
    for body in [json!({ "node_id": "nope" }), json!({ "node_id": "" })] {
        let r = app
            .api_call(
                Method::POST,
                "/api/v1/nodes/pools/pool_ok/nodes",
                Some(&body),
            )
            .await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), ["node_id"], "{body}");
    }
    for body in [json!({}), json!({ "node_id": "node_x", "force": true })] {
        let r = app
            .api_call(
                Method::POST,
                "/api/v1/nodes/pools/pool_ok/nodes",
                Some(&body),
            )
            .await;
        r.expect_error(422, VALIDATION);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_pool_field_returns_422_lucid_err_4220_naming_exactly_that_field() {
    let app = app().await;
    let policy = |up: f64, down: f64, min: u64, max: u64| {
        json!({ "enabled": true, "policy": {
            "scale_up_threshold": up, "scale_down_threshold": down,
            "min_nodes": min, "max_nodes": max, "cooldown_minutes": 5 } })
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/pool_id", json!("node_1"), "pool_id"),
        ("/pool_id", json!("pool_a b"), "pool_id"),
        ("/name", json!("ab"), "name"),
        ("/name", json!("no/slashes"), "name"),
        ("/description", json!("d".repeat(501)), "description"),
        ("/description", json!("é".repeat(501)), "description"),
        ("/max_nodes", json!(0), "max_nodes"),
        ("/max_nodes", json!(1001), "max_nodes"),
        (
            "/auto_scaling",
            json!({ "enabled": true }),
            "auto_scaling.policy",
        ),
        (
            "/auto_scaling",
            policy(96.0, 30.0, 1, 5),
            "auto_scaling.policy.scale_up_threshold",
        ),
        (
            "/auto_scaling",
            policy(49.0, 30.0, 1, 5),
            "auto_scaling.policy.scale_up_threshold",
        ),
        (
            "/auto_scaling",
            policy(80.0, 9.0, 1, 5),
            "auto_scaling.policy.scale_down_threshold",
        ),
        (
            "/auto_scaling",
            policy(80.0, 51.0, 1, 5),
            "auto_scaling.policy.scale_down_threshold",
        ),
        (
            "/auto_scaling",
            policy(50.0, 50.0, 1, 5),
            "auto_scaling.policy.scale_down_threshold",
        ),
        (
            "/auto_scaling",
            policy(80.0, 30.0, 0, 5),
            "auto_scaling.policy.min_nodes",
        ),
        (
            "/auto_scaling",
            policy(80.0, 30.0, 6, 5),
            "auto_scaling.policy.max_nodes",
        ),
        (
            "/auto_scaling",
            json!({ "target_cpu_percent": 29.0 }),
            "auto_scaling.target_cpu_percent",
        ),
        (
            "/auto_scaling",
            json!({ "target_cpu_percent": 90.5 }),
            "auto_scaling.target_cpu_percent",
        ),
        (
            "/auto_scaling",
            json!({ "scale_up_cooldown": 0 }),
            "auto_scaling.scale_up_cooldown",
        ),
        (
            "/resource_limits",
            json!({ "cpu_percent": 0, "memory_bytes": 1, "disk_bytes": 1, "network_mbps": 1 }),
            "resource_limits.cpu_percent",
        ),
    ];
    for (pointer, value, field) in cases {
        let body = PoolBuilder::new().set(pointer, value.clone()).build();
        let r = app.api_call(Method::POST, POOLS, Some(&body)).await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), [field], "{pointer} = {value}");
    }
    let mut cooldown = policy(80.0, 30.0, 1, 5);
    cooldown["policy"]["cooldown_minutes"] = json!(0);
    let r = app
        .api_call(
            Method::POST,
            POOLS,
            Some(&PoolBuilder::new().set("/auto_scaling", cooldown).build()),
        )
        .await;
    r.expect_error(422, VALIDATION);
    assert_eq!(r.error_fields(), ["auto_scaling.policy.cooldown_minutes"]);

    // Several at once are all listed.
    let body = PoolBuilder::new()
        .name("x")
        .description(&"d".repeat(501))
        .max_nodes(0)
        .policy(96.0, 60.0, 3, 2)
        .build();
    let r = app.api_call(Method::POST, POOLS, Some(&body)).await;
    r.expect_error(422, VALIDATION);
    assert_eq!(
        r.error_fields(),
        [
            "auto_scaling.policy.max_nodes",
            "auto_scaling.policy.scale_down_threshold",
            "auto_scaling.policy.scale_up_threshold",
            "description",
            "max_nodes",
            "name",
        ]
    );

    // Unknown fields, at the top and nested, and wrong types.
    for body in [
        PoolBuilder::new().set("/owner", json!("me")).build(),
        PoolBuilder::new()
            .set("/auto_scaling/mode", json!("fast"))
            .build(),
        PoolBuilder::new()
            .policy(80.0, 30.0, 1, 5)
            .set("/auto_scaling/policy/step", json!(2))
            .build(),
        PoolBuilder::new().set("/max_nodes", json!(-1)).build(),
        PoolBuilder::new().without("/max_nodes").build(),
    ] {
        let r = app.api_call(Method::POST, POOLS, Some(&body)).await;
        r.expect_error(422, VALIDATION);
    }
    assert_eq!(total_pools(&app).await, 0, "nothing stored");

    // The bounds themselves are accepted.
    create_pool(
        &app,
        &PoolBuilder::new()
            .description(&"d".repeat(500))
            .max_nodes(1000)
            .policy(95.0, 50.0, 1, 1)
            .build(),
    )
    .await;
    create_pool(
        &app,
        &PoolBuilder::new()
            .max_nodes(1)
            .policy(50.0, 10.0, 1, 1000)
            .build(),
    )
    .await;
    assert_eq!(total_pools(&app).await, 2);
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_a_pool_replaces_the_given_fields_and_a_rejected_update_changes_nothing() {
    let app = app().await;
    let created = create_pool(&app, &PoolBuilder::new().id("pool_upd").build()).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let auto = json!({
        "enabled": true,
        "policy": { "scale_up_threshold": 75.0, "scale_down_threshold": 25.0, "min_nodes": 1, "max_nodes": 4, "cooldown_minutes": 3 },
        "target_cpu_percent": 65.0, "scale_up_cooldown": 2, "scale_down_cooldown": 20
    });
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/pools/pool_upd",
            Some(&json!({ "name": "Renamed pool", "description": "GPU boxes", "max_nodes": 4, "auto_scaling": auto })),
        )
        .await;
    let updated = r.expect(200, "PUT pool").clone();
    assert_eq!(updated["name"], "Renamed pool");
    assert_eq!(updated["description"], "GPU boxes");
    assert_eq!(updated["max_nodes"], 4);
    assert_eq!(updated["auto_scaling"], auto);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(updated["resource_limits"], Value::Null);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    assert_eq!(get_pool(&app, "pool_upd").await, updated);

    // Rejected updates leave the pool as it was.
    for body in [
        json!({}),
        json!({ "name": "Fine name", "max_nodes": 0 }),
        json!({ "description": "d".repeat(501) }),
        json!({ "auto_scaling": { "enabled": true } }),
        json!({ "name": "Fine name", "node_count": 3 }),
        json!({ "pool_id": "pool_other" }),
    ] {
        let r = app
            .api_call(Method::PUT, "/api/v1/nodes/pools/pool_upd", Some(&body))
            .await;
        r.expect_error(422, VALIDATION);
        assert_eq!(get_pool(&app, "pool_upd").await, updated, "after {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_nodes_below_the_node_count_returns_409_and_down_to_the_count_succeeds() {
    let app = app().await;
    nodes(&app, &["node_m1", "node_m2", "node_m3", "node_m4"]).await;
    create_pool(
        &app,
        &PoolBuilder::new().id("pool_cap").max_nodes(10).build(),
    )
    .await;
    for n in ["node_m1", "node_m2", "node_m3"] {
        add(&app, "pool_cap", n).await.expect(200, "add");
    }
    let before = get_pool(&app, "pool_cap").await;
    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/pools/pool_cap",
            Some(&json!({ "max_nodes": 2, "name": "Shrunk" })),
        )
        .await;
    let e = r.expect_error(409, INVALID_ALLOCATION);
    assert!(
        e["message"].as_str().unwrap_or_default().contains('3'),
        "{e}"
    );
    assert_eq!(get_pool(&app, "pool_cap").await, before, "nothing applied");

    let r = app
        .api_call(
            Method::PUT,
            "/api/v1/nodes/pools/pool_cap",
            Some(&json!({ "max_nodes": 3 })),
        )
        .await;
    let b = r.expect(200, "max_nodes = count");
    assert_eq!(
        (b["max_nodes"].clone(), b["node_count"].clone()),
        (json!(3), json!(3))
    );
    add(&app, "pool_cap", "node_m4")
        .await
        .expect_error(409, INVALID_ALLOCATION);
}

// ---------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_nodes_keeps_node_count_derived() {
    let app = app().await;
    nodes(&app, &["node_a", "node_b", "node_c"]).await;
    create_pool(&app, &PoolBuilder::new().id("pool_m").build()).await;

    for (i, n) in ["node_a", "node_b", "node_c"].iter().enumerate() {
        let r = add(&app, "pool_m", n).await;
        let b = r.expect(200, "add");
        assert_eq!(b["pool_id"], "pool_m");
        assert_eq!(b["node_count"], i + 1);
        assert_eq!(get_node(&app, n).await["pool_id"], "pool_m");
    }
    // Adding a member again is harmless: still one membership.
    let again = add(&app, "pool_m", "node_a").await;
    assert_eq!(again.expect(200, "re-add")["node_count"], 3);

    let members = app.get_json("/api/v1/nodes/?pool_id=pool_m", 200).await;
    assert_eq!(members["total"], 3);

    let r = remove(&app, "pool_m", "node_b").await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get_pool(&app, "pool_m").await["node_count"], 2);
    assert_eq!(get_node(&app, "node_b").await["pool_id"], Value::Null);
    // Removing it again: not a member.
    remove(&app, "pool_m", "node_b")
        .await
        .expect_error(404, NODE_NOT_FOUND);

    // Deleting a member node drops the count.
    let r = app
        .api_call(Method::DELETE, "/api/v1/nodes/node_c", None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(get_pool(&app, "pool_m").await["node_count"], 1);
    let listing = app.get_json(POOLS, 200).await;
    assert_eq!(listing["items"][0]["node_count"], 1, "the listing agrees");
    // A removed node can join again.
    assert_eq!(
        add(&app, "pool_m", "node_b").await.expect(200, "rejoin")["node_count"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_unknown_node_returns_404_lucid_err_5001_and_removing_one_too() {
    let app = app().await;
    create_pool(&app, &PoolBuilder::new().id("pool_u").build()).await;
    add(&app, "pool_u", "node_ghost")
        .await
        .expect_error(404, NODE_NOT_FOUND);
    remove(&app, "pool_u", "node_ghost")
        .await
        .expect_error(404, NODE_NOT_FOUND);
    assert_eq!(get_pool(&app, "pool_u").await["node_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_to_a_full_pool_returns_409_lucid_err_5009() {
    let app = app().await;
    nodes(&app, &["node_f1", "node_f2", "node_f3"]).await;
    create_pool(
        &app,
        &PoolBuilder::new().id("pool_small").max_nodes(2).build(),
    )
    .await;
    add(&app, "pool_small", "node_f1").await.expect(200, "1");
    add(&app, "pool_small", "node_f2").await.expect(200, "2");
    let r = add(&app, "pool_small", "node_f3").await;
    let e = r.expect_error(409, INVALID_ALLOCATION);
    assert!(
        e["message"].as_str().unwrap_or_default().contains("full"),
        "{e}"
    );
    assert_eq!(get_node(&app, "node_f3").await["pool_id"], Value::Null);
    assert_eq!(get_pool(&app, "pool_small").await["node_count"], 2);
    // After a removal there is room again.
    assert_eq!(remove(&app, "pool_small", "node_f1").await.status, 204);
    add(&app, "pool_small", "node_f3")
        .await
        .expect(200, "room again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_in_at_most_one_pool_adding_it_to_a_second_returns_409_lucid_err_5009() {
    let app = app().await;
    nodes(&app, &["node_one"]).await;
    create_pool(&app, &PoolBuilder::new().id("pool_first").build()).await;
    create_pool(&app, &PoolBuilder::new().id("pool_second").build()).await;
    add(&app, "pool_first", "node_one")
        .await
        .expect(200, "first");
    let r = add(&app, "pool_second", "node_one").await;
    let e = r.expect_error(409, INVALID_ALLOCATION);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pool_first"),
        "names the current pool: {e}"
    );
    assert_eq!(get_node(&app, "node_one").await["pool_id"], "pool_first");
    assert_eq!(get_pool(&app, "pool_second").await["node_count"], 0);
    // Removing it from the wrong pool is refused; from its own pool works.
    remove(&app, "pool_second", "node_one")
        .await
        .expect_error(404, NODE_NOT_FOUND);
    assert_eq!(remove(&app, "pool_first", "node_one").await.status, 204);
    add(&app, "pool_second", "node_one")
        .await
        .expect(200, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_with_nodes_returns_409_unless_force_true_detaches_them() {
    let app = app().await;
    nodes(&app, &["node_d1", "node_d2", "node_out"]).await;
    create_pool(&app, &PoolBuilder::new().id("pool_del").build()).await;
    create_pool(&app, &PoolBuilder::new().id("pool_other").build()).await;
    add(&app, "pool_del", "node_d1").await.expect(200, "add");
    add(&app, "pool_del", "node_d2").await.expect(200, "add");
    add(&app, "pool_other", "node_out").await.expect(200, "add");

    for path in [
        "/api/v1/nodes/pools/pool_del",
        "/api/v1/nodes/pools/pool_del?force=false",
    ] {
        let r = app.api_call(Method::DELETE, path, None).await;
        let e = r.expect_error(409, INVALID_ALLOCATION);
        assert!(
            e["message"].as_str().unwrap_or_default().contains("force"),
            "{e}"
        );
    }
    assert_eq!(
        get_pool(&app, "pool_del").await["node_count"],
        2,
        "still there"
    );
    app.api_call(
        Method::DELETE,
        "/api/v1/nodes/pools/pool_del?force=maybe",
        None,
    )
    .await
    .expect_error(400, "LUCID_ERR_4000");

    let r = app
        .api_call(
            Method::DELETE,
            "/api/v1/nodes/pools/pool_del?force=true",
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    app.api_call(Method::GET, "/api/v1/nodes/pools/pool_del", None)
        .await
        .expect_error(404, POOL_NOT_FOUND);
    for n in ["node_d1", "node_d2"] {
        assert_eq!(
            get_node(&app, n).await["pool_id"],
            Value::Null,
            "{n} detached"
        );
    }
    assert_eq!(
        app.get_json("/api/v1/nodes/?pool_id=pool_del", 200).await["total"],
        0
    );
    // Other pools are untouched; the detached nodes can join them.
    assert_eq!(get_node(&app, "node_out").await["pool_id"], "pool_other");
    assert_eq!(
        add(&app, "pool_other", "node_d1").await.expect(200, "join")["node_count"],
        2
    );

    // An empty pool is deleted without force; deleting again is 404.
    create_pool(&app, &PoolBuilder::new().id("pool_empty").build()).await;
    let r = app
        .api_call(Method::DELETE, "/api/v1/nodes/pools/pool_empty", None)
        .await;
    assert_eq!(r.status, 204);
    app.api_call(Method::DELETE, "/api/v1/nodes/pools/pool_empty", None)
        .await
        .expect_error(404, POOL_NOT_FOUND);
    assert_eq!(total_pools(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pools_paginates_with_derived_node_counts() {
    let app = app().await;
    nodes(&app, &["node_l1", "node_l2", "node_l3"]).await;
    for id in ["pool_l1", "pool_l2", "pool_l3"] {
        create_pool(&app, &PoolBuilder::new().id(id).build()).await;
    }
    add(&app, "pool_l1", "node_l1").await.expect(200, "add");
    add(&app, "pool_l3", "node_l2").await.expect(200, "add");
    add(&app, "pool_l3", "node_l3").await.expect(200, "add");

    let p1 = app
        .get_json("/api/v1/nodes/pools/?page=1&page_size=2", 200)
        .await;
    let p2 = app
        .get_json("/api/v1/nodes/pools/?page=2&page_size=2", 200)
        .await;
    let p3 = app
        .get_json("/api/v1/nodes/pools/?page=3&page_size=2", 200)
        .await;
    for p in [&p1, &p2, &p3] {
        assert_eq!(p["total"], 3);
        assert_eq!(p["page_size"], 2);
    }
    let items: Vec<(Value, Value)> = [&p1, &p2]
        .iter()
        .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
        .map(|i| (i["pool_id"].clone(), i["node_count"].clone()))
        .collect();
    assert_eq!(
        items,
        [
            (json!("pool_l1"), json!(1)),
            (json!("pool_l2"), json!(0)),
            (json!("pool_l3"), json!(2)),
        ]
    );
    assert_eq!(p3["items"], json!([]));
    for (q, field) in [
        ("page_size=101", "page_size"),
        ("page=0", "page"),
        ("page_size=0", "page_size"),
    ] {
        let r = app
            .api_call(Method::GET, &format!("{POOLS}?{q}"), None)
            .await;
        r.expect_error(422, VALIDATION);
        assert_eq!(r.error_fields(), [field]);
    }
}

// ---------------------------------------------------------------------------
// Membership races
// ---------------------------------------------------------------------------

/// Creates 20 nodes and a pool of 5, then adds all 20 at once; returns the
/// node ids and the replies, in the same order.
async fn race_twenty_into_five(app: &TestApp) -> (Vec<String>, Vec<Reply>) {
    let ids: Vec<String> = (0..20).map(|i| format!("node_c{i:02}")).collect();
    let now = mongodb::bson::DateTime::now();
    let docs: Vec<NodeDoc> = ids
        .iter()
        .map(|id| stored_node(id, "active", "worker", None, now))
        .collect();
    app.db
        .collection::<NodeDoc>(collections::NODES)
        .insert_many(docs)
        .await
        .expect("seed nodes");
    create_pool(
        app,
        &PoolBuilder::new().id("pool_five").max_nodes(5).build(),
    )
    .await;
    let replies = join_all(ids.iter().map(|id| add(app, "pool_five", id))).await;
    (ids, replies)
}

/// The members of `pool` according to the node listing.
async fn members(app: &TestApp, pool: &str) -> HashSet<String> {
    let page = app
        .get_json(&format!("/api/v1/nodes/?pool_id={pool}&page_size=100"), 200)
        .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["node_id"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_nodes_added_concurrently_to_a_pool_of_five_yield_exactly_five_200s_and_fifteen_409s()
 {
    let app = app().await;
    let (ids, replies) = race_twenty_into_five(&app).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "exactly five adds succeed: {statuses:?}"
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        r.expect_error(409, INVALID_ALLOCATION);
    }
    assert_eq!(get_pool(&app, "pool_five").await["node_count"], 5);
    let winners: HashSet<String> = ids
        .iter()
        .zip(&replies)
        .filter(|(_, r)| r.status == 200)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(members(&app, "pool_five").await, winners);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_added_concurrently_to_ten_pools_ends_up_in_exactly_one() {
    let app = app().await;
    nodes(&app, &["node_contested"]).await;
    let pools: Vec<String> = (0..10).map(|i| format!("pool_k{i}")).collect();
    for p in &pools {
        create_pool(&app, &PoolBuilder::new().id(p).build()).await;
    }
    let replies = join_all(pools.iter().map(|p| add(&app, p, "node_contested"))).await;
    let winners: Vec<&String> = pools
        .iter()
        .zip(&replies)
        .filter(|(_, r)| r.status == 200)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        r.expect_error(409, INVALID_ALLOCATION);
    }
    assert_eq!(
        get_node(&app, "node_contested").await["pool_id"],
        winners[0].as_str()
    );
    let listing = app
        .get_json("/api/v1/nodes/pools/?page_size=100", 200)
        .await;
    let total: u64 = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["node_count"].as_u64().unwrap_or_default())
        .sum();
    assert_eq!(total, 1, "one membership across all pools");
}
