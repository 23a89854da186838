//! The payment rail behind a small trait, and its one implementation here:
//! a SIMULATED TRON/LUCID rail.

use std::{fmt, time::Duration};

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::domain::payout::Currency;

/// A transfer to make.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The payout: the rail's idempotency key.
    pub payout_id: String,
    /// Currency.
    pub currency: Currency,
    /// Destination.
    pub wallet: String,
    /// Amount that reaches the wallet.
    pub amount: Decimal,
}

/// Why the rail did not pay.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The rail refused or failed this call; another call may succeed.
    #[error("rail refused the transfer: {0}")]
    Refused(String),
    /// The rail could not be reached or its own storage failed: the call
    /// did not happen (or is idempotent), so it is no rail failure and does
    /// not count as one of the payout's retries.
    #[error("rail unavailable: {0}")]
    Unavailable(String),
}

impl GatewayError {
    /// Whether the rail was unreachable (see [`GatewayError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// A payment rail. Both calls must be idempotent by payout id, like a real
/// provider's idempotency key: sending a payout again returns the first
/// transaction hash and pays nothing more.
pub trait PayoutGateway: Send + Sync + fmt::Debug {
    /// The rail's name, shown in logs and on payouts (`simulated`).
    fn name(&self) -> &'static str;
    /// Pays `transfer`; the transaction hash.
    fn send<'a>(&'a self, transfer: &'a Transfer) -> BoxFuture<'a, Result<String, GatewayError>>;
    /// The transaction hash of a payout the rail already paid, if it did.
    fn lookup<'a>(
        &'a self,
        payout_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GatewayError>>;
}

/// A SIMULATED rail: deterministic transaction hashes, dedup by payout id
/// (state in PostgreSQL, shared by every worker), a chosen share of failing
/// calls, and an optional delay per call (a long one simulates a hang).
#[derive(Debug, Clone)]
pub struct SimulatedRail {
    pool: PgPool,
    failure_rate: f64,
    delay: Duration,
}

impl SimulatedRail {
    /// A rail over the ledger's pool (tables `simulated_rail_*`).
    pub fn new(pool: PgPool, failure_rate: f64, delay: Duration) -> Self {
        Self {
            pool,
            failure_rate: failure_rate.clamp(0.0, 1.0),
            delay,
        }
    }

    /// Whether call number `call` (from 1) for `payout_id` fails at `rate`:
    /// deterministic, so tests can predict every payout's outcome.
    pub fn call_fails(payout_id: &str, call: u32, rate: f64) -> bool {
        let h = Sha256::digest(format!("{payout_id}:{call}").as_bytes());
        let x = u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        (x as f64 / u64::MAX as f64) < rate
    }

    /// The transaction hash the rail gives a transfer (64 hex, like TRON's).
    pub fn tx_hash(t: &Transfer) -> String {
        hex::encode(Sha256::digest(
            format!(
                "simulated:{}:{}:{}:{}",
                t.currency,
                t.payout_id,
                t.wallet,
                t.amount.normalize()
            )
            .as_bytes(),
        ))
    }

    async fn existing(&self, payout_id: &str) -> Result<Option<String>, GatewayError> {
        sqlx::query_scalar("SELECT tx_hash FROM simulated_rail_transfers WHERE payout_id = $1")
            .bind(payout_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    async fn pay(&self, t: &Transfer) -> Result<String, GatewayError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(tx) = self.existing(&t.payout_id).await? {
            return Ok(tx);
        }
        let unavailable = |e: sqlx::Error| GatewayError::Unavailable(e.to_string());
        let call: i32 = sqlx::query_scalar(
            "INSERT INTO simulated_rail_calls (payout_id, calls) VALUES ($1, 1)
             ON CONFLICT (payout_id) DO UPDATE SET calls = simulated_rail_calls.calls + 1
             RETURNING calls",
        )
        .bind(&t.payout_id)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        if Self::call_fails(&t.payout_id, call as u32, self.failure_rate) {
            return Err(GatewayError::Refused(format!(
                "simulated failure of call {call}"
            )));
        }
        let tx: String = sqlx::query_scalar(
            "INSERT INTO simulated_rail_transfers (payout_id, currency, wallet, amount, tx_hash)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (payout_id) DO UPDATE SET payout_id = EXCLUDED.payout_id
             RETURNING tx_hash",
        )
        .bind(&t.payout_id)
        .bind(t.currency.as_str())
        .bind(&t.wallet)
        .bind(t.amount)
        .bind(Self::tx_hash(t))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        tracing::info!(payout_id = %t.payout_id, rail = "simulated", %tx, "simulated transfer");
        Ok(tx)
    }
}

impl PayoutGateway for SimulatedRail {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn send<'a>(&'a self, transfer: &'a Transfer) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.pay(transfer))
    }

    fn lookup<'a>(
        &'a self,
        payout_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, GatewayError>> {
        Box::pin(self.existing(payout_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_share_of_calls_is_close_to_the_rate() {
        let fails = (0..10_000)
            .filter(|i| SimulatedRail::call_fails(&format!("pay_{i}"), 1, 0.1))
            .count();
        assert!((800..1200).contains(&fails), "{fails}");
        assert!(!SimulatedRail::call_fails("pay_x", 1, 0.0));
        assert!(SimulatedRail::call_fails("pay_x", 1, 1.0));
    }
}
