//! Request and response types of the payout endpoints.

use chrono::{DateTime, Utc};
use lucid_jobs::{
    domain::payout::Currency,
    payouts::{PayoutDoc, PayoutSource, PayoutStatus},
    queue::Priority,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /api/v1/nodes/{node_id}/payouts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutIn {
    /// Decimal string, e.g. `"12.50"` (a JSON number would lose precision):
    /// 1 to 10,000, at most the currency's decimals (USDT 6, LUCID 18).
    pub amount: String,
    /// `USDT` or `LUCID`.
    pub currency: Currency,
    /// USDT: a TRON address (T…, base58check); LUCID: `0x` + 40 hex (EIP-55 when mixed case).
    pub wallet_address: String,
    /// `low`, `normal` (default), `high` or `urgent` (drains first).
    pub priority: Option<Priority>,
    /// Rail retries before the payout fails (default 3, at most 5).
    pub max_retries: Option<u32>,
}

/// One payout of `POST /api/v1/nodes/payouts/batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPayoutIn {
    /// The node paid.
    pub node_id: String,
    /// As in [`PayoutIn`].
    pub amount: String,
    /// As in [`PayoutIn`].
    pub currency: Currency,
    /// As in [`PayoutIn`].
    pub wallet_address: String,
    /// As in [`PayoutIn`].
    pub priority: Option<Priority>,
    /// As in [`PayoutIn`].
    pub max_retries: Option<u32>,
}

impl BatchPayoutIn {
    /// The node and the payout.
    pub fn split(self) -> (String, PayoutIn) {
        (
            self.node_id,
            PayoutIn {
                amount: self.amount,
                currency: self.currency,
                wallet_address: self.wallet_address,
                priority: self.priority,
                max_retries: self.max_retries,
            },
        )
    }
}

/// Body of `POST /api/v1/nodes/payouts/batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutBatchIn {
    /// Optional id `batch_[A-Za-z0-9_-]{1,64}`; resubmitting the same batch
    /// is a replay, another body under the same id is 409.
    pub batch_id: Option<String>,
    /// 1 to 1,000 payouts.
    pub payouts: Vec<BatchPayoutIn>,
}

/// Answer of a batch submission.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PayoutBatchAccepted {
    /// Batch id.
    pub batch_id: String,
    /// Where to poll the status.
    pub status_url: String,
    /// Payouts in the batch.
    pub total: u64,
}

/// A payout as the API shows it. Amounts are exact decimal strings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayoutOut {
    /// Payout id.
    pub payout_id: String,
    /// The node paid.
    pub node_id: String,
    /// Amount owed.
    pub amount: String,
    /// Fee: 1 % clamped to [0.1, 10].
    pub fee: String,
    /// What reaches the wallet: amount − fee.
    pub net: String,
    /// Currency.
    pub currency: Currency,
    /// Destination wallet.
    pub wallet_address: String,
    /// Queue priority.
    pub priority: Priority,
    /// Status.
    pub status: PayoutStatus,
    /// Rail failures retried so far.
    pub retry_count: u32,
    /// Rail retries allowed.
    pub max_retries: u32,
    /// Source of the funds.
    pub source: PayoutSource,
    /// Batch, if any.
    pub batch_id: Option<String>,
    /// The rail's transaction hash, once paid.
    pub tx_hash: Option<String>,
    /// The payment rail (`simulated`: no real money moves).
    pub rail: String,
    /// The last rail error.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Processing started.
    pub started_at: Option<DateTime<Utc>>,
    /// Completed, failed or cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// Processing time (started → completed), ms.
    pub processing_ms: Option<i64>,
}

impl From<PayoutDoc> for PayoutOut {
    fn from(p: PayoutDoc) -> Self {
        Self {
            payout_id: p.payout_id,
            node_id: p.node_id,
            amount: p.amount.normalize().to_string(),
            fee: p.fee.normalize().to_string(),
            net: p.net.normalize().to_string(),
            currency: p.currency,
            wallet_address: p.wallet_address,
            priority: p.priority,
            status: p.status,
            retry_count: p.retry_count,
            max_retries: p.max_retries,
            source: p.source,
            batch_id: p.batch_id,
            tx_hash: p.tx_hash,
            rail: p.rail,
            last_error: p.last_error,
            created_at: p.created_at.to_chrono(),
            updated_at: p.updated_at.to_chrono(),
            started_at: p.started_at.map(|t| t.to_chrono()),
            finished_at: p.finished_at.map(|t| t.to_chrono()),
            processing_ms: p.processing_ms,
        }
    }
}

/// A page of payouts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PayoutPage {
    /// Payouts, newest first.
    pub items: Vec<PayoutOut>,
    /// Page, from 1.
    pub page: u64,
    /// Page size.
    pub page_size: u64,
    /// Matching payouts.
    pub total: u64,
}

/// Filters of `GET /api/v1/nodes/{node_id}/payouts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PayoutQuery {
    /// Status.
    pub status: Option<PayoutStatus>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Batch.
    pub batch_id: Option<String>,
    /// Page, from 1.
    pub page: Option<u64>,
    /// Page size, 1–100.
    pub page_size: Option<u64>,
}

/// Filters of `GET /api/v1/nodes/payouts/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only this node's payouts.
    pub node_id: Option<String>,
    /// Only this currency.
    pub currency: Option<Currency>,
}
