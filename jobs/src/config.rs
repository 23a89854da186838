//! Layered configuration: built-in defaults, then an optional TOML file
//! (`LUCID_CONFIG_FILE`), then `LUCID_*` environment variables.
//!
//! Every value is validated once at start-up ([`Settings::load`]); errors name
//! the environment variable to fix. Connection strings and secrets are
//! [`SecretString`]s so they never end up in logs.

use std::time::Duration;

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable could not be parsed into its type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A variable parsed but its value is not acceptable.
    #[error("invalid value for {var}: {reason}")]
    Invalid {
        /// The environment variable that holds the bad value.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Requests per minute, per token subject (or client IP when anonymous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RateLimits {
    /// `LUCID_RATE_LIMIT__PUBLIC`: requests without a token (100).
    pub public: u32,
    /// `LUCID_RATE_LIMIT__AUTHENTICATED`: tier `authenticated` (1,000).
    pub authenticated: u32,
    /// `LUCID_RATE_LIMIT__ADMIN`: tier `admin` (10,000).
    pub admin: u32,
    /// `LUCID_RATE_LIMIT__POOT_VALIDATION`: PoOT validations, on top of the tier (100).
    pub poot_validation: u32,
    /// `LUCID_RATE_LIMIT__PAYOUT_WRITES`: payout writes, on top of the tier (50).
    pub payout_writes: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            public: 100,
            authenticated: 1_000,
            admin: 10_000,
            poot_validation: 100,
            payout_writes: 50,
        }
    }
}

