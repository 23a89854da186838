//! Thresholds and the alerts they raise, escalate and resolve.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::{GIB, alerts_of, app, expect_error, fields, ms, report, resources, sample, time, with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_are_validated_merged_over_the_defaults_and_returned() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let path = format!("{}/thresholds", resources(&node));
    let cases = [
        (
            json!({ "cpu": { "warning": 90, "critical": 90 } }),
            vec!["cpu.warning"],
        ),
        (
            json!({ "memory": { "warning": -1, "critical": 101 } }),
            vec!["memory.warning", "memory.critical"],
        ),
        (
            json!({ "disk": { "warning": 96, "critical": 95 }, "network": { "warning": 10, "critical": 100.5 } }),
            vec!["disk.warning", "network.critical"],
        ),
        (json!({}), vec!["body"]),
    ];
    for (body, expected) in cases {
        let err = expect_error(app.post_json(&path, &body).await, 422, "LUCID_ERR_4220").await;
        assert_eq!(fields(&err), expected, "{body}");
    }
    let r = app
        .post_json(&path, &json!({ "gpu": { "warning": 1, "critical": 2 } }))
        .await;
    expect_error(r, 422, "LUCID_ERR_4220").await;
    let r = app
        .post_json(&path, &json!({ "cpu": { "warning": 1 } }))
        .await;
    expect_error(r, 422, "LUCID_ERR_4220").await;

    let r = app
        .post_json(&path, &json!({ "cpu": { "warning": 50, "critical": 60 } }))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    let pair = |w: f64, c: f64| json!({ "warning": w, "critical": c });
    assert_eq!(
        v,
        json!({
            "node_id": node,
            "cpu": pair(50.0, 60.0),
            "memory": pair(70.0, 90.0),
            "disk": pair(80.0, 95.0),
            "network": pair(80.0, 95.0),
        })
    );
    let r = app
        .post_json(
            &path,
            &json!({ "disk": { "warning": 85.5, "critical": 99 } }),
        )
        .await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["cpu"], pair(50.0, 60.0), "earlier pairs are kept");
    assert_eq!(v["disk"], pair(85.5, 99.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_thresholds_raise_alerts_that_the_defaults_would_not() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |s: i64| Some(t0 + TimeDelta::seconds(s));
    let answer = report(&app, &node, &sample(at(0), 55.0)).await;
    assert_eq!(alerts_of(&answer), Vec::<Value>::new());
    let r = app
        .post_json(
            &format!("{}/thresholds", resources(&node)),
            &json!({ "cpu": { "warning": 50, "critical": 60 } }),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let raised = alerts_of(&report(&app, &node, &sample(at(1), 55.0)).await);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["level"], "warning");
    assert_eq!(raised[0]["threshold"], 50.0);
    let escalated = alerts_of(&report(&app, &node, &sample(at(2), 65.0)).await);
    assert_eq!(escalated[0]["level"], "critical");
    assert_eq!(escalated[0]["threshold"], 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_alert_is_raised_escalated_in_place_and_resolved_by_a_later_sample() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |s: i64| t0 + TimeDelta::seconds(s);
    let list = |state: &str| format!("{}/alerts?state={state}", resources(&node));

    assert!(alerts_of(&report(&app, &node, &sample(Some(at(0)), 50.0)).await).is_empty());
    let raised = alerts_of(&report(&app, &node, &sample(Some(at(1)), 75.0)).await);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let a = &raised[0];
    let id = a["alert_id"].as_str().expect("alert_id").to_string();
    assert!(id.starts_with("alert_"));
    assert_eq!(a["node_id"], node.as_str());
    assert_eq!(a["metric"], "cpu");
    assert_eq!(a["level"], "warning");
    assert_eq!(a["state"], "active");
    assert_eq!(a["value"], 75.0);
    assert_eq!(a["threshold"], 70.0);
    assert_eq!(time(&a["raised_at"]), ms(at(1)));
    assert!(a.get("resolved_at").is_none());

    let escalated = alerts_of(&report(&app, &node, &sample(Some(at(2)), 95.0)).await);
    assert_eq!(escalated.len(), 1);
    assert_eq!(escalated[0]["alert_id"], id.as_str(), "escalated in place");
    assert_eq!(escalated[0]["level"], "critical");
    assert_eq!(escalated[0]["value"], 95.0);
    assert_eq!(escalated[0]["threshold"], 90.0);
    assert_eq!(time(&escalated[0]["raised_at"]), ms(at(1)));

    // Back to warning level: the alert stays critical and nothing changes.
    assert!(alerts_of(&report(&app, &node, &sample(Some(at(3)), 80.0)).await).is_empty());
    let active = app.get_json(&list("active"), 200).await;
    assert_eq!(active["total"], 1);
    assert_eq!(active["items"][0]["alert_id"], id.as_str());
    assert_eq!(active["items"][0]["level"], "critical");

    let resolved = alerts_of(&report(&app, &node, &sample(Some(at(4)), 10.0)).await);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["alert_id"], id.as_str());
    assert_eq!(resolved[0]["state"], "resolved");
    assert_eq!(time(&resolved[0]["resolved_at"]), ms(at(4)));

    assert_eq!(app.get_json(&list("active"), 200).await["total"], 0);
    let done = app.get_json(&list("resolved"), 200).await;
    assert_eq!(done["total"], 1);
    assert_eq!(done["items"][0]["alert_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reports_each_alert_once_in_its_final_state() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |s: i64| Some(t0 + TimeDelta::seconds(s));
    let mut high_memory = sample(at(3), 10.0);
    high_memory = with(high_memory, "/memory/used", json!(15 * GIB / 4)); // 93.75 %
    high_memory = with(high_memory, "/memory/free", json!(GIB / 4));
    high_memory = with(high_memory, "/disk/used", json!(875 * GIB)); // 87.5 %
    high_memory = with(high_memory, "/disk/free", json!(125 * GIB));
    let batch = json!({ "samples": [
        sample(at(2), 10.0),
        high_memory,
        sample(at(1), 95.0),
        sample(at(0), 75.0),
    ] });
    let got = alerts_of(&report(&app, &node, &batch).await);
    let by = |metric: &str| {
        got.iter()
            .find(|a| a["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} alert in {got:?}"))
            .clone()
    };
    assert_eq!(got.len(), 3, "{got:?}");
    let cpu = by("cpu");
    assert_eq!(
        (&cpu["level"], &cpu["state"]),
        (&json!("critical"), &json!("resolved"))
    );
    let memory = by("memory");
    assert_eq!(memory["level"], "critical");
    assert_eq!(memory["state"], "active");
    assert_eq!(memory["value"], 93.75);
    assert_eq!(memory["threshold"], 90.0);
    let disk = by("disk");
    assert_eq!(disk["level"], "warning");
    assert_eq!(disk["value"], 87.5);
    assert_eq!(disk["threshold"], 80.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_alerts_compare_throughput_between_samples_with_the_node_limit() {
    let app = app().await;
    let limited = app.create_node_with_network_limit(100).await;
    let unlimited = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let at = |s: i64| Some(t0 + TimeDelta::seconds(s));
    let counters = |s: i64, bytes_in: u64, bytes_out: u64| {
        let v = sample(at(s), 10.0);
        let v = with(v, "/network/total_bytes_in", json!(bytes_in));
        with(v, "/network/total_bytes_out", json!(bytes_out))
    };
    // 85 Mbit/s over 10 s = 106,250,000 bytes (in + out): 85 % of 100 Mbit/s.
    let busy = counters(10, 100_001_000, 6_250_500);
    let calm = counters(20, 101_001_000, 7_250_500); // 1.6 Mbit/s
    for node in [&limited, &unlimited] {
        let first = report(&app, node, &counters(0, 1000, 500)).await;
        assert!(alerts_of(&first).is_empty(), "no previous sample, no rate");
    }
    let raised = alerts_of(&report(&app, &limited, &busy).await);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["metric"], "network");
    assert_eq!(raised[0]["level"], "warning");
    assert_eq!(raised[0]["value"], 85.0);
    assert_eq!(raised[0]["threshold"], 80.0);
    let resolved = alerts_of(&report(&app, &limited, &calm).await);
    assert_eq!(resolved[0]["state"], "resolved");
    assert!(alerts_of(&report(&app, &unlimited, &busy).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_newest_first_paginated_with_totals_and_filtered_by_state() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    for (i, cpu) in [75.0, 10.0, 75.0, 10.0, 75.0].into_iter().enumerate() {
        report(
            &app,
            &node,
            &sample(Some(t0 + TimeDelta::seconds(i as i64)), cpu),
        )
        .await;
    }
    let path = format!("{}/alerts", resources(&node));
    let p1 = app.get_json(&format!("{path}?page_size=2"), 200).await;
    assert_eq!(
        (p1["total"].clone(), p1["page"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(p1["items"][0]["state"], "active", "newest first");
    assert_eq!(
        time(&p1["items"][0]["raised_at"]),
        ms(t0 + TimeDelta::seconds(4))
    );
    let p2 = app
        .get_json(&format!("{path}?page=2&page_size=2"), 200)
        .await;
    assert_eq!(p2["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(time(&p2["items"][0]["raised_at"]), ms(t0));
    assert_eq!(
        app.get_json(&format!("{path}?state=active"), 200).await["total"],
        1
    );
    assert_eq!(
        app.get_json(&format!("{path}?state=resolved"), 200).await["total"],
        2
    );
    expect_error(
        app.get(&format!("{path}?state=open")).await,
        400,
        "LUCID_ERR_4000",
    )
    .await;
    let err = expect_error(
        app.get(&format!("{path}?page_size=101")).await,
        422,
        "LUCID_ERR_4220",
    )
    .await;
    assert_eq!(fields(&err), ["page_size"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reports_open_at_most_one_active_alert_per_metric() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let reports = (0..8).map(|i| {
        let body = sample(Some(t0 + TimeDelta::seconds(i)), 75.0);
        let app = &app;
        let node = node.as_str();
        async move { report(app, node, &body).await }
    });
    futures::future::join_all(reports).await;
    let active = app
        .get_json(&format!("{}/alerts?state=active", resources(&node)), 200)
        .await;
    assert_eq!(active["total"], 1, "{active}");
    let all = app
        .get_json(&format!("{}/alerts", resources(&node)), 200)
        .await;
    assert_eq!(all["total"], 1, "{all}");
}

/// A store made before alert sequences: its unique index of active alerts
/// is dropped at start, and its alerts (no `seq`) resolve and are followed
/// by new ones as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_stored_before_alert_sequences_resolve_and_are_followed_by_new_ones() {
    use mongodb::{
        IndexModel,
        bson::{DateTime, Document, doc},
        options::IndexOptions,
    };
    let first = app().await;
    let node = first.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(10);
    let alerts = first.db.collection::<Document>("resource_alerts");
    alerts
        .create_index(
            IndexModel::builder()
                .keys(doc! { "node_id": 1, "metric": 1 })
                .options(
                    IndexOptions::builder()
                        .name("one_active_alert_per_metric".to_string())
                        .unique(true)
                        .partial_filter_expression(doc! { "state": "active" })
                        .build(),
                )
                .build(),
        )
        .await
        .expect("old index");
    alerts
        .insert_one(doc! {
            "_id": "alert_0195f0c2a4c07a3b8d2e9f6a1b2c3d4e", "node_id": &node, "metric": "cpu",
            "level": "warning", "state": "active", "value": 75.0, "threshold": 70.0,
            "raised_at": DateTime::from_chrono(t0),
        })
        .await
        .expect("legacy alert");

    // A process of the new version starts on that store.
    let app = crate::helpers::spawn_app_with(first.settings.clone(), 0).await;
    let indexes = alerts.list_index_names().await.expect("indexes");
    assert!(
        !indexes.iter().any(|n| n == "one_active_alert_per_metric"),
        "{indexes:?}"
    );
    report(&app, &node, &sample(Some(t0 + TimeDelta::seconds(1)), 10.0)).await;
    report(&app, &node, &sample(Some(t0 + TimeDelta::seconds(2)), 75.0)).await;
    let path = format!("{}/alerts", resources(&node));
    let all = app.get_json(&path, 200).await;
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!(all["items"][0]["state"], "active", "{all}");
    assert_eq!(
        time(&all["items"][0]["raised_at"]),
        ms(t0 + TimeDelta::seconds(2))
    );
    assert_eq!(
        all["items"][1]["alert_id"], "alert_0195f0c2a4c07a3b8d2e9f6a1b2c3d4e",
        "{all}"
    );
    assert_eq!(all["items"][1]["state"], "resolved", "{all}");
}
