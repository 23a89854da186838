//! The auto-scaling rule, as a pure function of what an evaluation observed.
//!
//! With `mean` the mean CPU % of the pool's active nodes over the window
//! (each reporting node weighs the same), `active` the number of active
//! nodes and `target` the pool's `target_cpu_percent`:
//! - `mean > scale_up_threshold`, `active < max_nodes`, and the cooldowns have
//!   passed → scale up to `min(max_nodes, ceil(active · mean / target))`;
//! - `mean < scale_down_threshold`, `active > min_nodes`, and the cooldowns
//!   have passed → scale down to `max(min_nodes, ceil(active · mean / target))`;
//! - otherwise no change, with the reason.
//!
//! Cooldowns: `scale_up_cooldown` minutes since the last scale-up,
//! `scale_down_cooldown` since the last scale-down, and the policy's
//! `cooldown_minutes` since the last scaling event of either direction
//! (no flapping). No node reporting in the window means no decision.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::pool::AutoScaling;

/// Direction of a scaling event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDirection {
    /// Start nodes.
    ScaleUp,
    /// Stop nodes.
    ScaleDown,
}

impl ScaleDirection {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
        }
    }
}

/// What an evaluation observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Observation {
    /// Active nodes of the pool.
    pub active_nodes: u32,
    /// Active nodes with at least one sample in the window.
    pub reporting_nodes: u32,
    /// Samples in the window.
    pub samples: u64,
    /// Mean CPU % (mean of the reporting nodes' means); `None` without samples.
    pub mean_cpu_percent: Option<f64>,
    /// Window length in minutes.
    pub window_minutes: u32,
}

/// When the pool last scaled (events of any status but `failed`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LastEvents {
    /// Last scale-up.
    pub scale_up: Option<DateTime<Utc>>,
    /// Last scale-down.
    pub scale_down: Option<DateTime<Utc>>,
}

impl LastEvents {
    fn any(&self) -> Option<DateTime<Utc>> {
        self.scale_up.max(self.scale_down)
    }
}

/// The outcome of the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Change the number of active nodes.
    Scale {
        /// Direction.
        direction: ScaleDirection,
        /// Active nodes now.
        current_nodes: u32,
        /// Active nodes wanted.
        target_nodes: u32,
        /// Why, in words.
        reason: String,
    },
    /// No change.
    None {
        /// Why not.
        reason: String,
    },
    /// Not enough data to decide.
    NoDecision {
        /// Why not.
        reason: String,
    },
}

impl Decision {
    /// The reason, whatever the decision.
    pub fn reason(&self) -> &str {
        match self {
            Self::Scale { reason, .. } | Self::None { reason } | Self::NoDecision { reason } => {
                reason
            }
        }
    }
}

fn cooling(last: Option<DateTime<Utc>>, minutes: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let until = last? + Duration::minutes(i64::from(minutes));
    (now < until).then_some(until)
}

