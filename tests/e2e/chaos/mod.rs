//! Chaos and fault tests (issue 9): worker processes SIGKILLed and
//! SIGTERMed under load, Redis restarted, MongoDB stopped, PostgreSQL cut
//! off, a handler that panics. Each test is bounded in time, touches
//! loopback only, and fails on a lost or duplicated item.
//!
//! Faults are never injected into the shared services: a test that stops a
//! store runs its own private instance on a free loopback port (Redis,
//! secantusd-rs), or puts a [`proxy::FaultProxy`] in front of the shared one
//! (PostgreSQL). Every process a test starts is killed when it is dropped.

mod graceful_shutdown;
mod idle_cutoff;
mod mongo_outage;
mod poison_job;
mod postgres_outage;
pub mod proxy;
mod redis_restart;
mod worker_kills;

use std::{path::PathBuf, process::Stdio, time::Duration};

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::helpers::{ItemBuilder, TestApp, WorkerProcess, eventually, free_port};

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Sends SIGTERM to `pid` (tokio's `Child` only sends SIGKILL).
pub fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// A store process of the test's own on a loopback port, restartable on
/// the same port and data directory; killed when dropped.
pub struct PrivateServer {
    what: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Its port.
    pub port: u16,
    child: Option<tokio::process::Child>,
    _dir: tempdir::Dir,
}

impl PrivateServer {
    /// `redis-server` with AOF persistence in a temporary directory.
    pub async fn redis() -> Self {
        let dir = tempdir::Dir::new("redis");
        let port = free_port();
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--dir",
            dir.path_str(),
            "--save",
            "",
        ]
        .map(String::from)
        .to_vec();
        Self::start("redis-server", "redis-server".into(), args, port, dir).await
    }

    /// SecantusDB's native server (`secantusd-rs`, built and cached by
    /// `./scripts/dev`, which passes its path as `LUCID_TEST_SECANTUS_BIN`;
    /// else found on `PATH`), storing in a temporary directory.
    pub async fn secantus() -> Self {
        let program = std::env::var_os("LUCID_TEST_SECANTUS_BIN")
            .map_or_else(|| PathBuf::from("secantusd-rs"), PathBuf::from);
        let found = std::process::Command::new(&program)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "chaos tests need secantusd-rs ({}) to run a private MongoDB they can stop: \
             run them through ./scripts/dev test (it builds and caches the server), \
             or set LUCID_TEST_SECANTUS_BIN to a secantusd-rs binary",
            program.display()
        );
        let dir = tempdir::Dir::new("secantus");
        let port = free_port();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
            dir.path_str(),
            // Small: a test's store holds one batch (the server's defaults
            // are a 4G cache and a 128MB pre-allocated log file).
            "--cache-size",
            "256M",
            "--log-file-max",
            "16MB",
            "--log-level",
            "ERROR",
        ]
        .map(String::from)
        .to_vec();
        Self::start("secantusd-rs", program, args, port, dir).await
    }

    async fn start(
        what: &'static str,
        program: PathBuf,
        args: Vec<String>,
        port: u16,
        dir: tempdir::Dir,
    ) -> Self {
        let mut server = Self {
            what,
            program,
            args,
            port,
            child: None,
            _dir: dir,
        };
        server.restart().await;
        server
    }

    /// Starts the process (again) on its port and data directory and waits
    /// until the port accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.what);
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", self.what, self.program.display()));
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            &format!("{} to listen on {port}", self.what),
            || async { port_open(port).await.then_some(()) },
        )
        .await;
    }

    /// Stops the process with SIGTERM (a clean shutdown: data is flushed)
    /// and waits until it has exited and its port is closed.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("server running");
        sigterm(child.id().expect("pid"));
        let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        assert!(exited.is_ok(), "{} did not stop within 30 s", self.what);
        assert!(!port_open(self.port).await, "port {} still open", self.port);
    }

    /// `redis://127.0.0.1:PORT` or `mongodb://127.0.0.1:PORT/?directConnection=true`.
    pub fn url(&self) -> String {
        match self.what {
            "redis-server" => format!("redis://127.0.0.1:{}", self.port),
            _ => format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port),
        }
    }
}

