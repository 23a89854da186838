//! Payouts to node operators: documents (MongoDB, what the API serves), the
//! payout job (queue `payouts`), the payment rail, and the ledger steps each
//! payout writes (PostgreSQL, the source of truth for money).

pub mod earnings;
pub mod gateway;
pub mod job;
pub mod repo;
pub mod stats;

use mongodb::bson;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::payout::{Currency, FeeSchedule},
    ledger::{Account, AccountKind, EntryKind, NewEntry},
    queue::Priority,
};

/// Payouts.
pub const PAYOUTS: &str = "payouts";
/// Payout batches.
pub const PAYOUT_BATCHES: &str = "payout_batches";

/// Where a payout stands: pending → processing → completed | failed; pending → cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// Queued.
    Pending,
    /// A worker took it: funds reserved, the rail is being called.
    Processing,
    /// Paid: settled in the ledger with the rail's transaction hash.
    Completed,
    /// Failed for good after its retries; the reservation was reversed.
    Failed,
    /// Cancelled before processing.
    Cancelled,
}

impl PayoutStatus {
    /// Every status.
    pub const ALL: [PayoutStatus; 5] = [
        Self::Pending,
        Self::Processing,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// No further change.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What a payout pays out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutSource {
    /// Requested over the API: paid from the treasury.
    Manual,
    /// Created by earnings accrual: paid from the node's earnings.
    Earnings,
}

/// Payout settings (`LUCID_PAYOUTS__<FIELD>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PayoutSettings {
    /// Amount limits and fee schedule.
    #[serde(flatten)]
    pub fees: FeeSchedule,
    /// Default rail retries of a payout (at most 5).
    pub max_retries: u32,
    /// The payment rail; only `simulated` exists.
    pub rail: String,
    /// Simulated rail: share of calls that fail (0..=1).
    pub rail_failure_rate: f64,
    /// Simulated rail: delay of every call, in ms (a large value simulates a hang).
    pub rail_delay_ms: u64,
    /// How long a rail call may take before it counts as failed.
    pub rail_timeout_ms: u64,
    /// Unpaid earnings from which an earnings payout is created.
    pub earnings_threshold: Decimal,
    /// USDT split across nodes per epoch (day).
    pub reward_pool_usdt: Decimal,
    /// LUCID split across nodes per epoch (day).
    pub reward_pool_lucid: Decimal,
}

impl PayoutSettings {
    /// The epoch reward pool of `currency`.
    pub fn reward_pool(&self, currency: Currency) -> Decimal {
        match currency {
            Currency::Usdt => self.reward_pool_usdt,
            Currency::Lucid => self.reward_pool_lucid,
        }
    }
}

impl Default for PayoutSettings {
    fn default() -> Self {
        Self {
            fees: FeeSchedule::default(),
            max_retries: 3,
            rail: "simulated".into(),
            rail_failure_rate: 0.0,
            rail_delay_ms: 0,
            rail_timeout_ms: 10_000,
            earnings_threshold: Decimal::TEN,
            reward_pool_usdt: Decimal::from(1_000),
            reward_pool_lucid: Decimal::ZERO,
        }
    }
}

/// A payout as stored (`payouts`). Amounts are exact decimal strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutDoc {
    /// Payout id.
    #[serde(rename = "_id")]
    pub payout_id: String,
    /// The node paid.
    pub node_id: String,
    /// Currency.
    pub currency: Currency,
    /// Amount owed.
    pub amount: Decimal,
    /// Fee.
    pub fee: Decimal,
    /// What reaches the wallet.
    pub net: Decimal,
    /// Destination wallet.
    pub wallet_address: String,
    /// Queue priority.
    pub priority: Priority,
    /// Status.
    pub status: PayoutStatus,
    /// Rail failures retried so far (≤ `max_retries`).
    pub retry_count: u32,
    /// Rail retries allowed.
    pub max_retries: u32,
    /// Queue attempt of the last recorded rail failure (so a re-run counts it once).
    pub last_failed_attempt: u32,
    /// Source of the funds.
    pub source: PayoutSource,
    /// Batch, when submitted in one.
    pub batch_id: Option<String>,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// sha256 of the request that created it (idempotent replays).
    pub request_hash: Option<String>,
    /// The rail's transaction hash, once paid.
    pub tx_hash: Option<String>,
    /// The rail (`simulated`).
    pub rail: String,
    /// The last rail error.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: bson::DateTime,
    /// Last change.
    pub updated_at: bson::DateTime,
    /// Processing started.
    pub started_at: Option<bson::DateTime>,
    /// Completed, failed or cancelled.
    pub finished_at: Option<bson::DateTime>,
    /// started → completed, in ms.
    pub processing_ms: Option<i64>,
}

