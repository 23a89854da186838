//! The `payouts` job: one payout, at least once, with effects exactly once.
//!
//! 1. pending → processing (a conditional update: a cancel that won first
//!    stops here; a re-run finds it processing and carries on);
//! 2. ledger reserve (keyed by payout id: a re-run posts nothing);
//! 3. the rail, idempotent by payout id (a re-run gets the first hash back);
//! 4. ledger settle with the hash, then processing → completed.
//!
//! A rail failure counts one retry (once per queue attempt) and is retried
//! with the queue's backoff; after `max_retries` retries the payout fails:
//! unless the rail says it did pay after all, the reservation is reversed.
//!
//! An unreachable store (PostgreSQL down or restarting, the rail
//! unreachable) is no rail failure: the step is retried in place for up to
//! [`OUTAGE_WAIT`] (the payout waits in `processing`, its lease kept alive),
//! then the job goes back to the queue. It never fails the payout.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{
    PayoutDoc,
    gateway::{GatewayError, Transfer},
};
use crate::{
    handlers::JobContext,
    ledger::LedgerError,
    queue::{EnqueueOptions, JobLease, NewJob, PAYOUTS_QUEUE},
};

/// Stable job name.
pub const JOB_NAME: &str = "payouts.process";

/// How long one attempt waits out an unreachable store before giving the
/// job back to the queue (which retries it with backoff, without touching
/// the payout's rail retries).
pub const OUTAGE_WAIT: Duration = Duration::from_secs(60);

/// Longest pause between two tries of a step while a store is unreachable.
const OUTAGE_POLL_MAX: Duration = Duration::from_secs(5);

/// Runs `op` until it succeeds, fails for another reason than `unavailable`,
/// or [`OUTAGE_WAIT`] has passed, pausing with the queue's backoff (at most
/// [`OUTAGE_POLL_MAX`]) between tries. Every step it wraps is idempotent
/// (ledger entries are keyed, the rail dedups by payout id).
async fn through_outage<T, E, F, Fut>(
    ctx: &JobContext,
    step: &'static str,
    unavailable: fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    let mut tries = 0u32;
    loop {
        match op().await {
            Err(e) if unavailable(&e) && started.elapsed() < OUTAGE_WAIT => {
                tries += 1;
                let pause = ctx.queue.config().backoff(tries).min(OUTAGE_POLL_MAX);
                tracing::warn!(step, error = %e, ?pause, "store unavailable; the payout waits");
                tokio::time::sleep(pause).await;
            }
            r => return r,
        }
    }
}

/// Payload of a `payouts` job. Versioned: jobs queued before a deploy still parse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum PayoutJob {
    /// Process one payout.
    #[serde(rename = "v1")]
    ProcessV1 {
        /// The payout.
        payout_id: String,
    },
}

/// The job of a payout: deterministic id, the payout's priority, and enough
/// attempts for every rail retry plus `job_max_attempts` for other failures.
pub fn payout_job(ctx: &JobContext, p: &PayoutDoc) -> anyhow::Result<NewJob> {
    Ok(NewJob {
        kind: JOB_NAME.into(),
        payload: serde_json::to_string(&PayoutJob::ProcessV1 {
            payout_id: p.payout_id.clone(),
        })
        .context("serialize payout job")?,
        options: EnqueueOptions {
            job_id: Some(format!("payout-{}", p.payout_id)),
            max_attempts: Some(p.max_retries + 1 + ctx.settings.job_max_attempts),
            priority: p.priority,
            batch_id: p.batch_id.clone(),
            ..EnqueueOptions::default()
        },
    })
}

