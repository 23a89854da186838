//! Bearer JWT authentication, scopes per endpoint ([`scopes`]), and the
//! Redis rate limiter ([`limiter`]), applied together by [`guard`].
//!
//! Tokens are HS256 with `LUCID_JWT_SECRET`, or RS256 when
//! `LUCID_JWT_PUBLIC_KEY_FILE` is set. Claims: `sub`, `exp`, `iat`, `nbf`
//! (optional), `iss` = `lucid-node-management`, `scope` (space-separated),
//! `tier` (public|authenticated|admin) and `role` (`node` for a node's own
//! token, whose `sub` is its node id).

pub mod limiter;
mod middleware;
pub mod scopes;

pub use middleware::{Guard, guard};

use std::collections::HashSet;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lucid_jobs::config::Settings;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// The `iss` of every token.
pub const ISSUER: &str = "lucid-node-management";
/// Secret used in dev mode when `LUCID_JWT_SECRET` is unset. Never for production.
pub const DEV_SECRET: &str = "lucid-dev-mode-secret-never-use-in-production";

/// A caller's tier: picks its rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Anonymous callers (or tokens that say so).
    Public,
    /// Ordinary tokens.
    #[default]
    Authenticated,
    /// Operators.
    Admin,
}

/// The claims of an API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: a user, a service, or a node id (with `role = "node"`).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issuer, `lucid-node-management`.
    pub iss: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Tier.
    #[serde(default)]
    pub tier: Tier,
    /// `node` for a node's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Claims {
    /// Claims for `sub` with `scopes`, valid for `ttl_secs` from now.
    pub fn new(sub: &str, scopes: &[&str], tier: Tier, ttl_secs: i64) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            sub: sub.to_string(),
            exp: now + ttl_secs,
            iat: now,
            nbf: None,
            iss: ISSUER.into(),
            scope: scopes.join(" "),
            tier,
            role: None,
        }
    }

    /// A node's own token: `sub` = node id, role `node`, resource and proof writes.
    pub fn node(node_id: &str, ttl_secs: i64) -> Self {
        let mut c = Self::new(
            node_id,
            &["resource:write", "poot:validate", "node:read"],
            Tier::Authenticated,
            ttl_secs,
        );
        c.role = Some("node".into());
        c
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Subject.
    pub sub: String,
    /// Tier.
    pub tier: Tier,
    /// Scopes.
    pub scopes: HashSet<String>,
    /// Whether this is a node acting for itself.
    pub is_node: bool,
}

impl From<Claims> for Principal {
    fn from(c: Claims) -> Self {
        Self {
            scopes: c.scope.split_whitespace().map(String::from).collect(),
            is_node: c.role.as_deref() == Some("node"),
            sub: c.sub,
            tier: c.tier,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// The keys tokens are checked (and, with HS256, minted) with.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the settings (RS256 public key, else HS256 secret, else the
    /// dev secret in dev mode).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        settings.validate_api()?;
        if let Some(path) = &settings.jwt_public_key_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("read LUCID_JWT_PUBLIC_KEY_FILE ({path})"))?;
            let decoding = DecodingKey::from_rsa_pem(&pem)
                .context("LUCID_JWT_PUBLIC_KEY_FILE is not an RSA public key in PEM")?;
            return Ok(Self {
                algorithm: Algorithm::RS256,
                decoding,
                encoding: None,
            });
        }
        let secret = match &settings.jwt_secret {
            Some(s) => s.expose_secret().to_string(),
            None => {
                tracing::warn!(
                    "LUCID_DEV_MODE: no LUCID_JWT_SECRET, using the well-known development secret"
                );
                DEV_SECRET.to_string()
            }
        };
        Ok(Self::hs256(secret.as_bytes()))
    }

    /// HS256 keys for `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
        }
    }

    /// Checks signature, algorithm, issuer, expiry and not-before.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(self.algorithm);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        v.validate_nbf = true;
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                TokenError(
                    match e.kind() {
                        K::ExpiredSignature => "token expired",
                        K::ImmatureSignature => "token not valid yet",
                        K::InvalidIssuer => "wrong issuer",
                        K::InvalidAlgorithm | K::InvalidAlgorithmName => "wrong algorithm",
                        K::InvalidSignature => "bad signature",
                        K::MissingRequiredClaim(_) => "a required claim is missing",
                        _ => "malformed token",
                    }
                    .into(),
                )
            })
    }

    /// Signs `claims` (HS256 only: an RS256 deployment mints elsewhere).
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let key = self
            .encoding
            .as_ref()
            .context("RS256 tokens are minted by the holder of the private key")?;
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, key).context("sign token")
    }
}

/// `lucid-api token [--sub S] [--scope "a b"] [--tier T] [--node NODE_ID] [--ttl SECS] [--admin]`:
/// prints a token signed with this configuration's secret.
pub fn token_command(settings: &Settings, args: &[String]) -> anyhow::Result<String> {
    let mut sub = "local-admin".to_string();
    let mut scope: Option<String> = None;
    let mut tier = Tier::Admin;
    let mut ttl: i64 = 24 * 3600;
    let mut node: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--sub" => sub = value()?,
            "--scope" => scope = Some(value()?),
            "--tier" => {
                tier = match value()?.as_str() {
                    "public" => Tier::Public,
                    "authenticated" => Tier::Authenticated,
                    "admin" => Tier::Admin,
                    other => anyhow::bail!("unknown tier {other:?}"),
                }
            }
            "--ttl" => ttl = value()?.parse().context("--ttl takes seconds")?,
            "--node" => node = Some(value()?),
            "--admin" => scope = None,
            other => anyhow::bail!("unknown option {other:?}"),
        }
    }
    let claims = match node {
        Some(id) => Claims::node(&id, ttl),
        None => {
            let scope = scope.unwrap_or_else(|| scopes::ALL.join(" "));
            let list: Vec<&str> = scope.split_whitespace().collect();
            Claims::new(&sub, &list, tier, ttl)
        }
    };
    TokenKeys::from_settings(settings)?.mint(&claims)
}
