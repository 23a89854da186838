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
        worker_health_host: "127.0.0.1".into(),
        worker_health_port: 0,
        worker_concurrency: 4,
        visibility_timeout_ms: 3_000,
        retry_backoff_base_ms: 100,
        retry_backoff_max_ms: 2_000,
        queue_poll_interval_ms: 200,
        log_level: env("LUCID_TEST_LOG", "warn"),
        shutdown_grace_secs: 5,
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
    lucid_jobs::telemetry::init(&settings);
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
        client: reqwest::Client::new(),
        db: client.database(&settings.database_name),
        settings,
        queue,
        stop,
    }
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
            ("LUCID_LOG_LEVEL".into(), "warn".into()),
        ]
    }

    /// Spawns a real worker process named `name`.
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
        // Drop the test's database and Redis keys on a helper thread (Drop cannot await).
        let db = self.db.clone();
        let queue = self.queue.clone();
        let prefix = self.settings.queue_prefix.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let _ = db.drop().await;
                let _ = queue.delete_prefix(&prefix).await;
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
