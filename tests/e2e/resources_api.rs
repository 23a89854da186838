//! Node resources over HTTP against real MongoDB: reports (one sample or a
//! batch), the latest snapshot, aggregated metrics, component series,
//! thresholds and alerts. Metrics and component series are in `series`,
//! thresholds and alerts in `alerts`.

mod alerts;
mod series;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::TryStreamExt;
use lucid_jobs::{config::Settings, storage::Db};
use mongodb::bson::{Document, doc};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with, test_settings};

pub(super) const GIB: u64 = 1 << 30;

/// The API alone: these tests need no worker.
pub(super) async fn app() -> TestApp {
    spawn_app_with(test_settings(), 0).await
}

pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `t` truncated to milliseconds (the stored precision).
pub(super) fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("time")
}

pub(super) fn time(v: &Value) -> DateTime<Utc> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a time ({e}): {v}"))
}

/// Start of the `step_ms` bucket holding `t`.
pub(super) fn align(t: DateTime<Utc>, step_ms: i64) -> DateTime<Utc> {
    let m = t.timestamp_millis();
    DateTime::from_timestamp_millis(m - m.rem_euclid(step_ms)).expect("time")
}

pub(super) fn resources(node: &str) -> String {
    format!("/api/v1/nodes/{node}/resources")
}

/// A valid sample: `cpu` %, memory 1/4 used, disk 1/4 used, quiet network.
pub(super) fn sample(ts: Option<DateTime<Utc>>, cpu: f64) -> Value {
    let mut v = json!({
        "cpu": {
            "usage_percent": cpu,
            "cores": 8,
            "frequency_mhz": 2400.0,
            "load_average": [0.5, 0.4, 0.3],
            "temperature": 55.0,
        },
        "memory": {
            "total": 4 * GIB,
            "used": GIB,
            "free": 3 * GIB,
            "cached": 0,
            "swap_total": GIB,
            "swap_used": 0,
        },
        "disk": {
            "total": 1000 * GIB,
            "used": 250 * GIB,
            "free": 750 * GIB,
            "read_iops": 100.0,
            "write_iops": 50.0,
            "read_throughput_mbps": 12.5,
            "write_throughput_mbps": 6.25,
        },
        "network": {
            "total_bytes_in": 1000,
            "total_bytes_out": 500,
            "packets_in": 10,
            "packets_out": 5,
            "errors_in": 0,
            "errors_out": 0,
        },
    });
    if let Some(t) = ts {
        v["timestamp"] = json!(iso(t));
    }
    v
}

/// `v` with the member at JSON `pointer` set to `x` (replaced or added).
pub(super) fn with(mut v: Value, pointer: &str, x: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent:?}"))
        .insert(key.to_string(), x);
    v
}

/// Reports `body`, asserting 201; returns the answer.
pub(super) async fn report(app: &TestApp, node: &str, body: &Value) -> Value {
    let r = app.post_json(&resources(node), body).await;
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 201, "report: {v}");
    v
}

/// Asserts an error answer with `status` and `code`; returns `error`.
pub(super) async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let v: Value = r.json().await.expect("json");
    assert_eq!(got, status, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    v["error"].clone()
}

