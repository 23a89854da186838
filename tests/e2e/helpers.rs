//! Test harness: `spawn_app()` starts the real API on port 0 (and, if asked,
//! in-process workers) against real Redis and MongoDB, each test with its own
//! database and Redis key prefix. Worker *processes* are spawned from the
//! `lucid-worker-e2e` binary (same code as `lucid-worker`).

use std::{process::Stdio, time::Duration};

use lucid_api::Application;
use lucid_jobs::{config::Settings, queue::Queue};
use mongodb::bson::{Document, doc};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Settings for one test: its own database and queue prefix, fast timings.
pub fn test_settings() -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..12];
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    Settings {
        node_api_host: "127.0.0.1".into(),
        node_api_port: 0,
        mongodb_url: env("LUCID_TEST_MONGODB_URL", "mongodb://127.0.0.1:27017").into(),
        redis_url: env("LUCID_TEST_REDIS_URL", "redis://127.0.0.1:6379").into(),
        postgres_url: env(
            "LUCID_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .into(),
        database_name: format!("test_{id}"),
        queue_prefix: format!("test_{id}"),
        postgres_schema: format!("test_{id}"),
        worker_health_host: "127.0.0.1".into(),
        worker_health_port: 0,
        worker_concurrency: 4,
        visibility_timeout_ms: 3_000,
        retry_backoff_base_ms: 100,
        retry_backoff_max_ms: 2_000,
        queue_poll_interval_ms: 200,
        log_level: env("LUCID_TEST_LOG", "warn"),
        shutdown_grace_secs: 5,
        jwt_secret: Some(format!("test-secret-{}", uuid::Uuid::new_v4().simple()).into()),
        // Tests that check limits set their own; the rest must never meet one.
        rate_limit: lucid_jobs::config::RateLimits {
            public: 100_000,
            authenticated: 100_000,
            admin: 100_000,
            poot_validation: 100_000,
            payout_writes: 100_000,
        },
        ..Settings::default()
    }
}

/// A running API (and optional in-process workers) for one test.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The settings the app runs with.
    pub settings: Settings,
    /// The test's MongoDB database.
    pub db: mongodb::Database,
    /// The test's queue handle.
    pub queue: Queue,
    stop: CancellationToken,
}

/// Starts the API and one in-process worker with [`test_settings`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), 1).await
}

/// Starts the API with `settings` and `workers` in-process worker applications.
pub async fn spawn_app_with(settings: Settings, workers: usize) -> TestApp {
    let _ = lucid_jobs::telemetry::init(&settings, "lucid-e2e");
    let stop = CancellationToken::new();
    let api = Application::build(settings.clone())
        .await
        .expect("build API");
    let port = api.port();
    tokio::spawn(api.run_until_stopped(stop.clone()));
    for _ in 0..workers {
        let worker = lucid_workers::Application::build(settings.clone())
            .await
            .expect("build worker");
        tokio::spawn(worker.run_until_stopped(stop.clone()));
    }
    let client = mongodb::Client::with_uri_str(settings.mongodb_url.expose_secret())
        .await
        .expect("mongo");
    let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue())
        .await
        .expect("redis");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: authed_client(&mint(&settings, &admin_claims())),
        db: client.database(&settings.database_name),
        settings,
        queue,
        stop,
    }
}

/// Claims of an admin token with every scope.
pub fn admin_claims() -> lucid_api::auth::Claims {
    use lucid_api::auth::{Claims, Tier, scopes};
    Claims::new("test-admin", scopes::ALL, Tier::Admin, 3600)
}

/// Signs `claims` with the app's secret.
pub fn mint(settings: &Settings, claims: &lucid_api::auth::Claims) -> String {
    let secret = settings.jwt_secret.as_ref().expect("test secret");
    lucid_api::auth::TokenKeys::hs256(secret.expose_secret().as_bytes())
        .mint(claims)
        .expect("mint")
}

