//! `scaling` (issue 9): throughput with 1, 2 and 4 worker processes, peak
//! RSS of the API and the workers under load, and cold start to ready.
//!
//! Two paths, both in the same run:
//! - PoOT batches through the real processes: a `lucid-api` process and N
//!   `lucid-worker` processes; one batch of `--poot-items` items over 1,000
//!   seeded nodes per N, submitted over HTTP and polled over HTTP until done;
//! - no-op jobs through our worker stack (`queue-overhead` with 1, 2 and 4
//!   worker processes), the queue's own scaling without MongoDB.
//!
//! Cold start is spawn → `GET /ready` 200 (connections to Redis, MongoDB and
//! PostgreSQL, index creation and ledger migration included), against the
//! baselines spawn → exit of `/bin/true`, of `lucid-api token` (the same
//! binary loading its configuration and signing a token, no I/O) and of
//! `lucid-worker healthcheck` (configuration plus one local HTTP request).

use std::time::Duration;

use crate::{
    procs::{Env, Started, sibling, spawn_api, spawn_to_exit, spawn_worker, stop},
    queue_overhead::{Stack, arg, drain, rss_list},
};

const COUNTS: [usize; 3] = [1, 2, 4];

/// `bench scaling [--poot-items N] [--poot-rounds R] [--jobs N] [--concurrency C]`.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let poot_items = arg(args, "--poot-items", 20_000usize);
    let poot_rounds = arg(args, "--poot-rounds", 2usize);
    let jobs = arg(args, "--jobs", 100_000usize);
    let concurrency = arg(
        args,
        "--concurrency",
        lucid_jobs::config::Settings::default().worker_concurrency,
    );
    let env = Env::new("scale");
    let result = poot_scaling(&env, poot_items, poot_rounds).await;
    env.cleanup().await?;
    result?;

    println!("no-op jobs through our worker stack ({jobs} jobs, concurrency {concurrency}):");
    println!("  | workers | drain | jobs/s | vs 1 worker | worker peak RSS |");
    let mut one = None;
    for n in COUNTS {
        let d = drain(Stack::Lucid, jobs, n, concurrency).await?;
        let base = *one.get_or_insert(d.rate());
        println!(
            "  | {n} | {:.2?} | {:.0} | {:.2} | {} |",
            d.elapsed,
            d.rate(),
            d.rate() / base,
            rss_list(&d.peak_rss_kib)
        );
    }
    Ok(())
}

/// PoOT with 1, 2 and 4 workers, `rounds` times over (1, 2, 4, 1, 2, 4, ...),
/// so a drift of the store over the run shows as a difference between rounds.
async fn poot_scaling(env: &Env, items: usize, rounds: usize) -> anyhow::Result<()> {
    crate::poot::seed(&env.settings).await?;
    let api = spawn_api(env).await?;
    let client = env.admin_client()?;
    println!(
        "PoOT batches of {items} items over 1,000 nodes: real lucid-api + N lucid-worker processes"
    );
    println!(
        "  | workers | submit → done | items/s | vs 1 worker | worker peak RSS | API peak RSS so far |"
    );
    let mut worker_starts = Vec::new();
    let mut one = None;
    let mut cpus = Vec::new();
    for (round, n) in (0..rounds).flat_map(|r| COUNTS.map(|n| (r, n))) {
        let mut workers: Vec<Started> = Vec::new();
        for w in 0..n {
            let s = spawn_worker(env, &format!("bench-scale-{n}-{w}")).await?;
            worker_starts.push(s.cold_start);
            workers.push(s);
        }
        let mut procs: Vec<(String, u32)> = api
            .child
            .id()
            .map(|p| ("api".into(), p))
            .into_iter()
            .collect();
        procs.extend(
            workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| Some((format!("worker {i}"), w.child.id()?))),
        );
        let meter = crate::cpu::CpuMeter::start(procs);
        let elapsed = one_batch(&client, &api.base, items, round * 10 + n).await?;
        cpus.push((round, n, meter.report()));
        let rate = items as f64 / elapsed.as_secs_f64();
        let base = *one.get_or_insert(rate);
        let rss: Vec<Option<u64>> = workers.iter().map(Started::peak_rss_kib).collect();
        println!(
            "  | {n} (round {round}) | {elapsed:.2?} | {rate:.0} | {:.2} | {} | {} |",
            rate / base,
            rss_list(&rss),
            rss_list(&[api.peak_rss_kib()])
        );
        for w in workers {
            stop(w).await;
        }
    }
    println!("  CPU during each batch:");
    for (round, n, cpu) in cpus {
        println!("    round {round}, {n} worker(s): {cpu}");
    }

    // Cold start: the API once more on a warm machine, against the baselines.
    let mut api_starts = vec![api.cold_start];
    let api_port = api.base.rsplit(':').next().unwrap_or_default().to_string();
    let mut vars = env.vars();
    vars.push(("LUCID_WORKER_HEALTH_PORT".into(), api_port));
    let true_exit = spawn_to_exit(std::path::Path::new("/bin/true"), &[], vec![], 20).await?;
    let token_exit = spawn_to_exit(
        &sibling("lucid-api-e2e")?,
        &["token", "--admin"],
        vars.clone(),
        20,
    )
    .await?;
    let probe_exit =
        spawn_to_exit(&sibling("lucid-worker-e2e")?, &["healthcheck"], vars, 20).await?;
    stop(api).await;
    for _ in 0..2 {
        let a = spawn_api(env).await?;
        api_starts.push(a.cold_start);
        stop(a).await;
    }
    let api_med = crate::percentile(&mut api_starts, 0.5);
    let worker_med = crate::percentile(&mut worker_starts, 0.5);
    println!("cold start, spawn → GET /ready 200 (median):");
    println!(
        "  lucid-api {api_med:.2?} (runs {api_starts:.0?}); lucid-worker {worker_med:.2?} (runs {worker_starts:.0?})"
    );
    println!(
        "  baselines, spawn → exit (median of 20): /bin/true {true_exit:.2?}, `lucid-api token --admin` {token_exit:.2?}, `lucid-worker healthcheck` {probe_exit:.2?}"
    );
    println!(
        "  ratios: API {:.0}x `token`, worker {:.0}x `healthcheck`",
        api_med.as_secs_f64() / token_exit.as_secs_f64(),
        worker_med.as_secs_f64() / probe_exit.as_secs_f64()
    );
    Ok(())
}

/// Submits one batch of `items` items (nonces unique to `run`) and polls its
/// status over HTTP until it is no longer queued or running.
async fn one_batch(
    client: &reqwest::Client,
    base: &str,
    items: usize,
    run: usize,
) -> anyhow::Result<Duration> {
    let ts = chrono::Utc::now().to_rfc3339();
    let list: Vec<serde_json::Value> = (0..items)
        .map(|i| serde_json::json!({ "node_id": format!("node_bench_{}", i % 1000), "output_data": "cHJvb2Ygb2Ygd29yaw==",
                                     "timestamp": ts, "nonce": format!("scale-{run}-{i}") }))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "validations": list }))?;
    let (elapsed, _, view) =
        crate::poot::run_batch(client, base, body, Duration::from_secs(900)).await?;
    anyhow::ensure!(view["status"] == "completed", "batch ended as {view}");
    Ok(elapsed)
}
