//! Periodic work: the schedules, their configuration, when they are due
//! ([`due`]), their shared state in Redis ([`store`]) and what firing one
//! enqueues ([`actions`]).
//!
//! Every scheduler replica runs the same loop, but only the holder of a Redis
//! lease (with a fencing token) fires. Each (schedule, tick) is claimed with a
//! key in Redis before its work is enqueued, and the work carries ids derived
//! from the tick, so a tick is enqueued once even across a leader change.
//! Cron expressions have seconds and are read in UTC.

pub mod actions;
pub mod store;

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::ConfigError;

/// The schedules the platform runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    /// Scaling evaluation of every auto-scaled pool (default: every minute).
    ScalingEvaluation,
    /// One PoOT validation batch over the active nodes (default: hourly).
    PootSweep,
    /// Earnings accrual of the day that ended, and its payouts (default: daily 00:05).
    EarningsPayout,
    /// Clean-up of finished batches, old samples and evaluations (default: daily 03:30).
    Retention,
}

impl ScheduleName {
    /// Every schedule.
    pub const ALL: [Self; 4] = [
        Self::ScalingEvaluation,
        Self::PootSweep,
        Self::EarningsPayout,
        Self::Retention,
    ];

    /// The name in URLs, Redis keys and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScalingEvaluation => "scaling_evaluation",
            Self::PootSweep => "poot_sweep",
            Self::EarningsPayout => "earnings_payout",
            Self::Retention => "retention",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The built-in cron expression (seconds first).
    pub fn default_cron(self) -> &'static str {
        match self {
            Self::ScalingEvaluation => "0 * * * * *",
            Self::PootSweep => "0 0 * * * *",
            Self::EarningsPayout => "0 5 0 * * *",
            Self::Retention => "0 30 3 * * *",
        }
    }
}

/// One schedule's configuration; unset fields keep the built-in values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleSpec {
    /// Cron expression with seconds (UTC); the built-in one when unset.
    pub cron: Option<String>,
    /// `false` disables the schedule (it can still be triggered by hand).
    pub enabled: Option<bool>,
    /// Catch-up window for this schedule; the global one when unset.
    pub catch_up_secs: Option<u64>,
}

/// `LUCID_SCHEDULER__*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerSettings {
    /// `LUCID_SCHEDULER__LEASE_TTL_SECS`: leadership lease (default 15 s);
    /// the leader renews it every third of this, a follower takes over at most
    /// this long (plus one poll) after the leader dies.
    pub lease_ttl_secs: u64,
    /// `LUCID_SCHEDULER__CATCH_UP_SECS`: after an outage, the latest missed
    /// tick fires once if it is at most this old (default 3600); older ones are skipped.
    pub catch_up_secs: u64,
    /// `LUCID_SCHEDULER__SCALING_EVALUATION__{CRON,ENABLED,CATCH_UP_SECS}`.
    pub scaling_evaluation: ScheduleSpec,
    /// `LUCID_SCHEDULER__POOT_SWEEP__*`.
    pub poot_sweep: ScheduleSpec,
    /// `LUCID_SCHEDULER__EARNINGS_PAYOUT__*`.
    pub earnings_payout: ScheduleSpec,
    /// `LUCID_SCHEDULER__RETENTION__*`.
    pub retention: ScheduleSpec,
    /// `LUCID_SCHEDULER__METRICS_PORT`: port of the scheduler's `/metrics`
    /// and `/health` (default 9464; 0 picks a free port).
    pub metrics_port: u16,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            lease_ttl_secs: 15,
            catch_up_secs: 3600,
            scaling_evaluation: ScheduleSpec::default(),
            poot_sweep: ScheduleSpec::default(),
            earnings_payout: ScheduleSpec::default(),
            retention: ScheduleSpec::default(),
            metrics_port: 9464,
        }
    }
}

/// A schedule, resolved from its configuration.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Name.
    pub name: ScheduleName,
    /// Cron expression.
    pub cron: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// Catch-up window.
    pub catch_up: Duration,
    parsed: cron::Schedule,
}