/// A client that sends `Authorization: Bearer token` on every request.
pub fn authed_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl TestApp {
    /// POST JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// POST without a body.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// GET.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// GET and parse JSON, asserting the status.
    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status().as_u16(), status, "GET {path}");
        r.json().await.expect("json")
    }

    /// Documents of `collection` in the test's database matching `filter`.
    pub async fn count(&self, collection: &str, filter: Document) -> u64 {
        self.db
            .collection::<Document>(collection)
            .count_documents(filter)
            .await
            .expect("count")
    }

    /// Inserts nodes directly (issue 3 adds the API that does this).
    pub async fn insert_nodes(&self, ids: &[String]) {
        let docs: Vec<Document> = ids
            .iter()
            .map(|id| doc! { "_id": id, "name": id, "status": "active", "node_type": "worker" })
            .collect();
        if !docs.is_empty() {
            self.db
                .collection::<Document>("nodes")
                .insert_many(docs)
                .await
                .expect("insert nodes");
        }
    }

    /// Submits a batch and returns its id, asserting 202.
    pub async fn submit_batch(&self, body: &Value) -> String {
        let r = self
            .post_json("/api/v1/nodes/poot/batch-validate", body)
            .await;
        assert_eq!(r.status().as_u16(), 202, "submit batch");
        let v: Value = r.json().await.expect("json");
        v["batch_id"].as_str().expect("batch_id").to_string()
    }

    /// Polls a batch until it reaches a final status (or panics after `timeout`).
    pub async fn wait_for_batch(&self, batch_id: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self
                .get_json(&format!("/api/v1/batches/{batch_id}"), 200)
                .await;
            let status = v["status"].as_str().unwrap_or_default();
            if !matches!(status, "queued" | "running") {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "batch {batch_id} not finished in {timeout:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Environment for a worker process with this app's settings.
    pub fn worker_env(&self, name: &str) -> Vec<(String, String)> {
        let s = &self.settings;
        vec![
            (
                "LUCID_MONGODB_URL".into(),
                s.mongodb_url.expose_secret().to_string(),
            ),
            (
                "LUCID_REDIS_URL".into(),
                s.redis_url.expose_secret().to_string(),
            ),
            (
                "LUCID_POSTGRES_URL".into(),
                s.postgres_url.expose_secret().to_string(),
            ),
            ("LUCID_DATABASE_NAME".into(), s.database_name.clone()),
            ("LUCID_QUEUE_PREFIX".into(), s.queue_prefix.clone()),
            ("LUCID_WORKER_NAME".into(), name.to_string()),
            ("LUCID_WORKER_HEALTH_HOST".into(), "127.0.0.1".into()),
            ("LUCID_WORKER_HEALTH_PORT".into(), "0".into()),
            (
                "LUCID_WORKER_CONCURRENCY".into(),
                s.worker_concurrency.to_string(),
            ),
            (
                "LUCID_VISIBILITY_TIMEOUT_MS".into(),
                s.visibility_timeout_ms.to_string(),
            ),
            (
                "LUCID_RETRY_BACKOFF_BASE_MS".into(),
                s.retry_backoff_base_ms.to_string(),
            ),
            (
                "LUCID_RETRY_BACKOFF_MAX_MS".into(),
                s.retry_backoff_max_ms.to_string(),
            ),
            (
                "LUCID_QUEUE_POLL_INTERVAL_MS".into(),
                s.queue_poll_interval_ms.to_string(),
            ),
            (
                "LUCID_BATCH_CHUNK_SIZE".into(),
                s.batch_chunk_size.to_string(),
            ),
            ("LUCID_POSTGRES_SCHEMA".into(), s.postgres_schema.clone()),
            (
                "LUCID_PAYOUTS__RAIL_FAILURE_RATE".into(),
                s.payouts.rail_failure_rate.to_string(),
            ),
            (
                "LUCID_PAYOUTS__RAIL_DELAY_MS".into(),
                s.payouts.rail_delay_ms.to_string(),
            ),
            (
                "LUCID_PAYOUTS__RAIL_TIMEOUT_MS".into(),
                s.payouts.rail_timeout_ms.to_string(),
            ),
            ("LUCID_LOG_LEVEL".into(), "warn".into()),
        ]
    }

    /// The ledger of this test (its own PostgreSQL schema).
    pub fn ledger(&self) -> lucid_jobs::ledger::Ledger {
        lucid_jobs::ledger::Ledger::connect_lazy(
            self.settings.postgres_url.expose_secret(),
            &self.settings.postgres_schema,
        )
        .expect("ledger pool")
    }

    /// A job context on this test's stores (to call handlers directly).
    pub async fn job_context(&self) -> lucid_jobs::handlers::JobContext {
        let db = lucid_jobs::storage::Db::connect(
            self.settings.mongodb_url.expose_secret(),
            &self.settings.database_name,
        )
        .await
        .expect("db");
        lucid_jobs::handlers::JobContext::new(
            db,
            self.queue.clone(),
            self.ledger(),
            std::sync::Arc::new(self.settings.clone()),
        )
    }

    /// Polls a job until it reaches a final status; returns its state.
    pub async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> Value {
        let path = format!("/api/v1/jobs/{job_id}");
        eventually(timeout, &format!("job {job_id} to finish"), || async {
            let v = self.get_json(&path, 200).await;
            matches!(
                v["status"].as_str(),
                Some("succeeded" | "dead" | "cancelled")
            )
            .then_some(v)
        })
        .await
    }

    /// Spawns a real worker process named `name`.
    /// Ids of the `queue` jobs the worker named `worker` is running now.
    pub async fn jobs_running_on(&self, queue: &str, worker: &str) -> Vec<String> {
        self.queue
            .running_jobs(queue)
            .await
            .expect("running jobs")
            .into_iter()
            .filter(|(_, w)| w == worker)
            .map(|(id, _)| id)
            .collect()
    }

    pub fn spawn_worker_process(&self, name: &str) -> WorkerProcess {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucid-worker-e2e"))
            .envs(self.worker_env(name))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn worker process");
        WorkerProcess {
            child,
            name: name.to_string(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
        // Drop the test's database and Redis keys on a helper thread (Drop cannot
        // await). It opens its own connections: the test's handles are driven by
        // the test's runtime, which is blocked here (a current-thread runtime
        // would deadlock).
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let cleanup = async {
                    if let Ok(client) =
                        mongodb::Client::with_uri_str(settings.mongodb_url.expose_secret()).await
                    {
                        let _ = client.database(&settings.database_name).drop().await;
                    }
                    if let Ok(queue) =
                        Queue::connect(settings.redis_url.expose_secret(), settings.queue()).await
                    {
                        let _ = queue.delete_prefix(&settings.queue_prefix).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(20), cleanup).await;
            });
        })
        .join();
    }
}

