//! The PoOT score: one place for the formula and every constant.
//!
//! Over a sliding window (7 days by default):
//!
//! - work credits = Σ relay `max(sessions, ceil(bytes / 5 MiB))`
//!   + Σ storage `floor(gb · 10) + chunks · 2` + Σ validation `validated_sessions · 5`;
//! - uptime_ratio = min(uptime_seconds / window_seconds, 1);
//! - a node with credits 0 or uptime_ratio < 0.2 is ineligible and scores 0;
//! - score = 0.25·min(100, session_hours·10) + 0.20·min(100, credits)
//!   + 0.15·min(100, cpu_utilisation_avg) + 0.10·min(100, network_mbps_avg / 10)
//!   + 0.15·(uptime_ratio·100) + 0.10·(session_quality·100) + 0.05·(trust·100),
//!   clamped to [0, 100] and rounded to two decimals;
//! - session_hours: one hour per relay session unless the proof carries a duration;
//! - session_quality = share of the window's slots (120 s) that have a proof;
//! - trust = 1 − refused proofs / all proofs in the window (1 when there are none).
//!
//! Every constant is a field of [`ScoringConfig`], so deployments can tune them.

use serde::{Deserialize, Serialize};

/// Constants of the formula (settings `LUCID_POOT__<FIELD>`; unset fields keep their default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Window length in seconds (7 days).
    pub window_seconds: u64,
    /// Slot length in seconds.
    pub slot_seconds: u64,
    /// Bytes relayed per credit (5 MiB).
    pub bytes_per_credit: u64,
    /// Credits per stored GB.
    pub credits_per_gb: f64,
    /// Credits per stored chunk.
    pub credits_per_chunk: u64,
    /// Credits per validated session.
    pub credits_per_validated_session: u64,
    /// Minimum uptime ratio to be eligible.
    pub min_uptime_ratio: f64,
    /// Weights, in formula order: sessions, credits, cpu, network, uptime, quality, trust.
    pub weights: [f64; 7],
    /// Points per session hour (before the cap of 100).
    pub points_per_session_hour: f64,
    /// Network Mbps per point.
    pub mbps_per_point: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            window_seconds: 7 * 24 * 3600,
            slot_seconds: 120,
            bytes_per_credit: 5 * 1024 * 1024,
            credits_per_gb: 10.0,
            credits_per_chunk: 2,
            credits_per_validated_session: 5,
            min_uptime_ratio: 0.2,
            weights: [0.25, 0.20, 0.15, 0.10, 0.15, 0.10, 0.05],
            points_per_session_hour: 10.0,
            mbps_per_point: 10.0,
        }
    }
}

/// What a node proved in the window, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowInputs {
    /// Relay proofs: (bytes, sessions, duration_seconds if carried).
    pub relays: Vec<(u64, u64, Option<u64>)>,
    /// Storage proofs: (gb, chunks).
    pub storage: Vec<(f64, u64)>,
    /// Σ validated sessions.
    pub validated_sessions: u64,
    /// Σ uptime beacon seconds.
    pub uptime_seconds: u64,
    /// Mean CPU utilisation % from resource samples.
    pub cpu_utilisation_avg: f64,
    /// Mean network throughput in Mbps from resource samples.
    pub network_mbps_avg: f64,
    /// Distinct slots with at least one proof.
    pub slots_with_proof: u64,
    /// Proofs accepted in the window.
    pub accepted_proofs: u64,
    /// Proofs refused in the window (bad signature).
    pub refused_proofs: u64,
}

/// Each component of a score, for `/poot/calculate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreBreakdown {
    /// Work credits.
    pub credits: u64,
    /// Session hours.
    pub session_hours: f64,
    /// Uptime ratio 0..1.
    pub uptime_ratio: f64,
    /// CPU utilisation %.
    pub cpu_utilisation_avg: f64,
    /// Network Mbps.
    pub network_mbps_avg: f64,
    /// Session quality 0..1.
    pub session_quality: f64,
    /// Trust 0..1.
    pub trust: f64,
    /// Whether the node is eligible (credits > 0 and uptime ≥ the minimum).
    pub eligible: bool,
    /// Weighted points per component, in formula order.
    pub components: Vec<f64>,
    /// The score, 0–100, two decimals.
    pub score: f64,
}

