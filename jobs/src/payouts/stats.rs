//! Views computed over payout documents: statistics, the queue, a batch.
//! Sums are exact decimals; processing times are milliseconds.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PayoutDoc, PayoutStatus};

/// Currency → exact amount (a decimal string on the wire).
pub type Amounts = BTreeMap<String, Decimal>;

fn add(m: &mut Amounts, p: &PayoutDoc, amount: Decimal) {
    *m.entry(p.currency.as_str().to_string()).or_default() += amount;
}

fn normalized(mut m: Amounts) -> Amounts {
    m.values_mut().for_each(|v| *v = v.normalize());
    m
}

/// Processing time of completed payouts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProcessingTime {
    /// Completed payouts measured.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: Option<f64>,
    /// 90th percentile (nearest rank), ms.
    pub p90_ms: Option<i64>,
}

/// `GET /api/v1/nodes/payouts/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PayoutStats {
    /// Payouts.
    pub total_count: u64,
    /// Status → count.
    pub counts_by_status: BTreeMap<String, u64>,
    /// Status → currency → sum of amounts.
    #[schema(value_type = Object)]
    pub amounts_by_status: BTreeMap<String, Amounts>,
    /// Currency → fees of completed payouts.
    #[schema(value_type = Object)]
    pub fees_collected: Amounts,
    /// Currency → net paid by completed payouts.
    #[schema(value_type = Object)]
    pub net_paid: Amounts,
    /// Processing time of completed payouts.
    pub processing_time: ProcessingTime,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Statistics of `payouts`.
pub fn stats(payouts: &[PayoutDoc]) -> PayoutStats {
    let mut s = PayoutStats {
        total_count: payouts.len() as u64,
        ..PayoutStats::default()
    };
    for status in PayoutStatus::ALL {
        s.counts_by_status.insert(status.as_str().into(), 0);
    }
    let mut times = Vec::new();
    for p in payouts {
        *s.counts_by_status
            .entry(p.status.as_str().into())
            .or_default() += 1;
        add(
            s.amounts_by_status
                .entry(p.status.as_str().into())
                .or_default(),
            p,
            p.amount,
        );
        if p.status == PayoutStatus::Completed {
            add(&mut s.fees_collected, p, p.fee);
            add(&mut s.net_paid, p, p.net);
            if let Some(ms) = p.processing_ms {
                times.push(ms);
            }
        }
    }
    s.amounts_by_status = s
        .amounts_by_status
        .into_iter()
        .map(|(k, v)| (k, normalized(v)))
        .collect();
    s.fees_collected = normalized(s.fees_collected);
    s.net_paid = normalized(s.net_paid);
    times.sort_unstable();
    s.processing_time = ProcessingTime {
        count: times.len() as u64,
        mean_ms: (!times.is_empty()).then(|| times.iter().sum::<i64>() as f64 / times.len() as f64),
        p90_ms: percentile(&times, 90.0),
    };
    s
}

/// `GET /api/v1/nodes/payouts/queue`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PayoutQueueView {
    /// Pending payouts.
    pub queue_length: u64,
    /// Payouts being processed now.
    pub processing: u64,
    /// Payouts finished (completed or failed) per minute over the last 10 minutes.
    pub processing_rate_per_minute: f64,
    /// queue_length / rate, in seconds; null when nothing finished lately.
    pub estimated_wait_time_seconds: Option<f64>,
    /// Payouts that can run at once: live workers × their concurrency.
    pub processing_capacity: u64,
    /// Live worker processes.
    pub live_workers: u64,
    /// Pending per priority.
    pub priority_distribution: BTreeMap<String, u64>,
    /// Pending per currency.
    pub currency_distribution: BTreeMap<String, u64>,
    /// Oldest pending payout's creation.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Newest pending payout's creation.
    pub newest_pending: Option<DateTime<Utc>>,
}