impl SchedulerSettings {
    fn spec(&self, name: ScheduleName) -> &ScheduleSpec {
        match name {
            ScheduleName::ScalingEvaluation => &self.scaling_evaluation,
            ScheduleName::PootSweep => &self.poot_sweep,
            ScheduleName::EarningsPayout => &self.earnings_payout,
            ScheduleName::Retention => &self.retention,
        }
    }

    /// Every schedule, resolved.
    pub fn schedules(&self) -> Result<Vec<Schedule>, ConfigError> {
        ScheduleName::ALL
            .into_iter()
            .map(|name| {
                let spec = self.spec(name);
                let cron = spec
                    .cron
                    .clone()
                    .unwrap_or_else(|| name.default_cron().into());
                let parsed = cron::Schedule::from_str(&cron).map_err(|e| {
                    ConfigError::Parse(format!(
                        "LUCID_SCHEDULER__{}__CRON: {e} (expected 6 or 7 fields, seconds first)",
                        name.as_str().to_uppercase()
                    ))
                })?;
                let catch_up = spec.catch_up_secs.unwrap_or(self.catch_up_secs);
                Ok(Schedule {
                    name,
                    cron,
                    enabled: spec.enabled.unwrap_or(true),
                    catch_up: Duration::seconds(catch_up.min(i64::MAX as u64 / 1000) as i64),
                    parsed,
                })
            })
            .collect()
    }

    /// Checks the lease and every cron expression.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.lease_ttl_secs) {
            return Err(ConfigError::Invalid {
                var: "LUCID_SCHEDULER__LEASE_TTL_SECS",
                reason: "must be 1..=3600".into(),
            });
        }
        self.schedules().map(|_| ())
    }

    /// The lease TTL.
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl_secs)
    }
}

/// What the leader does about a schedule at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing new since the last handled tick.
    Idle,
    /// Fire `tick`; `missed` earlier ticks since the last handled one are dropped.
    Fire {
        /// The tick to fire.
        tick: DateTime<Utc>,
        /// Ticks skipped in favour of this one.
        missed: u32,
    },
    /// The latest tick is older than the catch-up window: skip it.
    TooLate {
        /// The skipped tick.
        tick: DateTime<Utc>,
    },
}