/// `ceil(active · mean / target)`, computed so that exact products do not
/// round up through floating-point noise.
fn needed(active: u32, mean: f64, target: f64) -> u32 {
    let raw = f64::from(active) * mean / target;
    let rounded = raw.round();
    let n = if (raw - rounded).abs() < 1e-9 {
        rounded
    } else {
        raw.ceil()
    };
    n.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Applies the rule. `auto` must be enabled with a policy.
pub fn decide(
    auto: &AutoScaling,
    obs: &Observation,
    last: LastEvents,
    now: DateTime<Utc>,
) -> Decision {
    let Some(policy) = auto.policy.as_ref().filter(|_| auto.enabled) else {
        return Decision::NoDecision {
            reason: "auto-scaling is disabled".into(),
        };
    };
    let Some(mean) = obs.mean_cpu_percent.filter(|_| obs.reporting_nodes > 0) else {
        return Decision::NoDecision {
            reason: format!(
                "no active node reported CPU samples in the last {} minutes",
                obs.window_minutes
            ),
        };
    };
    let active = obs.active_nodes;
    let target = auto.target_cpu_percent;
    let up = mean > policy.scale_up_threshold;
    let down = mean < policy.scale_down_threshold;
    if !up && !down {
        return Decision::None {
            reason: format!(
                "mean CPU {mean:.2}% is within [{}, {}]",
                policy.scale_down_threshold, policy.scale_up_threshold
            ),
        };
    }
    let (direction, bound_ok, own_cooldown, own_last) = if up {
        (
            ScaleDirection::ScaleUp,
            active < policy.max_nodes,
            auto.scale_up_cooldown,
            last.scale_up,
        )
    } else {
        (
            ScaleDirection::ScaleDown,
            active > policy.min_nodes,
            auto.scale_down_cooldown,
            last.scale_down,
        )
    };
    if !bound_ok {
        return Decision::None {
            reason: if up {
                format!(
                    "mean CPU {mean:.2}% is above {} but the pool is at max_nodes {}",
                    policy.scale_up_threshold, policy.max_nodes
                )
            } else {
                format!(
                    "mean CPU {mean:.2}% is below {} but the pool is at min_nodes {}",
                    policy.scale_down_threshold, policy.min_nodes
                )
            },
        };
    }
    if let Some(until) = cooling(own_last, own_cooldown, now) {
        return Decision::None {
            reason: format!(
                "{} cooldown ({own_cooldown} min) until {}",
                direction.as_str(),
                until.to_rfc3339()
            ),
        };
    }
    if let Some(until) = cooling(last.any(), policy.cooldown_minutes, now) {
        return Decision::None {
            reason: format!(
                "policy cooldown ({} min) until {}",
                policy.cooldown_minutes,
                until.to_rfc3339()
            ),
        };
    }
    let wanted = needed(active, mean, target);
    let target_nodes = if up {
        wanted.min(policy.max_nodes)
    } else {
        wanted.max(policy.min_nodes)
    };
    if target_nodes == active {
        return Decision::None {
            reason: format!(
                "mean CPU {mean:.2}% crosses a threshold but ceil({active} × {mean:.2} / {target}) keeps {active} nodes"
            ),
        };
    }
    Decision::Scale {
        direction,
        current_nodes: active,
        target_nodes,
        reason: format!(
            "mean CPU {mean:.2}% over {} min is {} {}; target {target}%",
            obs.window_minutes,
            if up { "above" } else { "below" },
            if up {
                policy.scale_up_threshold
            } else {
                policy.scale_down_threshold
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pool::ScalingPolicy;

    fn auto(min: u32, max: u32) -> AutoScaling {
        AutoScaling {
            enabled: true,
            policy: Some(ScalingPolicy {
                scale_up_threshold: 80.0,
                scale_down_threshold: 30.0,
                min_nodes: min,
                max_nodes: max,
                cooldown_minutes: 2,
            }),
            target_cpu_percent: 70.0,
            scale_up_cooldown: 5,
            scale_down_cooldown: 10,
        }
    }

    fn obs(active: u32, mean: Option<f64>) -> Observation {
        Observation {
            active_nodes: active,
            reporting_nodes: if mean.is_some() { active } else { 0 },
            samples: if mean.is_some() { 10 } else { 0 },
            mean_cpu_percent: mean,
            window_minutes: 5,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn target(d: &Decision) -> Option<(ScaleDirection, u32, u32)> {
        match d {
            Decision::Scale {
                direction,
                current_nodes,
                target_nodes,
                ..
            } => Some((*direction, *current_nodes, *target_nodes)),
            _ => None,
        }
    }

    #[test]
    fn hot_pool_scales_up_to_ceil_of_load_over_target() {
        // ceil(4 × 90 / 70) = ceil(5.14) = 6
        let d = decide(
            &auto(1, 10),
            &obs(4, Some(90.0)),
            LastEvents::default(),
            now(),
        );
        assert_eq!(target(&d), Some((ScaleDirection::ScaleUp, 4, 6)), "{d:?}");
    }

    #[test]
    fn scale_up_is_capped_at_max_nodes() {
        let d = decide(
            &auto(1, 5),
            &obs(4, Some(95.0)),
            LastEvents::default(),
            now(),
        );
        assert_eq!(target(&d), Some((ScaleDirection::ScaleUp, 4, 5)));
        let d = decide(
            &auto(1, 4),
            &obs(4, Some(95.0)),
            LastEvents::default(),
            now(),
        );
        assert!(
            matches!(d, Decision::None { ref reason } if reason.contains("max_nodes")),
            "{d:?}"
        );
    }

    #[test]
    fn cold_pool_scales_down_but_not_below_min_nodes() {
        // ceil(6 × 20 / 70) = ceil(1.71) = 2
        let d = decide(
            &auto(1, 10),
            &obs(6, Some(20.0)),
            LastEvents::default(),
            now(),
        );
        assert_eq!(target(&d), Some((ScaleDirection::ScaleDown, 6, 2)));
        let d = decide(
            &auto(3, 10),
            &obs(6, Some(20.0)),
            LastEvents::default(),
            now(),
        );
        assert_eq!(target(&d), Some((ScaleDirection::ScaleDown, 6, 3)));
        let d = decide(
            &auto(6, 10),
            &obs(6, Some(5.0)),
            LastEvents::default(),
            now(),
        );
        assert!(
            matches!(d, Decision::None { ref reason } if reason.contains("min_nodes")),
            "{d:?}"
        );
    }

    #[test]
    fn thresholds_are_strict() {
        for mean in [80.0, 30.0, 55.0] {
            let d = decide(
                &auto(1, 10),
                &obs(4, Some(mean)),
                LastEvents::default(),
                now(),
            );
            assert!(matches!(d, Decision::None { .. }), "{mean}: {d:?}");
        }
    }

    #[test]
    fn an_exact_product_is_not_rounded_up() {
        // 7 × 80.5 / 70 = 8.05: rounds up to 9.
        let d = decide(
            &auto(1, 20),
            &obs(7, Some(80.5)),
            LastEvents::default(),
            now(),
        );
        assert_eq!(
            target(&d),
            Some((ScaleDirection::ScaleUp, 7, 9)),
            "just above 8 rounds up"
        );
        let mut a = auto(1, 20);
        a.target_cpu_percent = 45.0;
        // 2 × 90 / 45 = 4 exactly.
        let d = decide(&a, &obs(2, Some(90.0)), LastEvents::default(), now());
        assert_eq!(target(&d), Some((ScaleDirection::ScaleUp, 2, 4)));
    }

    #[test]
    fn a_threshold_crossing_that_keeps_the_count_is_no_change() {
        let mut a = auto(1, 10);
        a.target_cpu_percent = 90.0;
        // ceil(2 × 85 / 90) = 2.
        let d = decide(&a, &obs(2, Some(85.0)), LastEvents::default(), now());
        assert!(
            matches!(d, Decision::None { ref reason } if reason.contains("keeps 2")),
            "{d:?}"
        );
    }

    #[test]
    fn no_samples_means_no_decision() {
        let d = decide(&auto(1, 10), &obs(4, None), LastEvents::default(), now());
        assert!(
            matches!(d, Decision::NoDecision { ref reason } if reason.contains("5 minutes")),
            "{d:?}"
        );
        let d = decide(&auto(1, 10), &obs(0, None), LastEvents::default(), now());
        assert!(matches!(d, Decision::NoDecision { .. }));
    }

    #[test]
    fn cooldowns_block_until_they_pass() {
        let a = auto(1, 10);
        let hot = obs(4, Some(90.0));
        let cold = obs(6, Some(20.0));
        let at = |m: i64| Some(now() - Duration::minutes(m));
        // Scale-up cooldown 5 min since the last scale-up.
        let last = LastEvents {
            scale_up: at(4),
            scale_down: None,
        };
        assert!(
            matches!(decide(&a, &hot, last, now()), Decision::None { ref reason } if reason.contains("scale_up cooldown"))
        );
        let last = LastEvents {
            scale_up: at(5),
            scale_down: None,
        };
        assert!(
            target(&decide(&a, &hot, last, now())).is_some(),
            "exactly 5 min later it may scale"
        );
        // Scale-down cooldown 10 min since the last scale-down.
        let last = LastEvents {
            scale_up: None,
            scale_down: at(9),
        };
        assert!(
            matches!(decide(&a, &cold, last, now()), Decision::None { ref reason } if reason.contains("scale_down cooldown"))
        );
        // A recent scale-down does not block a scale-up after the policy cooldown (2 min)...
        let last = LastEvents {
            scale_up: None,
            scale_down: at(3),
        };
        assert!(target(&decide(&a, &hot, last, now())).is_some());
        // ...but does within it.
        let last = LastEvents {
            scale_up: None,
            scale_down: at(1),
        };
        assert!(
            matches!(decide(&a, &hot, last, now()), Decision::None { ref reason } if reason.contains("policy cooldown"))
        );
    }

    #[test]
    fn disabled_auto_scaling_decides_nothing() {
        let mut a = auto(1, 10);
        a.enabled = false;
        let d = decide(&a, &obs(4, Some(99.0)), LastEvents::default(), now());
        assert!(matches!(d, Decision::NoDecision { .. }));
    }
}