/// Enqueues the jobs of `payouts` (each once: job ids are deterministic).
pub async fn enqueue_payouts(ctx: &JobContext, payouts: &[PayoutDoc]) -> anyhow::Result<()> {
    let jobs = payouts
        .iter()
        .map(|p| payout_job(ctx, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ctx.queue
        .enqueue_many(PAYOUTS_QUEUE, jobs)
        .await
        .context("enqueue payout jobs")?;
    Ok(())
}

/// Runs one payout job.
#[tracing::instrument(skip(ctx, job, lease), fields(job_id = %lease.job_id, attempt = lease.attempt, payout_id))]
pub async fn process_payout(
    ctx: &JobContext,
    job: PayoutJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let PayoutJob::ProcessV1 { payout_id } = job;
    tracing::Span::current().record("payout_id", payout_id.as_str());
    let Some(p) = ctx
        .payouts
        .begin_processing(&payout_id)
        .await
        .context("take payout")?
    else {
        tracing::info!(%payout_id, "payout is final or cancelled; nothing to do");
        return Ok(());
    };
    let reserve = p.reserve_entry();
    through_outage(ctx, "ledger reserve", LedgerError::is_unavailable, || {
        ctx.ledger.post(&reserve)
    })
    .await
    .context("ledger reserve")?;
    let transfer = Transfer {
        payout_id: p.payout_id.clone(),
        currency: p.currency,
        wallet: p.wallet_address.clone(),
        amount: p.net,
    };
    let timeout = Duration::from_millis(ctx.settings.payouts.rail_timeout_ms);
    let sent = through_outage(ctx, "rail", GatewayError::is_unavailable, || async {
        match tokio::time::timeout(timeout, ctx.gateway.send(&transfer)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::Refused(format!(
                "rail call timed out after {timeout:?}"
            ))),
        }
    })
    .await;
    match sent {
        Ok(tx_hash) => settle(ctx, &p, &tx_hash).await,
        // Still unreachable: back to the queue, not one of the rail retries.
        Err(e) if e.is_unavailable() => Err(e).context("rail unavailable"),
        Err(error) if p.retry_count < p.max_retries => {
            let error = error.to_string();
            tracing::warn!(%payout_id, rail = ctx.gateway.name(), %error, retry = p.retry_count + 1, "rail failed; will retry");
            ctx.payouts
                .record_failure(&p, lease.attempt, &error)
                .await
                .context("record rail failure")?;
            anyhow::bail!(
                "rail failed (retry {} of {}): {error}",
                p.retry_count + 1,
                p.max_retries
            )
        }
        Err(error) => {
            let error = error.to_string();
            // Out of retries. A call that timed out may still have paid: ask first.
            if let Some(tx_hash) =
                through_outage(ctx, "rail lookup", GatewayError::is_unavailable, || {
                    ctx.gateway.lookup(&p.payout_id)
                })
                .await
                .context("rail lookup")?
            {
                return settle(ctx, &p, &tx_hash).await;
            }
            let reverse = p.reverse_entry();
            through_outage(ctx, "ledger reverse", LedgerError::is_unavailable, || {
                ctx.ledger.post(&reverse)
            })
            .await
            .context("ledger reverse")?;
            ctx.payouts
                .fail(&p, &error)
                .await
                .context("mark payout failed")?;
            tracing::warn!(%payout_id, %error, "payout failed after its retries; reservation reversed");
            Ok(())
        }
    }
}

async fn settle(ctx: &JobContext, p: &PayoutDoc, tx_hash: &str) -> anyhow::Result<()> {
    let entry = p.settle_entry(tx_hash);
    let posted = through_outage(ctx, "ledger settle", LedgerError::is_unavailable, || {
        ctx.ledger.post(&entry)
    })
    .await
    .context("ledger settle")?;
    if posted {
        metrics::counter!(crate::metrics::PAYOUTS_SETTLED, "currency" => p.currency.to_string())
            .increment(1);
        crate::metrics::record_settled(p.currency, p.amount);
    }
    ctx.payouts
        .complete(p, tx_hash)
        .await
        .context("mark payout completed")?;
    tracing::info!(payout_id = %p.payout_id, %tx_hash, amount = %p.amount, currency = %p.currency, "payout settled");
    Ok(())
}

/// A new payout id.
pub fn new_payout_id() -> String {
    format!("pay_{}", uuid::Uuid::now_v7().simple())
}