/// A worker process under test.
pub struct WorkerProcess {
    /// The child process.
    pub child: tokio::process::Child,
    /// Its registered worker name.
    pub name: String,
}

impl WorkerProcess {
    /// SIGKILL: no chance to release anything.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL worker");
    }
}

/// Builder of batch items.
pub struct ItemBuilder {
    node_id: String,
    output: String,
    nonce: String,
}

impl ItemBuilder {
    /// An item of `node_id` with a small valid output.
    pub fn new(node_id: &str) -> Self {
        use base64::Engine;
        Self {
            node_id: node_id.into(),
            output: base64::engine::general_purpose::STANDARD.encode(b"proof of work"),
            nonce: uuid::Uuid::new_v4().to_string(),
        }
    }
    /// Output of raw bytes.
    pub fn output_bytes(mut self, bytes: &[u8]) -> Self {
        use base64::Engine;
        self.output = base64::engine::general_purpose::STANDARD.encode(bytes);
        self
    }
    /// Output given as an already encoded (possibly invalid) string.
    pub fn output_raw(mut self, raw: &str) -> Self {
        self.output = raw.into();
        self
    }
    /// The JSON item.
    pub fn build(self) -> Value {
        serde_json::json!({
            "node_id": self.node_id,
            "output_data": self.output,
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "nonce": self.nonce,
        })
    }
}