impl Schedule {
    /// The latest tick at or before `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed
            .after(&(now + Duration::milliseconds(1)))
            .next_back()
    }

    /// The first tick after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.after(&now).next()
    }

    /// What is due at `now` given the last handled tick (fired or skipped).
    /// With `in_order` (this replica handled `last` itself and has led
    /// since) the ticks after it fire in order, so a slow fire drops none;
    /// otherwise (an outage, a handover) only the latest missed tick fires,
    /// if it is within the catch-up window.
    pub fn due(&self, now: DateTime<Utc>, last: Option<DateTime<Utc>>, in_order: bool) -> Due {
        let Some(tick) = self.latest(now) else {
            return Due::Idle;
        };
        if last.is_some_and(|l| l >= tick) {
            return Due::Idle;
        }
        if let Some(l) = last.filter(|_| in_order)
            && let Some(next) = self.parsed.after(&l).next()
            && next <= tick
            && now - next <= self.catch_up
        {
            return Due::Fire {
                tick: next,
                missed: 0,
            };
        }
        if now - tick > self.catch_up {
            return Due::TooLate { tick };
        }
        let missed = match last {
            Some(l) => self
                .parsed
                .after(&l)
                .take_while(|t| *t < tick)
                .take(10_000)
                .count() as u32,
            None => 0,
        };
        Due::Fire { tick, missed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, catch_up_secs: u64) -> Schedule {
        let settings = SchedulerSettings {
            catch_up_secs,
            scaling_evaluation: ScheduleSpec {
                cron: Some(cron.into()),
                ..ScheduleSpec::default()
            },
            ..SchedulerSettings::default()
        };
        settings.schedules().unwrap().remove(0)
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_parse_and_run_daily_payouts_at_00_05_utc() {
        let all = SchedulerSettings::default().schedules().unwrap();
        assert_eq!(all.len(), 4);
        let payouts = all
            .iter()
            .find(|s| s.name == ScheduleName::EarningsPayout)
            .unwrap();
        assert_eq!(
            payouts.next_after(t("2026-11-27T10:00:00Z")),
            Some(t("2026-11-28T00:05:00Z"))
        );
        let scaling = &all[0];
        assert_eq!(
            scaling.next_after(t("2026-11-27T10:00:30Z")),
            Some(t("2026-11-27T10:01:00Z"))
        );
    }

    #[test]
    fn a_bad_cron_names_its_variable() {
        let s = SchedulerSettings {
            poot_sweep: ScheduleSpec {
                cron: Some("every hour".into()),
                ..ScheduleSpec::default()
            },
            ..SchedulerSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("LUCID_SCHEDULER__POOT_SWEEP__CRON"), "{e}");
    }

    #[test]
    fn the_latest_tick_includes_now() {
        let s = schedule("*/10 * * * * *", 60);
        assert_eq!(
            s.latest(t("2026-11-27T10:00:10Z")),
            Some(t("2026-11-27T10:00:10Z"))
        );
        assert_eq!(
            s.latest(t("2026-11-27T10:00:19.999Z")),
            Some(t("2026-11-27T10:00:10Z"))
        );
    }

    #[test]
    fn a_tick_fires_once() {
        let s = schedule("*/10 * * * * *", 60);
        let now = t("2026-11-27T10:00:12Z");
        assert_eq!(
            s.due(now, None, false),
            Due::Fire {
                tick: t("2026-11-27T10:00:10Z"),
                missed: 0
            }
        );
        assert_eq!(
            s.due(now, Some(t("2026-11-27T10:00:10Z")), false),
            Due::Idle
        );
        assert_eq!(
            s.due(
                t("2026-11-27T10:00:20Z"),
                Some(t("2026-11-27T10:00:10Z")),
                false
            ),
            Due::Fire {
                tick: t("2026-11-27T10:00:20Z"),
                missed: 0
            }
        );
    }

    #[test]
    fn after_an_outage_only_the_latest_missed_tick_fires_within_the_window() {
        let s = schedule("*/10 * * * * *", 60);
        let last = Some(t("2026-11-27T10:00:00Z"));
        // Down from 10:00:00 to 10:00:55: 10:00:10..10:00:40 are dropped, 10:00:50 fires.
        assert_eq!(
            s.due(t("2026-11-27T10:00:55Z"), last, false),
            Due::Fire {
                tick: t("2026-11-27T10:00:50Z"),
                missed: 4
            }
        );
        // Back only at 10:03:05 with a 60 s window: the latest tick (10:03:00) is fine...
        assert!(matches!(
            s.due(t("2026-11-27T10:03:05Z"), last, false),
            Due::Fire { .. }
        ));
        // ...but an hourly tick last due 61 s ago is too late.
        let hourly = schedule("0 0 * * * *", 60);
        assert_eq!(
            hourly.due(
                t("2026-11-27T10:01:01Z"),
                Some(t("2026-11-27T09:00:00Z")),
                false
            ),
            Due::TooLate {
                tick: t("2026-11-27T10:00:00Z")
            }
        );
    }

    #[test]
    fn a_leader_that_fell_behind_fires_every_tick_in_order() {
        let s = schedule("* * * * * *", 60);
        // The fire of 10:00:00 took 2.5 s: 10:00:01 and 10:00:02 still fire, in order.
        let now = t("2026-11-27T10:00:02.500Z");
        assert_eq!(
            s.due(now, Some(t("2026-11-27T10:00:00Z")), true),
            Due::Fire {
                tick: t("2026-11-27T10:00:01Z"),
                missed: 0
            }
        );
        // A replica that only just became leader drops them and fires the latest.
        assert_eq!(
            s.due(now, Some(t("2026-11-27T10:00:00Z")), false),
            Due::Fire {
                tick: t("2026-11-27T10:00:02Z"),
                missed: 1
            }
        );
    }
}
