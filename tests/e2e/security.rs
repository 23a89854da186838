//! Authentication, scopes, the node-self rule, rate limits, hardening and
//! the audit log.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use lucid_api::auth::{Claims, ISSUER, Tier};
use mongodb::bson::doc;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::{
    helpers::{
        NodeBuilder, TestApp, authed_client, mint, spawn_app, spawn_app_with, test_settings,
    },
    resources_api::{resources, sample},
};

/// Sends `method path` with `client` and returns (status, headers, body).
async fn call(
    app: &TestApp,
    client: &reqwest::Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = client.request(method, format!("{}{path}", app.address));
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.expect("request");
    let (status, headers) = (r.status(), r.headers().clone());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn secret(app: &TestApp) -> String {
    app.settings
        .jwt_secret
        .as_ref()
        .expect("secret")
        .expose_secret()
        .to_string()
}

/// A client whose token is `sub`, tier authenticated, scope `node:read` only.
fn node_reader(app: &TestApp, sub: &str) -> reqwest::Client {
    authed_client(&mint(
        &app.settings,
        &Claims::new(sub, &["node:read"], Tier::Authenticated, 600),
    ))
}

fn token_with(app: &TestApp, claims: &Value, header: Header) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret(app).as_bytes()),
    )
    .expect("encode")
}

fn claims_json(scope: &str, exp_offset: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": "someone", "iat": now, "exp": now + exp_offset, "iss": ISSUER, "scope": scope, "tier": "authenticated" })
}

async fn expect_401(app: &TestApp, token: Option<&str>, code: &str, why: &str) {
    let client = match token {
        Some(t) => authed_client(t),
        None => reqwest::Client::new(),
    };
    let (status, headers, body) = call(app, &client, Method::GET, "/api/v1/nodes/", None).await;
    assert_eq!(status, 401, "{why}: {body}");
    assert_eq!(body["error"]["code"], code, "{why}: {body}");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"lucid-node-management\""),
        "{why}: {challenge}"
    );
    if code == "LUCID_ERR_4011" {
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{why}: {challenge}"
        );
    }
}

#[tokio::test]
async fn every_bad_token_is_401_with_a_code_and_a_challenge() {
    let app = spawn_app().await;
    expect_401(&app, None, "LUCID_ERR_4010", "no token").await;
    let all = lucid_api::auth::scopes::ALL.join(" ");
    let hs = Header::new(jsonwebtoken::Algorithm::HS256);
    expect_401(
        &app,
        Some(&token_with(&app, &claims_json(&all, -60), hs.clone())),
        "LUCID_ERR_4011",
        "expired",
    )
    .await;
    let mut future = claims_json(&all, 3600);
    future["nbf"] = json!(chrono::Utc::now().timestamp() + 600);
    expect_401(
        &app,
        Some(&token_with(&app, &future, hs.clone())),
        "LUCID_ERR_4011",
        "not yet valid",
    )
    .await;
    let mut issuer = claims_json(&all, 3600);
    issuer["iss"] = json!("someone-else");
    expect_401(
        &app,
        Some(&token_with(&app, &issuer, hs.clone())),
        "LUCID_ERR_4011",
        "wrong issuer",
    )
    .await;
    let hs384 = Header::new(jsonwebtoken::Algorithm::HS384);
    expect_401(
        &app,
        Some(&token_with(&app, &claims_json(&all, 3600), hs384)),
        "LUCID_ERR_4011",
        "wrong algorithm",
    )
    .await;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims_json(&all, 3600))
    );
    expect_401(&app, Some(&none), "LUCID_ERR_4011", "alg none").await;
    let forged = jsonwebtoken::encode(
        &hs,
        &claims_json(&all, 3600),
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
    )
    .unwrap();
    expect_401(&app, Some(&forged), "LUCID_ERR_4011", "bad signature").await;
    expect_401(&app, Some("not.a.jwt"), "LUCID_ERR_4011", "garbage").await;
    let basic = reqwest::Client::new()
        .get(format!("{}/api/v1/nodes/", app.address))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // The valid one passes.
    let ok = authed_client(&token_with(&app, &claims_json(&all, 3600), hs));
    assert_eq!(
        call(&app, &ok, Method::GET, "/api/v1/nodes/", None).await.0,
        200
    );
}

#[tokio::test]
async fn a_missing_scope_is_403_and_probes_and_docs_stay_public() {
    let app = spawn_app().await;
    let reader = node_reader(&app, "reader");
    assert_eq!(
        call(&app, &reader, Method::GET, "/api/v1/nodes/", None)
            .await
            .0,
        200
    );
    let (status, headers, body) = call(
        &app,
        &reader,
        Method::POST,
        "/api/v1/nodes/",
        Some(&NodeBuilder::new().build()),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (403, Some("LUCID_ERR_4030")),
        "{body}"
    );
    let challenge = headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("node:write"),
        "{challenge}"
    );
    for (method, path) in [
        (Method::GET, "/api/v1/nodes/pools/"),
        (Method::POST, "/api/v1/nodes/payouts/batch"),
        (Method::GET, "/api/v1/queues"),
        (Method::POST, "/api/v1/schedules/retention/trigger"),
    ] {
        let (status, _, body) = call(&app, &reader, method.clone(), path, Some(&json!({}))).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    assert_eq!(app.count("node_pools", doc! {}).await, 0);
    let anonymous = reqwest::Client::new();
    for path in ["/health", "/ready", "/openapi.json", "/docs", "/metrics"] {
        let (status, _, _) = call(&app, &anonymous, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path} is public");
    }
}

