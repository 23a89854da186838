//! `lucidctl` against a running API.

use std::{io::Write as _, process::Output, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{NodeBuilder, TestApp, admin_claims, mint, spawn_app_with, test_settings};

/// Runs `lucidctl args` against `app` with `token` (none: no token at all).
async fn lucidctl(app: &TestApp, token: Option<&str>, args: &[&str]) -> Output {
    let home =
        std::env::temp_dir().join(format!("lucidctl-home-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucidctl-e2e"));
    cmd.args(args)
        .env("HOME", &home)
        .env("LUCID_API_URL", &app.address)
        .env_remove("LUCID_API_TOKEN");
    if let Some(t) = token {
        cmd.env("LUCID_API_TOKEN", t);
    }
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("lucidctl finished")
        .expect("run lucidctl")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn jsonl(path: &std::path::Path, items: &[Value]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("file"));
    for i in items {
        writeln!(f, "{i}").expect("write");
    }
}

fn item(node: &str, n: usize) -> Value {
    json!({
        "node_id": node,
        "output_data": "aGVsbG8gd29ybGQ=",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "nonce": format!("cli-{n}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poot_submit_streams_20000_lines_in_batches_and_exits_0_when_all_succeed() {
    let app = spawn_app_with(test_settings(), 2).await;
    let nodes: Vec<String> = (0..50).map(|i| format!("node_cli_{i}")).collect();
    app.insert_nodes(&nodes).await;
    let dir = std::env::temp_dir().join(format!("lucidctl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("items.jsonl");
    let items: Vec<Value> = (0..20_000)
        .map(|n| item(&nodes[n % nodes.len()], n))
        .collect();
    jsonl(&file, &items);
    let token = mint(&app.settings, &admin_claims());
    let out = lucidctl(
        &app,
        Some(&token),
        &[
            "poot",
            "submit",
            file.to_str().unwrap(),
            "--batch-size",
            "5000",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("20000 items: 20000 succeeded, 0 failed"),
        "{stdout}"
    );
    assert_eq!(
        app.count("batches", mongodb::bson::doc! {}).await,
        4,
        "four batches of 5,000"
    );
    assert_eq!(
        app.count("poot_validations", mongodb::bson::doc! {}).await,
        20_000
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn failed_items_exit_1_and_api_errors_exit_2_with_their_code() {
    let app = spawn_app_with(test_settings(), 1).await;
    app.insert_nodes(&["node_ok".to_string()]).await;
    let dir = std::env::temp_dir().join(format!("lucidctl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("items.jsonl");
    let mut items: Vec<Value> = (0..9).map(|n| item("node_ok", n)).collect();
    items.push(item("node_unknown", 9));
    jsonl(&file, &items);
    let token = mint(&app.settings, &admin_claims());
    let out = lucidctl(
        &app,
        Some(&token),
        &["poot", "submit", file.to_str().unwrap()],
    )
    .await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("10 items: 9 succeeded, 1 failed"),
        "{stdout}"
    );

    let out = lucidctl(&app, Some(&token), &["nodes", "get", "node_missing"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("LUCID_ERR_5001") && stderr.contains("HTTP 404"),
        "{stderr}"
    );
    let out = lucidctl(&app, None, &["queues"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("LUCID_ERR_4010"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn tables_by_default_json_on_request_for_nodes_queues_payouts_and_schedules() {
    let app = spawn_app_with(test_settings(), 0).await;
    let token = mint(&app.settings, &admin_claims());
    let dir = std::env::temp_dir().join(format!("lucidctl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let node_file = dir.join("node.json");
    std::fs::write(
        &node_file,
        NodeBuilder::new().id("node_cli_made").build().to_string(),
    )
    .unwrap();
    let out = lucidctl(
        &app,
        Some(&token),
        &["nodes", "create", node_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out).0.contains("node_cli_made"));

    let out = lucidctl(&app, Some(&token), &["--json", "nodes", "list"]).await;
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed[0]["node_id"], "node_cli_made", "{listed}");

    let out = lucidctl(&app, Some(&token), &["queues"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("poot-validation") && stdout.contains("scaling-evaluation"),
        "{stdout}"
    );

    let csv = dir.join("payouts.csv");
    std::fs::write(&csv, "node_id,amount,currency,wallet_address\nnode_cli_made,12.5,USDT,TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\n").unwrap();
    let out = lucidctl(
        &app,
        Some(&token),
        &[
            "--json",
            "payouts",
            "batch",
            csv.to_str().unwrap(),
            "--id",
            "batch_cli_1",
        ],
    )
    .await;
    let accepted: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{:?}", text(&out)));
    assert_eq!(
        (accepted["batch_id"].as_str(), accepted["total"].as_u64()),
        (Some("batch_cli_1"), Some(1)),
        "{accepted}"
    );

    let out = lucidctl(&app, Some(&token), &["--json", "schedules"]).await;
    let schedules: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schedules.as_array().map(Vec::len), Some(4), "{schedules}");
    let out = lucidctl(&app, Some(&token), &["schedules", "pause", "retention"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let v = app.get_json("/api/v1/schedules", 200).await;
    assert_eq!(v["items"][3]["paused"], true, "{v}");
    let out = lucidctl(&app, Some(&token), &["dead", "list", "poot-validation"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    std::fs::remove_dir_all(&dir).ok();
}
