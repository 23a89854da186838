//! `bench`: measures the platform's speed targets against a baseline in the
//! same run. Run with `cargo run --release -p lucid-e2e --bin bench`.
//!
//! `submit`: time for `POST /api/v1/nodes/poot/batch-validate` with 10,000
//! items to answer 202 (target: 200 ms), against the baseline of enqueueing
//! the same chunk payloads straight into Redis (the queue's own cost).
//! `poot-batch`: a 100,000-item batch over 1,000 nodes with a proof history,
//! run by two worker processes: submit → every result in MongoDB, in items/s,
//! against the baseline of MongoDB's raw `insert_many` of the same documents
//! (target ≥ 0.8 of it), and the workers' peak RSS (target < 64 MiB).
//!
//! `queue-overhead`, `api-latency`, `scaling` (issue 9), `store` (the
//! MongoDB server's own costs): see their modules.
//!
//! `cargo run --release -p lucid-e2e --bin bench -- [submit|poot-batch|queue-overhead|api-latency|scaling|store]`
//! (`submit` and `poot-batch` by default).
//! Needs Redis, MongoDB and PostgreSQL on their local default ports.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use lucid_jobs::{
    config::Settings,
    poot::{JOB_NAME, PootValidationJob, ValidationItem},
    queue::{EnqueueOptions, NewJob, Queue},
};
use secrecy::ExposeSecret;

const ITEMS: usize = 10_000;
const RUNS: usize = 15;

fn items() -> Vec<ValidationItem> {
    (0..ITEMS)
        .map(|i| ValidationItem {
            node_id: format!("node_bench_{}", i % 1000),
            output_data: "cHJvb2Ygb2Ygb3BlcmF0aW9uYWwgdGFza3MgLSBiZW5jaG1hcms=".into(),
            timestamp: chrono::Utc::now(),
            nonce: format!("nonce-{i}"),
        })
        .collect()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[idx]
}

/// Through `lucid_jobs::process::run`, like the product's binaries: the
/// in-process API (`submit`, `poot-batch`) and the `queue-overhead-worker`
/// children run with the same allocator settings.
fn main() -> anyhow::Result<()> {
    lucid_jobs::process::run(Box::pin(bench_main()))
}

async fn bench_main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().cloned().unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match which.as_str() {
        "" => {
            submit().await?;
            poot::run().await?;
        }
        "submit" => submit().await?,
        "poot-batch" => poot::run().await?,
        "queue-overhead" => queue_overhead::run(rest).await?,
        "queue-overhead-worker" => queue_overhead::worker(rest).await?,
        "api-latency" => api_latency::run(rest).await?,
        "scaling" => scaling::run(rest).await?,
        "store" => store::run(rest).await?,
        other => anyhow::bail!(
            "unknown benchmark {other}: submit | poot-batch | queue-overhead | api-latency | scaling | store"
        ),
    }
    Ok(())
}

mod apalis_baseline;
mod api_latency;
mod cpu;
mod poot;
mod procs;
mod queue_overhead;
mod scaling;
mod store;

/// Rate limits no benchmark reaches.
fn unlimited() -> lucid_jobs::config::RateLimits {
    let n = 1_000_000_000;
    lucid_jobs::config::RateLimits {
        public: n,
        authenticated: n,
        admin: n,
        poot_validation: n,
        payout_writes: n,
    }
}

/// Settings of an in-process dev-mode API on a free port, with its own
/// database and queue prefix `{prefix}_xxxxxxxx` and no rate limits.
fn bench_settings(prefix: &str) -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Settings {
        node_api_host: "127.0.0.1".into(),
        node_api_port: 0,
        database_name: format!("{prefix}_{}", &id[..8]),
        queue_prefix: format!("{prefix}_{}", &id[..8]),
        log_level: "error".into(),
        dev_mode: true,
        rate_limit: unlimited(),
        ..Settings::default()
    }
}

/// A client carrying an admin token for the dev-mode API the benchmarks start.
fn admin_client() -> anyhow::Result<reqwest::Client> {
    admin_client_for(lucid_api::auth::DEV_SECRET)
}

/// A client carrying an admin token signed with the HS256 `secret`.
fn admin_client_for(secret: &str) -> anyhow::Result<reqwest::Client> {
    use lucid_api::auth::{Claims, Tier, TokenKeys, scopes};
    let token = TokenKeys::hs256(secret.as_bytes()).mint(&Claims::new(
        "bench",
        scopes::ALL,
        Tier::Admin,
        3600,
    ))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(1024)
        .build()?)
}

pub async fn submit() -> anyhow::Result<()> {
    let settings = bench_settings("bench");
    let api = lucid_api::Application::build(settings.clone())
        .await
        .context("build API")?;
    let url = format!(
        "http://127.0.0.1:{}/api/v1/nodes/poot/batch-validate",
        api.port()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api.run_until_stopped(stop.clone()));
    let queue = Queue::connect(settings.redis_url.expose_secret(), settings.queue()).await?;

    let items = items();
    let body = serde_json::to_vec(&serde_json::json!({ "validations": items }))?;
    let client = crate::admin_client()?;
    let (mut api_times, mut base_times) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "submit answered {}", r.status());
        api_times.push(t.elapsed());

        // Baseline: the same chunk payloads pushed straight into the queue.
        let t = Instant::now();
        let jobs = items
            .chunks(settings.batch_chunk_size)
            .enumerate()
            .map(|(i, c)| {
                let payload = PootValidationJob::ChunkV1 {
                    batch_id: format!("baseline-{run}"),
                    chunk_index: i as u64,
                    first_index: 0,
                    items: c.to_vec(),
                };
                Ok(NewJob {
                    kind: JOB_NAME.into(),
                    payload: serde_json::to_string(&payload)?,
                    options: EnqueueOptions {
                        job_id: Some(format!("baseline-{run}-{i}")),
                        ..Default::default()
                    },
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        queue.enqueue_many("bench-baseline", jobs).await?;
        base_times.push(t.elapsed());
    }
    let (a50, a99) = (
        percentile(&mut api_times, 0.5),
        percentile(&mut api_times, 0.99),
    );
    let (b50, b99) = (
        percentile(&mut base_times, 0.5),
        percentile(&mut base_times, 0.99),
    );
    println!(
        "submit of {ITEMS} items over HTTP ({RUNS} runs): p50 {a50:?}, max {a99:?} (target: 202 within 200 ms)"
    );
    println!("baseline, same chunks straight into Redis:   p50 {b50:?}, max {b99:?}");
    println!(
        "ratio api/baseline (p50): {:.2}",
        a50.as_secs_f64() / b50.as_secs_f64()
    );
    println!("target met: {}", a99 <= Duration::from_millis(200));
    stop.cancel();
    queue.delete_prefix(&settings.queue_prefix).await?;
    let mongo = mongodb::Client::with_uri_str(settings.mongodb_url.expose_secret()).await?;
    mongo.database(&settings.database_name).drop().await?;
    Ok(())
}
