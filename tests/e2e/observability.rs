//! Metrics after a real batch, exact payout amounts, the Grafana dashboard's
//! metric names, the submitting request's id in the worker's logs, and the
//! OTLP trace export ([`otlp`]).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{
        ItemBuilder, NodeBuilder, TestApp, eventually, free_port, scrape_metrics, spawn_app_with,
        test_settings,
    },
    payouts_api::{evm_address, tron_address},
};

mod otlp;

/// A worker process with a known health port and captured logs.
fn worker(app: &TestApp, port: u16) -> tokio::process::Child {
    let mut env = app.worker_env("metrics-worker");
    env.retain(|(k, _)| k != "LUCID_WORKER_HEALTH_PORT" && k != "LUCID_LOG_LEVEL");
    env.push(("LUCID_WORKER_HEALTH_PORT".into(), port.to_string()));
    env.push(("LUCID_LOG_LEVEL".into(), "info".into()));
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lucid-worker-e2e"))
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker")
}

fn assert_has(text: &str, needles: &[&str], whose: &str) {
    for n in needles {
        assert!(text.contains(n), "{whose} /metrics lacks {n}:\n{text}");
    }
}

#[tokio::test]
async fn a_real_batch_shows_up_in_the_metrics_and_its_request_id_in_the_worker_logs() {
    let app = spawn_app_with(test_settings(), 0).await;
    let port = free_port();
    let child = worker(&app, port);
    app.insert_nodes(&["node_m".to_string()]).await;
    let items: Vec<Value> = (0..20)
        .map(|_| ItemBuilder::new("node_m").build())
        .collect();
    let r = app
        .client
        .post(format!("{}/api/v1/nodes/poot/batch-validate", app.address))
        .header("x-request-id", "req-trace-7f3a")
        .json(&json!({ "validations": items }))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.expect("json");
    let batch_id = batch["batch_id"].as_str().expect("id").to_string();
    let done = app.wait_for_batch(&batch_id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");

    let worker_metrics = scrape_metrics(port).await;
    assert_has(
        &worker_metrics,
        &[
            r#"lucid_jobs_started_total{queue="poot-validation"}"#,
            r#"lucid_jobs_succeeded_total{queue="poot-validation"}"#,
            r#"lucid_job_duration_seconds_bucket{queue="poot-validation""#,
            r#"lucid_job_queue_wait_seconds_bucket{queue="poot-validation""#,
            r#"lucid_batch_items_total{kind="poot.validate_chunk",outcome="succeeded"} 20"#,
            r#"lucid_store_call_duration_seconds_bucket{store="mongodb""#,
            r#"lucid_store_call_duration_seconds_bucket{store="redis",op="fetch""#,
            r#"lucid_queue_jobs{queue="poot-validation",state="dead"} 0"#,
            "lucid_workers_live 1",
        ],
        "the worker's",
    );
    let api_metrics = app.get("/metrics").await.text().await.expect("text");
    assert_has(
        &api_metrics,
        &[
            r#"lucid_http_requests_total{method="POST",route="/api/v1/nodes/poot/batch-validate",status="202"} 1"#,
            r#"lucid_http_request_duration_seconds_bucket{method="GET",route="/api/v1/batches/{batch_id}""#,
            r#"lucid_jobs_enqueued_total{queue="poot-validation"} 1"#,
        ],
        "the API's",
    );

    let pid = child.id().expect("pid").to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("worker exits")
        .expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = logs
        .lines()
        .find(|l| l.contains("batch finished"))
        .unwrap_or_else(|| panic!("no 'batch finished' line in:\n{logs}"));
    assert!(
        line.contains("req-trace-7f3a"),
        "the job's log line carries the request id: {line}"
    );
}

#[test]
fn the_grafana_dashboard_is_valid_json_and_uses_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("deploy/grafana/dashboards/lucid.json"))
        .expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dash["uid"], "lucid-platform");
    let mut names = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], "lucid-prometheus", "{panel}");
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("lucid_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            lucid_jobs::metrics::ALL.contains(&base),
            "the dashboard uses {name}, which no process exports"
        );
    }
    let provisioning =
        std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards/lucid.yml"))
            .expect("provider");
    assert!(provisioning.contains("/var/lib/grafana/dashboards"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards"));
}

#[test]
fn compose_prometheus_scrapes_every_api_worker_and_scheduler_replica_on_its_default_port() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = std::fs::read_to_string(root.join("deploy/prometheus.yml")).expect("config");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
    assert!(compose.contains("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml"));
    let defaults = lucid_jobs::config::Settings::default();
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    for (service, port, variable) in [
        ("api", defaults.node_api_port, "LUCID_NODE_API_PORT"),
        (
            "worker",
            defaults.worker_health_port,
            "LUCID_WORKER_HEALTH_PORT",
        ),
        (
            "scheduler",
            defaults.scheduler.metrics_port,
            "LUCID_SCHEDULER__METRICS_PORT",
        ),
    ] {
        assert!(
            compose.contains(&format!("\n  {service}:\n")),
            "compose has no {service} service"
        );
        // The port the service listens on: compose's setting, else the default.
        if let Some(line) = compose
            .lines()
            .find(|l| l.contains(&format!("{variable}:")))
        {
            assert!(line.contains(&format!("\"{port}\"")), "compose sets {line}");
        }
        // DNS discovery of the compose service: one target per replica.
        let at = lines
            .iter()
            .position(|l| *l == format!("- names: [{service}]"))
            .unwrap_or_else(|| panic!("prometheus.yml does not discover {service}"));
        assert_eq!(lines[at + 1], "type: A", "{service}");
        assert_eq!(lines[at + 2], format!("port: {port}"), "{service}");
    }
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token_and_lists_batches_newest_first() {
    let app = spawn_app_with(test_settings(), 0).await;
    let r = reqwest::get(format!("{}/dashboard", app.address))
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(
        r.text()
            .await
            .expect("html")
            .contains(r#"<script src="/dashboard/app.js">"#)
    );
    let js = reqwest::get(format!("{}/dashboard/app.js", app.address))
        .await
        .expect("script");
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        js.text()
            .await
            .expect("js")
            .contains("/api/v1/batches?page_size=10")
    );

    app.insert_nodes(&["node_l".to_string()]).await;
    let first = app
        .submit_batch(&json!({ "validations": [ItemBuilder::new("node_l").build()] }))
        .await;
    let second = app
        .submit_batch(&json!({ "validations": [ItemBuilder::new("node_l").build()] }))
        .await;
    let v = app.get_json("/api/v1/batches?page_size=10", 200).await;
    assert_eq!(v["total"], 2, "{v}");
    assert_eq!(
        (
            v["items"][0]["batch_id"].as_str(),
            v["items"][1]["batch_id"].as_str()
        ),
        (Some(second.as_str()), Some(first.as_str()))
    );
    assert_eq!(v["items"][0]["progress"], 0.0, "no worker runs: {v}");
    let anonymous = reqwest::get(format!("{}/api/v1/batches", app.address))
        .await
        .expect("list");
    assert_eq!(
        anonymous.status(),
        401,
        "the page is public, its data is not"
    );
}

#[tokio::test]
async fn settled_payout_amounts_are_exported_as_exact_decimals_per_currency() {
    let app = spawn_app_with(test_settings(), 0).await;
    let port = free_port();
    let _child = worker(&app, port);
    let node = NodeBuilder::new().id("node_metrics_pay").build();
    app.api_call(Method::POST, "/api/v1/nodes/", Some(&node))
        .await
        .expect(201, "create node");
    // Sums a float cannot hold: 1.1 + 2.2 and 18-decimal LUCID amounts.
    let bodies = [
        json!({ "amount": "1.1", "currency": "USDT", "wallet_address": tron_address() }),
        json!({ "amount": "2.2", "currency": "USDT", "wallet_address": tron_address() }),
        json!({ "amount": "1.000000000000000001", "currency": "LUCID", "wallet_address": evm_address() }),
        json!({ "amount": "2", "currency": "LUCID", "wallet_address": evm_address() }),
    ];
    for body in &bodies {
        app.api_call(
            Method::POST,
            "/api/v1/nodes/node_metrics_pay/payouts",
            Some(body),
        )
        .await
        .expect(201, "create payout");
    }
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = eventually(Duration::from_secs(60), "4 payouts settled", || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let settled = |c: &str| {
            text.contains(&format!(
                r#"lucid_payouts_settled_total{{currency="{c}"}} 2"#
            ))
        };
        (settled("USDT") && settled("LUCID")).then_some(text)
    })
    .await;
    assert_has(
        &text,
        &[
            "# TYPE lucid_payout_settled_amount_total counter",
            "lucid_payout_settled_amount_total{currency=\"USDT\"} 3.3\n",
            "lucid_payout_settled_amount_total{currency=\"LUCID\"} 3.000000000000000001\n",
            "# TYPE lucid_payout_settled_amount_usdt gauge",
            "lucid_payout_settled_amount_usdt 3.3\n",
            "lucid_payout_settled_amount_lucid 3.000000000000000001\n",
            r#"lucid_store_call_duration_seconds_count{store="postgres",op="post_entry"}"#,
        ],
        "the worker's",
    );
}
