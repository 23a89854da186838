//! The `accrue-earnings` job: an epoch's reward pool split across nodes, and
//! payouts for nodes whose unpaid earnings reach the threshold.
//!
//! For epoch `E` (a UTC day), each currency's pool is split in proportion to
//! `credits × uptime_ratio × poot_score / 100`, scored over the window ending
//! at the end of `E`. Shares are rounded down to the currency's decimals (the
//! remainder stays in the pool). The allocation is stored once per epoch and
//! currency (`earnings_epochs`), and every ledger entry and payout is keyed by
//! epoch, currency and node, so re-running an epoch changes nothing.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{NaiveDate, TimeZone, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use rust_decimal::{Decimal, RoundingStrategy, prelude::FromPrimitive};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{NewPayout, PayoutDoc, PayoutSource, PayoutStatus, job::enqueue_payouts};
use crate::{
    domain::{node::NodeConfiguration, payout::Currency},
    handlers::JobContext,
    ledger::{Account, AccountKind, EntryKind, NewEntry},
    queue::{EARNINGS_QUEUE, EnqueueOptions, JobLease, NewJob, Priority},
    storage::{collections, insert_new},
};

/// Stable job name.
pub const JOB_NAME: &str = "earnings.accrue";
/// Stored allocations, one per epoch and currency.
pub const EPOCHS: &str = "earnings_epochs";

/// Payload of an `earnings` job. Versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum EarningsJob {
    /// Accrue one epoch.
    #[serde(rename = "v1")]
    AccrueV1 {
        /// The epoch: a UTC day, `YYYY-MM-DD`.
        epoch: String,
    },
}

/// The job accruing `epoch` (one per epoch: the job id is deterministic).
pub fn accrue_job(epoch: NaiveDate) -> anyhow::Result<NewJob> {
    Ok(NewJob {
        kind: JOB_NAME.into(),
        payload: serde_json::to_string(&EarningsJob::AccrueV1 {
            epoch: epoch.to_string(),
        })?,
        options: EnqueueOptions {
            job_id: Some(format!("earnings-{epoch}")),
            priority: Priority::High,
            ..EnqueueOptions::default()
        },
    })
}

/// Enqueues the accrual of `epoch`.
pub async fn enqueue_accrual(ctx: &JobContext, epoch: NaiveDate) -> anyhow::Result<String> {
    ctx.queue
        .enqueue(EARNINGS_QUEUE, accrue_job(epoch)?)
        .await
        .context("enqueue earnings accrual")
}

/// One epoch's split of one currency's pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Allocation {
    #[serde(rename = "_id")]
    id: String,
    epoch: String,
    currency: Currency,
    pool: Decimal,
    /// node → share (exact, rounded down to the currency's decimals).
    shares: BTreeMap<String, Decimal>,
    created_at: bson::DateTime,
}

/// What an accrual did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccrualReport {
    /// Ledger entries posted now (0 on a re-run).
    pub entries_posted: u64,
    /// Payouts created now (0 on a re-run).
    pub payouts_created: u64,
    /// Nodes over the threshold without a wallet for the currency.
    pub skipped_without_wallet: u64,
}

/// Runs the `earnings` job.
#[tracing::instrument(skip(ctx, job, lease), fields(job_id = %lease.job_id, attempt = lease.attempt))]
pub async fn handle_earnings(
    ctx: &JobContext,
    job: EarningsJob,
    lease: &JobLease,
) -> anyhow::Result<()> {
    let EarningsJob::AccrueV1 { epoch } = job;
    let epoch = NaiveDate::parse_from_str(&epoch, "%Y-%m-%d").map_err(|e| {
        anyhow::Error::new(crate::queue::PermanentError(format!(
            "bad epoch {epoch:?}: {e}"
        )))
    })?;
    let report = accrue(ctx, epoch).await?;
    tracing::info!(%epoch, ?report, "earnings accrued");
    Ok(())
}

/// Accrues `epoch` for every currency with a positive pool.
pub async fn accrue(ctx: &JobContext, epoch: NaiveDate) -> anyhow::Result<AccrualReport> {
    let mut report = AccrualReport::default();
    let nodes: Vec<Document> = ctx
        .db
        .collection::<Document>(collections::NODES)
        .find(doc! {})
        .projection(doc! { "_id": 1, "configuration": 1 })
        .await
        .context("list nodes")?
        .try_collect()
        .await
        .context("read nodes")?;
    for currency in Currency::ALL {
        let pool = ctx.settings.payouts.reward_pool(currency);
        if pool <= Decimal::ZERO {
            continue;
        }
        let allocation = allocation(ctx, epoch, currency, pool, &nodes).await?;
        for (node, share) in &allocation.shares {
            let entry = NewEntry {
                key: format!("accrue:{epoch}:{currency}:{node}"),
                kind: EntryKind::Accrue,
                payout_id: None,
                tx_hash: None,
                postings: vec![
                    (Account::network(AccountKind::Rewards, currency), -*share),
                    (Account::node(AccountKind::Earnings, node, currency), *share),
                ],
            };
            if ctx.ledger.post(&entry).await.context("ledger accrue")? {
                report.entries_posted += 1;
            }
        }
        for node in allocation.shares.keys() {
            let wallet = nodes
                .iter()
                .find(|d| d.get_str("_id") == Ok(node.as_str()))
                .and_then(|d| {
                    let config: NodeConfiguration =
                        bson::from_bson(d.get("configuration")?.clone()).ok()?;
                    Some(config.payout_wallets?.for_currency(currency)?.to_string())
                });
            match create_payout(ctx, epoch, currency, node, wallet).await? {
                PayoutOutcome::Created => report.payouts_created += 1,
                PayoutOutcome::NoWallet => report.skipped_without_wallet += 1,
                PayoutOutcome::None => {}
            }
        }
    }
    Ok(report)
}

