//! Aggregated metrics and per-component series.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::{
    GIB, align, app, expect_error, fields, iso, ms, report, resources, sample, time, with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_give_exact_averages_and_maxima_per_minute_bucket() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let other = app.create_node_with_network_limit(0).await;
    let t0 = align(Utc::now() - TimeDelta::minutes(30), 300_000);
    let at = |ms: i64| Some(t0 + TimeDelta::milliseconds(ms));
    // (offset ms, cpu %, memory GiB used of 4, disk GiB used of 1000, bytes in, bytes out)
    let rows = [
        (-1, 99.0, 4, 1000, 0, 0), // before start: excluded
        (0, 10.0, 1, 250, 100, 10),
        (30_000, 20.0, 2, 500, 300, 30),
        (60_000, 40.0, 3, 750, 500, 50),
        (90_000, 50.0, 1, 250, 700, 70),
        (119_999, 60.0, 2, 500, 900, 90),
        (300_000, 99.0, 4, 1000, 0, 0), // at end: excluded
    ];
    let samples: Vec<Value> = rows
        .iter()
        .map(|&(off, cpu, mem, disk, bytes_in, bytes_out)| {
            let s = sample(at(off), cpu);
            let s = with(s, "/memory/used", json!(mem * GIB));
            let s = with(s, "/memory/free", json!((4 - mem) * GIB));
            let s = with(s, "/disk/used", json!(disk * GIB));
            let s = with(s, "/disk/free", json!((1000 - disk) * GIB));
            let s = with(s, "/network/total_bytes_in", json!(bytes_in));
            with(s, "/network/total_bytes_out", json!(bytes_out))
        })
        .collect();
    report(&app, &node, &json!({ "samples": samples })).await;
    report(&app, &other, &sample(at(10_000), 99.0)).await;

    let range = format!("start={}&end={}", iso(t0), iso(t0 + TimeDelta::minutes(5)));
    let m = app
        .get_json(
            &format!("{}/metrics?{range}&granularity=1m", resources(&node)),
            200,
        )
        .await;
    assert_eq!(m["granularity"], "1m");
    assert_eq!(time(&m["start"]), ms(t0));
    let stat = |avg: f64, max: f64| json!({ "avg": avg, "max": max });
    let buckets = m["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 2, "{m}");
    assert_eq!(time(&buckets[0]["timestamp"]), t0);
    assert_eq!(buckets[0]["count"], 2);
    assert_eq!(buckets[0]["cpu_usage_percent"], stat(15.0, 20.0));
    assert_eq!(buckets[0]["memory_used_percent"], stat(37.5, 50.0));
    assert_eq!(buckets[0]["disk_used_percent"], stat(37.5, 50.0));
    assert_eq!(buckets[0]["network_bytes_in"], stat(200.0, 300.0));
    assert_eq!(buckets[0]["network_bytes_out"], stat(20.0, 30.0));
    assert_eq!(time(&buckets[1]["timestamp"]), t0 + TimeDelta::minutes(1));
    assert_eq!(buckets[1]["count"], 3);
    assert_eq!(buckets[1]["cpu_usage_percent"], stat(50.0, 60.0));
    assert_eq!(buckets[1]["memory_used_percent"], stat(50.0, 75.0));
    assert_eq!(buckets[1]["disk_used_percent"], stat(50.0, 75.0));
    assert_eq!(buckets[1]["network_bytes_in"], stat(700.0, 900.0));
    assert_eq!(buckets[1]["network_bytes_out"], stat(70.0, 90.0));

    let m = app
        .get_json(
            &format!("{}/metrics?{range}&granularity=5m", resources(&node)),
            200,
        )
        .await;
    assert_eq!(m["buckets"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["buckets"][0]["count"], 5);
    assert_eq!(m["buckets"][0]["cpu_usage_percent"], stat(36.0, 60.0));
    assert_eq!(m["buckets"][0]["memory_used_percent"], stat(45.0, 75.0));

    let m = app
        .get_json(
            &format!("{}/metrics?{range}&granularity=1h", resources(&node)),
            200,
        )
        .await;
    assert_eq!(time(&m["buckets"][0]["timestamp"]), align(t0, 3_600_000));
    assert_eq!(m["buckets"][0]["count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_default_to_the_last_hour_in_one_minute_buckets() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    report(&app, &node, &sample(None, 42.0)).await;
    let m = app
        .get_json(&format!("{}/metrics", resources(&node)), 200)
        .await;
    assert_eq!(m["granularity"], "1m");
    assert_eq!(time(&m["end"]) - time(&m["start"]), TimeDelta::hours(1));
    assert_eq!(m["buckets"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["buckets"][0]["count"], 1);
    assert_eq!(m["buckets"][0]["cpu_usage_percent"]["avg"], 42.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_refuse_bad_granularity_reversed_ranges_and_more_than_10000_buckets() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let path = format!("{}/metrics", resources(&node));
    let now = Utc::now();
    let week = format!("start={}&end={}", iso(now - TimeDelta::days(7)), iso(now));
    let cases = [
        ("granularity=2m".to_string(), vec!["granularity"]),
        (format!("start={0}&end={0}", iso(now)), vec!["start"]),
        (
            format!("start={}&end={}", iso(now), iso(now - TimeDelta::hours(1))),
            vec!["start"],
        ),
        (format!("{week}&granularity=1m"), vec!["granularity"]),
        ("start=yesterday".to_string(), vec!["start"]),
        (
            "end=soon&granularity=1w".to_string(),
            vec!["end", "granularity"],
        ),
    ];
    for (query, expected) in cases {
        let r = app.get(&format!("{path}?{query}")).await;
        let err = expect_error(r, 422, "LUCID_ERR_4220").await;
        assert_eq!(fields(&err), expected, "{query}");
    }
    app.get_json(&format!("{path}?{week}&granularity=1h"), 200)
        .await;
    app.get_json(&format!("{path}?{week}&granularity=5m"), 200)
        .await;
    let r = app.get(&format!("{path}?step=1m")).await;
    expect_error(r, 400, "LUCID_ERR_4000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_endpoint_returns_its_latest_value_and_a_series_newest_last() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = Utc::now() - TimeDelta::minutes(3);
    let samples: Vec<Value> = (0..3u64)
        .map(|i| {
            let s = sample(
                Some(t0 + TimeDelta::minutes(i as i64)),
                10.0 * (i + 1) as f64,
            );
            let s = with(s, "/memory/used", json!((i + 1) * GIB));
            let s = with(s, "/disk/used", json!((i + 1) * 100 * GIB));
            with(s, "/network/total_bytes_in", json!((i + 1) * 1000))
        })
        .collect();
    report(&app, &node, &json!({ "samples": samples })).await;
    let newest = ms(t0 + TimeDelta::minutes(2));

    let checks = [
        (
            "cpu",
            "usage_percent",
            [json!(10.0), json!(20.0), json!(30.0)],
        ),
        (
            "memory",
            "used",
            [json!(GIB), json!(2 * GIB), json!(3 * GIB)],
        ),
        (
            "disk",
            "used",
            [json!(100 * GIB), json!(200 * GIB), json!(300 * GIB)],
        ),
        (
            "network",
            "total_bytes_in",
            [json!(1000), json!(2000), json!(3000)],
        ),
    ];
    for (component, field, values) in checks {
        let v = app
            .get_json(&format!("{}/{component}", resources(&node)), 200)
            .await;
        assert_eq!(v["node_id"], node.as_str());
        assert_eq!(v["component"], component);
        assert_eq!(time(&v["latest"]["timestamp"]), newest, "{component}");
        assert_eq!(v["latest"][field], values[2], "{component}");
        let series = v["series"].as_array().expect("series");
        let got: Vec<&Value> = series.iter().map(|p| &p[field]).collect();
        assert_eq!(got, values.iter().collect::<Vec<_>>(), "{component}");
        // The whole component is in each point, flattened beside the timestamp.
        let mut expected = samples[2][component].clone();
        expected["timestamp"] = v["latest"]["timestamp"].clone();
        assert_eq!(v["latest"], expected, "{component}");
    }

    let cpu = format!("{}/cpu", resources(&node));
    let after_first = iso(t0 + TimeDelta::seconds(30));
    let v = app
        .get_json(&format!("{cpu}?start={after_first}"), 200)
        .await;
    assert_eq!(v["series"].as_array().map(Vec::len), Some(2));
    let before_last = iso(t0 + TimeDelta::seconds(90));
    let v = app
        .get_json(&format!("{cpu}?start={after_first}&end={before_last}"), 200)
        .await;
    assert_eq!(v["series"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["series"][0]["usage_percent"], 20.0);
    let long_ago = format!(
        "start={}&end={}",
        iso(t0 - TimeDelta::hours(3)),
        iso(t0 - TimeDelta::hours(2))
    );
    let v = app.get_json(&format!("{cpu}?{long_ago}"), 200).await;
    assert_eq!(v["series"], json!([]));
    assert_eq!(v["latest"]["usage_percent"], 30.0);

    let r = app.get(&format!("{cpu}?start={0}&end={0}", iso(t0))).await;
    assert_eq!(
        fields(&expect_error(r, 422, "LUCID_ERR_4220").await),
        ["start"]
    );
    let r = app.get(&format!("{cpu}?end=tomorrow")).await;
    assert_eq!(
        fields(&expect_error(r, 422, "LUCID_ERR_4220").await),
        ["end"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_series_holds_at_most_1000_points_the_newest_last() {
    let app = app().await;
    let node = app.create_node_with_network_limit(0).await;
    let t0 = ms(Utc::now() - TimeDelta::minutes(40));
    let at = |i: i64| t0 + TimeDelta::seconds(i);
    let first: Vec<Value> = (0..1000).map(|i| sample(Some(at(i)), 1.0)).collect();
    let rest: Vec<Value> = (1000..1005).map(|i| sample(Some(at(i)), 2.0)).collect();
    report(&app, &node, &json!({ "samples": first })).await;
    report(&app, &node, &json!({ "samples": rest })).await;
    let v = app
        .get_json(&format!("{}/cpu", resources(&node)), 200)
        .await;
    let series = v["series"].as_array().expect("series");
    assert_eq!(series.len(), 1000);
    assert_eq!(time(&series[0]["timestamp"]), at(5));
    assert_eq!(time(&series[999]["timestamp"]), at(1004));
    assert_eq!(time(&v["latest"]["timestamp"]), at(1004));
}
