//! `api-latency` (issue 9): latency of the real API process (release build,
//! JWT auth, rate limiter on with limits no run reaches) under a constant
//! request rate, against the same rate on `GET /health` of the same process.
//!
//! The load generator is open-loop and lives in this binary: request `i` is
//! due at `start + i / rate` and is sent then on its own task whatever the
//! earlier ones are doing; its latency runs from that due time (not from the
//! moment it was actually sent) to the end of the response body, so a
//! stalled server is charged for every request it delays (no coordinated
//! omission). wrk has no rate control and wrk2 is not packaged here.
//!
//! Phases, each `--secs` long at `--rate` requests/s: `GET /health`
//! (baseline), enqueue (`POST /api/v1/nodes/poot/batch-validate` with one
//! item: a batch record in MongoDB plus one chunk job in Redis), status
//! poll of those jobs (`GET /api/v1/jobs/{id}`, Redis), status poll of those
//! batches (`GET /api/v1/batches/{id}`, MongoDB), `GET /health` again.
//! No worker runs, so the jobs stay queued. Then the 10,000-item batch
//! submission bench (`bench submit`) runs as before.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    procs::{Env, spawn_api, stop},
    queue_overhead::arg,
};

/// Latencies of one phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub sent: usize,
    pub errors: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// p99 from the actual send (service time, without the generator's lateness).
    pub p99_sent: Duration,
    pub late_sends: usize,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<34} {:>6} req, {:>4} errors, p50 {:>9.3?}, p99 {:>9.3?}, max {:>9.3?}, p99 from send {:>9.3?}",
            self.name, self.sent, self.errors, self.p50, self.p99, self.max, self.p99_sent
        )?;
        if self.late_sends > 0 {
            write!(f, " ({} sent > 2 ms late)", self.late_sends)?;
        }
        Ok(())
    }
}

