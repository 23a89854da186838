//! `lucidctl` against a running API.

use std::{io::Write as _, process::Output, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{
    ItemBuilder, NodeBuilder, PoolBuilder, TestApp, admin_claims, eventually, mint, spawn_app_with,
    test_settings,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_pools_workers_dead_retry_watch_and_the_progress_bar() {
    let app = spawn_app_with(test_settings(), 1).await;
    let token = mint(&app.settings, &admin_claims());
    // No LUCID_API_* variables: the URL and the token come from the file.
    let home =
        std::env::temp_dir().join(format!("lucidctl-home-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(home.join(".config/lucid")).unwrap();
    std::fs::write(
        home.join(".config/lucid/config.toml"),
        format!("api_url = \"{}\"\ntoken = \"{token}\"\n", app.address),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let home = home.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucidctl-e2e"));
            cmd.args(&args)
                .env("HOME", &home)
                .env_remove("LUCID_API_URL")
                .env_remove("LUCID_API_TOKEN");
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .expect("lucidctl finished")
                .expect("run lucidctl");
            let (stdout, stderr) = text(&out);
            (out.status.code(), stdout, stderr)
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    app.api_call(
        reqwest::Method::POST,
        "/api/v1/nodes/",
        Some(&NodeBuilder::new().id("node_cfg").build()),
    )
    .await
    .expect(201, "create node");
    let (code, stdout, stderr) = run(args(&["nodes", "get", "node_cfg"])).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("node_cfg"), "{stdout}");

    let pool = home.join("pool.json");
    std::fs::write(
        &pool,
        PoolBuilder::new().name("cli pool").build().to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) = run(args(&["pools", "create", pool.to_str().unwrap()])).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (_, stdout, _) = run(args(&["--json", "pools", "list"])).await;
    let pools: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(pools[0]["name"], "cli pool", "{pools}");

    // `queues --json` gives the queues and the live workers with their host.
    let (_, stdout, _) = run(args(&["--json", "queues"])).await;
    let queues: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        queues["queues"].as_array().map(Vec::len),
        Some(6),
        "{queues}"
    );
    let worker = &queues["workers"][0];
    assert!(
        worker["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{queues}"
    );
    let (_, stdout, _) = run(args(&["queues"])).await;
    assert!(
        stdout.contains("running_jobs") && stdout.contains(worker["name"].as_str().unwrap()),
        "{stdout}"
    );

    // A job no code can read is dead after one attempt; retry requeues it.
    let id = app
        .queue
        .enqueue(
            lucid_jobs::queue::POOT_VALIDATION_QUEUE,
            lucid_jobs::queue::NewJob {
                kind: "poot.validate_chunk".into(),
                payload: "{\"not\":\"a chunk\"}".into(),
                options: lucid_jobs::queue::EnqueueOptions::default(),
            },
        )
        .await
        .expect("enqueue");
    let listed = eventually(Duration::from_secs(30), "a dead job", || {
        let run = run.clone();
        async move {
            let (_, stdout, _) = run(args(&["dead", "list", "poot-validation"])).await;
            stdout.contains("cannot decode payload").then_some(stdout)
        }
    })
    .await;
    assert!(listed.contains(&id), "{listed}");
    let (code, stdout, stderr) = run(args(&["--json", "dead", "retry", &id])).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let retried: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        (retried["job_id"].as_str(), retried["status"].as_str()),
        (Some(id.as_str()), Some("queued")),
        "{retried}"
    );

    // `schedules resume` undoes `pause`.
    for (action, paused) in [("pause", true), ("resume", false)] {
        let (code, stdout, stderr) = run(args(&["schedules", action, "retention"])).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let v = app.get_json("/api/v1/schedules", 200).await;
        let retention = v["items"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "retention"))
            .unwrap_or_else(|| panic!("retention listed: {v}"));
        assert_eq!(retention["paused"], paused, "{action}: {v}");
    }

    // `batches watch` with the bar forced onto a non-terminal stderr.
    let batch = app
        .submit_batch(&json!({ "validations": [
            ItemBuilder::new("node_cfg").build(),
            ItemBuilder::new("node_cfg").build(),
        ] }))
        .await;
    let (code, stdout, stderr) = run(args(&["--progress", "batches", "watch", &batch])).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 succeeded"), "{stdout}");
    assert!(
        stderr.contains("items") && stderr.contains("/s") && stderr.contains("ETA"),
        "the bar shows items/s and an ETA: {stderr}"
    );
    let (_, _, stderr) = run(args(&["batches", "watch", &batch])).await;
    assert!(!stderr.contains("ETA"), "no bar off a terminal: {stderr}");
    std::fs::remove_dir_all(&home).ok();
}