/// Waits until the process serving `base` (`http://127.0.0.1:PORT`) answers
/// `GET /ready` with 200.
pub async fn wait_until_ready(base: &str) {
    eventually(
        Duration::from_secs(30),
        "the process to be ready",
        || async {
            let r = reqwest::get(format!("{base}/ready")).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Registers an active node through `POST /api/v1/nodes/` whose
    /// `configuration.resource_limits.network_mbps` is `network_mbps`, and
    /// returns its id.
    pub async fn create_node_with_network_limit(&self, network_mbps: u64) -> String {
        let body = serde_json::json!({
            "name": "resource node",
            "node_type": "compute",
            "status": "active",
            "hardware_info": {
                "cpu": { "cores": 8, "frequency_mhz": 3000, "architecture": "x86_64" },
                "memory_bytes": 17_179_869_184u64,
                "storage_bytes": 1_099_511_627_776u64,
            },
            "location": {
                "country": "DE",
                "region": "Bavaria",
                "city": "Munich",
                "timezone": "Europe/Berlin",
            },
            "configuration": {
                "max_sessions": 10,
                "resource_limits": {
                    "cpu_percent": 90,
                    "memory_bytes": 8_589_934_592u64,
                    "disk_bytes": 549_755_813_888u64,
                    "network_mbps": network_mbps,
                },
                "auto_scaling": false,
            },
        });
        let r = self.post_json("/api/v1/nodes/", &body).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("json");
        assert_eq!(status, 201, "create node: {v}");
        v["node_id"].as_str().expect("node_id").to_string()
    }
}

// ---------------------------------------------------------------------------
// Nodes and pools (issue 3): request helper and builders of test data.
// ---------------------------------------------------------------------------

/// Sets `value` at a JSON pointer (`/a/b/c`), creating objects on the way.
pub fn json_set(target: &mut Value, pointer: &str, value: Value) {
    let mut cur = target;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(serde_json::Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return;
        }
        cur = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Removes the value at a JSON pointer, if present.
pub fn json_remove(target: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if let Some(map) = target.pointer_mut(parent).and_then(Value::as_object_mut) {
        map.remove(key);
    }
}

/// A response: status, `x-request-id` header and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `x-request-id` response header.
    pub request_id: Option<String>,
    /// The body.
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the body.
    pub fn expect(&self, status: u16, what: &str) -> &Value {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        &self.body
    }

    /// Asserts an error with this status and code in the full envelope
    /// (code, message, request_id == `x-request-id`, timestamp, service,
    /// version) and returns `error`.
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        let e = &self.body["error"];
        assert_eq!(e["code"], code, "{}", self.body);
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message: {}",
            self.body
        );
        let rid = e["request_id"].as_str().unwrap_or_default();
        assert!(!rid.is_empty(), "request_id: {}", self.body);
        assert_eq!(
            Some(rid),
            self.request_id.as_deref(),
            "request_id vs x-request-id header"
        );
        let ts = e["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "timestamp {ts:?}"
        );
        assert_eq!(e["service"], "lucid-node-management", "{}", self.body);
        assert_eq!(e["version"], env!("CARGO_PKG_VERSION"), "{}", self.body);
        e
    }

    /// `details.fields[].field` of a validation error, sorted.
    pub fn error_fields(&self) -> Vec<String> {
        let mut v: Vec<String> = self.body["error"]["details"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl TestApp {
    /// Sends `method path` with an optional JSON body.
    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let request_id = r
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            request_id,
            body,
        }
    }
}

/// Builder of `POST /api/v1/nodes/` bodies: a valid node unless told otherwise.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    body: Value,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeBuilder {
    /// A valid worker in Berlin without an id (the API generates one).
    pub fn new() -> Self {
        Self {
            body: serde_json::json!({
                "name": "Test node",
                "node_type": "worker",
                "hardware_info": {
                    "cpu": { "cores": 8, "frequency_mhz": 3200, "architecture": "x86_64" },
                    "memory_bytes": 17_179_869_184u64,
                    "storage_bytes": 512_000_000_000u64
                },
                "location": {
                    "country": "DE",
                    "region": "Berlin",
                    "city": "Berlin",
                    "timezone": "Europe/Berlin"
                },
                "configuration": {
                    "resource_limits": {
                        "cpu_percent": 80,
                        "memory_bytes": 8_589_934_592u64,
                        "disk_bytes": 100_000_000_000u64,
                        "network_mbps": 1000
                    }
                }
            }),
        }
    }
    /// `node_id`.
    pub fn id(self, id: &str) -> Self {
        self.set("/node_id", serde_json::json!(id))
    }
    /// `name`.
    pub fn name(self, name: &str) -> Self {
        self.set("/name", serde_json::json!(name))
    }
    /// `node_type`.
    pub fn node_type(self, t: &str) -> Self {
        self.set("/node_type", serde_json::json!(t))
    }
    /// Initial `status`.
    pub fn status(self, s: &str) -> Self {
        self.set("/status", serde_json::json!(s))
    }
    /// `location.country`.
    pub fn country(self, c: &str) -> Self {
        self.set("/location/country", serde_json::json!(c))
    }
    /// `location.timezone`.
    pub fn timezone(self, tz: &str) -> Self {
        self.set("/location/timezone", serde_json::json!(tz))
    }
    /// `location.coordinates`.
    pub fn coordinates(self, latitude: f64, longitude: f64) -> Self {
        self.set(
            "/location/coordinates",
            serde_json::json!({ "latitude": latitude, "longitude": longitude }),
        )
    }
    /// `configuration.max_sessions`.
    pub fn max_sessions(self, n: u64) -> Self {
        self.set("/configuration/max_sessions", serde_json::json!(n))
    }
    /// `configuration.resource_limits.cpu_percent`.
    pub fn cpu_percent(self, n: u64) -> Self {
        self.set(
            "/configuration/resource_limits/cpu_percent",
            serde_json::json!(n),
        )
    }
    /// `configuration.maintenance_window`.
    pub fn maintenance_window(self, day_of_week: u64, start_time: &str, minutes: u64) -> Self {
        self.set(
            "/configuration/maintenance_window",
            serde_json::json!({ "day_of_week": day_of_week, "start_time": start_time, "duration_minutes": minutes }),
        )
    }
    /// Any field, by JSON pointer.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        json_set(&mut self.body, pointer, value);
        self
    }
    /// Drops a field, by JSON pointer.
    pub fn without(mut self, pointer: &str) -> Self {
        json_remove(&mut self.body, pointer);
        self
    }
    /// The JSON body.
    pub fn build(self) -> Value {
        self.body
    }
}