/// Sends `make(i)` at `rate` per second for `secs`, open-loop; each future
/// returns whether the answer was the expected one.
pub async fn constant_rate<F, Fut>(name: &str, rate: u32, secs: f64, make: F) -> Phase
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let n = (f64::from(rate) * secs).round() as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(20);
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::with_capacity(n);
    let mut late_sends = 0;
    for i in 0..n {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        if due.elapsed() > Duration::from_millis(2) {
            late_sends += 1;
        }
        let fut = make(i);
        let results = results.clone();
        let sent = Instant::now();
        tasks.push(tokio::spawn(async move {
            let ok = fut.await;
            let (latency, service) = (due.elapsed(), sent.elapsed());
            if let Ok(mut r) = results.lock() {
                r.push((latency, service, ok));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = results.iter().filter(|(_, _, ok)| !ok).count();
    let mut lat: Vec<Duration> = results.iter().map(|(l, _, _)| *l).collect();
    let mut service: Vec<Duration> = results.iter().map(|(_, s, _)| *s).collect();
    Phase {
        name: name.to_string(),
        sent: n,
        errors,
        p50: crate::percentile(&mut lat, 0.5),
        p99: crate::percentile(&mut lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        p99_sent: crate::percentile(&mut service, 0.99),
        late_sends,
    }
}

/// `n` one-item batches, one at a time: latency without queueing.
async fn sequential_enqueue(
    client: &reqwest::Client,
    base: &str,
    n: usize,
    ts: &str,
    ids: &Mutex<Vec<String>>,
) -> Phase {
    let (mut lat, mut errors) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let body = serde_json::json!({ "validations": [{ "node_id": format!("node_bench_{}", i % 1000),
            "output_data": "cHJvb2Ygb2Ygd29yaw==", "timestamp": ts, "nonce": format!("seq-{i}") }] });
        let t = Instant::now();
        let r = client
            .post(format!("{base}/api/v1/nodes/poot/batch-validate"))
            .json(&body)
            .send()
            .await;
        let v = match r {
            Ok(r) if r.status().as_u16() == 202 => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        lat.push(t.elapsed());
        match v.as_ref().and_then(|v| v["batch_id"].as_str()) {
            Some(id) => ids.lock().map(|mut l| l.push(id.to_string())).unwrap_or(()),
            None => errors += 1,
        }
    }
    let p99 = crate::percentile(&mut lat, 0.99);
    Phase {
        name: "POST batch-validate, 1 item, 1 at a time".into(),
        sent: n,
        errors,
        p50: crate::percentile(&mut lat, 0.5),
        p99,
        max: lat.last().copied().unwrap_or_default(),
        p99_sent: p99,
        late_sends: 0,
    }
}

async fn send(req: reqwest::RequestBuilder, expect: u16) -> bool {
    match req.send().await {
        Ok(r) => {
            let ok = r.status().as_u16() == expect;
            r.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// `bench api-latency [--rate R] [--secs S]`.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let rate = arg(args, "--rate", 500u32);
    let seq_requests = arg(args, "--seq-enqueues", 200usize);
    let secs = arg(args, "--secs", 20.0f64);
    let env = Env::new("api");
    let result = run_phases(&env, rate, seq_requests, secs).await;
    env.cleanup().await?;
    result?;
    crate::submit().await
}

async fn run_phases(env: &Env, rate: u32, seq_requests: usize, secs: f64) -> anyhow::Result<()> {
    let api = spawn_api(env).await?;
    println!(
        "api latency: real lucid-api process (release), {rate} req/s open-loop for {secs} s per phase, cold start {:?}",
        api.cold_start
    );
    let client = env.admin_client()?;
    let base = api.base.clone();
    // Warm the connection pool and the process up.
    for _ in 0..200 {
        send(client.get(format!("{base}/health")), 200).await;
    }
    let mut phases = Vec::new();
    let health = |label: &str| {
        let (client, base) = (client.clone(), base.clone());
        let label = label.to_string();
        async move {
            constant_rate(&label, rate, secs, |_| {
                send(client.get(format!("{base}/health")), 200)
            })
            .await
        }
    };
    phases.push(health("GET /health (baseline, before)").await);

    let batch_ids = Arc::new(Mutex::new(Vec::new()));
    let ts = chrono::Utc::now().to_rfc3339();
    let enqueue = |label: String, rate: u32, secs: f64, tag: &'static str| {
        let (client, base, ts, batch_ids) =
            (client.clone(), base.clone(), ts.clone(), batch_ids.clone());
        async move {
            constant_rate(&label, rate, secs, |i| {
                let body = serde_json::json!({ "validations": [{ "node_id": format!("node_bench_{}", i % 1000),
                    "output_data": "cHJvb2Ygb2Ygd29yaw==", "timestamp": ts, "nonce": format!("{tag}-{i}") }] });
                let req = client
                    .post(format!("{base}/api/v1/nodes/poot/batch-validate"))
                    .json(&body);
                let ids = batch_ids.clone();
                async move {
                    let Ok(r) = req.send().await else { return false };
                    if r.status().as_u16() != 202 {
                        return false;
                    }
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        return false;
                    };
                    if let (Some(id), Ok(mut ids)) = (v["batch_id"].as_str(), ids.lock()) {
                        ids.push(id.to_string());
                    }
                    true
                }
            })
            .await
        }
    };
    phases.push(sequential_enqueue(&client, &base, seq_requests, &ts, &batch_ids).await);
    let ids: Vec<String> = batch_ids.lock().map(|v| v.clone()).unwrap_or_default();
    anyhow::ensure!(!ids.is_empty(), "no batch accepted");
    phases.push(
        constant_rate("GET /api/v1/jobs/{id} (Redis)", rate, secs, |i| {
            let job = lucid_jobs::batch::chunk_job_id(&ids[i % ids.len()], 0);
            send(client.get(format!("{base}/api/v1/jobs/{job}")), 200)
        })
        .await,
    );
    phases.push(
        constant_rate("GET /api/v1/batches/{id} (MongoDB)", rate, secs, |i| {
            send(
                client.get(format!("{base}/api/v1/batches/{}", ids[i % ids.len()])),
                200,
            )
        })
        .await,
    );
    phases.push(health("GET /health (baseline, after)").await);
    let rss = api.peak_rss_kib();
    // Last, as it may overload the store: enqueue at the full rate.
    let full = enqueue(
        format!("POST batch-validate, 1 item, {rate}/s ({secs} s)"),
        rate,
        secs,
        "full",
    )
    .await;
    let rss_after = api.peak_rss_kib();
    stop(api).await;
    phases.push(full);

    let base_p99 = phases[0].p99.min(phases[4].p99);
    let base_p50 = phases[0].p50.min(phases[4].p50);
    for p in &phases {
        println!(
            "  {p}  | x{:.1} p50, x{:.1} p99 of /health",
            p.p50.as_secs_f64() / base_p50.as_secs_f64(),
            p.p99.as_secs_f64() / base_p99.as_secs_f64()
        );
    }
    println!(
        "  job status poll p99 < 5 ms: {}; API peak RSS before the full-rate enqueue {} (target < 48 MiB), after it {}",
        phases[2].p99 < Duration::from_millis(5),
        crate::queue_overhead::rss_list(&[rss]),
        crate::queue_overhead::rss_list(&[rss_after])
    );
    Ok(())
}
