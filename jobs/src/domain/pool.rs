//! Node pools and their auto-scaling settings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Check, ValidationErrors, node::ResourceLimits, validation::is_prefixed_id};

/// A pool id: `^pool_[A-Za-z0-9_-]+$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolId(String);

impl PoolId {
    /// Validates a pool id.
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_prefixed_id(s, "pool_") {
            Ok(Self(s.to_string()))
        } else {
            Err("must match ^pool_[A-Za-z0-9_-]+$ (at most 128 characters)".into())
        }
    }
    /// A new random id.
    pub fn generate() -> Self {
        Self(format!("pool_{}", uuid::Uuid::now_v7().simple()))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When to scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicy {
    /// Mean CPU % above which to scale up, 50–95.
    pub scale_up_threshold: f64,
    /// Mean CPU % below which to scale down, 10–50, below `scale_up_threshold`.
    pub scale_down_threshold: f64,
    /// At least 1.
    pub min_nodes: u32,
    /// At least `min_nodes`.
    pub max_nodes: u32,
    /// At least 1.
    pub cooldown_minutes: u32,
}

fn default_target_cpu() -> f64 {
    70.0
}
fn default_up_cooldown() -> u32 {
    5
}
fn default_down_cooldown() -> u32 {
    10
}

/// Auto-scaling settings of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoScaling {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// The rule, required when enabled.
    pub policy: Option<ScalingPolicy>,
    /// Target mean CPU %, 30–90 (default 70).
    #[serde(default = "default_target_cpu")]
    pub target_cpu_percent: f64,
    /// Minutes between scale-ups (default 5).
    #[serde(default = "default_up_cooldown")]
    pub scale_up_cooldown: u32,
    /// Minutes between scale-downs (default 10).
    #[serde(default = "default_down_cooldown")]
    pub scale_down_cooldown: u32,
}

impl Default for AutoScaling {
    fn default() -> Self {
        Self {
            enabled: false,
            policy: None,
            target_cpu_percent: default_target_cpu(),
            scale_up_cooldown: default_up_cooldown(),
            scale_down_cooldown: default_down_cooldown(),
        }
    }
}

impl AutoScaling {
    /// Checks bounds and the policy's consistency.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        c.range("target_cpu_percent", self.target_cpu_percent, 30.0, 90.0)
            .range("scale_up_cooldown", self.scale_up_cooldown, 1, 10_080)
            .range("scale_down_cooldown", self.scale_down_cooldown, 1, 10_080)
            .ensure(
                !self.enabled || self.policy.is_some(),
                "policy",
                "is required when auto-scaling is enabled",
            );
        if let Some(p) = &self.policy {
            c.range(
                "policy.scale_up_threshold",
                p.scale_up_threshold,
                50.0,
                95.0,
            )
            .range(
                "policy.scale_down_threshold",
                p.scale_down_threshold,
                10.0,
                50.0,
            )
            .ensure(
                p.scale_down_threshold < p.scale_up_threshold,
                "policy.scale_down_threshold",
                "must be below scale_up_threshold",
            )
            .ensure(p.min_nodes >= 1, "policy.min_nodes", "must be at least 1")
            .ensure(
                p.max_nodes >= p.min_nodes,
                "policy.max_nodes",
                "must be at least min_nodes",
            )
            .ensure(
                p.cooldown_minutes >= 1,
                "policy.cooldown_minutes",
                "must be at least 1",
            );
        }
        c.finish()
    }
}

/// Checks pool resource limits.
pub fn check_limits(c: &mut Check, limits: &ResourceLimits) {
    use super::node::MAX_BYTES;
    c.range("resource_limits.cpu_percent", limits.cpu_percent, 1, 100)
        .range(
            "resource_limits.memory_bytes",
            limits.memory_bytes,
            0,
            MAX_BYTES,
        )
        .range(
            "resource_limits.disk_bytes",
            limits.disk_bytes,
            0,
            MAX_BYTES,
        )
        .range(
            "resource_limits.network_mbps",
            limits.network_mbps,
            0,
            MAX_BYTES,
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(up: f64, down: f64, min: u32, max: u32) -> AutoScaling {
        AutoScaling {
            enabled: true,
            policy: Some(ScalingPolicy {
                scale_up_threshold: up,
                scale_down_threshold: down,
                min_nodes: min,
                max_nodes: max,
                cooldown_minutes: 1,
            }),
            ..AutoScaling::default()
        }
    }

    #[test]
    fn a_consistent_policy_is_accepted() {
        assert!(policy(80.0, 30.0, 1, 5).validate().is_ok());
    }

    #[test]
    fn thresholds_bounds_and_order_are_enforced() {
        let e = policy(96.0, 50.0, 0, 0).validate().unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|(f, _)| f.as_str()).collect();
        assert!(
            fields.contains(&"policy.scale_up_threshold") && fields.contains(&"policy.min_nodes"),
            "{fields:?}"
        );
        assert!(
            policy(50.0, 50.0, 1, 1).validate().is_err(),
            "down must be below up"
        );
        assert!(
            AutoScaling {
                enabled: true,
                ..AutoScaling::default()
            }
            .validate()
            .is_err(),
            "policy required"
        );
        assert!(PoolId::parse("pool_a").is_ok() && PoolId::parse("node_a").is_err());
    }
}