/// All settings of the platform; each process reads the part it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `LUCID_NODE_API_HOST`: interface the API binds to.
    pub node_api_host: String,
    /// `LUCID_NODE_API_PORT`: API port (0 picks a free port).
    pub node_api_port: u16,
    /// `LUCID_MONGODB_URL`
    pub mongodb_url: SecretString,
    /// `LUCID_DATABASE_NAME`: MongoDB database.
    pub database_name: String,
    /// `LUCID_REDIS_URL`
    pub redis_url: SecretString,
    /// `LUCID_POSTGRES_URL`: the payout ledger.
    pub postgres_url: SecretString,
    /// `LUCID_LOG_LEVEL`: a `tracing` filter such as `info` or `lucid_jobs=debug,info`.
    pub log_level: String,
    /// `LUCID_LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `LUCID_OTLP_ENDPOINT`: base URL of an OpenTelemetry collector
    /// (`http://otel-collector:4318`); when set, spans are exported to
    /// `{endpoint}/v1/traces` over OTLP/HTTP. Unset (the default): no export.
    pub otlp_endpoint: Option<String>,
    /// `LUCID_JWT_SECRET`: HS256 signing secret of API tokens, at least 32
    /// bytes; required unless `LUCID_DEV_MODE` or an RS256 public key is set.
    pub jwt_secret: Option<SecretString>,
    /// `LUCID_JWT_PUBLIC_KEY_FILE`: PEM file of an RSA public key; when set,
    /// tokens are RS256 (signed elsewhere) instead of HS256.
    pub jwt_public_key_file: Option<String>,
    /// `LUCID_DEV_MODE`: local development; a missing `LUCID_JWT_SECRET` then
    /// falls back to a well-known development secret (with a warning).
    pub dev_mode: bool,
    /// `LUCID_METRICS_PUBLIC`: whether `/metrics` needs no token (default true).
    pub metrics_public: bool,
    /// `LUCID_CORS_ORIGINS`: comma-separated origins allowed to call the API
    /// from a browser; empty (the default) allows none.
    pub cors_origins: String,
    /// `LUCID_REQUEST_TIMEOUT_SECS`: a request still running after this long
    /// is answered 504 (default 30).
    pub request_timeout_secs: u64,
    /// `LUCID_RATE_LIMIT__<FIELD>`: requests per minute (see [`RateLimits`]).
    pub rate_limit: RateLimits,
    /// `LUCID_QUEUE_PREFIX`: prefix of every Redis key the queue writes.
    pub queue_prefix: String,
    /// `LUCID_WORKER_NAME`: overrides the generated `hostname-xxxxxx` worker name.
    pub worker_name: Option<String>,
    /// `LUCID_WORKER_CONCURRENCY`: jobs run at once per queue per worker process.
    pub worker_concurrency: usize,
    /// `LUCID_WORKER_HEALTH_HOST` / `LUCID_WORKER_HEALTH_PORT`: the worker's health server.
    pub worker_health_host: String,
    /// See `worker_health_host`; 0 picks a free port.
    pub worker_health_port: u16,
    /// `LUCID_VISIBILITY_TIMEOUT_MS`: a running job whose lease is not renewed
    /// for this long is given to another worker.
    pub visibility_timeout_ms: u64,
    /// `LUCID_JOB_MAX_ATTEMPTS`: default attempts before a job is dead.
    pub job_max_attempts: u32,
    /// `LUCID_JOB_RETENTION_SECS`: how long finished job records are kept.
    pub job_retention_secs: u64,
    /// `LUCID_RETRY_BACKOFF_BASE_MS`: first retry delay; doubles per attempt.
    pub retry_backoff_base_ms: u64,
    /// `LUCID_RETRY_BACKOFF_MAX_MS`: retry delay cap.
    pub retry_backoff_max_ms: u64,
    /// `LUCID_QUEUE_POLL_INTERVAL_MS`: fallback poll when no wake-up arrives.
    pub queue_poll_interval_ms: u64,
    /// `LUCID_BATCH_CHUNK_SIZE`: items per chunk job.
    pub batch_chunk_size: usize,
    /// `LUCID_BATCH_MAX_ITEMS`: items accepted in one batch.
    pub batch_max_items: usize,
    /// `LUCID_MAX_OUTPUT_BYTES`: largest decoded `output_data` of one item.
    pub max_output_bytes: usize,
    /// `LUCID_SHUTDOWN_GRACE_SECS`: how long a stopping process waits for running work.
    pub shutdown_grace_secs: u64,
    /// `LUCID_RESOURCE_RETENTION_DAYS`: how long resource samples are kept (TTL index).
    pub resource_retention_days: u32,
    /// `LUCID_POSTGRES_SCHEMA`: schema of the ledger tables (created if missing).
    pub postgres_schema: String,
    /// `LUCID_PAYOUTS__<FIELD>`: amount limits, fees, retries and the rail, e.g.
    /// `LUCID_PAYOUTS__MAX_AMOUNT=10000`, `LUCID_PAYOUTS__MAX_RETRIES=3`,
    /// `LUCID_PAYOUTS__RAIL_FAILURE_RATE=0.1` (see [`crate::payouts::PayoutSettings`]).
    pub payouts: crate::payouts::PayoutSettings,
    /// `LUCID_POOT__<FIELD>`: the PoOT scoring constants, e.g.
    /// `LUCID_POOT__WINDOW_SECONDS=604800` or `LUCID_POOT__WEIGHTS=[0.25,0.2,0.15,0.1,0.15,0.1,0.05]`
    /// (see [`crate::poot::score`]).
    pub poot: crate::poot::score::ScoringConfig,
    /// `LUCID_SCALING__WINDOW_MINUTES`: the CPU window of scaling evaluations.
    pub scaling: crate::scaling::ScalingSettings,
    /// `LUCID_SCHEDULER__<FIELD>`: the scheduler's lease, catch-up window and
    /// schedules, e.g. `LUCID_SCHEDULER__LEASE_TTL_SECS=15` or
    /// `LUCID_SCHEDULER__SCALING_EVALUATION__CRON="0 * * * * *"` (see [`crate::schedule`]).
    pub scheduler: crate::schedule::SchedulerSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_api_host: "0.0.0.0".into(),
            node_api_port: 8095,
            mongodb_url: "mongodb://127.0.0.1:27017".into(),
            database_name: "lucid".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            postgres_url: "postgres://postgres@127.0.0.1:5432/lucid".into(),
            log_level: "info".into(),
            log_format: LogFormat::Pretty,
            otlp_endpoint: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            dev_mode: false,
            metrics_public: true,
            cors_origins: String::new(),
            request_timeout_secs: 30,
            rate_limit: RateLimits::default(),
            queue_prefix: "lucid".into(),
            worker_name: None,
            worker_concurrency: 8,
            worker_health_host: "0.0.0.0".into(),
            worker_health_port: 8096,
            visibility_timeout_ms: 30_000,
            job_max_attempts: 5,
            job_retention_secs: 7 * 24 * 3600,
            retry_backoff_base_ms: 1_000,
            retry_backoff_max_ms: 5 * 60 * 1_000,
            queue_poll_interval_ms: 1_000,
            batch_chunk_size: 500,
            batch_max_items: 100_000,
            max_output_bytes: 1024 * 1024,
            shutdown_grace_secs: 30,
            resource_retention_days: 30,
            poot: crate::poot::score::ScoringConfig::default(),
            postgres_schema: "public".into(),
            payouts: crate::payouts::PayoutSettings::default(),
            scaling: crate::scaling::ScalingSettings::default(),
            scheduler: crate::schedule::SchedulerSettings::default(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `LUCID_CONFIG_FILE` if set, then `LUCID_*` variables, and validates.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Ok(path) = std::env::var("LUCID_CONFIG_FILE") {
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut settings: Settings = figment
            .merge(Env::prefixed("LUCID_").ignore(&["config_file"]).split("__"))
            .extract()
            .map_err(|e| {
                let var = format!("LUCID_{}", e.path.join("__").to_uppercase());
                ConfigError::Parse(format!("{var}: {}", e.kind))
            })?;
        // An empty LUCID_OTLP_ENDPOINT (e.g. `${LUCID_OTLP_ENDPOINT:-}` in
        // docker-compose) means no export.
        settings.otlp_endpoint = settings.otlp_endpoint.filter(|e| !e.trim().is_empty());
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and URL schemes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                var,
                reason: reason.into(),
            }
        }
        let scheme_ok = |url: &SecretString, schemes: &[&str]| {
            let url = url.expose_secret();
            schemes.iter().any(|s| url.starts_with(s))
        };
        if !scheme_ok(&self.mongodb_url, &["mongodb://", "mongodb+srv://"]) {
            return Err(invalid(
                "LUCID_MONGODB_URL",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if !scheme_ok(&self.redis_url, &["redis://", "rediss://", "unix://"]) {
            return Err(invalid(
                "LUCID_REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }
        if !scheme_ok(&self.postgres_url, &["postgres://", "postgresql://"]) {
            return Err(invalid("LUCID_POSTGRES_URL", "must start with postgres://"));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "LUCID_OTLP_ENDPOINT",
                "must start with http:// or https:// (the collector's OTLP/HTTP address)",
            ));
        }
        if self.database_name.is_empty() || self.database_name.contains(['/', '.', ' ', '$']) {
            return Err(invalid(
                "LUCID_DATABASE_NAME",
                "must be a non-empty name without / . $ or spaces",
            ));
        }
        if self.queue_prefix.is_empty() || self.queue_prefix.contains(char::is_whitespace) {
            return Err(invalid(
                "LUCID_QUEUE_PREFIX",
                "must be non-empty, without spaces",
            ));
        }
        if !(1..=1024).contains(&self.worker_concurrency) {
            return Err(invalid("LUCID_WORKER_CONCURRENCY", "must be 1..=1024"));
        }
        if self.visibility_timeout_ms < 300 {
            return Err(invalid(
                "LUCID_VISIBILITY_TIMEOUT_MS",
                "must be at least 300",
            ));
        }
        if !(1..=100).contains(&self.job_max_attempts) {
            return Err(invalid("LUCID_JOB_MAX_ATTEMPTS", "must be 1..=100"));
        }
        if self.job_retention_secs == 0 {
            return Err(invalid("LUCID_JOB_RETENTION_SECS", "must be positive"));
        }
        if self.retry_backoff_base_ms == 0 || self.retry_backoff_max_ms < self.retry_backoff_base_ms
        {
            return Err(invalid(
                "LUCID_RETRY_BACKOFF_MAX_MS",
                "must be >= LUCID_RETRY_BACKOFF_BASE_MS > 0",
            ));
        }
        if !(1..=60_000).contains(&self.queue_poll_interval_ms) {
            return Err(invalid("LUCID_QUEUE_POLL_INTERVAL_MS", "must be 1..=60000"));
        }
        if !(1..=10_000).contains(&self.batch_chunk_size) {
            return Err(invalid("LUCID_BATCH_CHUNK_SIZE", "must be 1..=10000"));
        }
        if !(1..=1_000_000).contains(&self.batch_max_items) {
            return Err(invalid("LUCID_BATCH_MAX_ITEMS", "must be 1..=1000000"));
        }
        if !(1..=3650).contains(&self.resource_retention_days) {
            return Err(invalid("LUCID_RESOURCE_RETENTION_DAYS", "must be 1..=3650"));
        }
        if self.max_output_bytes == 0 {
            return Err(invalid("LUCID_MAX_OUTPUT_BYTES", "must be positive"));
        }
        self.validate_scoring()?;
        self.validate_payouts()?;
        if !(1..=1440).contains(&self.scaling.window_minutes) {
            return Err(invalid("LUCID_SCALING__WINDOW_MINUTES", "must be 1..=1440"));
        }
        self.scheduler.validate()?;
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(invalid("LUCID_JWT_SECRET", "must be at least 32 bytes"));
        }
        if !(1..=3600).contains(&self.request_timeout_secs) {
            return Err(invalid("LUCID_REQUEST_TIMEOUT_SECS", "must be 1..=3600"));
        }
        let r = &self.rate_limit;
        if [
            r.public,
            r.authenticated,
            r.admin,
            r.poot_validation,
            r.payout_writes,
        ]
        .contains(&0)
        {
            return Err(invalid(
                "LUCID_RATE_LIMIT__*",
                "every limit must be at least 1 per minute",
            ));
        }
        Ok(())
    }

    fn validate_payouts(&self) -> Result<(), ConfigError> {
        let invalid = |var: &'static str, reason: &str| ConfigError::Invalid {
            var,
            reason: reason.into(),
        };
        let schema = &self.postgres_schema;
        if schema.is_empty()
            || schema.len() > 63
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "LUCID_POSTGRES_SCHEMA",
                "must be 1-63 characters of a-z, 0-9 and _",
            ));
        }
        let p = &self.payouts;
        let f = &p.fees;
        if f.min_amount <= rust_decimal::Decimal::ZERO || f.max_amount < f.min_amount {
            return Err(invalid(
                "LUCID_PAYOUTS__MAX_AMOUNT",
                "needs 0 < LUCID_PAYOUTS__MIN_AMOUNT <= LUCID_PAYOUTS__MAX_AMOUNT",
            ));
        }
        if f.fee_rate < rust_decimal::Decimal::ZERO || f.fee_rate >= rust_decimal::Decimal::ONE {
            return Err(invalid("LUCID_PAYOUTS__FEE_RATE", "must be within 0..1"));
        }
        if f.min_fee < rust_decimal::Decimal::ZERO || f.max_fee < f.min_fee {
            return Err(invalid(
                "LUCID_PAYOUTS__MAX_FEE",
                "needs 0 <= LUCID_PAYOUTS__MIN_FEE <= LUCID_PAYOUTS__MAX_FEE",
            ));
        }
        if f.min_fee >= f.min_amount {
            return Err(invalid(
                "LUCID_PAYOUTS__MIN_FEE",
                "must be below LUCID_PAYOUTS__MIN_AMOUNT (net must stay positive)",
            ));
        }
        if p.max_retries > 5 {
            return Err(invalid("LUCID_PAYOUTS__MAX_RETRIES", "must be at most 5"));
        }
        if p.rail != "simulated" {
            return Err(invalid(
                "LUCID_PAYOUTS__RAIL",
                "only `simulated` exists (a real rail is later work)",
            ));
        }
        if !(0.0..=1.0).contains(&p.rail_failure_rate) {
            return Err(invalid(
                "LUCID_PAYOUTS__RAIL_FAILURE_RATE",
                "must be within 0..=1",
            ));
        }
        if p.rail_timeout_ms == 0 {
            return Err(invalid(
                "LUCID_PAYOUTS__RAIL_TIMEOUT_MS",
                "must be positive",
            ));
        }
        Ok(())
    }

    fn validate_scoring(&self) -> Result<(), ConfigError> {
        let invalid = |var: &'static str, reason: &str| ConfigError::Invalid {
            var,
            reason: reason.into(),
        };
        let p = &self.poot;
        if p.slot_seconds == 0 || p.slot_seconds > 86_400 {
            return Err(invalid("LUCID_POOT__SLOT_SECONDS", "must be 1..=86400"));
        }
        if p.window_seconds < p.slot_seconds || !p.window_seconds.is_multiple_of(p.slot_seconds) {
            return Err(invalid(
                "LUCID_POOT__WINDOW_SECONDS",
                "must be a positive multiple of LUCID_POOT__SLOT_SECONDS",
            ));
        }
        if p.bytes_per_credit == 0 {
            return Err(invalid("LUCID_POOT__BYTES_PER_CREDIT", "must be positive"));
        }
        let finite_non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !finite_non_negative(p.credits_per_gb) {
            return Err(invalid("LUCID_POOT__CREDITS_PER_GB", "must be >= 0"));
        }
        if !(0.0..=1.0).contains(&p.min_uptime_ratio) {
            return Err(invalid(
                "LUCID_POOT__MIN_UPTIME_RATIO",
                "must be within 0..=1",
            ));
        }
        if !p.weights.iter().all(|w| finite_non_negative(*w)) {
            return Err(invalid("LUCID_POOT__WEIGHTS", "must be 7 numbers >= 0"));
        }
        if !(p.points_per_session_hour.is_finite() && p.points_per_session_hour > 0.0) {
            return Err(invalid(
                "LUCID_POOT__POINTS_PER_SESSION_HOUR",
                "must be positive",
            ));
        }
        if !(p.mbps_per_point.is_finite() && p.mbps_per_point > 0.0) {
            return Err(invalid("LUCID_POOT__MBPS_PER_POINT", "must be positive"));
        }
        Ok(())
    }

    /// What the API needs on top of [`Settings::validate`]: a way to check
    /// tokens. Outside dev mode `LUCID_JWT_SECRET` (or an RS256 public key) is required.
    pub fn validate_api(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.is_none() && self.jwt_public_key_file.is_none() && !self.dev_mode {
            return Err(ConfigError::Invalid {
                var: "LUCID_JWT_SECRET",
                reason: "is required (at least 32 bytes; or LUCID_JWT_PUBLIC_KEY_FILE for RS256, or LUCID_DEV_MODE=true locally)".into(),
            });
        }
        Ok(())
    }

    /// The queue settings derived from these settings.
    pub fn queue(&self) -> crate::queue::QueueConfig {
        crate::queue::QueueConfig {
            prefix: self.queue_prefix.clone(),
            visibility_timeout: Duration::from_millis(self.visibility_timeout_ms),
            max_attempts: self.job_max_attempts,
            retention: Duration::from_secs(self.job_retention_secs),
            backoff_base: Duration::from_millis(self.retry_backoff_base_ms),
            backoff_max: Duration::from_millis(self.retry_backoff_max_ms),
            poll_interval: Duration::from_millis(self.queue_poll_interval_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_port_8095() {
        let s = Settings::default();
        s.validate().expect("defaults validate");
        assert_eq!(s.node_api_port, 8095);
    }

    #[test]
    fn the_api_needs_a_jwt_secret_outside_dev_mode() {
        let s = Settings::default();
        let err = s.validate_api().expect_err("no secret").to_string();
        assert!(err.contains("LUCID_JWT_SECRET"), "{err}");
        let dev = Settings {
            dev_mode: true,
            ..Settings::default()
        };
        dev.validate_api().expect("dev mode");
        let short = Settings {
            jwt_secret: Some("too short".into()),
            ..Settings::default()
        };
        let err = short.validate().expect_err("short").to_string();
        assert!(
            err.contains("LUCID_JWT_SECRET") && err.contains("32"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_url_names_its_variable() {
        let s = Settings {
            redis_url: "http://x".into(),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("LUCID_REDIS_URL"), "{err}");
    }

    #[test]
    fn scoring_constants_are_read_from_nested_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LUCID_POOT__WINDOW_SECONDS", "86400");
            jail.set_env(
                "LUCID_POOT__WEIGHTS",
                "[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05]",
            );
            let s = Settings::load().expect("loads");
            assert_eq!(s.poot.window_seconds, 86_400);
            assert_eq!(s.poot.weights[0], 0.5);
            assert_eq!(s.poot.slot_seconds, 120, "unset fields keep their default");
            jail.set_env("LUCID_POOT__WINDOW_SECONDS", "100");
            let err = Settings::load().unwrap_err().to_string();
            assert!(err.contains("LUCID_POOT__WINDOW_SECONDS"), "{err}");
            jail.set_env("LUCID_POOT__WINDOW_SECONDS", "lots");
            let err = Settings::load().unwrap_err().to_string();
            assert!(err.contains("LUCID_POOT__WINDOW_SECONDS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_empty_otlp_endpoint_means_no_export_and_a_bad_one_names_its_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LUCID_OTLP_ENDPOINT", "");
            assert_eq!(Settings::load().expect("loads").otlp_endpoint, None);
            jail.set_env("LUCID_OTLP_ENDPOINT", "http://collector:4318");
            assert_eq!(
                Settings::load().expect("loads").otlp_endpoint.as_deref(),
                Some("http://collector:4318")
            );
            jail.set_env("LUCID_OTLP_ENDPOINT", "collector:4317");
            let err = Settings::load().unwrap_err().to_string();
            assert!(err.contains("LUCID_OTLP_ENDPOINT"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let s = Settings {
            postgres_url: "postgres://u:hunter2@h/db".into(),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