/// The fields listed by a validation error.
pub(super) fn fields(err: &Value) -> Vec<String> {
    err["details"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.fields: {err}"))
        .iter()
        .map(|f| f["field"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub(super) fn alerts_of(answer: &Value) -> Vec<Value> {
    answer["alerts"].as_array().expect("alerts").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_endpoint_answers_404_node_not_found_for_an_unknown_node() {
    let app = app().await;
    let base = resources("node_missing");
    let r = app.post_json(&base, &sample(None, 10.0)).await;
    expect_error(r, 404, "LUCID_ERR_5001").await;
    for suffix in [
        "", "/metrics", "/cpu", "/memory", "/disk", "/network", "/alerts",
    ] {
        let r = app.get(&format!("{base}{suffix}")).await;
        expect_error(r, 404, "LUCID_ERR_5001").await;
    }
    let body = json!({ "cpu": { "warning": 50, "critical": 60 } });
    let r = app.post_json(&format!("{base}/thresholds"), &body).await;
    expect_error(r, 404, "LUCID_ERR_5001").await;
    let r = app.get(&resources("not a node id")).await;
    let err = expect_error(r, 422, "LUCID_ERR_4220").await;
    assert_eq!(fields(&err), ["node_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_samples_has_no_snapshot_and_answers_404() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let err = expect_error(app.get(&resources(&node)).await, 404, "LUCID_ERR_4040").await;
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains(&node) && m.contains("not reported")),
        "{err}"
    );
    let r = app.get(&format!("{}/cpu", resources(&node))).await;
    expect_error(r, 404, "LUCID_ERR_4040").await;
    let m = app
        .get_json(&format!("{}/metrics", resources(&node)), 200)
        .await;
    assert_eq!(m["buckets"], json!([]));
    let a = app
        .get_json(&format!("{}/alerts", resources(&node)), 200)
        .await;
    assert_eq!(a["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_sample_becomes_the_snapshot_and_updates_the_heartbeat() {
    let app = app().await;
    let node = app.create_node_with_network_limit(1000).await;
    let before = app.get_json(&format!("/api/v1/nodes/{node}"), 200).await;
    assert_eq!(before["last_heartbeat"], Value::Null);
    let t0 = ms(Utc::now());
    let body = with(
        sample(None, 12.5),
        "/gpu",
        json!({ "usage_percent": 33.0, "memory_used_bytes": GIB, "memory_total_bytes": 8 * GIB, "temperature": 61.5 }),
    );
    let answer = report(&app, &node, &body).await;
    assert_eq!(answer, json!({ "accepted": 1, "alerts": [] }));

    let snap = app.get_json(&resources(&node), 200).await;
    assert_eq!(snap["node_id"], node.as_str());
    for part in ["cpu", "memory", "disk", "network", "gpu"] {
        assert_eq!(snap[part], body[part], "{part}");
    }
    let taken = time(&snap["timestamp"]);
    assert!(
        taken >= t0 && taken <= Utc::now(),
        "default timestamp is now: {taken}"
    );

    let after = app.get_json(&format!("/api/v1/nodes/{node}"), 200).await;
    assert!(time(&after["last_heartbeat"]) >= t0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_whole_and_its_newest_sample_is_the_snapshot() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(5);
    let newest = t0 + TimeDelta::seconds(120);
    let batch = json!({ "samples": [
        sample(Some(t0 + TimeDelta::seconds(60)), 20.0),
        sample(Some(newest), 30.0),
        sample(Some(t0), 10.0),
    ] });
    let answer = report(&app, &node, &batch).await;
    assert_eq!(answer["accepted"], 3);
    let snap = app.get_json(&resources(&node), 200).await;
    assert_eq!(time(&snap["timestamp"]), ms(newest));
    assert_eq!(snap["cpu"]["usage_percent"], 30.0);
    let series = app
        .get_json(&format!("{}/cpu", resources(&node)), 200)
        .await;
    assert_eq!(series["series"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_of_a_sample_is_listed_and_nothing_is_stored() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let mut bad = sample(None, 101.0);
    bad = with(bad, "/cpu/cores", json!(0));
    bad = with(bad, "/cpu/load_average", json!([1.0, 1.0, 1.0, 1.0]));
    bad = with(bad, "/memory/used", json!(5 * GIB));
    bad = with(bad, "/disk/free", json!(2000 * GIB));
    bad["gpu"] = json!({ "usage_percent": 150.0, "memory_used_bytes": 2, "memory_total_bytes": 1 });
    let err = expect_error(
        app.post_json(&resources(&node), &bad).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(
        fields(&err),
        [
            "cpu.usage_percent",
            "cpu.cores",
            "cpu.load_average",
            "memory.used",
            "disk.free",
            "gpu.usage_percent",
            "gpu.memory_used_bytes",
        ]
    );

    let batch = json!({ "samples": [
        sample(None, 10.0),
        sample(None, -1.0),
        with(sample(None, 10.0), "/memory/swap_used", json!(2 * GIB)),
    ] });
    let err = expect_error(
        app.post_json(&resources(&node), &batch).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(
        fields(&err),
        [
            "samples[1].cpu.usage_percent",
            "samples[2].memory.swap_used"
        ]
    );
    expect_error(app.get(&resources(&node)).await, 404, "LUCID_ERR_4040").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_wrong_types_and_missing_components_are_refused() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let cases = [
        (with(sample(None, 1.0), "/cpu/extra", json!(1)), "cpu"),
        (with(sample(None, 1.0), "/extra", json!(1)), ""),
        (
            with(sample(None, 1.0), "/cpu/usage_percent", json!("high")),
            "cpu.usage_percent",
        ),
        (
            json!({ "samples": [with(sample(None, 1.0), "/disk/bogus", json!(0))] }),
            "samples[0].disk",
        ),
    ];
    for (body, field) in cases {
        let err = expect_error(
            app.post_json(&resources(&node), &body).await,
            422,
            "LUCID_ERR_4220",
        )
        .await;
        assert!(fields(&err)[0].starts_with(field), "{field}: {err}");
    }
    let mut no_disk = sample(None, 1.0);
    no_disk.as_object_mut().map(|o| o.remove("disk"));
    let r = app.post_json(&resources(&node), &no_disk).await;
    expect_error(r, 422, "LUCID_ERR_4220").await;
    expect_error(app.get(&resources(&node)).await, 404, "LUCID_ERR_4040").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_more_than_five_minutes_ahead_is_refused() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let ahead = sample(Some(Utc::now() + TimeDelta::minutes(10)), 1.0);
    let err = expect_error(
        app.post_json(&resources(&node), &ahead).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err), ["timestamp"]);
    let skewed = sample(Some(Utc::now() + TimeDelta::minutes(2)), 1.0);
    report(&app, &node, &skewed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_must_hold_between_1_and_1000_samples() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let err = expect_error(
        app.post_json(&resources(&node), &json!({ "samples": [] }))
            .await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err), ["samples"]);
    let t0 = Utc::now() - TimeDelta::hours(1);
    let many: Vec<Value> = (0..1001)
        .map(|i| sample(Some(t0 + TimeDelta::seconds(i)), 1.0))
        .collect();
    let err = expect_error(
        app.post_json(&resources(&node), &json!({ "samples": many }))
            .await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err), ["samples"]);
    let answer = report(&app, &node, &json!({ "samples": &many[..1000] })).await;
    assert_eq!(answer["accepted"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_resource_endpoint() {
    let app = app().await;
    let doc = app.get_json("/openapi.json", 200).await;
    let paths = &doc["paths"];
    let base = "/api/v1/nodes/{node_id}/resources";
    assert!(paths[base]["get"].is_object() && paths[base]["post"].is_object());
    for suffix in ["metrics", "cpu", "memory", "disk", "network", "alerts"] {
        assert!(
            paths[format!("{base}/{suffix}")]["get"].is_object(),
            "{suffix}"
        );
    }
    assert!(paths[format!("{base}/thresholds")]["post"].is_object());
    let params = paths[format!("{base}/metrics")]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .clone();
    for name in ["start", "end", "granularity"] {
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} parameter"));
        assert_eq!(p["in"], "query", "{name}");
        assert_ne!(p["required"], true, "{name} is optional");
    }
}

/// `expireAfterSeconds` of the samples' TTL index, and whether the
/// (node_id, timestamp) index exists.
async fn sample_indexes(app: &TestApp) -> (Option<u64>, bool) {
    let indexes: Vec<mongodb::IndexModel> = app
        .db
        .collection::<Document>("resource_samples")
        .list_indexes()
        .await
        .expect("list indexes")
        .try_collect()
        .await
        .expect("indexes");
    let ttl = indexes
        .iter()
        .find(|i| i.keys == doc! { "timestamp": 1 })
        .and_then(|i| i.options.as_ref()?.expire_after)
        .map(|d| d.as_secs());
    let by_node = indexes
        .iter()
        .any(|i| i.keys == doc! { "node_id": 1, "timestamp": 1 });
    (ttl, by_node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_expire_through_a_ttl_index_that_follows_the_retention_setting() {
    let app = app().await;
    assert_eq!(sample_indexes(&app).await, (Some(30 * 86_400), true));

    // An API started with another retention updates the index in place.
    let settings = Settings {
        resource_retention_days: 7,
        ..app.settings.clone()
    };
    drop(
        lucid_api::Application::build(settings)
            .await
            .expect("build API"),
    );
    assert_eq!(sample_indexes(&app).await, (Some(7 * 86_400), true));

    // A process without the setting (e.g. a worker) leaves it as it is.
    let db = Db::connect(
        app.settings.mongodb_url.expose_secret(),
        &app.settings.database_name,
    )
    .await
    .expect("connect");
    db.ensure_indexes().await.expect("indexes");
    assert_eq!(sample_indexes(&app).await, (Some(7 * 86_400), true));
}