/// The stored allocation of an epoch and currency, computing and storing it the first time.
async fn allocation(
    ctx: &JobContext,
    epoch: NaiveDate,
    currency: Currency,
    pool: Decimal,
    nodes: &[Document],
) -> anyhow::Result<Allocation> {
    let epochs = ctx.db.collection::<Allocation>(EPOCHS);
    let id = format!("{epoch}:{currency}");
    if let Some(a) = epochs.find_one(doc! { "_id": &id }).await? {
        return Ok(a);
    }
    let end = Utc.from_utc_datetime(
        &epoch
            .succ_opt()
            .context("epoch out of range")?
            .and_hms_opt(0, 0, 0)
            .context("midnight")?,
    );
    let mut weights = Vec::new();
    for d in nodes {
        let Ok(node) = d.get_str("_id") else { continue };
        let (b, _) = ctx
            .validator
            .score_and_history(node, end)
            .await
            .context("score node")?;
        let w = b.credits as f64 * b.uptime_ratio * b.score / 100.0;
        if let Some(w) = Decimal::from_f64(w).filter(|w| *w > Decimal::ZERO) {
            weights.push((node.to_string(), w.round_dp(12)));
        }
    }
    let total: Decimal = weights.iter().map(|(_, w)| *w).sum();
    let mut shares = BTreeMap::new();
    if total > Decimal::ZERO {
        for (node, w) in weights {
            let share = (pool * w / total)
                .round_dp_with_strategy(currency.decimals(), RoundingStrategy::ToZero);
            if share > Decimal::ZERO {
                shares.insert(node, share.normalize());
            }
        }
    }
    let a = Allocation {
        id: id.clone(),
        epoch: epoch.to_string(),
        currency,
        pool,
        shares,
        created_at: bson::DateTime::now(),
    };
    // First writer wins: a concurrent or earlier run's allocation is the one used.
    if !insert_new(&epochs, &a).await? {
        return epochs
            .find_one(doc! { "_id": &id })
            .await?
            .context("allocation vanished");
    }
    Ok(a)
}

enum PayoutOutcome {
    Created,
    NoWallet,
    None,
}

/// Creates the epoch's earnings payout of a node when its unpaid earnings
/// (earnings balance minus pending earnings payouts) reach the threshold.
async fn create_payout(
    ctx: &JobContext,
    epoch: NaiveDate,
    currency: Currency,
    node: &str,
    wallet: Option<String>,
) -> anyhow::Result<PayoutOutcome> {
    let settings = &ctx.settings.payouts;
    let digest = Sha256::digest(format!("earnings\n{epoch}\n{currency}\n{node}").as_bytes());
    let payout_id = format!("pay_e{}", &hex::encode(digest)[..32]);
    if let Some(existing) = ctx.payouts.get(&payout_id).await? {
        if existing.status == PayoutStatus::Pending {
            // An earlier run may have stored it and stopped before queueing it.
            enqueue_payouts(ctx, std::slice::from_ref(&existing)).await?;
        }
        return Ok(PayoutOutcome::None);
    }
    let balance = ctx
        .ledger
        .balance(&Account::node(AccountKind::Earnings, node, currency))
        .await
        .context("earnings balance")?;
    let pending: Decimal = ctx
        .payouts
        .find_all(
            doc! { "node_id": node, "currency": currency.as_str(), "source": "earnings",
            "status": PayoutStatus::Pending.as_str() },
        )
        .await?
        .iter()
        .map(|p| p.amount)
        .sum();
    let unpaid = balance - pending;
    if unpaid < settings.earnings_threshold {
        return Ok(PayoutOutcome::None);
    }
    let Some(wallet) = wallet else {
        tracing::warn!(%node, %currency, %unpaid, "earnings over the threshold but no payout wallet");
        return Ok(PayoutOutcome::NoWallet);
    };
    let amount = unpaid
        .min(settings.fees.max_amount)
        .round_dp_with_strategy(currency.decimals(), RoundingStrategy::ToZero);
    let charges = settings
        .fees
        .charges(currency, amount)
        .map_err(|m| anyhow::anyhow!("earnings payout of {amount} {currency}: {m}"))?;
    let doc: PayoutDoc = NewPayout {
        payout_id,
        node_id: node.to_string(),
        currency,
        charges,
        wallet_address: wallet,
        priority: Priority::Normal,
        max_retries: settings.max_retries,
        source: PayoutSource::Earnings,
        batch_id: None,
        idempotency: None,
        rail: settings.rail.clone(),
    }
    .into();
    let created = ctx.payouts.insert(&doc).await?;
    enqueue_payouts(ctx, std::slice::from_ref(&doc)).await?;
    Ok(if created {
        PayoutOutcome::Created
    } else {
        PayoutOutcome::None
    })
}
