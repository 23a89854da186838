//! Real `lucid-api` and `lucid-worker` processes (their e2e copies, built by
//! `cargo build --release -p lucid-e2e`) for the issue 9 benchmarks.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lucid_jobs::{config::Settings, queue::Queue};
use secrecy::ExposeSecret;

/// Names and secrets of one benchmark's processes; `cleanup` drops its
/// MongoDB database and Redis keys.
#[derive(Debug, Clone)]
pub struct Env {
    pub settings: Settings,
    pub secret: String,
}

impl Env {
    pub fn new(tag: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("bench_{tag}_{id}");
        Self {
            settings: Settings {
                database_name: name.clone(),
                queue_prefix: name,
                log_level: "error".into(),
                rate_limit: crate::unlimited(),
                ..Settings::default()
            },
            secret: format!("bench-secret-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// `LUCID_*` variables of the API and worker processes.
    pub fn vars(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        let n = u32::MAX.to_string();
        [
            (
                "LUCID_MONGODB_URL",
                s.mongodb_url.expose_secret().to_string(),
            ),
            ("LUCID_REDIS_URL", s.redis_url.expose_secret().to_string()),
            (
                "LUCID_POSTGRES_URL",
                s.postgres_url.expose_secret().to_string(),
            ),
            ("LUCID_DATABASE_NAME", s.database_name.clone()),
            ("LUCID_QUEUE_PREFIX", s.queue_prefix.clone()),
            ("LUCID_JWT_SECRET", self.secret.clone()),
            ("LUCID_LOG_LEVEL", "error".into()),
            ("LUCID_RATE_LIMIT__PUBLIC", n.clone()),
            ("LUCID_RATE_LIMIT__AUTHENTICATED", n.clone()),
            ("LUCID_RATE_LIMIT__ADMIN", n.clone()),
            ("LUCID_RATE_LIMIT__POOT_VALIDATION", n.clone()),
            ("LUCID_RATE_LIMIT__PAYOUT_WRITES", n),
            ("LUCID_WORKER_HEALTH_HOST", "127.0.0.1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A client carrying an admin token signed with this environment's secret.
    pub fn admin_client(&self) -> anyhow::Result<reqwest::Client> {
        crate::admin_client_for(&self.secret)
    }

    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let s = &self.settings;
        let mongo = mongodb::Client::with_uri_str(s.mongodb_url.expose_secret()).await?;
        mongo.database(&s.database_name).drop().await?;
        let queue = Queue::connect(s.redis_url.expose_secret(), s.queue()).await?;
        queue.delete_prefix(&s.queue_prefix).await?;
        Ok(())
    }
}

/// A free local port (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A binary built next to this one.
pub fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} missing: build with `cargo build --release -p lucid-e2e`",
        path.display()
    );
    Ok(path)
}

/// A started process and how long it took from spawn to `GET /ready` 200.
pub struct Started {
    pub child: tokio::process::Child,
    pub base: String,
    pub cold_start: Duration,
}

impl Started {
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.child.id().and_then(crate::poot::peak_rss_kib)
    }
}

async fn spawn_ready(
    binary: &str,
    vars: Vec<(String, String)>,
    port: u16,
) -> anyhow::Result<Started> {
    let path = sibling(binary)?;
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let t = Instant::now();
    let mut child = tokio::process::Command::new(path)
        .envs(vars)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    loop {
        if let Ok(r) = probe.get(format!("{base}/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{binary} exited before ready: {status}");
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "{binary} not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Started {
        child,
        base,
        cold_start: t.elapsed(),
    })
}

/// Starts `lucid-api` on a free port; returns once `/ready` answers 200.
pub async fn spawn_api(env: &Env) -> anyhow::Result<Started> {
    let port = free_port()?;
    let mut vars = env.vars();
    vars.push(("LUCID_NODE_API_HOST".into(), "127.0.0.1".into()));
    vars.push(("LUCID_NODE_API_PORT".into(), port.to_string()));
    spawn_ready("lucid-api-e2e", vars, port).await
}

/// Starts a `lucid-worker` named `name`; returns once its `/ready` answers 200.
pub async fn spawn_worker(env: &Env, name: &str) -> anyhow::Result<Started> {
    let port = free_port()?;
    let mut vars = env.vars();
    vars.push(("LUCID_WORKER_NAME".into(), name.into()));
    vars.push(("LUCID_WORKER_HEALTH_PORT".into(), port.to_string()));
    spawn_ready("lucid-worker-e2e", vars, port).await
}

/// Median time from spawn to exit of `program args` over `runs` runs.
pub async fn spawn_to_exit(
    program: &std::path::Path,
    args: &[&str],
    vars: Vec<(String, String)>,
    runs: usize,
) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let status = tokio::process::Command::new(program)
            .args(args)
            .envs(vars.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .with_context(|| format!("run {}", program.display()))?;
        times.push(t.elapsed());
        anyhow::ensure!(status.success(), "{} failed: {status}", program.display());
    }
    Ok(crate::percentile(&mut times, 0.5))
}

/// Stops a started process (SIGKILL; the benchmarks clean their state up).
pub async fn stop(mut p: Started) {
    let _ = p.child.kill().await;
}