/// The queue view from the unfinished payouts and those finished in the last 10 minutes.
pub fn queue_view(
    active: &[PayoutDoc],
    finished_last_10_min: u64,
    live_workers: u64,
    concurrency: u64,
) -> PayoutQueueView {
    let mut v = PayoutQueueView {
        live_workers,
        processing_capacity: live_workers * concurrency,
        processing_rate_per_minute: finished_last_10_min as f64 / 10.0,
        ..PayoutQueueView::default()
    };
    for k in ["low", "normal", "high", "urgent"] {
        v.priority_distribution.insert(k.into(), 0);
    }
    for p in active {
        match p.status {
            PayoutStatus::Pending => {
                v.queue_length += 1;
                let prio = serde_json::to_value(p.priority)
                    .ok()
                    .and_then(|x| x.as_str().map(String::from))
                    .unwrap_or_default();
                *v.priority_distribution.entry(prio).or_default() += 1;
                *v.currency_distribution
                    .entry(p.currency.as_str().into())
                    .or_default() += 1;
                let t = p.created_at.to_chrono();
                v.oldest_pending = Some(v.oldest_pending.map_or(t, |o| o.min(t)));
                v.newest_pending = Some(v.newest_pending.map_or(t, |o| o.max(t)));
            }
            PayoutStatus::Processing => v.processing += 1,
            _ => {}
        }
    }
    if v.processing_rate_per_minute > 0.0 {
        v.estimated_wait_time_seconds =
            Some(v.queue_length as f64 / v.processing_rate_per_minute * 60.0);
    }
    v
}

/// `GET /api/v1/nodes/payouts/batch/{batch_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PayoutBatchView {
    /// Batch id.
    pub batch_id: String,
    /// `pending` (nothing started), `processing`, `completed` (every payout
    /// paid) or `completed_with_failures` (all final, some failed or cancelled).
    pub status: String,
    /// Payouts.
    pub total: u64,
    /// Status → count.
    pub counts: BTreeMap<String, u64>,
    /// Currency → sum of amounts.
    #[schema(value_type = Object)]
    pub total_amounts: Amounts,
    /// Currency → sum of completed amounts.
    #[schema(value_type = Object)]
    pub completed_amounts: Amounts,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// First payout taken.
    pub started_at: Option<DateTime<Utc>>,
    /// Last payout finished, once all are final.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The view of a batch from its payouts.
pub fn batch_view(
    batch_id: &str,
    created_at: DateTime<Utc>,
    payouts: &[PayoutDoc],
) -> PayoutBatchView {
    let mut counts: BTreeMap<String, u64> = PayoutStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    let (mut total_amounts, mut completed_amounts) = (Amounts::new(), Amounts::new());
    let mut started_at: Option<DateTime<Utc>> = None;
    let mut finished_at: Option<DateTime<Utc>> = None;
    for p in payouts {
        *counts.entry(p.status.as_str().into()).or_default() += 1;
        add(&mut total_amounts, p, p.amount);
        if p.status == PayoutStatus::Completed {
            add(&mut completed_amounts, p, p.amount);
        }
        if let Some(t) = p.started_at.map(|t| t.to_chrono()) {
            started_at = Some(started_at.map_or(t, |s| s.min(t)));
        }
        if let Some(t) = p.finished_at.map(|t| t.to_chrono()) {
            finished_at = Some(finished_at.map_or(t, |s| s.max(t)));
        }
    }
    let all_final = payouts.iter().all(|p| p.status.is_final());
    let status = if all_final {
        if counts["completed"] == payouts.len() as u64 {
            "completed"
        } else {
            "completed_with_failures"
        }
    } else if payouts.iter().all(|p| p.status == PayoutStatus::Pending) {
        "pending"
    } else {
        "processing"
    };
    PayoutBatchView {
        batch_id: batch_id.to_string(),
        status: status.into(),
        total: payouts.len() as u64,
        counts,
        total_amounts: normalized(total_amounts),
        completed_amounts: normalized(completed_amounts),
        created_at,
        started_at,
        finished_at: if all_final { finished_at } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_p90() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 90.0), Some(9));
        assert_eq!(percentile(&[5], 90.0), Some(5));
        assert_eq!(percentile(&[], 90.0), None);
    }
}
