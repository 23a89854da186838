//! The payout ledger: double-entry bookkeeping in PostgreSQL, the source of
//! truth for money.
//!
//! Accounts are (kind, node, currency); journal entries carry a unique key
//! and balance to zero per currency, which the database enforces at commit
//! (see `migrations/`). Posting an entry whose key exists is a no-op, so a
//! job that re-runs a step writes it once. Balances are sums of postings.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::domain::payout::Currency;

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database refused or could not be reached.
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("ledger migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The entry given is not well formed.
    #[error("invalid journal entry: {0}")]
    Invalid(String),
}

impl LedgerError {
    /// Whether PostgreSQL could not be reached or dropped the connection
    /// (down, restarting, failing over): the same call succeeds once it is
    /// back, so callers wait instead of failing the work for good.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if is_connection_error(e))
    }
}

/// Whether `e` means the database was unreachable rather than that it
/// refused the statement: I/O and TLS errors, a pool that could not open a
/// connection in time, and the SQLSTATE classes 08 (connection exception)
/// and 57P (operator intervention: shutdown, crash, cannot connect now).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Kinds of account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Funds the network pays manual payouts from (one per currency).
    Treasury,
    /// Reserved for a node's payout in flight (one per node and currency).
    Payable,
    /// Fees collected (one per currency).
    Fees,
    /// What left through the payment rail (one per currency).
    PaidOut,
    /// A node's unpaid earnings (one per node and currency).
    Earnings,
    /// The reward pool earnings are accrued from (one per currency).
    Rewards,
}

impl AccountKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Treasury => "treasury",
            Self::Payable => "payable",
            Self::Fees => "fees",
            Self::PaidOut => "paid_out",
            Self::Earnings => "earnings",
            Self::Rewards => "rewards",
        }
    }
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// Kind.
    pub kind: AccountKind,
    /// Node, for payable and earnings accounts.
    pub node_id: Option<String>,
    /// Currency.
    pub currency: Currency,
}

impl Account {
    /// A network account (treasury, fees, paid_out, rewards).
    pub fn network(kind: AccountKind, currency: Currency) -> Self {
        Self {
            kind,
            node_id: None,
            currency,
        }
    }

    /// A node's account (payable, earnings).
    pub fn node(kind: AccountKind, node_id: &str, currency: Currency) -> Self {
        Self {
            kind,
            node_id: Some(node_id.to_string()),
            currency,
        }
    }
}

/// Kinds of journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Processing starts: source → node payable.
    Reserve,
    /// The rail paid: payable → paid out + fees.
    Settle,
    /// Final failure: payable → source.
    Reverse,
    /// Earnings of an epoch: rewards → node earnings.
    Accrue,
    /// Money into the treasury or the reward pool.
    Fund,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Settle => "settle",
            Self::Reverse => "reverse",
            Self::Accrue => "accrue",
            Self::Fund => "fund",
        }
    }
}

/// An entry to post.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Unique key: posting it again is a no-op.
    pub key: String,
    /// Kind.
    pub kind: EntryKind,
    /// The payout it belongs to.
    pub payout_id: Option<String>,
    /// The rail's transaction hash (settlements).
    pub tx_hash: Option<String>,
    /// Signed amounts per account; they must sum to zero per currency.
    pub postings: Vec<(Account, Decimal)>,
}

/// The ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
}