impl PayoutDoc {
    fn source_account(&self) -> Account {
        match self.source {
            PayoutSource::Manual => Account::network(AccountKind::Treasury, self.currency),
            PayoutSource::Earnings => {
                Account::node(AccountKind::Earnings, &self.node_id, self.currency)
            }
        }
    }

    fn payable(&self) -> Account {
        Account::node(AccountKind::Payable, &self.node_id, self.currency)
    }

    /// Ledger step when processing starts: source → node payable.
    pub fn reserve_entry(&self) -> NewEntry {
        NewEntry {
            key: format!("payout:{}:reserve", self.payout_id),
            kind: EntryKind::Reserve,
            payout_id: Some(self.payout_id.clone()),
            tx_hash: None,
            postings: vec![
                (self.source_account(), -self.amount),
                (self.payable(), self.amount),
            ],
        }
    }

    /// Ledger step once the rail paid: payable → paid out (net) + fees.
    pub fn settle_entry(&self, tx_hash: &str) -> NewEntry {
        let mut postings = vec![
            (self.payable(), -self.amount),
            (
                Account::network(AccountKind::PaidOut, self.currency),
                self.net,
            ),
        ];
        if !self.fee.is_zero() {
            postings.push((Account::network(AccountKind::Fees, self.currency), self.fee));
        }
        NewEntry {
            key: format!("payout:{}:settle", self.payout_id),
            kind: EntryKind::Settle,
            payout_id: Some(self.payout_id.clone()),
            tx_hash: Some(tx_hash.to_string()),
            postings,
        }
    }

    /// Ledger step on final failure: payable → source.
    pub fn reverse_entry(&self) -> NewEntry {
        NewEntry {
            key: format!("payout:{}:reverse", self.payout_id),
            kind: EntryKind::Reverse,
            payout_id: Some(self.payout_id.clone()),
            tx_hash: None,
            postings: vec![
                (self.payable(), -self.amount),
                (self.source_account(), self.amount),
            ],
        }
    }
}

/// What a new payout needs (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewPayout {
    /// Payout id.
    pub payout_id: String,
    /// The node paid.
    pub node_id: String,
    /// Currency.
    pub currency: Currency,
    /// Amount, fee and net.
    pub charges: crate::domain::payout::Charges,
    /// Destination wallet.
    pub wallet_address: String,
    /// Queue priority.
    pub priority: Priority,
    /// Rail retries allowed.
    pub max_retries: u32,
    /// Source of the funds.
    pub source: PayoutSource,
    /// Batch, if any.
    pub batch_id: Option<String>,
    /// Idempotency key and request hash, if any.
    pub idempotency: Option<(String, String)>,
    /// The rail.
    pub rail: String,
}

impl From<NewPayout> for PayoutDoc {
    fn from(n: NewPayout) -> Self {
        let now = bson::DateTime::now();
        let (idempotency_key, request_hash) = n.idempotency.unzip();
        Self {
            payout_id: n.payout_id,
            node_id: n.node_id,
            currency: n.currency,
            amount: n.charges.amount,
            fee: n.charges.fee,
            net: n.charges.net,
            wallet_address: n.wallet_address,
            priority: n.priority,
            status: PayoutStatus::Pending,
            retry_count: 0,
            max_retries: n.max_retries,
            last_failed_attempt: 0,
            source: n.source,
            batch_id: n.batch_id,
            idempotency_key,
            request_hash,
            tx_hash: None,
            rail: n.rail,
            last_error: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            processing_ms: None,
        }
    }
}