/// Work credits of the window.
pub fn credits(inputs: &WindowInputs, c: &ScoringConfig) -> u64 {
    let relay: u64 = inputs
        .relays
        .iter()
        .map(|&(bytes, sessions, _)| sessions.max(bytes.div_ceil(c.bytes_per_credit)))
        .sum();
    let storage: u64 = inputs
        .storage
        .iter()
        .map(|&(gb, chunks)| {
            (gb.max(0.0) * c.credits_per_gb).floor() as u64 + chunks * c.credits_per_chunk
        })
        .sum();
    relay + storage + inputs.validated_sessions * c.credits_per_validated_session
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The score and its components.
pub fn score(inputs: &WindowInputs, c: &ScoringConfig) -> ScoreBreakdown {
    let credits = credits(inputs, c);
    let uptime_ratio = (inputs.uptime_seconds as f64 / c.window_seconds as f64).min(1.0);
    let session_hours: f64 = inputs
        .relays
        .iter()
        .map(|&(_, sessions, duration)| duration.map_or(sessions as f64, |d| d as f64 / 3600.0))
        .sum();
    let slots = (c.window_seconds / c.slot_seconds).max(1);
    let session_quality = (inputs.slots_with_proof as f64 / slots as f64).min(1.0);
    let all = inputs.accepted_proofs + inputs.refused_proofs;
    let trust = if all == 0 {
        1.0
    } else {
        1.0 - inputs.refused_proofs as f64 / all as f64
    };
    let cpu = inputs.cpu_utilisation_avg.clamp(0.0, f64::MAX);
    let net = inputs.network_mbps_avg.clamp(0.0, f64::MAX);
    let eligible = credits > 0 && uptime_ratio >= c.min_uptime_ratio;
    let raw = [
        (session_hours * c.points_per_session_hour).min(100.0),
        (credits as f64).min(100.0),
        cpu.min(100.0),
        (net / c.mbps_per_point).min(100.0),
        uptime_ratio * 100.0,
        session_quality * 100.0,
        trust * 100.0,
    ];
    let components: Vec<f64> = raw.iter().zip(c.weights).map(|(v, w)| v * w).collect();
    let total = if eligible {
        round2(components.iter().sum::<f64>().clamp(0.0, 100.0))
    } else {
        0.0
    };
    ScoreBreakdown {
        credits,
        session_hours,
        uptime_ratio,
        cpu_utilisation_avg: cpu,
        network_mbps_avg: net,
        session_quality,
        trust,
        eligible,
        components,
        score: total,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn full_week() -> WindowInputs {
        WindowInputs {
            uptime_seconds: 604_800,
            ..Default::default()
        }
    }

    #[test]
    fn relay_credits_take_the_larger_of_sessions_and_5_mib_units() {
        let c = ScoringConfig::default();
        let mut i = full_week();
        i.relays = vec![(5 * 1024 * 1024 + 1, 1, None), (0, 7, None)];
        assert_eq!(credits(&i, &c), 2 + 7);
    }

    #[test]
    fn storage_and_validation_credits_follow_the_formula() {
        let c = ScoringConfig::default();
        let mut i = full_week();
        i.storage = vec![(1.55, 3)];
        i.validated_sessions = 4;
        assert_eq!(credits(&i, &c), 15 + 6 + 20);
    }

    #[test]
    fn a_hand_computed_case() {
        let c = ScoringConfig::default();
        let i = WindowInputs {
            relays: vec![(0, 5, None)], // 5 credits, 5 session hours → 50 points
            storage: vec![(2.0, 0)],    // 20 credits
            validated_sessions: 1,      // 5 credits → 30 credits
            uptime_seconds: 302_400,    // ratio 0.5
            cpu_utilisation_avg: 40.0,
            network_mbps_avg: 200.0, // 20 points
            slots_with_proof: 504,   // 504 / 5040 = 0.1
            accepted_proofs: 9,
            refused_proofs: 1, // trust 0.9
        };
        // 0.25·50 + 0.20·30 + 0.15·40 + 0.10·20 + 0.15·50 + 0.10·10 + 0.05·90
        // = 12.5 + 6 + 6 + 2 + 7.5 + 1 + 4.5 = 39.5
        assert_eq!(score(&i, &c).score, 39.5);
    }

    #[test]
    fn ineligible_nodes_score_zero() {
        let c = ScoringConfig::default();
        let mut i = full_week();
        assert_eq!(score(&i, &c).score, 0.0, "no credits");
        i.validated_sessions = 10;
        i.uptime_seconds = 120_000; // < 0.2 of a week
        assert_eq!(score(&i, &c).score, 0.0, "too little uptime");
        i.uptime_seconds = 120_960; // exactly 0.2
        assert!(score(&i, &c).score > 0.0);
    }

    #[test]
    fn duration_overrides_one_hour_per_session() {
        let c = ScoringConfig::default();
        let mut i = full_week();
        i.relays = vec![(0, 4, Some(1800))];
        assert_eq!(score(&i, &c).session_hours, 0.5);
    }

    fn inputs() -> impl Strategy<Value = WindowInputs> {
        (
            proptest::collection::vec(
                (
                    0u64..1 << 40,
                    0u64..1000,
                    proptest::option::of(0u64..1_000_000),
                ),
                0..5,
            ),
            proptest::collection::vec((0.0f64..10_000.0, 0u64..1000), 0..5),
            0u64..1000,
            0u64..2_000_000,
            0.0f64..150.0,
            0.0f64..5000.0,
            0u64..6000,
            0u64..1000,
            0u64..1000,
        )
            .prop_map(|(relays, storage, v, up, cpu, net, slots, acc, refused)| {
                WindowInputs {
                    relays,
                    storage,
                    validated_sessions: v,
                    uptime_seconds: up,
                    cpu_utilisation_avg: cpu,
                    network_mbps_avg: net,
                    slots_with_proof: slots,
                    accepted_proofs: acc,
                    refused_proofs: refused,
                }
            })
    }

    proptest! {
        #[test]
        fn scores_stay_within_0_and_100_with_two_decimals(i in inputs()) {
            let s = score(&i, &ScoringConfig::default()).score;
            prop_assert!((0.0..=100.0).contains(&s));
            prop_assert!(((s * 100.0).round() - s * 100.0).abs() < 1e-6);
        }

        #[test]
        fn more_of_any_input_never_lowers_the_score(i in inputs(), bump in 1u64..500) {
            let c = ScoringConfig::default();
            let base = score(&i, &c).score;
            let mut more = i.clone();
            more.validated_sessions += bump;
            prop_assert!(score(&more, &c).score >= base);
            let mut more = i.clone();
            more.uptime_seconds += bump * 100;
            prop_assert!(score(&more, &c).score >= base);
            let mut more = i.clone();
            more.cpu_utilisation_avg += bump as f64;
            prop_assert!(score(&more, &c).score >= base);
            let mut more = i.clone();
            more.network_mbps_avg += bump as f64;
            prop_assert!(score(&more, &c).score >= base);
            let mut more = i.clone();
            more.slots_with_proof += bump;
            prop_assert!(score(&more, &c).score >= base);
            let mut more = i.clone();
            more.relays.push((0, bump, None));
            prop_assert!(score(&more, &c).score >= base);
            let mut fewer_refused = i.clone();
            fewer_refused.refused_proofs = fewer_refused.refused_proofs.saturating_sub(bump);
            prop_assert!(score(&fewer_refused, &c).score >= base);
        }
    }
}