impl Ledger {
    /// Connects to `url` with `schema` as the search path (created if
    /// missing) and runs the migrations. Connections are opened lazily, so
    /// a process starts (and reports not ready) while PostgreSQL is down.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, LedgerError> {
        let ledger = Self::connect_lazy(url, schema)?;
        ledger.migrate(schema).await?;
        Ok(ledger)
    }

    /// The pool without touching the database.
    pub fn connect_lazy(url: &str, schema: &str) -> Result<Self, LedgerError> {
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(std::time::Duration::from_secs(5))
            // Closed before load balancers and NAT cut idle connections
            // (300-350 s); sqlx also tests a connection before lending it.
            .idle_timeout(crate::storage::MAX_IDLE_TIME)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Creates the schema and runs the migrations (safe on every start, and
    /// concurrently: `CREATE SCHEMA IF NOT EXISTS` alone can fail with a
    /// unique violation when two processes race, so it runs under a
    /// transaction-scoped advisory lock keyed by the schema's name; sqlx
    /// serialises the migrations themselves with its own lock).
    pub async fn migrate(&self, schema: &str) -> Result<(), LedgerError> {
        if schema != "public" {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('lucid-ledger-schema:' || $1))")
                .bind(schema)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// The connection pool (readiness checks, the simulated rail).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Posts `entry` in one transaction; `Ok(false)` when its key was already posted.
    pub async fn post(&self, entry: &NewEntry) -> Result<bool, LedgerError> {
        let started = std::time::Instant::now();
        let result = self.post_entry(entry).await;
        crate::metrics::store_call("postgres", "post_entry", started.elapsed());
        result
    }

    async fn post_entry(&self, entry: &NewEntry) -> Result<bool, LedgerError> {
        if entry.postings.len() < 2 {
            return Err(LedgerError::Invalid(format!(
                "{}: needs at least two postings",
                entry.key
            )));
        }
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO journal_entries (key, kind, payout_id, tx_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .bind(&entry.key)
        .bind(entry.kind.as_str())
        .bind(&entry.payout_id)
        .bind(&entry.tx_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(entry_id) = id else {
            tx.rollback().await?;
            return Ok(false);
        };
        for (account, amount) in &entry.postings {
            let account_id = account_id(&mut tx, account).await?;
            sqlx::query(
                "INSERT INTO postings (entry_id, account_id, currency, amount) VALUES ($1, $2, $3, $4)",
            )
            .bind(entry_id)
            .bind(account_id)
            .bind(account.currency.as_str())
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// An account's balance (sum of its postings; 0 when it has none).
    pub async fn balance(&self, account: &Account) -> Result<Decimal, LedgerError> {
        let sum: Option<Decimal> = sqlx::query_scalar(
            "SELECT sum(p.amount) FROM postings p JOIN ledger_accounts a ON a.id = p.account_id
             WHERE a.kind = $1 AND a.node_id = $2 AND a.currency = $3",
        )
        .bind(account.kind.as_str())
        .bind(account.node_id.as_deref().unwrap_or(""))
        .bind(account.currency.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(sum.unwrap_or_default().normalize())
    }

    /// The kinds of the entries posted for a payout, oldest first.
    pub async fn payout_entries(&self, payout_id: &str) -> Result<Vec<String>, LedgerError> {
        let rows = sqlx::query("SELECT kind FROM journal_entries WHERE payout_id = $1 ORDER BY id")
            .bind(payout_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>("kind")).collect())
    }

    /// Sum of every posting per currency: zero when the books balance.
    pub async fn trial_balance(&self) -> Result<Vec<(String, Decimal)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT currency, sum(amount) AS total FROM postings GROUP BY currency ORDER BY currency",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("currency"), r.get::<Decimal, _>("total")))
            .collect())
    }
}

/// The id of `account`, created on first use. Reads first, so posting to a
/// busy account (the treasury) takes no row lock on it.
async fn account_id(
    tx: &mut Transaction<'_, Postgres>,
    account: &Account,
) -> Result<i64, sqlx::Error> {
    let (kind, node, currency) = (
        account.kind.as_str(),
        account.node_id.as_deref().unwrap_or(""),
        account.currency.as_str(),
    );
    for _ in 0..2 {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM ledger_accounts WHERE kind = $1 AND node_id = $2 AND currency = $3",
        )
        .bind(kind)
        .bind(node)
        .bind(currency)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = found {
            return Ok(id);
        }
        let created: Option<i64> = sqlx::query_scalar(
            "INSERT INTO ledger_accounts (kind, node_id, currency) VALUES ($1, $2, $3)
             ON CONFLICT (kind, node_id, currency) DO NOTHING RETURNING id",
        )
        .bind(kind)
        .bind(node)
        .bind(currency)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = created {
            return Ok(id);
        }
    }
    Err(sqlx::Error::RowNotFound)
}