#[tokio::test]
async fn a_token_for_node_a_cannot_write_for_node_b() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = app
            .api_call(
                Method::POST,
                "/api/v1/nodes/",
                Some(&NodeBuilder::new().build()),
            )
            .await;
        ids.push(
            r.expect(201, "node")["node_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (a, b) = (&ids[0], &ids[1]);
    let node_a = authed_client(&mint(&app.settings, &Claims::node(a, 600)));
    let body = json!({ "samples": [sample(None, 10.0)] });
    let (status, _, _) = call(&app, &node_a, Method::POST, &resources(a), Some(&body)).await;
    assert_eq!(status, 201, "a node reports for itself");
    for path in [
        resources(b),
        format!("/api/v1/nodes/{b}/poot/proofs"),
        format!("/api/v1/nodes/{b}/resources/thresholds"),
    ] {
        let (status, _, err) = call(&app, &node_a, Method::POST, &path, Some(&body)).await;
        assert_eq!(
            (status.as_u16(), err["error"]["code"].as_str()),
            (403, Some("LUCID_ERR_4031")),
            "{path}: {err}"
        );
    }
    assert_eq!(
        app.count("resource_samples", doc! { "node_id": b }).await,
        0
    );
    assert_eq!(
        app.count("resource_samples", doc! { "node_id": a }).await,
        1
    );
}

/// An app with small limits: public 3, authenticated 5, payout writes 2.
async fn limited_app() -> TestApp {
    let mut s = test_settings();
    s.rate_limit.public = 3;
    s.rate_limit.authenticated = 5;
    s.rate_limit.payout_writes = 2;
    spawn_app_with(s, 0).await
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_are_shared_by_api_replicas() {
    let app = limited_app().await;
    // A second API replica on the same Redis prefix shares the buckets.
    let replica = lucid_api::Application::build(app.settings.clone())
        .await
        .expect("replica");
    let other = format!("http://127.0.0.1:{}", replica.port());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(replica.run_until_stopped(stop.clone()));
    let _stop = stop.drop_guard();

    let user = node_reader(&app, "user-1");
    for i in 0..5 {
        let base = if i % 2 == 0 { &app.address } else { &other };
        let r = user
            .get(format!("{base}/api/v1/nodes/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (4 - i).to_string().as_str()
        );
        assert!(r.headers().contains_key("x-ratelimit-reset"));
    }
    let r = user
        .get(format!("{other}/api/v1/nodes/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "LUCID_ERR_4291");

    // Another subject has its own bucket; anonymous callers are limited per IP.
    let user2 = node_reader(&app, "user-2");
    assert_eq!(
        call(&app, &user2, Method::GET, "/api/v1/nodes/", None)
            .await
            .0,
        200
    );
    let anonymous = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            call(&app, &anonymous, Method::GET, "/openapi.json", None)
                .await
                .0,
            200
        );
    }
    assert_eq!(
        call(&app, &anonymous, Method::GET, "/openapi.json", None)
            .await
            .0,
        429
    );
    assert_eq!(
        call(&app, &anonymous, Method::GET, "/health", None).await.0,
        200,
        "probes are not limited"
    );

    // Payout writes: 2 per minute even for an admin (tier limit 100,000).
    let node = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/",
            Some(&NodeBuilder::new().build()),
        )
        .await;
    let node = node.expect(201, "node")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let payout = json!({ "amount": "5", "currency": "USDT", "wallet_address": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t" });
    let path = format!("/api/v1/nodes/{node}/payouts");
    for _ in 0..2 {
        let r = app.api_call(Method::POST, &path, Some(&payout)).await;
        assert_ne!(r.status, 429, "{}", r.body);
    }
    app.api_call(Method::POST, &path, Some(&payout))
        .await
        .expect_error(429, "LUCID_ERR_4291");
    assert_eq!(
        app.api_call(Method::GET, &path, None).await.status,
        200,
        "payout reads are not in the write bucket"
    );
    // Both replicas run in this process, so its /metrics counts every refusal
    // (at least these: under `cargo test` other tests share the recorder).
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    for (bucket, refused) in [("tier", 2.0), ("payout_writes", 1.0)] {
        let series = format!(r#"lucid_rate_limit_rejections_total{{bucket="{bucket}"}}"#);
        let counted = crate::helpers::metric_value(&metrics, &series)
            .unwrap_or_else(|| panic!("/metrics lacks {series}"));
        assert!(counted >= refused, "{bucket}: {counted} < {refused}");
    }
}

#[tokio::test]
async fn responses_carry_security_headers_and_cors_allows_only_configured_origins() {
    let mut s = test_settings();
    s.cors_origins = "https://ops.example.com".into();
    let app = spawn_app_with(s, 0).await;
    let r = app.get("/api/v1/nodes/").await;
    for (h, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.headers()[h], v, "{h}");
    }
    assert!(r.headers().contains_key("content-security-policy"));
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/api/v1/nodes/", app.address))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // JSON nested deeper than 32 levels is refused before parsing.
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let r = app
        .client
        .post(format!("{}/api/v1/nodes/", app.address))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "LUCID_ERR_4000");
}

#[tokio::test]
async fn writes_on_pools_payouts_and_schedules_are_in_the_audit_log() {
    let app = spawn_app().await;
    let r = app
        .api_call(
            Method::POST,
            "/api/v1/nodes/pools/",
            Some(&json!({ "name": "audited pool", "max_nodes": 2 })),
        )
        .await;
    r.expect(201, "pool");
    let rid = r.request_id.clone().expect("request id");
    app.api_call(Method::POST, "/api/v1/schedules/retention/pause", None)
        .await
        .expect(200, "pause");
    app.api_call(Method::GET, "/api/v1/nodes/pools/", None)
        .await
        .expect(200, "read");
    let log = app.db.collection::<mongodb::bson::Document>("audit_log");
    let entry = log
        .find_one(doc! { "request_id": &rid })
        .await
        .unwrap()
        .expect("pool creation audited");
    assert_eq!(entry.get_str("actor").unwrap(), "test-admin");
    assert_eq!(entry.get_str("method").unwrap(), "POST");
    assert_eq!(entry.get_str("route").unwrap(), "/api/v1/nodes/pools/");
    assert_eq!(entry.get_i32("status").unwrap(), 201);
    assert_eq!(
        app.count(
            "audit_log",
            doc! { "route": "/api/v1/schedules/{name}/pause" }
        )
        .await,
        1
    );
    assert_eq!(
        app.count("audit_log", doc! { "method": "GET" }).await,
        0,
        "reads are not audited"
    );
}

#[tokio::test]
async fn random_bytes_as_a_body_never_produce_a_5xx() {
    use rand::{Rng, SeedableRng};
    let app = spawn_app_with(test_settings(), 0).await;
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ops = lucid_api::openapi::operations();
    for round in 0..4 {
        for (method, template) in &ops {
            if *method == Method::GET {
                continue;
            }
            let path: String = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x_fuzz" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let len = rng.gen_range(0..300);
            let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let mut req = app
                .client
                .request(method.clone(), format!("{}{path}", app.address))
                .body(body);
            if round % 2 == 0 {
                req = req.header("content-type", "application/json");
            }
            let r = req.send().await.expect("request");
            assert!(
                r.status().as_u16() < 500,
                "{method} {path} answered {} (seed {seed})",
                r.status()
            );
        }
    }
}

#[tokio::test]
async fn secrets_never_appear_in_the_logs_of_a_real_api_process() {
    let app = spawn_app_with(test_settings(), 0).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pg_password = format!("pgpass{}", uuid::Uuid::new_v4().simple());
    let pg_url = app.settings.postgres_url.expose_secret().replacen(
        "postgres@",
        &format!("postgres:{pg_password}@"),
        1,
    );
    assert!(pg_url.contains(&pg_password), "{pg_url}");
    let mut env = app.worker_env("unused");
    env.retain(|(k, _)| k != "LUCID_POSTGRES_URL" && k != "LUCID_LOG_LEVEL");
    env.extend([
        ("LUCID_POSTGRES_URL".to_string(), pg_url),
        ("LUCID_JWT_SECRET".into(), secret(&app)),
        ("LUCID_LOG_LEVEL".into(), "debug".into()),
        ("LUCID_NODE_API_HOST".into(), "127.0.0.1".into()),
        ("LUCID_NODE_API_PORT".into(), port.to_string()),
    ]);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucid-api-e2e"))
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn API");
    let base = format!("http://127.0.0.1:{port}");
    let admin_token = mint(&app.settings, &crate::helpers::admin_claims());
    let admin = authed_client(&admin_token);
    crate::helpers::wait_until_ready(&base).await;
    let created: Value = admin
        .post(format!("{base}/api/v1/nodes/"))
        .json(&NodeBuilder::new().build())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let node = created["node_id"].as_str().expect("node").to_string();
    let first_secret = created["secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    let rotated: Value = admin
        .post(format!("{base}/api/v1/nodes/{node}/poot/secret/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_secret = rotated["secret"].as_str().expect("new secret").to_string();
    let forged = authed_client(&format!("{admin_token}x"));
    assert_eq!(
        forged
            .get(format!("{base}/api/v1/nodes/"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let _ = admin
        .get(format!("{base}/api/v1/nodes/{node}"))
        .send()
        .await
        .unwrap();

    let pid = child.id().expect("pid").to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("lucid-api listening"),
        "logs were captured: {logs}"
    );
    for (what, secret) in [
        ("JWT secret", secret(&app)),
        ("bearer token", admin_token.clone()),
        ("node secret", first_secret),
        ("rotated node secret", second_secret),
        ("database password", pg_password),
    ] {
        assert!(!logs.contains(&secret), "the {what} is in the logs");
    }
}
