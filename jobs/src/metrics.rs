//! Prometheus metrics (the `metrics` facade with the
//! `metrics-exporter-prometheus` recorder): every name the platform exports,
//! and the recorder each process installs once.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Mutex, OnceLock},
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rust_decimal::Decimal;

use crate::domain::payout::Currency;

/// HTTP requests by method, route template and status (counter).
pub const HTTP_REQUESTS: &str = "lucid_http_requests_total";
/// HTTP request duration by method and route (histogram, seconds).
pub const HTTP_DURATION: &str = "lucid_http_request_duration_seconds";
/// Jobs enqueued by queue (counter).
pub const JOBS_ENQUEUED: &str = "lucid_jobs_enqueued_total";
/// Job attempts started by queue (counter).
pub const JOBS_STARTED: &str = "lucid_jobs_started_total";
/// Jobs succeeded by queue (counter).
pub const JOBS_SUCCEEDED: &str = "lucid_jobs_succeeded_total";
/// Job attempts failed by queue (counter).
pub const JOBS_FAILED: &str = "lucid_jobs_failed_total";
/// Failed attempts scheduled for a retry, by queue (counter).
pub const JOBS_RETRIED: &str = "lucid_jobs_retried_total";
/// Jobs moved to the dead letters, by queue (counter).
pub const JOBS_DEAD: &str = "lucid_jobs_dead_total";
/// Attempt duration by queue (histogram, seconds).
pub const JOB_DURATION: &str = "lucid_job_duration_seconds";
/// Time from enqueue to the attempt's start, by queue (histogram, seconds).
pub const JOB_QUEUE_WAIT: &str = "lucid_job_queue_wait_seconds";
/// Jobs per queue and state, read at scrape time (gauge).
pub const QUEUE_JOBS: &str = "lucid_queue_jobs";
/// Live worker processes, read at scrape time (gauge).
pub const WORKERS_LIVE: &str = "lucid_workers_live";
/// Batch items processed, by batch kind and outcome (counter; its rate is items/s).
pub const BATCH_ITEMS: &str = "lucid_batch_items_total";
/// Payouts settled, by currency (counter).
pub const PAYOUTS_SETTLED: &str = "lucid_payouts_settled_total";
/// Amount settled by this process since it started, by currency (counter,
/// written as the exact decimal; see [`record_settled`]).
pub const PAYOUT_AMOUNT_SETTLED: &str = "lucid_payout_settled_amount_total";
/// The same USDT amount in a label-free gauge, as the exact decimal.
pub const PAYOUT_AMOUNT_SETTLED_USDT: &str = "lucid_payout_settled_amount_usdt";
/// The same LUCID amount in a label-free gauge, as the exact decimal.
pub const PAYOUT_AMOUNT_SETTLED_LUCID: &str = "lucid_payout_settled_amount_lucid";
/// Requests refused by the rate limiter, by bucket (counter).
pub const RATE_LIMIT_REJECTIONS: &str = "lucid_rate_limit_rejections_total";
/// Latency of MongoDB, Redis and PostgreSQL calls, by store and operation (histogram, seconds).
pub const STORE_CALL_DURATION: &str = "lucid_store_call_duration_seconds";
/// Schedule ticks fired, by schedule (counter).
pub const SCHEDULE_FIRES: &str = "lucid_schedule_fires_total";

/// Every metric name above, for checks (dashboards may use only these).
pub const ALL: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_DURATION,
    JOBS_ENQUEUED,
    JOBS_STARTED,
    JOBS_SUCCEEDED,
    JOBS_FAILED,
    JOBS_RETRIED,
    JOBS_DEAD,
    JOB_DURATION,
    JOB_QUEUE_WAIT,
    QUEUE_JOBS,
    WORKERS_LIVE,
    BATCH_ITEMS,
    PAYOUTS_SETTLED,
    PAYOUT_AMOUNT_SETTLED,
    PAYOUT_AMOUNT_SETTLED_USDT,
    PAYOUT_AMOUNT_SETTLED_LUCID,
    RATE_LIMIT_REJECTIONS,
    STORE_CALL_DURATION,
    SCHEDULE_FIRES,
];

/// Histogram buckets (seconds): 1 ms to 2 min.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same
/// handle, so several apps in one test process share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Records one store call's duration.
pub fn store_call(store: &'static str, op: &str, elapsed: std::time::Duration) {
    metrics::histogram!(STORE_CALL_DURATION, "store" => store, "op" => op.to_string())
        .record(elapsed.as_secs_f64());
}

/// The Prometheus text of this process: queue depths per state and live
/// workers are read from Redis now, everything else is what the process recorded.
pub async fn render(queue: &crate::queue::Queue) -> String {
    for q in crate::queue::ALL_QUEUES {
        if let Ok(c) = queue.counts(q).await {
            for (state, n) in [
                ("queued", c.queued),
                ("scheduled", c.scheduled),
                ("running", c.running),
                ("dead", c.dead),
            ] {
                metrics::gauge!(QUEUE_JOBS, "queue" => q.to_string(), "state" => state)
                    .set(n as f64);
            }
        }
    }
    if let Ok(w) = queue.live_workers().await {
        metrics::gauge!(WORKERS_LIVE).set(w.len() as f64);
    }
    let mut text = install().render();
    text.push_str(&settled_exposition());
    text
}

/// Amounts settled by this process, per currency, kept as exact decimals:
/// the `metrics` recorder stores `f64` (0.1 + 0.2 ≠ 0.3) and its counters
/// take whole numbers only, so these are written into the exposition by hand.
fn settled() -> &'static Mutex<BTreeMap<Currency, Decimal>> {
    static SETTLED: OnceLock<Mutex<BTreeMap<Currency, Decimal>>> = OnceLock::new();
    SETTLED.get_or_init(|| Mutex::new(Currency::ALL.map(|c| (c, Decimal::ZERO)).into()))
}

/// Adds one settled payout's amount to this process's exact totals.
pub fn record_settled(currency: Currency, amount: Decimal) {
    let mut totals = settled().lock().unwrap_or_else(|e| e.into_inner());
    *totals.entry(currency).or_default() += amount;
}

/// The settled totals in Prometheus text: a counter by currency, and one
/// label-free gauge per currency, each value written as the exact decimal.
fn settled_exposition() -> String {
    let totals = settled().lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {PAYOUT_AMOUNT_SETTLED} Amount settled by this process since it started, by currency (exact decimal)."
    );
    let _ = writeln!(out, "# TYPE {PAYOUT_AMOUNT_SETTLED} counter");
    for (currency, amount) in &totals {
        let _ = writeln!(
            out,
            "{PAYOUT_AMOUNT_SETTLED}{{currency=\"{currency}\"}} {}",
            amount.normalize()
        );
    }
    for (currency, name) in [
        (Currency::Usdt, PAYOUT_AMOUNT_SETTLED_USDT),
        (Currency::Lucid, PAYOUT_AMOUNT_SETTLED_LUCID),
    ] {
        let amount = totals.get(&currency).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP {name} {currency} settled by this process since it started (exact decimal)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", amount.normalize());
    }
    out
}