/// A temporary directory removed when dropped (no extra dependency).
mod tempdir {
    use std::path::PathBuf;

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(what: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "lucid-chaos-{what}-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
        pub fn path_str(&self) -> &str {
            self.0.to_str().expect("utf-8 temp path")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A PoOT batch of valid items over ten fresh nodes, submitted to `app` and
/// run by two worker processes: the load each fault is injected into.
pub struct ChaosBatch {
    pub batch_id: String,
    pub nodes: Vec<String>,
    pub total: u64,
    pub workers: Vec<WorkerProcess>,
}

impl ChaosBatch {
    /// Registers the nodes (`node_chaos_{tag}_{i}`), starts the two workers
    /// and submits `total` items.
    pub async fn submit(app: &TestApp, tag: &str, total: u64) -> Self {
        let nodes: Vec<String> = (0..10).map(|i| format!("node_chaos_{tag}_{i}")).collect();
        app.insert_nodes(&nodes).await;
        let prefix = &app.settings.queue_prefix;
        let workers = (1..=2)
            .map(|i| app.spawn_worker_process(&format!("{prefix}-w{i}")))
            .collect();
        let batch_id = app
            .submit_batch(&json!({ "validations": valid_items(&nodes, total as usize) }))
            .await;
        Self {
            batch_id,
            nodes,
            total,
            workers,
        }
    }

    /// Waits until at least `min_done` items succeeded and less than half
    /// the batch did, so a fault lands in the middle of it.
    pub async fn wait_under_way(&self, app: &TestApp, min_done: u64) {
        let path = format!("/api/v1/batches/{}", self.batch_id);
        eventually(
            Duration::from_secs(60),
            "the batch to be under way",
            || async {
                let v = app.get_json(&path, 200).await;
                let done = v["succeeded"].as_u64().unwrap_or(0);
                (done >= min_done && done < self.total / 2).then_some(())
            },
        )
        .await;
    }

    /// Waits for the batch to finish, then checks that every worker is still
    /// running (`why` says why they must be) and that every item was
    /// recorded exactly once with no dead job.
    pub async fn assert_completes_exactly_once(
        &mut self,
        app: &TestApp,
        timeout: Duration,
        why: &str,
    ) {
        let batch = app.wait_for_batch(&self.batch_id, timeout).await;
        for w in &mut self.workers {
            assert!(
                w.child.try_wait().expect("worker status").is_none(),
                "worker {} exited: {why}",
                w.name
            );
        }
        assert_every_item_recorded_once(app, &batch, self.total).await;
        assert_no_dead_jobs(app, "poot-validation").await;
    }
}

/// `n` valid items over `nodes` (every one must succeed).
pub fn valid_items(nodes: &[String], n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            ItemBuilder::new(&nodes[i % nodes.len()])
                .output_bytes(format!("chaos output {i}").as_bytes())
                .build()
        })
        .collect()
}

/// Asserts the batch ended with every one of its `total` items succeeded,
/// and that MongoDB holds exactly one record per item index.
pub async fn assert_every_item_recorded_once(app: &TestApp, batch: &Value, total: u64) {
    let batch_id = batch["batch_id"].as_str().expect("batch_id");
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["total"], total, "{batch}");
    assert_eq!(batch["succeeded"], total, "{batch}");
    assert_eq!(batch["failed"], 0, "{batch}");
    assert_eq!(batch["pending"], 0, "{batch}");
    let results = app.db.collection::<Document>("poot_validations");
    let stored = results
        .count_documents(doc! { "batch_id": batch_id })
        .await
        .expect("count records");
    assert_eq!(
        stored, total,
        "records of {batch_id}: a lost or duplicated item"
    );
    let distinct = results
        .distinct("item_index", doc! { "batch_id": batch_id })
        .await
        .expect("distinct item indexes");
    assert_eq!(
        distinct.len() as u64,
        total,
        "distinct item indexes of {batch_id}"
    );
    let failed = results
        .count_documents(doc! { "batch_id": batch_id, "status": { "$ne": "succeeded" } })
        .await
        .expect("count failed records");
    assert_eq!(failed, 0, "records of {batch_id} that did not succeed");
}

/// Asserts no job of `queue` is dead. (After a Redis restart the test's own
/// queue handle answers its first call with the dropped connection's error,
/// then reconnects: hence the retry.)
pub async fn assert_no_dead_jobs(app: &TestApp, queue: &str) {
    let counts = eventually(Duration::from_secs(10), "queue counts", || async {
        app.queue.counts(queue).await.ok()
    })
    .await;
    assert_eq!(counts.dead, 0, "{queue}: {counts:?}");
}