/// Builder of `POST /api/v1/nodes/pools/` bodies: a valid pool of 10 unless told otherwise.
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    body: Value,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolBuilder {
    /// A valid pool without an id (the API generates one), `max_nodes` 10.
    pub fn new() -> Self {
        Self {
            body: serde_json::json!({ "name": "Test pool", "max_nodes": 10 }),
        }
    }
    /// `pool_id`.
    pub fn id(self, id: &str) -> Self {
        self.set("/pool_id", serde_json::json!(id))
    }
    /// `name`.
    pub fn name(self, name: &str) -> Self {
        self.set("/name", serde_json::json!(name))
    }
    /// `description`.
    pub fn description(self, d: &str) -> Self {
        self.set("/description", serde_json::json!(d))
    }
    /// `max_nodes`.
    pub fn max_nodes(self, n: u64) -> Self {
        self.set("/max_nodes", serde_json::json!(n))
    }
    /// Enabled auto-scaling with this policy (cooldown 5 minutes).
    pub fn policy(self, scale_up: f64, scale_down: f64, min_nodes: u64, max_nodes: u64) -> Self {
        self.set(
            "/auto_scaling",
            serde_json::json!({
                "enabled": true,
                "policy": {
                    "scale_up_threshold": scale_up,
                    "scale_down_threshold": scale_down,
                    "min_nodes": min_nodes,
                    "max_nodes": max_nodes,
                    "cooldown_minutes": 5
                }
            }),
        )
    }
    /// Any field, by JSON pointer.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        json_set(&mut self.body, pointer, value);
        self
    }
    /// Drops a field, by JSON pointer.
    pub fn without(mut self, pointer: &str) -> Self {
        json_remove(&mut self.body, pointer);
        self
    }
    /// The JSON body.
    pub fn build(self) -> Value {
        self.body
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The Prometheus text of the process whose `/metrics` listens on `port`.
pub async fn scrape_metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of `series` (name and labels, as exported) in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}
